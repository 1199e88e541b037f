"""``stratrun account``: the strategies' sub-accounts read back from the journal.

Each strategy's figures are its last ``account`` event (the latest point of its ledger's
curve, see workers/services/ledger.py); the total row adds them up in strategy-id order, as
the ``stratrun_portfolio_*`` metrics do. ``--curve`` prints every point of one strategy.
The journal is opened read-only: this works while the system runs and after it stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import click
import msgspec

from runtime.account_metrics import portfolio_sums
from runtime.events_query import JournalError, JournalMissing, format_utc
from runtime.messages import EVENT_BODY_JSON_DECODER, AccountUpdated
from runtime.rundir import DEFAULT_RUN_DIR, RunDir

__all__ = ["account", "account_curve", "last_accounts"]

_LAST = (
    "SELECT body FROM events WHERE strategy_id = ? AND kind = 'account' ORDER BY seq DESC LIMIT 1"
)
_IDS = "SELECT DISTINCT strategy_id FROM events WHERE kind = 'account' ORDER BY strategy_id"
_CURVE = "SELECT ts_ns, body FROM events WHERE strategy_id = ? AND kind = 'account' ORDER BY seq"


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise JournalMissing(f"no journal at {path}")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from None


def _decode(body: str) -> AccountUpdated | None:
    try:
        decoded = EVENT_BODY_JSON_DECODER.decode(body)
    except msgspec.DecodeError:
        return None  # written by a newer version
    return decoded if isinstance(decoded, AccountUpdated) else None


def last_accounts(path: Path, strategies: Sequence[str] = ()) -> dict[str, AccountUpdated]:
    """Each strategy's last account point (every strategy with one, or only ``strategies``)."""
    db = _connect(path)
    try:
        ids = list(strategies) or [sid for (sid,) in db.execute(_IDS)]
        found = {}
        for sid in ids:
            row = db.execute(_LAST, (sid,)).fetchone()
            if row is not None and (point := _decode(row[0])) is not None:
                found[sid] = point
        return found
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from None
    finally:
        db.close()


def account_curve(path: Path, strategy_id: str) -> list[tuple[int, AccountUpdated]]:
    """Every account point of one strategy with its event time, oldest first."""
    db = _connect(path)
    try:
        rows = db.execute(_CURVE, (strategy_id,)).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from None
    finally:
        db.close()
    return [(ts, point) for ts, body in rows if (point := _decode(body)) is not None]


def _amount(value: float) -> str:
    return f"{value:.10g}"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(x) for x in col) for col in zip(*rows, strict=True)]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        click.echo("  ".join(cells).rstrip())


@click.command()
@click.argument("strategy_ids", nargs=-1, metavar="[ID]...")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per strategy, then the total."
)
@click.option("--curve", is_flag=True, help="Every point of one strategy's curve (one ID).")
@click.pass_context
def account(ctx: click.Context, strategy_ids: tuple[str, ...], as_json: bool, curve: bool) -> None:
    """Each strategy's sub-account (capital, cash, PnL, fees, equity) and the total."""
    obj = ctx.obj or {}
    path = RunDir.at(obj.get("run_dir") or DEFAULT_RUN_DIR).journal
    if curve and len(strategy_ids) != 1:
        click.echo("stratrun: --curve takes exactly one strategy ID", err=True)
        raise SystemExit(2)
    try:
        if curve:
            _print_curve(account_curve(path, strategy_ids[0]), strategy_ids[0], as_json)
            return
        accounts = last_accounts(path, strategy_ids)
    except JournalMissing as exc:
        click.echo(f"stratrun: {exc} (has a system run with this --run-dir?)", err=True)
        raise SystemExit(1) from None
    except JournalError as exc:
        click.echo(f"stratrun: {exc}", err=True)
        raise SystemExit(1) from None
    missing = [sid for sid in strategy_ids if sid not in accounts]
    if missing:
        click.echo(f"stratrun: no account for {', '.join(missing)} in {path}", err=True)
        raise SystemExit(1)
    if not accounts:
        click.echo(f"stratrun: no account in {path}", err=True)
        raise SystemExit(1)
    total = portfolio_sums(accounts)
    if as_json:
        for sid in sorted(accounts):
            fields = msgspec.to_builtins(accounts[sid])
            click.echo(msgspec.json.encode({"strategy_id": sid, **fields}).decode())
        click.echo(msgspec.json.encode({"strategy_id": "TOTAL", **total}).decode())
        return
    rows: list[tuple[str, ...]] = [
        (
            "STRATEGY",
            "CAPITAL",
            "CASH",
            "EXPOSURE",
            "REALIZED_PNL",
            "UNREALIZED_PNL",
            "FEES",
            "EQUITY",
            "MAX_DD",
            "TRADES",
        )
    ]
    for sid in sorted(accounts):
        a = accounts[sid]
        rows.append(
            (
                sid,
                *map(_amount, (a.capital, a.cash, a.exposure)),
                *(f"{v:+.6g}" for v in (a.realized_pnl, a.unrealized_pnl)),
                *map(_amount, (a.fees, a.equity, a.max_drawdown)),
                str(a.trades),
            )
        )
    rows.append(
        (
            "TOTAL",
            *map(_amount, (total["capital"], total["cash"], total["exposure"])),
            *(f"{total[k]:+.6g}" for k in ("realized_pnl", "unrealized_pnl")),
            *map(_amount, (total["fees"], total["equity"])),
            "-",
            str(int(total["trades"])),
        )
    )
    _table(rows)


def _print_curve(points: list[tuple[int, AccountUpdated]], sid: str, as_json: bool) -> None:
    if not points:
        click.echo(f"stratrun: no account points of {sid}", err=True)
        raise SystemExit(1)
    if as_json:
        for ts_ns, point in points:
            fields = msgspec.to_builtins(point)
            click.echo(msgspec.json.encode({"ts_ns": ts_ns, **fields}).decode())
        return
    rows: list[tuple[str, ...]] = [("CANDLE_UTC", "REASON", "EQUITY", "CASH", "DRAWDOWN", "TRADES")]
    for _, p in points:
        when = format_utc(p.at * 1_000_000)[:16] if p.at else "-"
        drawdown = p.peak_equity - p.equity
        rows.append(
            (when, p.reason, _amount(p.equity), _amount(p.cash), _amount(drawdown), str(p.trades))
        )
    _table(rows)
