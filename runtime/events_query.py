"""Reading the event journal for ``stratrun events``: filters, time specs, one-line summaries.

The journal is opened read-only (``file:...?mode=ro``), so this works while the aggregator
writes to it (WAL readers do not block the writer) and after the system stopped. Filters are
SQL parameters; the strategy and kind filters use the journal's ``(strategy_id, kind)`` index.
A time filter alone can use the ``ts_ns`` index (``events_by_time``); with both kinds of
filter SQLite picks one of the two indexes and checks the other condition row by row.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import msgspec

from runtime.messages import (
    EVENT_BODY_JSON_DECODER,
    AccountUpdated,
    Error,
    EventBody,
    Heartbeat,
    Log,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    Signal,
    Stats,
)

__all__ = [
    "EVENT_KINDS",
    "EventQuery",
    "JournalError",
    "JournalEvent",
    "JournalMissing",
    "TimeSpecError",
    "format_utc",
    "parse_time",
    "query_events",
    "strategy_ids",
    "summarize",
    "validate_kinds",
]

# Every ``kind`` an event body can have: the tags of the EventBody union, in its order.
EVENT_KINDS: tuple[str, ...] = tuple(
    str(body_type.__struct_config__.tag) for body_type in get_args(EventBody)
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 604800 * 10**9}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SUMMARY_MAX = 160
# Distinct strategy ids by skipping through the unique (strategy_id, seq) index: one index
# search per strategy instead of a scan of every event.
_STRATEGY_IDS_CTE = (
    "WITH RECURSIVE sids(sid) AS ("
    "SELECT MIN(strategy_id) FROM events UNION ALL "
    "SELECT (SELECT MIN(strategy_id) FROM events WHERE strategy_id > sid) "
    "FROM sids WHERE sid IS NOT NULL) "
)


class JournalError(Exception):
    """The journal cannot be read (not a SQLite file, no events table, locked...)."""


class JournalMissing(JournalError):
    """There is no journal file where one was expected."""


class TimeSpecError(ValueError):
    """A time given on the command line is neither ISO 8601 nor relative (``10m``)."""


def parse_time(text: str, now_ns: int | None = None) -> int:
    """``text`` as nanoseconds since the epoch.

    Accepts ISO 8601 (``2026-11-25``, ``2026-11-25T10:00``, ``...Z``, ``...+02:00``; UTC when
    no zone is given), a relative time ago (``30s``, ``10m``, ``2h``, ``1d``, ``1w``,
    decimals allowed) or ``now``.
    """
    spec = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    if spec.lower() == "now":
        return now
    relative = _RELATIVE.fullmatch(spec)
    if relative:
        amount, unit = relative.groups()
        return now - round(float(amount) * _UNIT_NS[unit])
    try:
        when = datetime.fromisoformat(spec)
    except ValueError:
        raise TimeSpecError(
            f"{text!r} is not a time: use ISO 8601 (2026-11-25T10:00, UTC unless a zone is "
            "given) or an age such as 30s, 10m, 2h, 1d"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def format_utc(ts_ns: int) -> str:
    """``ts_ns`` as ``YYYY-MM-DD HH:MM:SS.mmm`` in UTC."""
    when = _EPOCH + timedelta(microseconds=ts_ns // 1000)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


@dataclass(frozen=True, slots=True)
class EventQuery:
    """What to select: empty tuples select all; ``since_ns`` inclusive, ``until_ns`` exclusive.

    ``limit`` keeps the most recent matching events (still returned oldest first).
    """

    strategies: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    limit: int | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """The SELECT statement and its parameters."""
        where: list[str] = []
        params: list[Any] = []
        prefix = ""
        if self.strategies:
            where.append(f"strategy_id IN ({', '.join('?' * len(self.strategies))})")
            params.extend(self.strategies)
        elif self.kinds:
            # Naming every strategy lets SQLite search the (strategy_id, kind) index.
            prefix = _STRATEGY_IDS_CTE
            where.append("strategy_id IN (SELECT sid FROM sids WHERE sid IS NOT NULL)")
        if self.kinds:
            where.append(f"kind IN ({', '.join('?' * len(self.kinds))})")
            params.extend(self.kinds)
        if self.since_ns is not None:
            where.append("ts_ns >= ?")
            params.append(self.since_ns)
        if self.until_ns is not None:
            where.append("ts_ns < ?")
            params.append(self.until_ns)
        select = "SELECT id, strategy_id, seq, ts_ns, kind, body FROM events"
        if where:
            select += " WHERE " + " AND ".join(where)
        if self.limit is None:
            return f"{prefix}{select} ORDER BY ts_ns, id", params
        params.append(self.limit)
        latest = f"{select} ORDER BY ts_ns DESC, id DESC LIMIT ?"
        return f"{prefix}SELECT * FROM ({latest}) ORDER BY ts_ns, id", params


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One journaled event; ``body_json`` is the body exactly as stored."""

    strategy_id: str
    seq: int
    ts_ns: int
    kind: str
    body_json: str

    def summary(self) -> str:
        """One line saying what happened (see :func:`summarize`)."""
        return summarize(self.body_json)


def _connect(path: Path) -> sqlite3.Connection:
    """A read-only connection to the journal at ``path``, checked to hold an events table."""
    if not path.is_file():
        raise JournalMissing(f"no journal at {path}")
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        db.execute("SELECT 1 FROM events LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise JournalError(f"cannot read the journal {path}: {exc}") from None
    return db


def query_events(path: Path, query: EventQuery) -> Iterator[JournalEvent]:
    """The events of the journal at ``path`` that ``query`` selects, oldest first.

    The journal is opened (and a missing or unreadable one reported) before this returns;
    rows are then streamed, so a large journal is never held in memory at once.
    """
    db = _connect(path)
    return _rows(db, path, query)


def _rows(db: sqlite3.Connection, path: Path, query: EventQuery) -> Iterator[JournalEvent]:
    """Stream the rows of ``query``; closes ``db`` when done (or dropped)."""
    try:
        sql, params = query.sql()
        try:
            for _row_id, strategy_id, seq, ts_ns, kind, body in db.execute(sql, params):
                yield JournalEvent(strategy_id, seq, ts_ns, kind, body)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {path}: {exc}") from None
    finally:
        db.close()


def strategy_ids(path: Path) -> list[str]:
    """Every strategy id in the journal, sorted (read from the index, not the table)."""
    db = _connect(path)
    try:
        rows = db.execute(_STRATEGY_IDS_CTE + "SELECT sid FROM sids WHERE sid IS NOT NULL")
        return [sid for (sid,) in rows]
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {exc}") from None
    finally:
        db.close()


def _num(value: float) -> str:
    return f"{value:.6g}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _describe(body: EventBody) -> str:
    """The words for one typed body."""
    match body:
        case Signal():
            text = f"{body.direction} {body.symbol} {body.timeframe} strength {_num(body.strength)}"
            return text + (f" ({body.reason})" if body.reason else "")
        case OrderSubmitted():
            text = f"order {body.order_id}: {body.side} {_num(body.quantity)} {body.symbol}"
            return text + (f" ({body.reason})" if body.reason else "")
        case OrderFilled():
            return (
                f"{body.side} {_num(body.quantity)} {body.symbol} @ {_num(body.price)} "
                f"fee {body.fee:.3g}"
            )
        case OrderRejected():
            return (
                f"rejected {body.side} {_num(body.quantity)} {body.symbol}: "
                f"{_first_line(body.reason)}"
            )
        case PositionOpened():
            return (
                f"opened {body.side} {_num(body.quantity)} {body.symbol} "
                f"@ {_num(body.entry_price)} fee {body.entry_fee:.3g}"
            )
        case PositionClosed():
            text = (
                f"closed {body.side} {body.symbol} {_num(body.entry_price)} -> "
                f"{_num(body.exit_price)} pnl {body.realized_pnl:+.4g}"
            )
            return text + (f" ({body.reason})" if body.reason else "")
        case Log():
            where = f" {body.logger}" if body.logger else ""
            return f"{body.level}{where}: {_first_line(body.message)}"
        case Error():
            return f"{body.where}: {_first_line(body.message)}"
        case Stats():
            text = f"{body.candles} candle" + ("" if body.candles == 1 else "s")
            if body.frames_rejected:
                text += f", {body.frames_rejected} frames rejected"
            if body.rss_bytes:
                text += f", rss {body.rss_bytes / 2**20:.1f} MiB"
            return text
        case Heartbeat():
            return f"pid {body.pid}, up {body.uptime_s:.0f}s"
        case AccountUpdated():
            return (
                f"{body.reason}: equity {body.equity:.10g} cash {body.cash:.10g} "
                f"realized {body.realized_pnl:+.4g} unrealized {body.unrealized_pnl:+.4g} "
                f"fees {body.fees:.4g} trades {body.trades}"
            )
    return ""  # pragma: no cover - the match above covers every EventBody


def summarize(body_json: str) -> str:
    """One short line for an event body as journaled, e.g. ``buy 1 ETH-BTC @ 0.0962 fee 1e-04``.

    A body this version cannot decode (written by a newer one) is shown as its JSON.
    """
    try:
        text = _describe(EVENT_BODY_JSON_DECODER.decode(body_json))
    except msgspec.DecodeError:
        text = " ".join(body_json.split())
    if len(text) > _SUMMARY_MAX:
        text = text[: _SUMMARY_MAX - 1] + "…"
    return text


def validate_kinds(kinds: Sequence[str]) -> list[str]:
    """The kinds in ``kinds`` that no event can have."""
    return [k for k in kinds if k not in EVENT_KINDS]
