"""The event journal: one SQLite file (WAL), each event once, unique on (strategy_id, seq).

Synchronous mode is FULL: an acknowledgement is only sent after a commit, and FULL makes that
commit survive a power cut as well as a process crash. Commits are batched, so the fsync
is paid once per batch, not once per event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from runtime.messages import EVENT_BODY_JSON_DECODER, EVENT_BODY_JSON_ENCODER, Event

__all__ = ["Journal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    strategy_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    ts_ns       INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    UNIQUE (strategy_id, seq)
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (strategy_id, kind);
CREATE INDEX IF NOT EXISTS events_by_time ON events (ts_ns);
"""


class Journal:
    """Append-only store of events; :meth:`append` ignores an event it already holds."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def append(self, events: Sequence[Event]) -> list[Event]:
        """Write ``events`` in one transaction; returns those that were not already there."""
        inserted: list[Event] = []
        if not events:
            return inserted
        db = self._db
        db.execute("BEGIN")
        try:
            for event in events:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO events (strategy_id, seq, ts_ns, kind, body) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        event.strategy_id,
                        event.seq,
                        event.ts_ns,
                        type(event.body).__struct_config__.tag,
                        EVENT_BODY_JSON_ENCODER.encode(event.body).decode(),
                    ),
                )
                if cursor.rowcount == 1:
                    inserted.append(event)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return inserted

    def events(self, after_id: int = 0) -> Iterator[tuple[int, Event]]:
        """Every event with row id above ``after_id``, in insertion order, with its row id."""
        cursor = self._db.execute(
            "SELECT id, strategy_id, seq, ts_ns, body FROM events WHERE id > ? ORDER BY id",
            (after_id,),
        )
        for row_id, strategy_id, seq, ts_ns, body in cursor:
            yield row_id, Event(strategy_id, seq, ts_ns, EVENT_BODY_JSON_DECODER.decode(body))

    def close(self) -> None:
        self._db.close()
