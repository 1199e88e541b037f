"""SMA and Wilder RSI against plain reference implementations on real closes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from broker.csv_source import read_candles
from workers.indicators import RSI, SMA

ETH = Path(__file__).resolve().parents[1] / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"
REL = 1e-9

Floats = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def closes() -> Floats:
    return np.array([row.close for row in read_candles(ETH)], dtype=np.float64)


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
