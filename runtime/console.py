"""What ``stratrun up`` prints while it runs: trades as the journal records them."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from runtime.messages import EVENT_BODY_JSON_DECODER, OrderFilled, PositionClosed

__all__ = ["TradeTail"]

_INTERVAL_S = 0.5


class TradeTail:
    """Reads new fills and closed positions from the journal (read-only) and prints them."""

    def __init__(self, journal: Path, out: TextIO) -> None:
        self._journal = journal
        self._out = out
        self._db: sqlite3.Connection | None = None
        self._after = _last_id(journal)  # what an earlier run journaled is not news
        self._next_at = 0.0

    def poll(self, now: float) -> None:
        """Print what is new, at most every half second."""
        if now < self._next_at:
            return
        self._next_at = now + _INTERVAL_S
        if self._db is None:
            if not self._journal.exists():
                return
            self._db = sqlite3.connect(f"file:{self._journal}?mode=ro", uri=True)
        try:
            rows = self._db.execute(
                "SELECT id, strategy_id, body FROM events WHERE id > ? "
                "AND kind IN ('order_filled', 'position_closed') ORDER BY id LIMIT 200",
                (self._after,),
            ).fetchall()
        except sqlite3.OperationalError:
            return  # the aggregator has not made the table yet
        for row_id, sid, body in rows:
            self._after = row_id
            self._print(sid, EVENT_BODY_JSON_DECODER.decode(body))

    def _print(self, sid: str, body: object) -> None:
        match body:
            case OrderFilled():
                when = datetime.fromtimestamp(body.fill_time / 1000, UTC).strftime("%Y-%m-%d %H:%M")
                line = (
                    f"  {sid:<12} {when}  {body.side:<4} {body.quantity:g} {body.symbol} "
                    f"@ {body.price:.8g}"
                )
            case PositionClosed():
                line = (
                    f"  {sid:<12} closed {body.side} {body.symbol}: "
                    f"{body.entry_price:.8g} -> {body.exit_price:.8g}, pnl {body.realized_pnl:+.6g}"
                )
            case _:
                return
        try:
            print(line, file=self._out, flush=True)
        except (BrokenPipeError, ValueError):
            pass  # nobody reads the console any more; supervision must go on

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def _last_id(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT MAX(id) FROM events").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)
