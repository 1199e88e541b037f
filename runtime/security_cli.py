"""``stratrun keys`` and ``stratrun journal``: the commands of the security work."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runtime import journal as journal_file
from runtime.rundir import DEFAULT_RUN_DIR, RunDir, RunDirError
from runtime.security import KeysError, generate_keys

__all__ = ["journal", "keys"]


def _run_dir(ctx: click.Context) -> RunDir:
    obj = ctx.find_root().obj or {}
    return RunDir.at(obj.get("run_dir") or DEFAULT_RUN_DIR)


@click.group()
def keys() -> None:
    """CURVE keys for TCP links."""


@keys.command()
@click.option("--dir", "directory", default=None, help="Keys folder (default: <run_dir>/keys).")
@click.option("--force", is_flag=True, help="Replace keys that exist already.")
@click.pass_context
def generate(ctx: click.Context, directory: str | None, force: bool) -> None:
    """Make the server and client key pairs (folder 0700, secret keys 0600)."""
    try:
        if directory is None:
            _run_dir(ctx).create()  # the run directory, 0700, if it is not there yet
        root = Path(directory) if directory else _run_dir(ctx).keys_dir
        made = generate_keys(root, force=force)
    except (KeysError, OSError, RunDirError) as exc:
        click.echo(f"stratrun: {exc}", err=True)
        sys.exit(1)
    for path in made:
        click.echo(f"stratrun: wrote {path}")
    click.echo(
        "stratrun: copy the folder to every host of the system; to allow another client, "
        f"put its public key in {root.resolve() / 'authorized'}"
    )


@click.group()
def journal() -> None:
    """The event journal."""


@journal.command()
@click.argument("path", required=False)
@click.pass_context
def check(ctx: click.Context, path: str | None) -> None:
    """Verify integrity and seq continuity (PATH defaults to <run_dir>/journal.sqlite)."""
    file = Path(path) if path else _run_dir(ctx).journal
    if not file.is_file():
        click.echo(f"stratrun: {file}: no such journal", err=True)
        sys.exit(2)
    problems = journal_file.check(file)
    for problem in problems:
        click.echo(f"stratrun: {problem}", err=True)
    if problems:
        click.echo(f"stratrun: {file}: {len(problems)} problems", err=True)
        sys.exit(1)
    counts = journal_file.summary(file)
    total = sum(counts.values())
    click.echo(
        f"stratrun: {file}: ok (integrity ok; {total} events of {len(counts)} strategies, "
        "every seq from 1 without a gap)"
    )
