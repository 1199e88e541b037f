"""The event journal: one SQLite file (WAL), each event once, unique on (strategy_id, seq).

Write-ahead log, synchronous mode FULL. WAL alone makes a commit survive the death of the
process (SIGKILL mid-write leaves at most an uncommitted tail in the -wal file, which the
next open discards); FULL adds an fsync of the WAL at every commit, so a commit also
survives a power cut or a kernel crash. That matters because an acknowledgement is only
sent after a commit and the worker then forgets the event: NORMAL could lose acknowledged
events on power loss. Commits are batched, so the fsync is paid once per batch.
:func:`check` verifies a journal file (``stratrun journal check``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from runtime.messages import EVENT_BODY_JSON_DECODER, EVENT_BODY_JSON_ENCODER, Event, EventBatch

__all__ = ["Journal", "check", "summary"]

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
CREATE TABLE IF NOT EXISTS cursors (
    strategy_id TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    epoch       TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (strategy_id, stream)
);
CREATE TABLE IF NOT EXISTS settled (
    strategy_id TEXT    PRIMARY KEY,
    seq         INTEGER NOT NULL
);
"""

# A cursor only moves forward within one feed epoch; a new epoch replaces it.
_UPSERT_CURSOR = """
INSERT INTO cursors (strategy_id, stream, epoch, seq) VALUES (?, ?, ?, ?)
ON CONFLICT (strategy_id, stream) DO UPDATE SET
    seq = CASE WHEN epoch = excluded.epoch THEN max(seq, excluded.seq) ELSE excluded.seq END,
    epoch = excluded.epoch
"""


_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (strategy_id, seq, ts_ns, kind, body) VALUES (?, ?, ?, ?, ?)"
)
_encode_body = EVENT_BODY_JSON_ENCODER.encode
_KINDS: dict[type, str] = {}  # body type -> its tag


def _kind(event: Event) -> str:
    body_type = type(event.body)
    kind = _KINDS.get(body_type)
    if kind is None:
        kind = _KINDS[body_type] = str(body_type.__struct_config__.tag)
    return kind


class Journal:
    """Append-only store of events; :meth:`append` ignores an event it already holds."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def append(self, events: Sequence[Event], batches: Sequence[EventBatch] = ()) -> list[Event]:
        """Write ``events`` and the cursors of ``batches`` in one transaction; returns the
        events that were not already there."""
        if not events and not batches:
            return []
        kinds, encode = _KINDS, _encode_body
        rows = [
            (
                e.strategy_id,
                e.seq,
                e.ts_ns,
                kinds.get(type(e.body)) or _kind(e),
                encode(e.body).decode(),
            )
            for e in events
        ]
        db = self._db
        db.execute("BEGIN")
        try:
            # One statement for all: the usual case, where none of them is there yet.
            if db.executemany(_INSERT_EVENT, rows).rowcount == len(rows):
                inserted = list(events)
            else:  # some were (a resend): find out which, one by one
                db.execute("ROLLBACK")
                db.execute("BEGIN")
                inserted = [
                    e
                    for e, row in zip(events, rows, strict=True)
                    if db.execute(_INSERT_EVENT, row).rowcount == 1
                ]
            for batch in batches:
                if not batch.cursor:
                    continue
                db.execute(
                    "DELETE FROM cursors WHERE strategy_id = ? AND epoch != ?",
                    (batch.strategy_id, batch.epoch),
                )
                db.executemany(
                    _UPSERT_CURSOR,
                    [(batch.strategy_id, k, batch.epoch, v) for k, v in batch.cursor.items()],
                )
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

    def cursor(self, strategy_id: str) -> tuple[str, dict[str, int]]:
        """The feed epoch and per-stream seq the strategy had processed up to."""
        rows = self._db.execute(
            "SELECT epoch, stream, seq FROM cursors WHERE strategy_id = ? ORDER BY stream",
            (strategy_id,),
        ).fetchall()
        epoch = rows[0][0] if rows else ""
        return epoch, {stream: seq for e, stream, seq in rows if e == epoch}

    def events_by_strategy(self) -> Iterator[Event]:
        """Every event, strategy by strategy, each strategy's in seq order."""
        cursor = self._db.execute(
            "SELECT strategy_id, seq, ts_ns, body FROM events ORDER BY strategy_id, seq"
        )
        for strategy_id, seq, ts_ns, body in cursor:
            yield Event(strategy_id, seq, ts_ns, EVENT_BODY_JSON_DECODER.decode(body))

    def settle(self, strategy_id: str, seq: int) -> None:
        """Record that no event of the strategy up to ``seq`` missing now will ever come."""
        self._db.execute(
            "INSERT INTO settled (strategy_id, seq) VALUES (?, ?) ON CONFLICT (strategy_id) "
            "DO UPDATE SET seq = max(seq, excluded.seq)",
            (strategy_id, seq),
        )

    def settled(self) -> dict[str, int]:
        """Per strategy, the seq up to which missing events were given up (see settle)."""
        return dict(self._db.execute("SELECT strategy_id, seq FROM settled").fetchall())

    def close(self) -> None:
        self._db.close()


def check(path: str | Path) -> list[str]:
    """Problems of the journal at ``path``: SQLite integrity, then seq continuity (each
    strategy's events numbered 1, 2, 3, ... with none missing). Empty means sound.

    Opening it replays a committed WAL tail, as the aggregator would on start.
    """
    file = Path(path)
    if not file.is_file():
        return [f"{file}: no such journal"]
    problems: list[str] = []
    try:
        db = sqlite3.connect(f"file:{file}?mode=rw", uri=True)
    except sqlite3.Error as exc:
        return [f"{file}: cannot open: {exc}"]
    try:
        rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
        if rows != ["ok"]:
            return [f"{file}: integrity: {r}" for r in rows]
        cursor = db.execute("SELECT strategy_id, seq FROM events ORDER BY strategy_id, seq")
        last: dict[str, int] = {}
        for sid, seq in cursor:
            expected = last.get(sid, 0) + 1
            if seq != expected:
                gap = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
                problems.append(f"{file}: strategy {sid}: {gap} missing")
            last[sid] = seq
    except sqlite3.DatabaseError as exc:
        problems.append(f"{file}: {exc}")
    finally:
        db.close()
    return problems


def summary(path: str | Path) -> dict[str, int]:
    """Events per strategy (for the report of a sound journal)."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT strategy_id, COUNT(*) FROM events GROUP BY strategy_id"))
    finally:
        db.close()
