"""The CSV reader and the replay schedule that merges streams."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.csv_source import CsvError, Row, read_candles
from broker.replay import Replay, Stream
from runtime.messages import Candle

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "crypto"
ETH = DATA / "ETH-BTC-5m.csv"
LTC = DATA / "LTC-BTC-5m.csv"
HEADER = "timestamp,open,high,low,close,volume\n"
FIVE_MINUTES_MS = 5 * 60 * 1000


@pytest.fixture(scope="module")
def eth_rows() -> list[Row]:
    return read_candles(ETH)


@pytest.fixture(scope="module")
def ltc_rows() -> list[Row]:
    return read_candles(LTC)


# --------------------------------------------------------------------------- read_candles


def test_real_file_reads_completely(eth_rows: list[Row]) -> None:
    assert len(eth_rows) == 5760
    assert all(a.open_time < b.open_time for a, b in itertools.pairwise(eth_rows))
    first = eth_rows[0]
    assert first.open_time == int(datetime(2018, 1, 10, 4, 55, tzinfo=UTC).timestamp() * 1000)
    assert first == Row(first.open_time, 0.0984, 0.0994766, 0.09828605, 0.0994766, 1820.54447418)
    assert all(r.low <= min(r.open, r.close) <= max(r.open, r.close) <= r.high for r in eth_rows)


def test_real_file_is_five_minute_spaced(eth_rows: list[Row]) -> None:
    gaps = {b.open_time - a.open_time for a, b in itertools.pairwise(eth_rows)}
    assert min(gaps) == FIVE_MINUTES_MS


def _csv(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "candles.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


GOOD = (
    "2018-01-10T04:55:00Z,1.0,2.0,0.5,1.5,10\n"
    "2018-01-10T05:00:00Z,1.5,1.6,1.4,1.4,0\n"
    "2018-01-10T05:05:00+00:00,1.4,1.4,1.4,1.4,3.5\n"
)


def test_small_good_file(tmp_path: Path) -> None:
    rows = read_candles(_csv(tmp_path, GOOD))
    assert [r.open_time - rows[0].open_time for r in rows] == [0, 300_000, 600_000]
    assert rows[0] == Row(rows[0].open_time, 1.0, 2.0, 0.5, 1.5, 10.0)


def test_blank_lines_hold_no_candle(tmp_path: Path) -> None:
    rows = read_candles(_csv(tmp_path, GOOD + "\n\n"))
    assert len(rows) == 3


def test_header_only_file_is_empty(tmp_path: Path) -> None:
    assert read_candles(_csv(tmp_path, "")) == []


@pytest.mark.parametrize(
    "header",
    [
        "time,open,high,low,close,volume\n",
        "timestamp,open,high,low,close\n",
        "timestamp,open,low,high,close,volume\n",
        "",
    ],
)
def test_bad_header(tmp_path: Path, header: str) -> None:
    path = _csv(tmp_path, GOOD if header else "", header=header)
    with pytest.raises(CsvError) as info:
        read_candles(path)
    assert str(info.value).startswith(f"{path}:1: header must be")


def _error_line(path: Path) -> str:
    with pytest.raises(CsvError) as info:
        read_candles(path)
    return str(info.value)


def test_non_numeric_field(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD.replace("1.6", "one.six"))
    message = _error_line(path)
    assert message.startswith(f"{path}:3: ")
    assert "one.six" in message


def test_wrong_field_count(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD + "2018-01-10T05:10:00Z,1,1,1,1\n")
    assert _error_line(path) == f"{path}:5: expected 6 fields, got 5"


def test_timestamp_without_zone(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD.replace("2018-01-10T05:00:00Z", "2018-01-10T05:00:00"))
    message = _error_line(path)
    assert message.startswith(f"{path}:3: ")
    assert "time zone" in message


def test_non_increasing_time(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD + "2018-01-10T05:05:00Z,1.4,1.4,1.4,1.4,1\n")
    assert _error_line(path) == f"{path}:5: duplicate timestamp 2018-01-10T05:05:00Z (line 4)"


def test_time_going_backwards(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD.replace("2018-01-10T05:00:00Z", "2018-01-10T04:50:00Z"))
    assert _error_line(path) == (
        f"{path}:3: time does not increase: 2018-01-10T04:50:00Z is before line 2 "
        "(rows must be sorted by time)"
    )


def test_high_below_low(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD.replace("1.5,1.6,1.4,1.4,0", "1.5,1.3,1.6,1.5,0"))
    message = _error_line(path)
    assert message.startswith(f"{path}:3: ")
    assert "low <= open, close <= high" in message


def test_close_above_high(tmp_path: Path) -> None:
    path = _csv(tmp_path, GOOD.replace("1.0,2.0,0.5,1.5,10", "1.0,2.0,0.5,2.5,10"))
    assert _error_line(path).startswith(f"{path}:2: ")


# --------------------------------------------------------------------------- Replay


def _drain(replay: Replay) -> list[Candle]:
    out: list[Candle] = []
    while not replay.finished:
        candle = replay.peek()
        assert candle is not None
        out.append(candle)
        replay.advance()
    return out


def test_single_stream_replays_every_row_in_order(eth_rows: list[Row]) -> None:
    replay = Replay([Stream("ETH-BTC", "5m", eth_rows)], speed=0)
    candles = _drain(replay)
    assert [c.seq for c in candles] == list(range(1, 5761))
    assert [(c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in candles] == [
        tuple(r) for r in eth_rows
    ]
    assert {(c.symbol, c.timeframe) for c in candles} == {("ETH-BTC", "5m")}
    assert replay.streams[0].last_seq == 5760


def test_two_streams_merge_in_open_time_order(eth_rows: list[Row], ltc_rows: list[Row]) -> None:
    eth = eth_rows[:300]
    ltc = ltc_rows[100:400:3]  # starts later, sparser: interleaves unevenly with ETH
    replay = Replay([Stream("ETH-BTC", "5m", eth), Stream("LTC-BTC", "5m", ltc)], speed=0)
    candles = _drain(replay)

    assert len(candles) == len(eth) + len(ltc)
    times = [c.open_time for c in candles]
    assert times == sorted(times)
    # Equal open times come out in stream order.
    ties = 0
    for a, b in itertools.pairwise(candles):
        if a.open_time == b.open_time:
            ties += 1
            assert (a.symbol, b.symbol) == ("ETH-BTC", "LTC-BTC")
    assert ties > 0
    assert candles[0].symbol == "ETH-BTC" and candles[-1].symbol == "LTC-BTC"
    for symbol, rows in (("ETH-BTC", eth), ("LTC-BTC", ltc)):
        mine = [c for c in candles if c.symbol == symbol]
        assert [c.seq for c in mine] == list(range(1, len(rows) + 1))
        assert [c.open_time for c in mine] == [r.open_time for r in rows]
        assert [c.close for c in mine] == [r.close for r in rows]
    assert [s.last_seq for s in replay.streams] == [len(eth), len(ltc)]


def test_peek_does_not_consume_and_stamps_publish_ns(eth_rows: list[Row]) -> None:
    replay = Replay([Stream("ETH-BTC", "5m", eth_rows[:3])], speed=0)
    first = replay.peek(publish_ns=123)
    again = replay.peek()
    assert first is not None and again is not None
    assert first.publish_ns == 123
    assert again.publish_ns == 0
    assert (first.seq, again.seq) == (1, 1)
    assert first.open_time == again.open_time == eth_rows[0].open_time
    replay.advance()
    second = replay.peek()
    assert second is not None and second.seq == 2


def test_finished_flag(eth_rows: list[Row]) -> None:
    replay = Replay([Stream("ETH-BTC", "5m", eth_rows[:2])], speed=1)
    assert not replay.finished
    replay.advance()
    assert not replay.finished
    replay.advance()
    assert replay.finished
    assert replay.peek() is None
    assert replay.seconds_until_next(0.0) == math.inf
    replay.advance()  # harmless once finished
    assert replay.streams[0].last_seq == 2


def test_empty_replay_is_finished() -> None:
    replay = Replay([Stream("ETH-BTC", "5m", [])], speed=1)
    assert replay.finished
    assert replay.peek() is None
    assert replay.seconds_until_next(0.0) == math.inf


@pytest.mark.parametrize("speed", [1.0, 300.0, 6000.0])
def test_pacing_at_speed(eth_rows: list[Row], speed: float) -> None:
    replay = Replay([Stream("ETH-BTC", "5m", eth_rows[:10])], speed=speed)
    spacing_s = 300.0 / speed  # five minutes of market time
    assert replay.seconds_until_next(0.0) == 0.0  # the first candle is due at once
    replay.advance()
    assert replay.seconds_until_next(0.0) == pytest.approx(spacing_s)
    assert replay.seconds_until_next(spacing_s / 4) == pytest.approx(spacing_s * 3 / 4)
    assert replay.seconds_until_next(spacing_s * 2) == 0.0  # late: due now, never negative
    for _ in range(4):
        replay.advance()
    # The schedule is anchored at the first candle, not at the previous one.
    assert replay.seconds_until_next(spacing_s) == pytest.approx(4 * spacing_s)


def test_pacing_follows_gaps_in_market_time(eth_rows: list[Row]) -> None:
    rows = [eth_rows[0], eth_rows[3], eth_rows[4]]  # a 15-minute gap, then 5 minutes
    replay = Replay([Stream("ETH-BTC", "5m", rows)], speed=60)
    replay.advance()
    assert replay.seconds_until_next(0.0) == pytest.approx(900.0 / 60)
    replay.advance()
    assert replay.seconds_until_next(0.0) == pytest.approx(1200.0 / 60)


def test_speed_zero_is_always_due(eth_rows: list[Row]) -> None:
    replay = Replay([Stream("ETH-BTC", "5m", eth_rows[:50])], speed=0)
    for _ in range(49):
        replay.advance()
        assert replay.seconds_until_next(0.0) == 0.0
    replay.advance()
    assert replay.seconds_until_next(0.0) == math.inf


def _drain_runs(replay: Replay, limit: int) -> list[list[Candle]]:
    runs: list[list[Candle]] = []
    while not replay.finished:
        count = replay.run_length(0.0, limit)
        run = replay.peek_run(count)
        assert len(run) == count >= 1
        runs.append(run)
        replay.advance(count)
    return runs


def test_runs_at_speed_zero_are_the_candles_one_by_one(
    eth_rows: list[Row], ltc_rows: list[Row]
) -> None:
    streams = [
        Stream("ETH-BTC", "5m", eth_rows[:300]),
        Stream("LTC-BTC", "5m", ltc_rows[100:400:3]),
    ]
    one_by_one = _drain(Replay(streams, speed=0))
    streams = [
        Stream("ETH-BTC", "5m", eth_rows[:300]),
        Stream("LTC-BTC", "5m", ltc_rows[100:400:3]),
    ]
    runs = _drain_runs(Replay(streams, speed=0), limit=7)
    assert [c for run in runs for c in run] == one_by_one
    assert all(len({c.symbol for c in run}) == 1 for run in runs), "a run is one stream's"
    assert max(len(run) for run in runs) == 7
    # a run ends where the other stream's candle comes between, not only at the limit
    assert any(len(run) < 7 for run in runs[:-1])


def test_a_paced_replay_runs_only_what_is_overdue(eth_rows: list[Row]) -> None:
    replay = Replay([Stream("ETH-BTC", "5m", eth_rows[:10])], speed=300.0)  # one per second
    assert replay.run_length(0.0, 100) == 1  # on time: alone
    replay.advance()
    assert replay.run_length(0.5, 100) == 0  # not due yet
    assert replay.run_length(3.2, 100) == 3  # 3.2 s late in the schedule: seqs 2, 3 and 4
    run = replay.peek_run(3, publish_ns=7)
    assert [c.seq for c in run] == [2, 3, 4]
    assert [c.open_time for c in run] == [r.open_time for r in eth_rows[1:4]]
    assert {c.publish_ns for c in run} == {7}
    replay.advance(3)
    assert replay.peek() is not None and replay.peek().seq == 5  # type: ignore[union-attr]
    assert replay.replayed == 4
