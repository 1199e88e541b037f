"""The SQLite event journal: dedupe on (strategy_id, seq), order, typed bodies, durability."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from runtime.journal import Journal
from runtime.messages import (
    Error,
    Event,
    EventBody,
    Heartbeat,
    Log,
    OrderFilled,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    Signal,
    Stats,
)

BODIES: list[EventBody] = [
    Signal("ETH-BTC", "5m", "long", 0.7, "cross"),
    OrderSubmitted("a-1", "ETH-BTC", "buy", 1.0, "cross"),
    OrderFilled("a-1", "ETH-BTC", "buy", 1.0, 0.0985, 0.0000985, 1515560400000),
    PositionOpened("ETH-BTC", "long", 1.0, 0.0985, 0.0000985, 1515560400000),
    PositionClosed("ETH-BTC", "long", 1.0, 0.0985, 0.099, 0.0002, 0.0003, 1, 2),
    Log("warning", "hm", "strategy.a"),
    Error("on_candle", "ValueError: x", "Traceback ..."),
    Stats(17, 1, 123),
    Heartbeat(99, 1.5),
]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def _events(strategy_id: str, seqs: range, start_body: int = 0) -> list[Event]:
    return [
        Event(strategy_id, seq, 1_000 + seq, BODIES[(start_body + i) % len(BODIES)])
        for i, seq in enumerate(seqs)
    ]


def test_append_returns_new_events(journal: Journal) -> None:
    events = _events("a", range(1, 4))
    assert journal.append(events) == events


def test_append_nothing(journal: Journal) -> None:
    assert journal.append([]) == []
    assert list(journal.events()) == []


def test_append_dedupes_on_strategy_and_seq(journal: Journal) -> None:
    first = _events("a", range(1, 4))
    journal.append(first)
    # A resend overlapping what is there: only seq 4 and 5 are new; the duplicate seq 3 with
    # a different body is still a duplicate (the key is (strategy_id, seq), not the content).
    resend = [*_events("a", range(2, 4), start_body=5), *_events("a", range(4, 6))]
    inserted = journal.append(resend)
    assert [(e.strategy_id, e.seq) for e in inserted] == [("a", 4), ("a", 5)]
    stored = [e for _, e in journal.events()]
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
    assert stored[:3] == first  # the originals were kept, not overwritten


def test_same_seq_of_another_strategy_is_not_a_duplicate(journal: Journal) -> None:
    journal.append(_events("a", range(1, 3)))
    inserted = journal.append(_events("b", range(1, 3)))
    assert [(e.strategy_id, e.seq) for e in inserted] == [("b", 1), ("b", 2)]
    assert len(list(journal.events())) == 4


def test_duplicates_within_one_batch(journal: Journal) -> None:
    event = _events("a", range(7, 8))[0]
    assert journal.append([event, event]) == [event]


def test_events_in_order_with_typed_bodies(journal: Journal) -> None:
    a = _events("a", range(1, len(BODIES) + 1))
    b = _events("b", range(1, 3), start_body=3)
    journal.append(a[:4])
    journal.append(b)
    journal.append(a[4:])
    rows = list(journal.events())
    ids = [row_id for row_id, _ in rows]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert [e for _, e in rows] == a[:4] + b + a[4:]
    for (_, event), original in zip(rows, a[:4] + b + a[4:], strict=True):
        assert type(event.body) is type(original.body)


def test_events_after_id(journal: Journal) -> None:
    journal.append(_events("a", range(1, 6)))
    rows = list(journal.events())
    after = list(journal.events(after_id=rows[1][0]))
    assert [e.seq for _, e in after] == [3, 4, 5]
    assert list(journal.events(after_id=rows[-1][0])) == []


def test_reopening_keeps_events(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    events = _events("a", range(1, len(BODIES) + 1))
    first = Journal(path)
    first.append(events)
    first.close()

    second = Journal(path)
    try:
        assert [e for _, e in second.events()] == events
        # Dedupe survives the reopen too.
        assert second.append(events[-2:]) == []
        more = _events("a", range(len(BODIES) + 1, len(BODIES) + 3))
        assert second.append(more) == more
        assert [e for _, e in second.events()] == events + more
    finally:
        second.close()


def test_kind_column_is_the_body_tag(journal: Journal) -> None:
    journal.append(_events("a", range(1, len(BODIES) + 1)))
    with closing(sqlite3.connect(journal.path)) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events ORDER BY id")]
        bodies = [b for (b,) in db.execute("SELECT json_extract(body, '$.kind') FROM events")]
    assert kinds == [type(b).__struct_config__.tag for b in BODIES]
    assert bodies == kinds
