"""The indicator package: the float SMA and RSI against plain references on real closes,
the session VWAP against a reference, the config registry, params checks, and bounded state.

Agreement of every Bar indicator with TA-Lib is in ``test_indicators_talib.py``.
"""

from __future__ import annotations

import math
import typing
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from broker.csv_source import Row, read_candles
from runtime.messages import Candle
from workers.indicators import (
    INDICATORS,
    RSI,
    SMA,
    AdxParams,
    Bar,
    BbandsParams,
    Ema,
    EmaParams,
    Indicator,
    IndicatorParams,
    IndicatorSpec,
    Macd,
    MacdParams,
    Rsi,
    RsiParams,
    Sma,
    SmaPair,
    SmaParams,
    StochParams,
    Vwap,
    VwapParams,
    make_indicator,
)
from workers.indicators._base import RESUM_EVERY, RollingSum
from workers.indicators.volatility import WindowMoments

ETH = Path(__file__).resolve().parents[1] / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"
REL = 1e-9

Floats = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return read_candles(ETH)


@pytest.fixture(scope="module")
def closes(rows: list[Row]) -> Floats:
    return np.array([row.close for row in rows], dtype=np.float64)


def reference_sma(x: Floats, period: int) -> list[float | None]:
    """Mean of each full window, computed from scratch (no running sum)."""
    means = np.lib.stride_tricks.sliding_window_view(x, period).mean(axis=1)
    return [None] * (period - 1) + [float(m) for m in means]


def reference_rsi(x: Floats, period: int) -> list[float | None]:
    """Wilder's RSI: seed with the plain mean of the first ``period`` moves, then smooth."""
    out: list[float | None] = [None] * len(x)
    moves = np.diff(x)
    gains = np.where(moves > 0, moves, 0.0)
    losses = np.where(moves < 0, -moves, 0.0)
    if len(moves) < period:
        return out
    avg_gain = float(np.mean(gains[:period]))
    avg_loss = float(np.mean(losses[:period]))

    def rsi(g: float, lo: float) -> float:
        if lo == 0.0:
            return 100.0 if g > 0.0 else 50.0
        return 100.0 - 100.0 / (1.0 + g / lo)

    out[period] = rsi(avg_gain, avg_loss)
    for k in range(period, len(moves)):
        avg_gain = (avg_gain * (period - 1) + float(gains[k])) / period
        avg_loss = (avg_loss * (period - 1) + float(losses[k])) / period
        out[k + 1] = rsi(avg_gain, avg_loss)
    return out


def _assert_series_equal(got: list[float | None], want: list[float | None]) -> None:
    assert len(got) == len(want)
    assert [g is None for g in got] == [w is None for w in want]
    g = np.array([v for v in got if v is not None], dtype=np.float64)
    w = np.array([v for v in want if v is not None], dtype=np.float64)
    assert len(w) > 0, "nothing was compared"
    relative = np.abs(g - w) / np.maximum(np.abs(w), np.finfo(np.float64).tiny)
    worst = int(np.argmax(relative))
    assert relative[worst] <= REL, f"value {worst} after warm-up: {g[worst]!r} != {w[worst]!r}"


def test_data_is_the_expected_file(closes: Floats) -> None:
    assert len(closes) == 5760
    assert np.all(closes > 0)


@pytest.mark.parametrize("period", [1, 2, 5, 20, 60, 500])
def test_sma_matches_reference(closes: Floats, period: int) -> None:
    sma = SMA(period)
    got = [sma.update(float(c)) for c in closes]
    _assert_series_equal(got, reference_sma(closes, period))
    assert sma.value == got[-1]


@pytest.mark.parametrize(("first", "second"), [(10, 20), (20, 10), (1, 2), (100, 300), (10, 4200)])
def test_sma_pair_answers_what_two_smas_say(closes: Floats, first: int, second: int) -> None:
    # 5,760 closes: past RESUM_EVERY, so the pair's re-summing is compared too; with a period
    # over RESUM_EVERY the two re-sum apart.
    assert len(closes) > RESUM_EVERY
    pair, a, b = SmaPair(first, second), SMA(first), SMA(second)
    answers = []
    for c in closes.tolist():
        fa, fb = a.update(c), b.update(c)
        want = None if fa is None or fb is None else fa > fb
        got = pair.update(c)
        assert got is want
        assert (pair.first, pair.second) == (fa, fb)  # to the last bit
        answers.append(got)
    if max(first, second) <= RESUM_EVERY:  # a 4,200 window stays on one side of these closes
        assert {True, False} <= set(answers)  # both sides were seen


@pytest.mark.parametrize("period", [1, 2, 5, 20, 60])
def test_sma_warm_up(closes: Floats, period: int) -> None:
    sma = SMA(period)
    got = [sma.update(float(c)) for c in closes[: period + 3]]
    assert got[: period - 1] == [None] * (period - 1)
    assert all(v is not None for v in got[period - 1 :])
    assert got[period - 1] == pytest.approx(float(np.mean(closes[:period])), rel=REL)


@pytest.mark.parametrize("period", [2, 6, 14, 30])
def test_rsi_matches_reference(closes: Floats, period: int) -> None:
    rsi = RSI(period)
    got = [rsi.update(float(c)) for c in closes]
    want = reference_rsi(closes, period)
    _assert_series_equal(got, want)
    values = [v for v in got if v is not None]
    assert all(0.0 <= v <= 100.0 for v in values)
    # The real data goes both ways: the RSI is not stuck at an extreme.
    assert min(values) < 30.0 < 70.0 < max(values)


@pytest.mark.parametrize("period", [1, 2, 14])
def test_rsi_warm_up(closes: Floats, period: int) -> None:
    rsi = RSI(period)
    got = [rsi.update(float(c)) for c in closes[: period + 3]]
    # ``period`` moves need ``period + 1`` closes.
    assert got[:period] == [None] * period
    assert all(v is not None for v in got[period:])


def test_rsi_of_a_rising_series_is_100_and_of_a_flat_series_is_50() -> None:
    rising, flat, falling = RSI(3), RSI(3), RSI(3)
    for i in range(10):
        up = rising.update(1.0 + i)
        level = flat.update(1.0)
        down = falling.update(10.0 - i)
    assert (up, level, down) == (100.0, 50.0, 0.0)


def test_rsi_on_a_known_series() -> None:
    # Moves +1, -1, +2 with period 2: seed gain 0.5, loss 0.5 -> 50; then
    # gain (0.5 + 2) / 2 = 1.25, loss 0.5 / 2 = 0.25 -> 100 - 100 / 6.
    rsi = RSI(2)
    got = [rsi.update(x) for x in (10.0, 11.0, 10.0, 12.0)]
    assert got[:2] == [None, None]
    assert got[2] == pytest.approx(50.0)
    assert got[3] == pytest.approx(100.0 - 100.0 / 6.0)


@pytest.mark.parametrize("cls", [SMA, RSI])
def test_period_must_be_positive(cls: type[SMA] | type[RSI]) -> None:
    with pytest.raises(ValueError, match="period"):
        cls(0)


# --------------------------------------------------------------------------- Bar indicators


def _feed(indicator: Indicator, bars: Iterable[Bar], name: str | None = None) -> list[float | None]:
    out: list[float | None] = []
    for bar in bars:
        indicator.update(bar)
        out.append(indicator.output(name))
    return out


def test_the_bar_sma_and_rsi_agree_with_the_float_ones(rows: list[Row]) -> None:
    sma, old_sma = Sma(SmaParams(period=20)), SMA(20)
    rsi, old_rsi = Rsi(RsiParams(period=14)), RSI(14)
    assert _feed(sma, rows) == [old_sma.update(row.close) for row in rows]
    want = [old_rsi.update(row.close) for row in rows]
    _assert_series_equal(_feed(rsi, rows), want)


def test_candles_and_rows_give_the_same_values(rows: list[Row]) -> None:
    candles = [
        Candle("ETH-BTC", "5m", r.open_time, r.open, r.high, r.low, r.close, r.volume, seq=i)
        for i, r in enumerate(rows[:500], start=1)
    ]
    for name, cls in INDICATORS.items():
        from_rows, from_candles = make_indicator(cls.Params()), make_indicator(cls.Params())
        for row, candle in zip(rows[:500], candles, strict=True):
            from_rows.update(row)
            from_candles.update(candle)
            for output in cls.OUTPUTS:
                assert from_rows.output(output) == from_candles.output(output), name
        assert from_rows.ready, name


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_ready_and_warmup_agree(rows: list[Row], name: str) -> None:
    indicator = make_indicator(INDICATORS[name].Params())
    assert not indicator.ready
    assert all(indicator.output(output) is None for output in indicator.OUTPUTS)
    for count, row in enumerate(rows[:200], start=1):
        indicator.update(row)
        assert indicator.ready == (count >= indicator.warmup), count
        assert indicator.ready == (indicator.output() is not None)
        assert indicator.output() == indicator.output(indicator.OUTPUTS[0])
    assert all(indicator.output(output) is not None for output in indicator.OUTPUTS)


def test_an_unknown_output_name_is_a_key_error(rows: list[Row]) -> None:
    macd = Macd(MacdParams())
    with pytest.raises(KeyError):
        macd.output("value")
    _feed(macd, rows[:100])
    with pytest.raises(KeyError):
        macd.output("histogram")
    hist = macd.output("hist")
    assert hist is not None
    assert hist == pytest.approx(_value(macd, "macd") - _value(macd, "signal"), abs=1e-15)


def _value(indicator: Indicator, name: str | None = None) -> float:
    value = indicator.output(name)
    assert value is not None
    return value


def test_indicators_with_different_periods_do_not_share_state(rows: list[Row]) -> None:
    fast, slow = Ema(EmaParams(period=5)), Ema(EmaParams(period=50))
    alone_fast, alone_slow = Ema(EmaParams(period=5)), Ema(EmaParams(period=50))
    together: list[tuple[float | None, float | None]] = []
    for row in rows[:300]:
        fast.update(row)
        slow.update(row)
        together.append((fast.output(), slow.output()))
    assert [f for f, _ in together] == _feed(alone_fast, rows[:300])
    assert [s for _, s in together] == _feed(alone_slow, rows[:300])
    assert together[-1][0] != together[-1][1]
    # Same class, same params: still two objects, one fed and one not.
    one, two = make_indicator(MacdParams()), make_indicator(MacdParams())
    _feed(one, rows[:100])
    assert one.ready
    assert not two.ready
    assert two.output("signal") is None


# --------------------------------------------------------------------------- VWAP

DAY_MS = 86_400_000


def reference_vwap(bars: Iterable[Bar]) -> list[float | None]:
    """From scratch at every bar: exact sums over the bars of the same UTC calendar day."""
    out: list[float | None] = []
    day = None
    session: list[Bar] = []
    for bar in bars:
        today = datetime.fromtimestamp(bar.open_time / 1000, tz=UTC).date()
        if today != day:
            day, session = today, []
        session.append(bar)
        volume = math.fsum(b.volume for b in session)
        weighted = math.fsum((b.high + b.low + b.close) / 3 * b.volume for b in session)
        out.append(weighted / volume if volume > 0 else None)
    return out


def test_vwap_matches_the_reference_on_real_candles(rows: list[Row]) -> None:
    got = _feed(Vwap(VwapParams()), rows)
    _assert_series_equal(got, reference_vwap(rows))
    # Resets at every UTC midnight: the first bar of each day is its own typical price.
    for row, value in zip(rows, got, strict=True):
        if row.open_time % DAY_MS == 0:
            assert value == pytest.approx((row.high + row.low + row.close) / 3, rel=REL)


def test_vwap_is_none_until_the_session_has_volume(rows: list[Row]) -> None:
    # Take the volume away from the first 30 bars and the first 3 bars of every day.
    quiet = [
        row._replace(volume=0.0) if i < 30 or row.open_time % DAY_MS < 3 * 300_000 else row
        for i, row in enumerate(rows)
    ]
    got = _feed(Vwap(VwapParams()), quiet)
    want = reference_vwap(quiet)
    assert got[:30] == [None] * 30
    assert sum(v is None for v in got) > 30 + 3 * 15
    _assert_series_equal(got, want)


def test_vwap_of_one_session_by_hand() -> None:
    midnight = 1_700_006_400_000  # 2023-11-15T00:00:00Z
    assert midnight % DAY_MS == 0
    bars = [
        Row(midnight - 60_000, 1.0, 12.0, 9.0, 9.0, 10.0),  # 23:59 the day before: tp 10
        Row(midnight, 1.0, 21.0, 19.0, 20.0, 0.0),  # new day, no volume yet
        Row(midnight + 60_000, 1.0, 21.0, 19.0, 20.0, 1.0),  # tp 20
        Row(midnight + 120_000, 1.0, 31.0, 29.0, 30.0, 3.0),  # tp 30
    ]
    assert _feed(Vwap(VwapParams()), bars) == [10.0, None, 20.0, pytest.approx(27.5)]


# --------------------------------------------------------------------------- registry, params


def test_the_registry_names_all_eleven_indicators() -> None:
    names = ["sma", "ema", "wma", "rsi", "macd", "stoch", "atr", "bbands", "adx", "vwap", "obv"]
    assert sorted(INDICATORS) == sorted(names)
    for name, cls in INDICATORS.items():
        assert name == cls.NAME
        assert cls.Params.__struct_config__.tag == name
        assert cls.OUTPUTS
        assert type(make_indicator(cls.Params())) is cls
    assert set(typing.get_args(IndicatorSpec)) == {cls.Params for cls in INDICATORS.values()}


def test_specs_convert_from_config() -> None:
    ema = msgspec.convert({"type": "ema", "period": 12}, IndicatorSpec)
    assert ema == EmaParams(period=12)
    assert ema.timeframe is None
    assert isinstance(make_indicator(ema), Ema)
    stoch = msgspec.convert({"type": "stoch", "timeframe": "1h"}, IndicatorSpec)
    assert stoch == StochParams(fastk_period=5, slowk_period=3, slowd_period=3, timeframe="1h")
    macd = msgspec.convert({"type": "macd", "fast": 5, "slow": 35, "signal": 5}, IndicatorSpec)
    assert isinstance(macd, MacdParams)
    assert (macd.fast, macd.slow, macd.signal) == (5, 35, 5)
    # A round trip through JSON, as a config file would.
    text = msgspec.json.encode(BbandsParams(period=20, nbdev_up=2.5))
    assert msgspec.json.decode(text, type=IndicatorSpec) == BbandsParams(period=20, nbdev_up=2.5)


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "ema", "period": 12, "lenght": 3},  # unknown key
        {"type": "ema", "perod": 12},
        {"type": "hma", "period": 12},  # unknown type
        {"period": 12},  # no type
        {"type": "ema", "period": "12"},
        {"type": "sma", "period": 0},
        {"type": "rsi", "period": 1},
        {"type": "adx", "period": 1},
        {"type": "bbands", "period": 1},
        {"type": "bbands", "nbdev_up": -1.0},
        {"type": "macd", "fast": 26, "slow": 12},
        {"type": "macd", "fast": 12, "slow": 12},
        {"type": "macd", "signal": 0},
        {"type": "stoch", "slowd_period": 0},
    ],
)
def test_bad_specs_are_rejected(raw: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(raw, IndicatorSpec)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SmaParams(period=0), "period"),
        (lambda: EmaParams(period=-3), "period"),
        (lambda: RsiParams(period=1), "period"),
        (lambda: AdxParams(period=1), "period"),
        (lambda: BbandsParams(period=1), "period"),
        (lambda: BbandsParams(nbdev_dn=-0.5), "nbdev_dn"),
        (lambda: BbandsParams(nbdev_up=math.nan), "nbdev_up"),
        (lambda: BbandsParams(nbdev_up=math.inf), "nbdev_up"),
        (lambda: MacdParams(fast=26, slow=12), "fast must be smaller than slow"),
        (lambda: MacdParams(fast=1, slow=12), "fast"),
        (lambda: MacdParams(signal=0), "signal"),
        (lambda: StochParams(fastk_period=0), "fastk_period"),
    ],
)
def test_params_are_checked_when_built_in_code(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_an_indicator_refuses_the_params_of_another() -> None:
    with pytest.raises(TypeError, match="SmaParams"):
        Sma(EmaParams())
    with pytest.raises(TypeError):
        make_indicator(IndicatorParams())


# --------------------------------------------------------------------------- bounded state


def _containers(obj: object, seen: set[int] | None = None) -> Iterator[tuple[str, Any]]:
    """Every deque, list, dict and set reachable through the attributes of ``obj``."""
    seen = set() if seen is None else seen
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return
    seen.add(id(obj))
    for name, value in vars(obj).items():
        if isinstance(value, IndicatorParams):
            continue
        if isinstance(value, deque | list | dict | set):
            yield f"{type(obj).__name__}.{name}", value
        else:
            yield from _containers(value, seen)


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_state_stays_bounded(rows: list[Row], name: str) -> None:
    """O(1) per candle: after thousands of candles, no buffer holds more than a window."""
    cls = INDICATORS[name]
    assert len(rows) > RESUM_EVERY  # the periodic re-summing runs too
    for spec in (cls.Params(), _small(cls.Params())):
        bound = max([v for v in msgspec.structs.asdict(spec).values() if type(v) is int] or [0])
        indicator = make_indicator(spec)
        sizes: list[int] = []
        for i, row in enumerate(rows):
            indicator.update(row)
            if i % 64 == 0:
                sizes.append(sum(len(c) for _, c in _containers(indicator)))
        for where, container in _containers(indicator):
            limit = len(indicator.OUTPUTS) if isinstance(container, dict) else bound
            assert len(container) <= limit, f"{where} holds {len(container)}"
        # Nothing grows with the number of candles seen.
        assert max(sizes[len(sizes) // 2 :]) == max(sizes)


def _small(spec: IndicatorParams) -> IndicatorParams:
    fields = msgspec.structs.asdict(spec)
    smaller = {k: 2 for k, v in fields.items() if type(v) is int}
    if isinstance(spec, MacdParams):
        smaller = {"fast": 2, "slow": 3, "signal": 1}
    return msgspec.structs.replace(spec, **smaller)


def test_rolling_sum_does_not_drift() -> None:
    """After large values leave the window, the sum is exact again within RESUM_EVERY pushes."""
    window = RollingSum(10)
    rng = np.random.default_rng(1)
    for x in rng.uniform(1e6, 1e7, size=RESUM_EVERY):
        window.push(float(x))
    small = [float(x) for x in rng.uniform(0.0, 1e-3, size=RESUM_EVERY)]
    for x in small:
        window.push(x)
    assert len(window.window) == 10
    assert window.total == pytest.approx(math.fsum(small[-10:]), rel=1e-12)


def test_window_moments_are_exact() -> None:
    moments = WindowMoments(3)
    rng = np.random.default_rng(2)
    for x in rng.uniform(0.05, 0.15, size=RESUM_EVERY + 17):
        moments.push(float(x))
    for x in (0.1, 0.1, 0.1):
        moments.push(x)
    assert moments.variance() == 0.0
    assert moments.mean() == 0.1
    for x in (1e-300, 2.0, 3.0, 4.0):  # one tiny value: the integers grow...
        moments.push(x)
    assert moments.mean() == 3.0
    assert moments.variance() == 2.0 / 3.0
    assert moments._sum.bit_length() > 1000
    for _ in range(RESUM_EVERY):  # ... and shrink back once it has left the window
        moments.push(1.5)
    assert moments.variance() == 0.0
    assert moments._sum.bit_length() < 10
