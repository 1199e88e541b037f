"""Higher-timeframe candles built from a base stream: alignment, aggregation, emission timing."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from broker.csv_source import Row, read_candles
from broker.resample import Resampler, can_resample, timeframe_ms

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
BTC_1M = DATA / "crypto" / "UNITTEST-BTC-1m.csv"
ETH_5M = DATA / "crypto" / "ETH-BTC-5m.csv"
EURUSD_1H = DATA / "EURUSD-1h.csv"

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


def utc(open_time: int) -> datetime:
    return datetime.fromtimestamp(open_time / 1000, tz=UTC)


def feed(resampler: Resampler, rows: Sequence[Row]) -> list[tuple[int, Row]]:
    """Every candle emitted, with the index of the base row whose update() returned it."""
    return [(i, out) for i, row in enumerate(rows) for out in resampler.update(row)]


def ramp(start: int, count: int, step: int = MINUTE) -> list[Row]:
    """``count`` consecutive candles from ``start``; candle k: o=1000+k h=o+1 l=o-1 c=o+0.5 v=1."""
    return [
        Row(start + k * step, 1000.0 + k, 1001.0 + k, 999.0 + k, 1000.5 + k, 1.0)
        for k in range(count)
    ]


def flat(open_time: int, price: float = 1.0, volume: float = 1.0) -> Row:
    return Row(open_time, price, price, price, price, volume)


# --------------------------------------------------------------------------- timeframes


@pytest.mark.parametrize(
    ("timeframe", "expected"),
    [
        ("1s", 1_000),
        ("30s", 30_000),
        ("1m", MINUTE),
        ("5m", 5 * MINUTE),
        ("15m", 15 * MINUTE),
        ("90m", 90 * MINUTE),
        ("1h", HOUR),
        ("4h", 4 * HOUR),
        ("1d", DAY),
        ("3d", 3 * DAY),
        ("1w", WEEK),
        ("2w", 2 * WEEK),
    ],
)
def test_timeframe_ms(timeframe: str, expected: int) -> None:
    assert timeframe_ms(timeframe) == expected


@pytest.mark.parametrize(
    "timeframe",
    ["", "m", "1", "0m", "01m", "-1m", "1.5h", "1H", "1y", "1min", "m1", " 1m", "1m ", "1 m"],
)
def test_malformed_timeframe_raises(timeframe: str) -> None:
    with pytest.raises(ValueError, match="timeframe"):
        timeframe_ms(timeframe)


@pytest.mark.parametrize("timeframe", ["1M", "3M"])
def test_months_are_not_supported(timeframe: str) -> None:
    with pytest.raises(ValueError, match="months are not supported"):
        timeframe_ms(timeframe)


@pytest.mark.parametrize(
    ("base", "target", "expected"),
    [
        ("1m", "5m", True),
        ("5m", "15m", True),
        ("5m", "1h", True),
        ("1h", "4h", True),
        ("1h", "1d", True),
        ("15m", "1h", True),
        ("10m", "15m", False),
        ("1h", "1m", False),
        ("5m", "5m", False),
        ("1d", "1w", True),
        ("30s", "1m", True),
        ("4h", "1d", True),
        ("1m", "1w", True),
        ("90m", "1d", True),
        ("1h", "90m", False),
        ("7m", "1h", False),
        ("3d", "1w", False),
        ("1d", "7d", True),
        ("1w", "2w", True),
        ("1d", "2w", True),
        # 28d is epoch-aligned (Thursday), 1w buckets start on Monday: they do not nest
        ("1w", "28d", False),
        ("60m", "1h", False),
    ],
)
def test_can_resample(base: str, target: str, expected: bool) -> None:
    assert can_resample(base, target) is expected


def test_can_resample_rejects_malformed_timeframes() -> None:
    with pytest.raises(ValueError):
        can_resample("1m", "1M")
    with pytest.raises(ValueError):
        can_resample("x", "1h")


@pytest.mark.parametrize(("base", "target"), [("5m", "5m"), ("10m", "15m"), ("1h", "1m")])
def test_resampler_refuses_what_cannot_be_resampled(base: str, target: str) -> None:
    with pytest.raises(ValueError, match="cannot build"):
        Resampler(base, target)


def test_resampler_refuses_malformed_timeframes() -> None:
    with pytest.raises(ValueError):
        Resampler("1m", "1mo")


# --------------------------------------------------------------------------- aggregation


def test_aggregates_first_open_max_high_min_low_last_close_summed_volume() -> None:
    t0 = ms(2017, 11, 5, 10, 0)
    rows = [
        Row(t0 + 0 * MINUTE, 10.0, 12.0, 9.5, 11.0, 1.5),
        Row(t0 + 1 * MINUTE, 11.0, 15.0, 10.5, 14.0, 2.0),
        Row(t0 + 2 * MINUTE, 14.0, 14.5, 8.0, 9.0, 0.25),
        Row(t0 + 3 * MINUTE, 9.0, 10.0, 8.5, 9.5, 3.0),
        Row(t0 + 4 * MINUTE, 9.5, 9.75, 9.25, 9.5, 0.5),
    ]
    resampler = Resampler("1m", "5m")
    assert resampler.partial is None
    for row in rows[:4]:
        assert resampler.update(row) == []
    assert resampler.partial == Row(t0, 10.0, 15.0, 8.0, 9.5, 6.75)
    assert resampler.update(rows[4]) == [Row(t0, 10.0, 15.0, 8.0, 9.5, 7.25)]
    assert resampler.partial is None


# Minutes 2017-11-04 19:50 .. 2017-11-05 00:09 UTC: crosses hour, 4h and day boundaries.
START = ms(2017, 11, 4, 19, 50)
RAMP = ramp(START, 260)


def bucket(first: int, last: int, open_time: int) -> Row:
    """What a bucket holding ramp candles ``first..last`` (inclusive) must aggregate to."""
    return Row(
        open_time, 1000.0 + first, 1001.0 + last, 999.0 + first, 1000.5 + last, 1.0 + last - first
    )


def test_5m_across_hour_and_day() -> None:
    emitted = feed(Resampler("1m", "5m"), RAMP)
    assert emitted == [
        (5 * j + 4, bucket(5 * j, 5 * j + 4, START + 5 * j * MINUTE)) for j in range(52)
    ]
    assert utc(emitted[1][1].open_time) == datetime(2017, 11, 4, 19, 55, tzinfo=UTC)
    assert utc(emitted[2][1].open_time) == datetime(2017, 11, 4, 20, 0, tzinfo=UTC)
    assert utc(emitted[50][1].open_time) == datetime(2017, 11, 5, 0, 0, tzinfo=UTC)


def test_15m_starts_on_the_quarter_even_if_its_first_minutes_are_missing() -> None:
    resampler = Resampler("1m", "15m")
    emitted = feed(resampler, RAMP)
    q0 = ms(2017, 11, 4, 19, 45)
    # 19:45 holds only 19:50..19:59 (k 0..9); then full quarters 20:00 .. 23:45.
    expected = [(9, bucket(0, 9, q0))]
    expected += [
        (24 + 15 * j, bucket(10 + 15 * j, 24 + 15 * j, q0 + (j + 1) * 15 * MINUTE))
        for j in range(16)
    ]
    assert emitted == expected
    assert resampler.partial == bucket(250, 259, ms(2017, 11, 5, 0, 0))


def test_1h_across_day() -> None:
    resampler = Resampler("1m", "1h")
    emitted = feed(resampler, RAMP)
    assert emitted == [
        (9, bucket(0, 9, ms(2017, 11, 4, 19))),
        (69, bucket(10, 69, ms(2017, 11, 4, 20))),
        (129, bucket(70, 129, ms(2017, 11, 4, 21))),
        (189, bucket(130, 189, ms(2017, 11, 4, 22))),
        (249, bucket(190, 249, ms(2017, 11, 4, 23))),
    ]
    assert resampler.partial == bucket(250, 259, ms(2017, 11, 5, 0))


def test_4h_bucket_at_20_utc_ends_at_midnight() -> None:
    resampler = Resampler("1m", "4h")
    emitted = feed(resampler, RAMP)
    assert emitted == [
        (9, bucket(0, 9, ms(2017, 11, 4, 16))),
        # returned by the 23:59 candle, not held until the 00:00 one
        (249, Row(ms(2017, 11, 4, 20), 1010.0, 1250.0, 1009.0, 1249.5, 240.0)),
    ]
    assert RAMP[249].open_time + MINUTE == ms(2017, 11, 5)
    assert resampler.partial == bucket(250, 259, ms(2017, 11, 5, 0))


def test_daily_bucket_at_midnight_utc() -> None:
    resampler = Resampler("1m", "1d")
    emitted = feed(resampler, RAMP)
    assert emitted == [(249, Row(ms(2017, 11, 4), 1000.0, 1250.0, 999.0, 1249.5, 250.0))]
    assert resampler.partial == Row(ms(2017, 11, 5), 1250.0, 1260.0, 1249.0, 1259.5, 10.0)


def test_4h_buckets_open_every_four_hours_from_midnight() -> None:
    rows = ramp(ms(2020, 3, 1, 1), 26, HOUR)  # 01:00 .. 02:00 next day
    opens = [utc(out.open_time).hour for _, out in feed(Resampler("1h", "4h"), rows)]
    assert opens == [0, 4, 8, 12, 16, 20]


def test_weekly_buckets_open_on_monday_utc() -> None:
    # Thursday 2023-12-28 .. Sunday 2024-01-14, one candle a day.
    rows = ramp(ms(2023, 12, 28), 18, DAY)
    resampler = Resampler("1d", "1w")
    emitted = feed(resampler, rows)
    assert emitted == [
        (3, bucket(0, 3, ms(2023, 12, 25))),  # the week began before the data, on Monday
        (10, bucket(4, 10, ms(2024, 1, 1))),
        (17, bucket(11, 17, ms(2024, 1, 8))),
    ]
    assert all(utc(out.open_time).weekday() == 0 for _, out in emitted)
    assert resampler.partial is None


def test_weekly_from_hours_cuts_at_sunday_midnight() -> None:
    rows = ramp(ms(2024, 1, 7, 22), 4, HOUR)  # Sunday 22:00 .. Monday 01:00
    resampler = Resampler("1h", "1w")
    assert feed(resampler, rows) == [(1, bucket(0, 1, ms(2024, 1, 1)))]
    assert resampler.partial == bucket(2, 3, ms(2024, 1, 8))


def test_seven_days_keeps_epoch_alignment() -> None:
    rows = ramp(ms(2024, 1, 1), 14, DAY)
    emitted = feed(Resampler("1d", "7d"), rows)
    assert [utc(out.open_time).weekday() for _, out in emitted] == [3, 3]  # Thursdays


# --------------------------------------------------------------------------- emission timing


T0 = ms(2017, 11, 5, 10, 0)


def test_bucket_missing_its_last_candle_is_emitted_on_the_next_buckets_first() -> None:
    resampler = Resampler("1m", "5m")
    for minute in range(4):
        assert resampler.update(flat(T0 + minute * MINUTE, 1.0 + minute)) == []
    out = resampler.update(flat(T0 + 5 * MINUTE, 9.0))
    assert out == [Row(T0, 1.0, 4.0, 1.0, 4.0, 4.0)]
    assert resampler.partial == flat(T0 + 5 * MINUTE, 9.0)


def test_bucket_missing_its_first_candles_opens_at_the_bucket_start() -> None:
    resampler = Resampler("1m", "5m")
    assert resampler.update(flat(T0 + 3 * MINUTE, 2.0)) == []
    assert resampler.update(flat(T0 + 4 * MINUTE, 3.0)) == [Row(T0, 2.0, 3.0, 2.0, 3.0, 2.0)]


def test_empty_buckets_are_skipped_not_invented() -> None:
    resampler = Resampler("1m", "5m")
    resampler.update(flat(T0, 1.0))
    resampler.update(flat(T0 + MINUTE, 2.0))
    # 10:05, 10:10, 10:15 and 10:20 have no candle at all.
    assert resampler.update(flat(T0 + 27 * MINUTE, 3.0)) == [Row(T0, 1.0, 2.0, 1.0, 2.0, 2.0)]
    assert resampler.partial == flat(T0 + 25 * MINUTE, 3.0)
    assert resampler.update(flat(T0 + 29 * MINUTE, 4.0)) == [
        Row(T0 + 25 * MINUTE, 3.0, 4.0, 3.0, 4.0, 2.0)
    ]
    assert resampler.partial is None


def test_one_candle_can_close_two_buckets() -> None:
    resampler = Resampler("1m", "5m")
    for minute in range(4):
        resampler.update(flat(T0 + minute * MINUTE, 1.0))
    # 10:09 flushes the unfinished 10:00 bucket and alone completes the 10:05 one.
    assert resampler.update(flat(T0 + 9 * MINUTE, 2.0, 0.5)) == [
        Row(T0, 1.0, 1.0, 1.0, 1.0, 4.0),
        Row(T0 + 5 * MINUTE, 2.0, 2.0, 2.0, 2.0, 0.5),
    ]
    assert resampler.partial is None


def test_weekend_gap_skips_saturday_and_sunday() -> None:
    friday = ramp(ms(2018, 1, 5, 20), 2, HOUR)  # 20:00, 21:00: the market closes early
    monday = ramp(ms(2018, 1, 8, 0), 2, HOUR)
    resampler = Resampler("1h", "1d")
    assert [resampler.update(r) for r in friday] == [[], []]
    assert resampler.update(monday[0]) == [bucket(0, 1, ms(2018, 1, 5))]
    assert resampler.update(monday[1]) == []
    assert resampler.partial == Row(ms(2018, 1, 8), 1000.0, 1002.0, 999.0, 1001.5, 2.0)


def test_no_bucket_is_emitted_twice() -> None:
    resampler = Resampler("1m", "5m")
    rows = [flat(T0 + m * MINUTE) for m in (0, 1, 2, 3, 4, 6, 12, 13, 14, 20)]
    opens = [out.open_time for _, out in feed(resampler, rows)]
    assert opens == [T0, T0 + 5 * MINUTE, T0 + 10 * MINUTE]
    assert resampler.partial is not None and resampler.partial.open_time == T0 + 20 * MINUTE


def test_partial_last_bar_is_not_emitted() -> None:
    rows = [Row(T0 + m * MINUTE, 10.0 + m, 11.0 + m, 9.0 + m, 10.5 + m, 1.0 + m) for m in range(7)]
    resampler = Resampler("1m", "5m")
    emitted = feed(resampler, rows)
    assert emitted == [(4, Row(T0, 10.0, 15.0, 9.0, 14.5, 15.0))]
    assert resampler.partial == Row(T0 + 5 * MINUTE, 15.0, 17.0, 14.0, 16.5, 13.0)


# --------------------------------------------------------------------------- bad input


def test_duplicate_or_earlier_candle_raises_and_changes_nothing() -> None:
    resampler = Resampler("1m", "5m")
    resampler.update(flat(T0, 1.0))
    resampler.update(flat(T0 + MINUTE, 2.0))
    before = resampler.partial
    with pytest.raises(ValueError, match="does not follow"):
        resampler.update(flat(T0 + MINUTE, 5.0))
    with pytest.raises(ValueError, match="does not follow"):
        resampler.update(flat(T0, 5.0))
    assert resampler.partial == before
    assert resampler.update(flat(T0 + 4 * MINUTE, 3.0)) == [Row(T0, 1.0, 3.0, 1.0, 3.0, 3.0)]


def test_earlier_candle_after_an_emission_raises() -> None:
    resampler = Resampler("1m", "5m")
    feed(resampler, [flat(T0 + m * MINUTE) for m in range(5)])
    with pytest.raises(ValueError, match="does not follow"):
        resampler.update(flat(T0 + 2 * MINUTE))


@pytest.mark.parametrize(
    ("base", "target", "open_time"),
    [
        ("1m", "5m", T0 + 30_000),
        ("5m", "1h", T0 + MINUTE),
        ("1h", "1d", T0 + 30 * MINUTE),
        ("1w", "2w", ms(2024, 1, 4)),  # a Thursday: not a week start
    ],
)
def test_unaligned_candle_raises(base: str, target: str, open_time: int) -> None:
    resampler = Resampler(base, target)
    with pytest.raises(ValueError, match="not aligned"):
        resampler.update(flat(open_time))
    assert resampler.partial is None


# --------------------------------------------------------------------------- real data


class Reference(NamedTuple):
    complete: list[Row]
    emitted_at: list[int]  # index of the base row whose update() must return each one
    partial: Row | None


def reference(rows: Sequence[Row], base_ms: int, tf_ms: int, origin: int = 0) -> Reference:
    """Buckets computed independently with numpy: group rows by bucket key, reduce each group."""
    t = np.array([r.open_time for r in rows], dtype=np.int64)
    o, h, lo, c, v = (np.array([getattr(r, f) for r in rows]) for f in Row._fields[1:])
    keys = (t - origin) // tf_ms * tf_ms + origin
    starts: np.ndarray = np.unique(keys, return_index=True)[1]
    ends = np.append(starts[1:], len(t)) - 1
    table = zip(
        keys[starts].tolist(),
        o[starts].tolist(),
        np.maximum.reduceat(h, starts).tolist(),
        np.minimum.reduceat(lo, starts).tolist(),
        c[ends].tolist(),
        np.add.reduceat(v, starts).tolist(),
        strict=True,
    )
    groups = [Row(*g) for g in table]
    ends_bucket = t[ends] + base_ms == keys[starts] + tf_ms
    emitted_at = [int(e) if full else int(e) + 1 for e, full in zip(ends, ends_bucket, strict=True)]
    if ends_bucket[-1]:
        return Reference(groups, emitted_at, None)
    return Reference(groups[:-1], emitted_at[:-1], groups[-1])


def assert_same_candles(got: Sequence[Row], want: Sequence[Row]) -> None:
    assert [r.open_time for r in got] == [r.open_time for r in want]
    for field in ("open", "high", "low", "close"):
        assert [getattr(r, field) for r in got] == [getattr(r, field) for r in want], field
    np.testing.assert_allclose(
        [r.volume for r in got], [r.volume for r in want], rtol=1e-12, atol=0.0
    )


@pytest.fixture(scope="module")
def btc_rows() -> list[Row]:
    return read_candles(BTC_1M)


@pytest.fixture(scope="module")
def eth_rows() -> list[Row]:
    return read_candles(ETH_5M)


@pytest.fixture(scope="module")
def eurusd_rows() -> list[Row]:
    return read_candles(EURUSD_1H)


def check_against_reference(rows: Sequence[Row], base: str, target: str, origin: int = 0) -> int:
    """Resample ``rows`` and compare with :func:`reference`; returns how many came out late."""
    resampler = Resampler(base, target)
    emitted = feed(resampler, rows)
    want = reference(rows, timeframe_ms(base), timeframe_ms(target), origin)
    assert_same_candles([out for _, out in emitted], want.complete)
    assert [i for i, _ in emitted] == want.emitted_at
    if want.partial is None:
        assert resampler.partial is None
    else:
        assert resampler.partial is not None
        assert_same_candles([resampler.partial], [want.partial])
    return sum(
        out.open_time + timeframe_ms(target) != rows[i].open_time + timeframe_ms(base)
        for i, out in emitted
    )


@pytest.mark.parametrize(
    ("target", "late"), [("5m", 150), ("15m", 56), ("1h", 17), ("4h", 5), ("1d", 0)]
)
def test_btc_1m_matches_numpy_reference(btc_rows: list[Row], target: str, late: int) -> None:
    # ``late``: buckets whose last minute is a hole in the file, emitted on a later candle.
    assert check_against_reference(btc_rows, "1m", target) == late


def test_btc_1m_to_5m_skips_the_empty_buckets(btc_rows: list[Row]) -> None:
    resampler = Resampler("1m", "5m")
    opens = [out.open_time for _, out in feed(resampler, btc_rows)]
    steps = np.diff(opens)
    assert steps.min() == 5 * MINUTE
    assert (steps > 5 * MINUTE).sum() == 3  # three 5-minute spans with no trade at all
    assert resampler.partial is None  # the file ends at 22:59, completing its last bucket


def test_btc_first_and_last_daily_buckets(btc_rows: list[Row]) -> None:
    resampler = Resampler("1m", "1d")
    emitted = feed(resampler, btc_rows)
    # The file starts at 23:02: the first daily candle opens at midnight anyway.
    assert emitted[0][1].open_time == ms(2017, 11, 4)
    assert emitted[0][1].open == btc_rows[0].open
    assert resampler.partial is not None
    assert resampler.partial.open_time == ms(2017, 11, 14)
    assert resampler.partial.close == btc_rows[-1].close


@pytest.mark.parametrize("target", ["1h", "4h"])
def test_eth_5m_matches_numpy_reference(eth_rows: list[Row], target: str) -> None:
    assert check_against_reference(eth_rows, "5m", target) == 0  # no holes in this file


@pytest.mark.parametrize("target", ["4h", "1d", "1w"])
def test_eurusd_1h_with_weekend_gaps_matches_numpy_reference(
    eurusd_rows: list[Row], target: str
) -> None:
    origin = ms(1970, 1, 5) if target == "1w" else 0  # first Monday after the epoch
    check_against_reference(eurusd_rows, "1h", target, origin)


# --------------------------------------------------------------------------- chaining


def chain(rows: Sequence[Row], *timeframes: str) -> tuple[list[Row], Row | None]:
    """Resample through each timeframe in turn; the last stage's output and partial."""
    stages = [Resampler(a, b) for a, b in itertools.pairwise(timeframes)]
    out: list[Row] = []
    for row in rows:
        batch = [row]
        for stage in stages:
            batch = [done for r in batch for done in stage.update(r)]
        out += batch
    return out, stages[-1].partial


@pytest.mark.parametrize(
    ("data", "timeframes"),
    [
        ("btc", ("1m", "5m", "1h")),
        ("btc", ("1m", "15m", "4h")),
        ("btc", ("1m", "5m", "15m", "1h", "1d")),
        ("eth", ("5m", "1h", "4h")),
        ("eurusd", ("1h", "1d", "1w")),
    ],
)
def test_chained_equals_direct(
    request: pytest.FixtureRequest, data: str, timeframes: tuple[str, ...]
) -> None:
    rows: list[Row] = request.getfixturevalue(f"{data}_rows")
    chained, _ = chain(rows, *timeframes)
    direct, _ = chain(rows, timeframes[0], timeframes[-1])
    # Emission can come later through a chain (a lower stage may hold a bucket whose end is a
    # hole), but on these files every bucket the direct path emits has also left the chain.
    assert_same_candles(chained, direct)
