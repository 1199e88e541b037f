"""``stratrun events``: filters, time specs and formats on a journal built in the test."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runtime.events_query import EVENT_KINDS, EventQuery, TimeSpecError, parse_time, summarize
from runtime.journal import Journal
from runtime.messages import (
    EVENT_BODY_JSON_ENCODER,
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
from tests.harness import REPO

MIN_NS = 60 * 10**9
HOUR_NS = 60 * MIN_NS


def _iso_ns(text: str) -> int:
    """An ISO time with zone as ns since the epoch (independent of the code under test)."""
    return int(datetime.fromisoformat(text).timestamp()) * 10**9


FILL = OrderFilled("a-1", "ETH-BTC", "buy", 1.0, 0.0962, 0.0000962, 1515560400000)
CLOSE = PositionClosed(
    "ETH-BTC", "long", 1.0, 0.0962, 0.0988, 0.000195, 0.0026, 1, 2, "take_profit"
)


@dataclass(frozen=True)
class Journaled:
    """The journal the tests read and the events it holds, oldest first."""

    run_dir: Path
    events: list[Event]
    now_ns: int

    def select(self, strategy: str | None = None, kind: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if (strategy is None or e.strategy_id == strategy)
            and (kind is None or _kind(e.body) == kind)
        ]


def _kind(body: EventBody) -> str:
    return str(type(body).__struct_config__.tag)


def _events(now_ns: int) -> list[Event]:
    """Two strategies: four events on 2020-01-02 (UTC), three 3 h ago, four 10 min ago."""
    day = _iso_ns("2020-01-02T10:00:00+00:00")
    long_ago = now_ns - 3 * HOUR_NS
    recent = now_ns - 10 * MIN_NS
    return [
        Event("alpha", 1, day, Signal("ETH-BTC", "5m", "long", 0.7, "cross")),
        Event("beta_longer_id", 1, day + 15 * MIN_NS, Stats(17, 0, 50 * 2**20)),
        Event("alpha", 2, day + 30 * MIN_NS, OrderSubmitted("a-1", "ETH-BTC", "buy", 1.0, "x")),
        Event("alpha", 3, day + 2 * HOUR_NS, FILL),
        Event("alpha", 4, long_ago, PositionOpened("ETH-BTC", "long", 1.0, 0.0962, 9.6e-05, 1)),
        Event("beta_longer_id", 2, long_ago + 10**9, Heartbeat(4242, 12.0)),
        Event("beta_longer_id", 3, long_ago + 2 * 10**9, Log("warning", "slow\nsecond line")),
        Event("alpha", 5, recent, CLOSE),
        Event("beta_longer_id", 4, recent + 10**9, FILL),
        Event("alpha", 6, recent + 2 * 10**9, Stats(3)),
        Event("beta_longer_id", 5, recent + 3 * 10**9, CLOSE),
    ]


@pytest.fixture(scope="module")
def journaled(tmp_path_factory: pytest.TempPathFactory) -> Journaled:
    """A stopped system's journal: written, then closed."""
    run_dir = tmp_path_factory.mktemp("events") / "run"
    run_dir.mkdir()
    now_ns = time.time_ns()
    events = _events(now_ns)
    journal = Journal(run_dir / "journal.sqlite")
    # Journaled in an order other than time order: the output is by time all the same.
    assert len(journal.append(events[4:] + events[:4])) == len(events)
    journal.close()
    return Journaled(run_dir, events, now_ns)


def stratrun(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``stratrun --run-dir RUN_DIR ARGS`` as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(run_dir), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_json(run_dir: Path, *args: str) -> list[dict[str, Any]]:
    """The events ``stratrun events --format json ARGS`` prints, one object per line."""
    done = stratrun(run_dir, "events", "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [json.loads(line) for line in done.stdout.splitlines()]


def expected(events: list[Event]) -> list[dict[str, Any]]:
    """The JSON objects the events should print as."""
    return [
        {
            "strategy_id": e.strategy_id,
            "seq": e.seq,
            "ts_ns": e.ts_ns,
            "kind": _kind(e.body),
            "body": json.loads(EVENT_BODY_JSON_ENCODER.encode(e.body)),
        }
        for e in events
    ]


def keys(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["strategy_id"], r["seq"]) for r in rows]


def test_json_prints_every_event_oldest_first(journaled: Journaled) -> None:
    rows = as_json(journaled.run_dir)
    assert rows == expected(journaled.events)
    assert rows[3]["body"] == {
        "kind": "order_filled",
        "order_id": "a-1",
        "symbol": "ETH-BTC",
        "side": "buy",
        "quantity": 1.0,
        "price": 0.0962,
        "fee": 0.0000962,
        "fill_time": 1515560400000,
    }


def test_strategy_filter(journaled: Journaled) -> None:
    assert as_json(journaled.run_dir, "--strategy", "alpha") == expected(journaled.select("alpha"))
    assert as_json(journaled.run_dir, "--strategy", "beta_longer_id") == expected(
        journaled.select("beta_longer_id")
    )
    both = expected(journaled.events)
    assert as_json(journaled.run_dir, "--strategy", "alpha", "--strategy", "beta_longer_id") == both
    assert as_json(journaled.run_dir, "--strategy", "alpha,beta_longer_id") == both
    assert as_json(journaled.run_dir, "--strategy", "nobody") == []


def test_kind_filter(journaled: Journaled) -> None:
    fills = as_json(journaled.run_dir, "--kind", "order_filled")
    assert keys(fills) == [("alpha", 3), ("beta_longer_id", 4)]
    both = as_json(journaled.run_dir, "--kind", "order_filled", "--kind", "position_closed")
    assert keys(both) == [("alpha", 3), ("alpha", 5), ("beta_longer_id", 4), ("beta_longer_id", 5)]
    assert as_json(journaled.run_dir, "--kind", "order_filled,position_closed") == both
    combined = as_json(journaled.run_dir, "--kind", "stats", "--strategy", "alpha")
    assert keys(combined) == [("alpha", 6)]


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        # No zone means UTC; `since` is inclusive, `until` exclusive.
        (("--since", "2020-01-02T10:30", "--until", "2020-01-03"), [("alpha", 2), ("alpha", 3)]),
        (
            ("--since", "2020-01-02T10:30:00Z", "--until", "2020-01-03"),
            [("alpha", 2), ("alpha", 3)],
        ),
        (
            ("--since", "2020-01-02T12:30+02:00", "--until", "2020-01-03"),
            [("alpha", 2), ("alpha", 3)],
        ),
        (("--until", "2020-01-02T10:15"), [("alpha", 1)]),
        (
            ("--until", "2020-01-03"),
            [("alpha", 1), ("beta_longer_id", 1), ("alpha", 2), ("alpha", 3)],
        ),
        (
            ("--since", "2020-01-02", "--until", "2020-01-02T10:30"),
            [("alpha", 1), ("beta_longer_id", 1)],
        ),
    ],
)
def test_absolute_times(journaled: Journaled, args: tuple[str, ...], wanted: list[Any]) -> None:
    assert keys(as_json(journaled.run_dir, *args)) == wanted


def test_relative_times(journaled: Journaled) -> None:
    recent = [("alpha", 5), ("beta_longer_id", 4), ("alpha", 6), ("beta_longer_id", 5)]
    three_h = [("alpha", 4), ("beta_longer_id", 2), ("beta_longer_id", 3)]
    old = [("alpha", 1), ("beta_longer_id", 1), ("alpha", 2), ("alpha", 3)]
    # Events sit 10 minutes and 3 hours ago: each bound is at least 20 minutes from them.
    assert keys(as_json(journaled.run_dir, "--since", "1h")) == recent
    assert keys(as_json(journaled.run_dir, "--since", "30m")) == recent
    assert keys(as_json(journaled.run_dir, "--since", "4h")) == three_h + recent
    assert keys(as_json(journaled.run_dir, "--since", "1d")) == three_h + recent
    assert keys(as_json(journaled.run_dir, "--until", "1h")) == old + three_h
    assert keys(as_json(journaled.run_dir, "--since", "4h", "--until", "2h")) == three_h
    assert keys(as_json(journaled.run_dir, "--since", "0.5h", "--until", "now")) == recent
    assert as_json(journaled.run_dir, "--since", "5m") == []


def test_limit_keeps_the_most_recent(journaled: Journaled) -> None:
    assert keys(as_json(journaled.run_dir, "--limit", "2")) == [("alpha", 6), ("beta_longer_id", 5)]
    assert keys(as_json(journaled.run_dir, "--limit", "3", "--strategy", "alpha")) == [
        ("alpha", 4),
        ("alpha", 5),
        ("alpha", 6),
    ]
    assert keys(as_json(journaled.run_dir, "--limit", "1", "--kind", "order_filled")) == [
        ("beta_longer_id", 4)
    ]
    assert keys(as_json(journaled.run_dir, "--limit", "1", "--until", "2020-01-03")) == [
        ("alpha", 3)
    ]
    assert len(as_json(journaled.run_dir, "--limit", "1000")) == len(journaled.events)


def test_table_format(journaled: Journaled) -> None:
    done = stratrun(journaled.run_dir, "events")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 + len(journaled.events)
    assert lines[0].split() == ["TIME_UTC", "STRATEGY", "SEQ", "KIND", "SUMMARY"]
    assert lines[1].split(None, 5) == [
        "2020-01-02",
        "10:00:00.000",
        "alpha",
        "1",
        "signal",
        "long ETH-BTC 5m strength 0.7 (cross)",
    ]
    assert lines[4].split(None, 5)[1:] == [
        "12:00:00.000",
        "alpha",
        "3",
        "order_filled",
        "buy 1 ETH-BTC @ 0.0962 fee 9.62e-05",
    ]
    # Columns line up, whatever the strategy id's length.
    summary_at = lines[0].index("SUMMARY")
    assert all(len(line) > summary_at and line[summary_at - 1] == " " for line in lines[1:])
    by_key = {(ln.split()[2], ln.split()[3]): ln[summary_at:] for ln in lines[1:]}
    assert (
        by_key[("alpha", "5")] == "closed long ETH-BTC 0.0962 -> 0.0988 pnl +0.0026 (take_profit)"
    )
    assert by_key[("beta_longer_id", "1")] == "17 candles, rss 50.0 MiB"
    assert by_key[("beta_longer_id", "2")] == "pid 4242, up 12s"
    assert by_key[("beta_longer_id", "3")] == "warning: slow"  # one line of a multi-line message
    assert by_key[("alpha", "4")] == "opened long 1 ETH-BTC @ 0.0962 fee 9.6e-05"
    assert by_key[("alpha", "2")] == "order a-1: buy 1 ETH-BTC (x)"
    # The wall-clock time of a recent event, in UTC to the millisecond.
    recent = journaled.events[7]
    when = datetime.fromtimestamp(recent.ts_ns // 10**6 / 1000, UTC)
    assert f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d}  alpha" in done.stdout


def test_table_with_no_match_says_so(journaled: Journaled) -> None:
    done = stratrun(journaled.run_dir, "events", "--strategy", "nobody")
    assert done.returncode == 0
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "no matching events" in done.stderr and "alpha, beta_longer_id" in done.stderr


def test_csv_format(journaled: Journaled) -> None:
    done = stratrun(journaled.run_dir, "events", "--format", "csv", "--strategy", "beta_longer_id")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["time_utc", "strategy_id", "seq", "ts_ns", "kind", "body"]
    want = expected(journaled.select("beta_longer_id"))
    assert [
        {
            "strategy_id": r["strategy_id"],
            "seq": int(r["seq"]),
            "ts_ns": int(r["ts_ns"]),
            "kind": r["kind"],
            "body": json.loads(r["body"]),
        }
        for r in rows
    ] == want
    assert rows[0]["time_utc"] == "2020-01-02T10:15:00.000Z"
    # A body with a newline and commas survives the CSV quoting.
    assert json.loads(rows[2]["body"])["message"] == "slow\nsecond line"


def test_unknown_kind_exits_2_listing_the_valid_ones(journaled: Journaled) -> None:
    done = stratrun(journaled.run_dir, "events", "--kind", "order_filled", "--kind", "fill")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "'fill'" in done.stderr
    for kind in EVENT_KINDS:
        assert kind in done.stderr
    assert set(EVENT_KINDS) == {
        "signal",
        "order_submitted",
        "order_filled",
        "order_rejected",
        "position_opened",
        "position_closed",
        "log",
        "error",
        "stats",
        "heartbeat",
        "feed",
        "account",
    }


@pytest.mark.parametrize("spec", ["yesterday", "10x", "2026-13-01", "-5m"])
def test_bad_time_exits_2(journaled: Journaled, spec: str) -> None:
    done = stratrun(journaled.run_dir, "events", "--since", spec)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is not a time" in done.stderr, done.stderr


def test_since_after_until_exits_2(journaled: Journaled) -> None:
    done = stratrun(journaled.run_dir, "events", "--since", "1h", "--until", "2h")
    assert done.returncode == 2 and "not before" in done.stderr


def test_no_journal_exits_1(tmp_path: Path) -> None:
    for fmt in ("table", "json", "csv"):
        done = stratrun(tmp_path / "nothing-here", "events", "--format", fmt)
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1
        assert f"no journal at {tmp_path / 'nothing-here' / 'journal.sqlite'}" in done.stderr


def test_not_a_journal_exits_1(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite").write_text("not sqlite at all, just text\n" * 100)
    done = stratrun(tmp_path, "events")
    assert done.returncode == 1
    assert (
        done.stderr.startswith("stratrun: cannot read the journal") and done.stderr.count("\n") == 1
    )


@pytest.fixture
def live_journal(tmp_path: Path) -> Iterator[Journal]:
    """A journal held open by a writer, as the aggregator of a running system holds it."""
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        yield journal
    finally:
        journal.close()


def test_reads_while_a_writer_has_the_journal_open(tmp_path: Path, live_journal: Journal) -> None:
    now = time.time_ns()
    live_journal.append([Event("live", 1, now, FILL)])
    assert keys(as_json(tmp_path)) == [("live", 1)]
    live_journal.append([Event("live", 2, now + 1, CLOSE)])
    assert keys(as_json(tmp_path, "--kind", "position_closed")) == [("live", 2)]
    # Reading never wrote: the writer goes on appending.
    assert live_journal.append([Event("live", 3, now + 2, Stats(1))])
    assert len(as_json(tmp_path)) == 3


def test_parse_time_forms() -> None:
    now = 1_800_000_000 * 10**9
    assert parse_time("10m", now) == now - 10 * MIN_NS
    assert parse_time("2h", now) == now - 2 * HOUR_NS
    assert parse_time("1d", now) == now - 24 * HOUR_NS
    assert parse_time("1.5h", now) == now - 90 * MIN_NS
    assert parse_time("now", now) == now
    assert parse_time("2026-11-25T10:00", now) == _iso_ns("2026-11-25T10:00:00+00:00")
    assert parse_time("2026-11-25T10:00Z", now) == _iso_ns("2026-11-25T10:00:00+00:00")
    assert parse_time("2026-11-25", now) == _iso_ns("2026-11-25T00:00:00+00:00")
    assert parse_time("2026-11-25T10:00:00.123456+01:00", now) == (
        _iso_ns("2026-11-25T09:00:00+00:00") + 123_456_000
    )
    with pytest.raises(TimeSpecError):
        parse_time("soon", now)


def test_summary_of_an_undecodable_body_is_its_json() -> None:
    assert summarize('{"kind": "future_kind", "x": 1}') == '{"kind": "future_kind", "x": 1}'


@pytest.mark.parametrize(
    "query",
    [
        EventQuery(strategies=("alpha",)),
        EventQuery(strategies=("alpha",), kinds=("stats",), since_ns=1, limit=5),
        EventQuery(kinds=("order_filled", "position_closed")),
        EventQuery(kinds=("stats",), until_ns=10**18, limit=1),
    ],
)
def test_filters_search_the_index(journaled: Journaled, query: EventQuery) -> None:
    db = sqlite3.connect(f"file:{journaled.run_dir / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        sql, params = query.sql()
        plan = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        db.close()
    assert "SEARCH events USING INDEX events_by_kind (strategy_id=?" in plan, plan
    assert "SCAN events " not in plan + " ", plan
