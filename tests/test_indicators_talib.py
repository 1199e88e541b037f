"""Every Bar indicator fed candles one at a time against TA-Lib on the whole arrays.

Real candles (ETH-BTC 5m, GOOG 1d), plus a made-up series of coarse steps that opens flat:
it has the cases real data rarely does (no move at all, a window with no range, zero
volume), where TA-Lib's answers (RSI 0, raw %K 0, DI 0, ADX unchanged) must be ours too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pytest
import talib

from broker.csv_source import Row, read_candles
from workers.indicators import (
    AdxParams,
    AtrParams,
    BbandsParams,
    EmaParams,
    IndicatorParams,
    MacdParams,
    ObvParams,
    RsiParams,
    SmaParams,
    StochParams,
    WmaParams,
    make_indicator,
)

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
FILES = {"ETH-BTC-5m": DATA / "crypto" / "ETH-BTC-5m.csv", "GOOG-1d": DATA / "GOOG-1d.csv"}
RTOL = 1e-9
# Outputs that cross zero (MACD histogram, OBV) are compared with an absolute slack this
# small relative to the series' largest value.
ATOL_SCALE = 1e-12

Floats = npt.NDArray[np.float64]


class Arrays(NamedTuple):
    rows: list[Row]
    open: Floats
    high: Floats
    low: Floats
    close: Floats
    volume: Floats


def _steps(n: int = 3000, flat_start: int = 40) -> list[Row]:
    rng = np.random.default_rng(7)
    moves = rng.choice([-1, 0, 0, 0, 0, 1], size=n)
    moves[:flat_start] = 0
    close = 100.0 + np.cumsum(moves) * 0.5
    no_range = (rng.random(n) < 0.5) | (np.arange(n) < flat_start)
    high = np.where(no_range, close, close + rng.choice([0.0, 0.5, 1.0], size=n))
    low = np.where(no_range, close, close - rng.choice([0.0, 0.5], size=n))
    volume = np.where(rng.random(n) < 0.3, 0.0, rng.integers(1, 100, size=n).astype(np.float64))
    return [
        Row(i * 300_000, float(c), float(h), float(lo), float(c), float(v))
        for i, (h, lo, c, v) in enumerate(zip(high, low, close, volume, strict=True))
    ]


@pytest.fixture(scope="module", params=[*FILES, "steps"])
def data(request: pytest.FixtureRequest) -> Arrays:
    name: str = request.param
    rows = read_candles(FILES[name]) if name in FILES else _steps()
    columns = [np.array(column, dtype=np.float64) for column in zip(*rows, strict=True)]
    return Arrays(rows, *columns[1:])


Reference = Callable[[Arrays], dict[str, Floats]]


def _bbands(period: int, up: float, dn: float) -> Reference:
    def run(d: Arrays) -> dict[str, Floats]:
        # matype left at its default, the SMA
        upper, middle, lower = talib.BBANDS(d.close, timeperiod=period, nbdevup=up, nbdevdn=dn)
        return {"upper": upper, "middle": middle, "lower": lower}

    return run


def _macd(fast: int, slow: int, signal: int) -> Reference:
    def run(d: Arrays) -> dict[str, Floats]:
        line, sig, hist = talib.MACD(d.close, fast, slow, signal)
        return {"macd": line, "signal": sig, "hist": hist}

    return run


def _stoch(fastk: int, slowk: int, slowd: int) -> Reference:
    def run(d: Arrays) -> dict[str, Floats]:
        # both matypes left at their default, the SMA
        k, dd = talib.STOCH(
            d.high, d.low, d.close, fastk_period=fastk, slowk_period=slowk, slowd_period=slowd
        )
        return {"k": k, "d": dd}

    return run


def _adx(period: int) -> Reference:
    def run(d: Arrays) -> dict[str, Floats]:
        hlc = (d.high, d.low, d.close)
        return {
            "adx": talib.ADX(*hlc, period),
            "plus_di": talib.PLUS_DI(*hlc, period),
            "minus_di": talib.MINUS_DI(*hlc, period),
        }

    return run


CASES: list[tuple[IndicatorParams, Reference]] = [
    (SmaParams(), lambda d: {"value": talib.SMA(d.close, 30)}),
    (SmaParams(period=7), lambda d: {"value": talib.SMA(d.close, 7)}),
    (SmaParams(period=1), lambda d: {"value": talib.SMA(d.close, 1)}),
    (EmaParams(), lambda d: {"value": talib.EMA(d.close, 30)}),
    (EmaParams(period=9), lambda d: {"value": talib.EMA(d.close, 9)}),
    (EmaParams(period=2), lambda d: {"value": talib.EMA(d.close, 2)}),
    (WmaParams(), lambda d: {"value": talib.WMA(d.close, 30)}),
    (WmaParams(period=10), lambda d: {"value": talib.WMA(d.close, 10)}),
    (WmaParams(period=200), lambda d: {"value": talib.WMA(d.close, 200)}),
    (RsiParams(), lambda d: {"value": talib.RSI(d.close, 14)}),
    (RsiParams(period=5), lambda d: {"value": talib.RSI(d.close, 5)}),
    (RsiParams(period=2), lambda d: {"value": talib.RSI(d.close, 2)}),
    (MacdParams(), _macd(12, 26, 9)),
    (MacdParams(fast=5, slow=35, signal=5), _macd(5, 35, 5)),
    (MacdParams(fast=3, slow=10, signal=1), _macd(3, 10, 1)),
    (StochParams(), _stoch(5, 3, 3)),
    (StochParams(fastk_period=14, slowk_period=3, slowd_period=5), _stoch(14, 3, 5)),
    (StochParams(fastk_period=9, slowk_period=1, slowd_period=1), _stoch(9, 1, 1)),
    (AtrParams(), lambda d: {"value": talib.ATR(d.high, d.low, d.close, 14)}),
    (AtrParams(period=5), lambda d: {"value": talib.ATR(d.high, d.low, d.close, 5)}),
    (AtrParams(period=1), lambda d: {"value": talib.ATR(d.high, d.low, d.close, 1)}),
    (BbandsParams(), _bbands(5, 2.0, 2.0)),
    (BbandsParams(period=20, nbdev_up=2.5, nbdev_dn=1.5), _bbands(20, 2.5, 1.5)),
    (BbandsParams(period=2, nbdev_up=1.0, nbdev_dn=1.0), _bbands(2, 1.0, 1.0)),
    (AdxParams(), _adx(14)),
    (AdxParams(period=7), _adx(7)),
    (AdxParams(period=2), _adx(2)),
    (ObvParams(), lambda d: {"value": talib.OBV(d.close, d.volume)}),
]


def _case_id(case: tuple[IndicatorParams, Reference]) -> str:
    return repr(case[0])


@pytest.mark.parametrize(("spec", "reference"), CASES, ids=[_case_id(c) for c in CASES])
def test_matches_talib(spec: IndicatorParams, reference: Reference, data: Arrays) -> None:
    indicator = make_indicator(spec)
    got: dict[str, list[float | None]] = {name: [] for name in indicator.OUTPUTS}
    for row in data.rows:
        indicator.update(row)
        for name, values in got.items():
            values.append(indicator.output(name))
    want = reference(data)
    assert set(want) == set(got)
    for name, expected in want.items():
        _assert_same_series(name, got[name], expected)
    first = int(np.argmax(~np.isnan(want[indicator.OUTPUTS[0]])))
    assert indicator.warmup == first + 1


def _assert_same_series(name: str, got: list[float | None], want: Floats) -> None:
    assert len(got) == len(want)
    present = ~np.isnan(want)
    assert present.any(), f"{name}: TA-Lib gave nothing"
    first = int(np.argmax(present))
    assert present[first:].all(), f"{name}: TA-Lib has a gap after its warm-up"
    ours_first = next((i for i, v in enumerate(got) if v is not None), None)
    assert ours_first == first, f"{name}: first value at {ours_first}, TA-Lib's at {first}"
    tail = got[first:]
    assert all(v is not None for v in tail), f"{name}: a value went missing after warm-up"
    values = np.array(tail, dtype=np.float64)
    expected = want[first:]
    atol = ATOL_SCALE * float(np.max(np.abs(expected)))
    np.testing.assert_allclose(values, expected, rtol=RTOL, atol=atol, err_msg=name)
