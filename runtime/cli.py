"""The ``stratrun`` command: up, ps, logs, down."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import msgspec
import psutil

from runtime import events_query as eq
from runtime.accounts import account
from runtime.backtest.command import backtest
from runtime.config import ConfigError, RuntimeConfig, load_config
from runtime.control_client import ControlClient, ControlError
from runtime.log_follow import Entry
from runtime.logfmt import parse_line
from runtime.manager import AlreadyRunning, Manager, StartupFailed
from runtime.messages import (
    LIFECYCLE_DECODER,
    LIFECYCLE_TOPIC,
    AddRequest,
    ControlRequest,
    DownRequest,
    ErrorReply,
    HaltRequest,
    OkReply,
    PauseRequest,
    ProcessRow,
    PsReply,
    PsRequest,
    ReloadRequest,
    RemoveRequest,
    RestartRequest,
    ResumeRequest,
    ResumeTradingRequest,
    StartRequest,
    StopRequest,
)
from runtime.rundir import DEFAULT_RUN_DIR, RunDir, RunDirError
from runtime.security import CurveKeys, KeysError, Security
from runtime.security_cli import journal, keys
from runtime.specs import keys_dir
from runtime.transport import RejectCounter, close_all

__all__ = ["main"]

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "demo.toml"


def _run_dir(ctx: click.Context) -> RunDir:
    return RunDir.at(ctx.obj["run_dir"] or DEFAULT_RUN_DIR)


@click.group()
@click.option(
    "--run-dir",
    envvar="STRATRUN_RUN_DIR",
    default=None,
    help=f"Run directory of the system (default: the config's, else ./{DEFAULT_RUN_DIR}).",
)
@click.pass_context
def main(ctx: click.Context, run_dir: str | None) -> None:
    """Run every trading strategy in its own process, and watch them all."""
    ctx.obj = {"run_dir": run_dir}


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "-d", "--detach", is_flag=True, help="Run in the background; return once all are ready."
)
@click.option("--log-json", is_flag=True, hidden=True, help="Log to the run directory (up -d).")
@click.pass_context
def up(ctx: click.Context, config: str | None, detach: bool, log_json: bool) -> None:
    """Start the system in the foreground (CONFIG defaults to the bundled demo)."""
    path = Path(config) if config else DEMO_CONFIG
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        click.echo(f"stratrun: config error: {exc}", err=True)
        sys.exit(2)
    run_dir = RunDir.at(ctx.obj["run_dir"] or cfg.runtime.run_dir or DEFAULT_RUN_DIR)
    try:
        run_dir.check()
    except RunDirError as exc:
        where = "--run-dir" if ctx.obj["run_dir"] else f"{cfg.source}: runtime.run_dir"
        click.echo(f"stratrun: config error: {where}: {exc}", err=True)
        sys.exit(2)
    if cfg.runtime.transport == "tcp":
        try:
            CurveKeys.load(keys_dir(cfg, run_dir))
        except KeysError as exc:
            click.echo(f"stratrun: config error: {cfg.source}: runtime.keys_dir: {exc}", err=True)
            sys.exit(2)
    if detach:
        sys.exit(_up_detached(run_dir, Path(cfg.source)))
    if log_json:
        _log_to_file(run_dir, cfg.runtime)
    click.echo(f"stratrun: {len(cfg.strategies)} strategies from {cfg.source}")
    try:
        Manager(cfg, run_dir, sys.stdout).run()
    except (AlreadyRunning, RunDirError) as exc:
        click.echo(f"stratrun: {exc}", err=True)
        sys.exit(1)
    except StartupFailed as exc:
        click.echo(f"stratrun: start-up failed: {exc}", err=True)
        sys.exit(1)
    click.echo("stratrun: stopped")


def _log_to_file(run_dir: RunDir, settings: RuntimeConfig) -> None:
    """A detached manager logs JSON lines to ``logs/manager.log`` like every other process:
    what it would print becomes INFO lines of logger ``manager``."""
    from runtime.child import setup_logging
    from runtime.log_handler import LineLogger
    from runtime.specs import LogSettings

    log = LogSettings(
        file=str(run_dir.log_file("manager")),
        max_bytes=settings.log_max_bytes,
        backups=settings.log_backups,
    )
    sys.stdout = LineLogger(setup_logging("manager", "manager", settings.log_level, log))


main.add_command(keys)
main.add_command(journal)


def _up_detached(run_dir: RunDir, config: Path) -> int:
    """Start ``stratrun up`` in its own session, logging to the run directory; wait for it."""
    import subprocess

    try:
        run_dir.create()
    except (OSError, RunDirError) as exc:
        click.echo(f"stratrun: {exc}", err=True)
        return 1
    log_path = run_dir.log_file("manager")
    with open(log_path, "ab") as log:
        manager = subprocess.Popen(
            [
                *(sys.executable, "-m", "runtime", "--run-dir", str(run_dir.root)),
                *("up", "--log-json", str(config)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if manager.poll() is not None:
            click.echo(f"stratrun: the manager exited with status {manager.returncode}:", err=True)
            for line in log_path.read_text(errors="replace").splitlines()[-5:]:
                parsed, is_json = parse_line(line, "manager")
                click.echo(f"  {parsed.msg if is_json else line}", err=True)
            return 1
        try:
            client = ControlClient.for_run_dir(run_dir, timeout_s=1.0)
            reply = client.request(PsRequest(ControlClient.next_id()))
        except (ControlError, KeysError):
            reply = None
        if isinstance(reply, PsReply) and all(r.state == "running" for r in reply.rows):
            click.echo(
                f"stratrun: {len(reply.rows)} processes running in the background "
                f"(manager pid {manager.pid}, log {log_path}); stratrun ps | logs ID | down"
            )
            return 0
        time.sleep(0.1)  # polling another process until it is ready; nothing to wait on
    click.echo("stratrun: not every process was ready after 120 s; see stratrun ps", err=True)
    return 1


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--watch", is_flag=True, help="Then follow lifecycle events (spawn, exit, ...).")
@click.pass_context
def ps(ctx: click.Context, as_json: bool, watch: bool) -> None:
    """List every process of the running system."""
    _ps(ctx, as_json)
    if watch:
        _watch(_run_dir(ctx))


def _ps(ctx: click.Context, as_json: bool) -> None:
    reply = _ask(ctx, PsRequest(ControlClient.next_id()))
    assert isinstance(reply, PsReply)
    if as_json:
        click.echo(msgspec.json.encode(reply.rows).decode())
        return
    header = (
        "ID",
        "ROLE",
        "PID",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "CANDLES",
        "OPEN",
        "REALIZED_PNL",
        "CAPITAL",
        "EQUITY",
        "RSS",
        "USS",
        "CPU",
        "LAST_EXIT",
    )
    rows = [
        (
            r.name,
            r.role,
            str(r.pid or "-"),
            r.state,
            _duration(r.uptime_s),
            str(r.restarts),
            str(r.candles) if r.role != "aggregator" else "-",
            str(r.open_positions) if r.role == "worker" else "-",
            f"{r.realized_pnl:+.6g}" if r.role == "worker" else "-",
            f"{r.capital:.6g}" if r.role == "worker" and r.capital else "-",
            f"{r.equity:.10g}" if r.role == "worker" and r.capital else "-",
            f"{r.rss_bytes / 2**20:.1f}M" if r.rss_bytes else "-",
            f"{r.uss_bytes / 2**20:.1f}M" if r.uss_bytes else "-",
            f"{r.cpu_percent:.0f}%" if r.pid else "-",
            r.last_exit or "-",
        )
        for r in reply.rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
    for line in (header, *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in reply.rows:
        if "metrics_url" in r.detail:
            click.echo(f"metrics: {r.detail['metrics_url']}")


@main.command()
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the stop.")
@click.pass_context
def down(ctx: click.Context, timeout: float) -> None:
    """Stop the running system: workers, then broker, then aggregator."""
    run_dir = _run_dir(ctx)
    manager_pid = _manager_pid(run_dir)
    _ask(ctx, DownRequest(ControlClient.next_id()))
    click.echo("stratrun: stopping")
    deadline = time.monotonic() + timeout
    while manager_pid and _alive(manager_pid):
        if time.monotonic() > deadline:
            click.echo(
                f"stratrun: manager pid {manager_pid} still running after {timeout:g}s", err=True
            )
            sys.exit(1)
        time.sleep(0.1)  # polling another process's exit; there is nothing to wait on
    click.echo("stratrun: stopped")


@main.command()
@click.argument("process_id", required=False)
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing new lines (across rotation and restarts)."
)
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Lines of history to show (per log; from rotated files too when needed).",
)
@click.option(
    "--since", metavar="T", help="From T on: ISO 8601 (UTC unless a zone is given) or 10m, 2h, 1d."
)
@click.option(
    "--level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
    help="Only lines at this level or above (output outside logging counts as error).",
)
@click.option("--grep", "pattern", metavar="RE", help="Only lines whose message matches RE.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON lines as they are.")
@click.pass_context
def logs(
    ctx: click.Context,
    process_id: str | None,
    follow: bool,
    lines: int,
    since: str | None,
    level: str | None,
    pattern: str | None,
    as_json: bool,
) -> None:
    """Print the log of one strategy (or broker, aggregator); no ID: all, interleaved."""
    import re

    from runtime import log_follow as lf
    from runtime.logfmt import LogFilter, format_ts, level_number

    try:
        since_ts = format_ts(eq.parse_time(since) / 1e9) if since is not None else ""
    except eq.TimeSpecError as exc:
        click.echo(f"stratrun: {exc}", err=True)
        sys.exit(2)
    try:
        regex = re.compile(pattern) if pattern is not None else None
    except re.error as exc:
        click.echo(f"stratrun: --grep {pattern!r} is not a regular expression: {exc}", err=True)
        sys.exit(2)
    wanted = LogFilter(since_ts, level_number(level) if level else 0, regex)
    keep = None if wanted == LogFilter() else wanted.keeps
    run_dir = _run_dir(ctx)
    entries: Iterable[Entry]
    if process_id is None:
        paths = sorted(run_dir.logs_dir.glob("*.log"))
        if not paths:
            click.echo(f"stratrun: no logs in {run_dir.logs_dir}", err=True)
            sys.exit(1)
        width = max(len(p.stem) for p in paths)
        if follow:
            entries = lf.follow_logs(run_dir.logs_dir, lines, keep)
        else:
            merged = [e for p in paths for e in lf.read_history(p, lines, keep)]
            entries = sorted(merged, key=lambda e: e.line.ts)
        _print_logs(entries, as_json, width)
        return
    path = run_dir.log_file(process_id)
    if not path.exists():
        known = sorted(p.stem for p in run_dir.logs_dir.glob("*.log"))
        click.echo(
            f"stratrun: no log for {process_id!r} in {run_dir.logs_dir}"
            + (f" (there are: {', '.join(known)})" if known else ""),
            err=True,
        )
        sys.exit(1)
    entries = lf.follow_log(path, lines, keep) if follow else lf.read_history(path, lines, keep)
    _print_logs(entries, as_json, 0)


def _print_logs(entries: Iterable[Entry], as_json: bool, width: int) -> None:
    """Write log entries: human-readable, or JSON lines; ``width`` > 0 adds a name prefix."""
    from runtime.logfmt import encode_line, render

    try:
        for entry in entries:
            if as_json:
                text = entry.text if entry.is_json else encode_line(entry.line).decode()
                click.echo(text.rstrip("\n"))
                continue
            shown = render(entry.line, None if entry.is_json else entry.text)
            if width:
                shown = f"{_prefix(entry.line.process, width)} {shown}"
            click.echo(shown)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, as other Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@main.command()
@click.option(
    "-i",
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.pass_context
def top(ctx: click.Context, interval: float, once: bool) -> None:
    """A refreshing table of the strategies: state, PnL, positions, latency, memory (q quits)."""
    from runtime import top as top_view

    def rows() -> list[ProcessRow]:
        reply = _ask(ctx, PsRequest(ControlClient.next_id()))
        assert isinstance(reply, PsReply)
        return reply.rows

    top_view.run(top_view.Sampler(rows), interval, once, sys.stdout)


_COLOURS = ("cyan", "green", "yellow", "magenta", "blue", "bright_cyan", "bright_green")


def _prefix(name: str, width: int) -> str:
    """``name |`` in a colour of its own (click drops colours when not on a terminal)."""
    colour = _COLOURS[sum(name.encode()) % len(_COLOURS)]
    return click.style(f"{name:<{width}} |", fg=colour)


_NAMED: dict[
    str,
    tuple[type[StartRequest | StopRequest | RestartRequest | PauseRequest | ResumeRequest], str],
] = {
    "start": (StartRequest, "Start a stopped or failed process (the policy's history is reset)."),
    "stop": (StopRequest, "Stop one process gracefully: SIGTERM, the grace period, SIGKILL."),
    "restart": (RestartRequest, "Stop one process, start it again and wait until it is ready."),
    "pause": (PauseRequest, "Keep a strategy's process and state but stop acting on candles."),
    "resume": (ResumeRequest, "Let a paused strategy act on candles again."),
}


def _named_command(verb: str) -> None:
    request_type, help_text = _NAMED[verb]

    @main.command(name=verb, help=help_text)
    @click.argument("process_id")
    @click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
    @click.pass_context
    def command(ctx: click.Context, process_id: str, timeout: float) -> None:
        started = time.monotonic()
        reply = _ask(ctx, request_type(ControlClient.next_id(), process_id), timeout)
        assert isinstance(reply, OkReply)
        click.echo(f"stratrun: {reply.message} ({(time.monotonic() - started) * 1000:.0f} ms)")


for _verb in _NAMED:
    _named_command(_verb)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def add(ctx: click.Context, file: str, timeout: float) -> None:
    """Add the [[strategies]] of FILE to the running system (until the next reload)."""
    path = str(Path(file).resolve())
    reply = _ask(ctx, AddRequest(ControlClient.next_id(), path), timeout)
    assert isinstance(reply, OkReply)
    click.echo(f"stratrun: {reply.message}")


@main.command()
@click.argument("process_id")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def remove(ctx: click.Context, process_id: str, timeout: float) -> None:
    """Stop one strategy and forget it (until the next reload)."""
    reply = _ask(ctx, RemoveRequest(ControlClient.next_id(), process_id), timeout)
    assert isinstance(reply, OkReply)
    click.echo(f"stratrun: {reply.message}")


@main.command()
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def reload(ctx: click.Context, timeout: float) -> None:
    """Re-read the config file: start new strategies, stop removed, restart changed ones."""
    reply = _ask(ctx, ReloadRequest(ControlClient.next_id()), timeout)
    assert isinstance(reply, OkReply)
    click.echo(f"stratrun: {reply.message}")


@main.command()
@click.option("--flatten", is_flag=True, help="Also close every open position.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for workers.")
@click.pass_context
def halt(ctx: click.Context, flatten: bool, timeout: float) -> None:
    """Kill switch: no strategy opens a position until `stratrun resume-trading`."""
    reply = _ask(ctx, HaltRequest(ControlClient.next_id(), flatten), timeout)
    assert isinstance(reply, OkReply)
    _await_halted(ctx, True, timeout)
    click.echo(f"stratrun: trading halted{' and flattening' if flatten else ''} ({reply.message})")


@main.command(name="resume-trading")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for workers.")
@click.pass_context
def resume_trading(ctx: click.Context, timeout: float) -> None:
    """Lift the kill switch."""
    reply = _ask(ctx, ResumeTradingRequest(ControlClient.next_id()), timeout)
    assert isinstance(reply, OkReply)
    _await_halted(ctx, False, timeout)
    click.echo(f"stratrun: trading resumed ({reply.message})")


def _await_halted(ctx: click.Context, halted: bool, timeout: float) -> None:
    """Wait until every running worker reports ``halted`` in ps; exit 1 naming the others."""
    deadline = time.monotonic() + timeout
    while True:
        reply = _ask(ctx, PsRequest(ControlClient.next_id()), timeout)
        assert isinstance(reply, PsReply)
        late = [
            r.name
            for r in reply.rows
            if r.role == "worker" and r.state in ("running", "paused") and r.halted != halted
        ]
        if not late:
            return
        if time.monotonic() > deadline:
            click.echo(f"stratrun: not confirmed by {', '.join(late)}", err=True)
            sys.exit(1)
        time.sleep(0.1)  # polling the manager's view of the workers


def _watch(run_dir: RunDir) -> None:
    """Print lifecycle events as the manager publishes them, until Ctrl-C."""
    import zmq

    try:
        client = ControlClient.for_run_dir(run_dir)
    except KeysError as exc:
        click.echo(f"stratrun: {exc}", err=True)
        sys.exit(1)
    ctx: zmq.Context[Any] = zmq.Context()
    security = Security(ctx, client.keys, RejectCounter(), logging.getLogger("stratrun"))
    lifecycle = client.endpoints.lifecycle if client.endpoints else ""
    sub = security.client(zmq.SUB, "lifecycle", connect=lifecycle or run_dir.endpoint("lifecycle"))
    sub.setsockopt(zmq.SUBSCRIBE, LIFECYCLE_TOPIC)
    try:
        while True:
            if not sub.poll(500):
                continue
            frames = sub.recv_multipart()
            if len(frames) != 2:
                continue
            try:
                event = LIFECYCLE_DECODER.decode(frames[1])
            except msgspec.DecodeError:
                continue
            when = datetime.fromtimestamp(event.ts_ns / 1e9).strftime("%H:%M:%S.%f")[:-3]
            detail = f"  {event.detail}" if event.detail else ""
            click.echo(f"{when}  {event.name:<16} {event.event:<8} pid {event.pid}{detail}")
    except KeyboardInterrupt:
        pass
    finally:
        close_all(sub)
        security.close()
        ctx.term()


def _ask(ctx: click.Context, request: ControlRequest, timeout: float = 5.0) -> object:
    try:
        client = ControlClient.for_run_dir(_run_dir(ctx), timeout_s=timeout)
        reply = client.request(request)
    except (ControlError, KeysError) as exc:
        click.echo(f"stratrun: {exc}", err=True)
        sys.exit(1)
    if isinstance(reply, ErrorReply):
        click.echo(f"stratrun: {reply.message}", err=True)
        sys.exit(1)
    return reply


def _manager_pid(run_dir: RunDir) -> int:
    try:
        return int(json.loads(run_dir.state_file.read_text())["manager_pid"])
    except (OSError, ValueError, KeyError):
        return 0


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) has stopped."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@main.command()
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    metavar="ID",
    help="Only this strategy (repeat, or separate with commas, for several).",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Only this kind of event (repeat, or separate with commas): signal, order_filled, ...",
)
@click.option(
    "--since", metavar="T", help="From T on: ISO 8601 (UTC unless a zone is given) or 10m, 2h, 1d."
)
@click.option("--until", metavar="T", help="Before T (same forms as --since).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Only the N most recent matching events (still printed oldest first).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="table: one line per event; json: one object per line; csv: with a header.",
)
@click.pass_context
def events(
    ctx: click.Context,
    strategies: tuple[str, ...],
    kinds: tuple[str, ...],
    since: str | None,
    until: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """Print journaled events, oldest first (while the system runs or after it stopped)."""

    def split(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for value in values for v in value.split(",") if v))

    wanted_kinds = split(kinds)
    unknown = eq.validate_kinds(wanted_kinds)
    if unknown:
        click.echo(
            f"stratrun: unknown event kind {', '.join(map(repr, unknown))}; "
            f"valid kinds: {', '.join(eq.EVENT_KINDS)}",
            err=True,
        )
        sys.exit(2)
    now_ns = time.time_ns()
    try:
        since_ns = eq.parse_time(since, now_ns) if since is not None else None
        until_ns = eq.parse_time(until, now_ns) if until is not None else None
    except eq.TimeSpecError as exc:
        click.echo(f"stratrun: {exc}", err=True)
        sys.exit(2)
    if since_ns is not None and until_ns is not None and since_ns >= until_ns:
        click.echo(f"stratrun: --since {since} is not before --until {until}", err=True)
        sys.exit(2)
    query = eq.EventQuery(split(strategies), wanted_kinds, since_ns, until_ns, limit)
    path = _run_dir(ctx).journal
    try:
        records = eq.query_events(path, query)
        known = eq.strategy_ids(path) if fmt == "table" else []
        selected = [s for s in known if not query.strategies or s in query.strategies]
        shown = _print_events(records, fmt, selected)
    except eq.JournalMissing as exc:
        click.echo(f"stratrun: {exc} (has a system run with this --run-dir?)", err=True)
        sys.exit(1)
    except eq.JournalError as exc:
        click.echo(f"stratrun: {exc}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        # The reader (head, less) went away: stop quietly, as other Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if not shown and fmt == "table":
        missing = [s for s in query.strategies if s not in known]
        hint = f" (no strategy {', '.join(missing)}; there are: {', '.join(known)})"
        click.echo(f"stratrun: no matching events in {path}" + (hint if missing else ""), err=True)


def _print_events(records: Iterable[eq.JournalEvent], fmt: str, strategies: list[str]) -> int:
    """Write ``records`` to stdout as ``fmt``; returns how many were written.

    ``strategies`` (the ids that can appear) sets the width of the table's strategy column.
    """
    import csv

    out = sys.stdout
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("time_utc", "strategy_id", "seq", "ts_ns", "kind", "body"))
        for r in records:
            iso = eq.format_utc(r.ts_ns).replace(" ", "T") + "Z"
            writer.writerow((iso, r.strategy_id, r.seq, r.ts_ns, r.kind, r.body_json))
            count += 1
    elif fmt == "json":
        for r in records:
            # The body is stored as compact JSON already: it goes out as it is, not re-encoded.
            out.write(
                f'{{"strategy_id":{json.dumps(r.strategy_id)},"seq":{r.seq},"ts_ns":{r.ts_ns},'
                f'"kind":{json.dumps(r.kind)},"body":{r.body_json}}}\n'
            )
            count += 1
    else:
        width = max([len("STRATEGY"), *map(len, strategies)])
        kind_width = max(map(len, eq.EVENT_KINDS))
        for r in records:
            if not count:
                out.write(
                    f"{'TIME_UTC':<23}  {'STRATEGY':<{width}}  {'SEQ':>7}  "
                    f"{'KIND':<{kind_width}}  SUMMARY\n"
                )
            out.write(
                f"{eq.format_utc(r.ts_ns)}  {r.strategy_id:<{width}}  {r.seq:>7}  "
                f"{r.kind:<{kind_width}}  {r.summary()}\n"
            )
            count += 1
    out.flush()
    return count


main.add_command(backtest)
main.add_command(account)
