"""Momentum oscillators: RSI, MACD and the slow stochastic."""

from __future__ import annotations

from collections import deque
from typing import Annotated

from msgspec import Meta

from workers.indicators._base import Bar, Indicator, IndicatorParams, RollingSum, require_at_least
from workers.indicators.moving import EmaCore

__all__ = [
    "RSI",
    "Macd",
    "MacdParams",
    "Rsi",
    "RsiParams",
    "StochParams",
    "Stochastic",
]


class _WilderMoves:
    """Wilder-smoothed average gain and loss of a series' moves, seeded with their plain mean."""

    __slots__ = ("_moves", "gain", "loss", "period", "prev", "seeded")

    def __init__(self, period: int) -> None:
        self.period = period
        self.prev: float | None = None
        self._moves = 0
        self.gain = 0.0
        self.loss = 0.0
        self.seeded = False  # ``period`` moves are in: the averages are valid from now on

    def update(self, x: float) -> bool:
        """Add one value; True once ``period`` moves are in and the averages are valid."""
        prev, self.prev = self.prev, x
        if prev is None:
            return False
        change = x - prev
        gain = change if change > 0.0 else 0.0
        loss = -change if change < 0.0 else 0.0
        p = self.period
        if self.seeded:
            self.gain = (self.gain * (p - 1) + gain) / p
            self.loss = (self.loss * (p - 1) + loss) / p
            return True
        self._moves += 1
        if self._moves < p:
            self.gain += gain
            self.loss += loss
            return False
        self.gain = (self.gain + gain) / p
        self.loss = (self.loss + loss) / p
        self.seeded = True
        return True


class RSI:
    """Wilder's RSI of plain floats: ``RSI(period).update(close) -> float | None``.

    A flat window gives 50 (TA-Lib's ``RSI`` gives 0; :class:`Rsi` follows TA-Lib).
    """

    def __init__(self, period: int) -> None:
        require_at_least("period", period, 1)
        self.period = period
        self._moves = _WilderMoves(period)
        self.value: float | None = None

    def update(self, close: float) -> float | None:
        """Add one close; returns the RSI once ``period`` moves are in."""
        if self._moves.update(close):
            gain, loss = self._moves.gain, self._moves.loss
            if loss == 0.0:
                self.value = 100.0 if gain > 0.0 else 50.0
            else:
                self.value = 100.0 - 100.0 / (1.0 + gain / loss)
        return self.value


class RsiParams(IndicatorParams, frozen=True, tag="rsi"):
    """Params of :class:`Rsi`."""

    period: Annotated[int, Meta(ge=2)] = 14

    def __post_init__(self) -> None:
        require_at_least("period", self.period, 2)


class Rsi(Indicator):
    """Wilder's relative strength index of the close (TA-Lib ``RSI``; a flat window gives 0)."""

    NAME = "rsi"
    OUTPUTS = ("value",)
    Params = RsiParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, RsiParams)
        self.period = params.period
        self._moves = _WilderMoves(params.period)

    def update(self, bar: Bar) -> None:
        moves, x = self._moves, bar.close
        prev = moves.prev
        if moves.seeded and prev is not None:
            # _WilderMoves.update once seeded, inlined: this runs on every candle.
            moves.prev = x
            change = x - prev
            p = moves.period
            moves.gain = gain = (moves.gain * (p - 1) + (change if change > 0.0 else 0.0)) / p
            moves.loss = loss = (moves.loss * (p - 1) + (-change if change < 0.0 else 0.0)) / p
        elif moves.update(x):
            gain, loss = moves.gain, moves.loss
        else:
            return
        total = gain + loss
        self._out["value"] = 100.0 * (gain / total) if total != 0.0 else 0.0

    @property
    def warmup(self) -> int:
        return self.period + 1


class MacdParams(IndicatorParams, frozen=True, tag="macd"):
    """Params of :class:`Macd`: EMA periods, ``fast < slow``."""

    fast: Annotated[int, Meta(ge=2)] = 12
    slow: Annotated[int, Meta(ge=2)] = 26
    signal: Annotated[int, Meta(ge=1)] = 9

    def __post_init__(self) -> None:
        require_at_least("fast", self.fast, 2)
        require_at_least("slow", self.slow, 2)
        require_at_least("signal", self.signal, 1)
        if self.fast >= self.slow:
            raise ValueError("fast must be smaller than slow")


class Macd(Indicator):
    """MACD line (fast EMA - slow EMA), its signal EMA and the histogram (TA-Lib ``MACD``).

    Like TA-Lib, the fast EMA is seeded on the same candle as the slow one, with the mean of
    the last ``fast`` closes, and all three outputs appear once the signal line exists.
    """

    NAME = "macd"
    OUTPUTS = ("macd", "signal", "hist")
    Params = MacdParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, MacdParams)
        self._warmup = params.slow + params.signal - 1
        self._fast = EmaCore(params.fast, skip=params.slow - params.fast)
        self._slow = EmaCore(params.slow)
        self._signal = EmaCore(params.signal)

    def update(self, bar: Bar) -> None:
        close = bar.close
        fast_ema, slow_ema, signal_ema = self._fast, self._slow, self._signal
        signal = signal_ema.value
        if signal is None:  # warming up
            fast = fast_ema.update(close)
            slow = slow_ema.update(close)
            if fast is None or slow is None:
                return
            line = fast - slow
            signal = signal_ema.update(line)
            if signal is None:
                return
        else:
            # All three are seeded (the signal line only starts once both EMAs have):
            # EmaCore.update of each, inlined, as this runs on every candle.
            fast = fast_ema.value
            slow = slow_ema.value
            assert fast is not None and slow is not None
            fast_ema.value = fast = (close - fast) * fast_ema.k + fast
            slow_ema.value = slow = (close - slow) * slow_ema.k + slow
            line = fast - slow
            signal_ema.value = signal = (line - signal) * signal_ema.k + signal
        out = self._out
        out["macd"] = line
        out["signal"] = signal
        out["hist"] = line - signal

    @property
    def warmup(self) -> int:
        return self._warmup


class StochParams(IndicatorParams, frozen=True, tag="stoch"):
    """Params of :class:`Stochastic`: raw %K window and the two SMA smoothings."""

    fastk_period: Annotated[int, Meta(ge=1)] = 5
    slowk_period: Annotated[int, Meta(ge=1)] = 3
    slowd_period: Annotated[int, Meta(ge=1)] = 3

    def __post_init__(self) -> None:
        require_at_least("fastk_period", self.fastk_period, 1)
        require_at_least("slowk_period", self.slowk_period, 1)
        require_at_least("slowd_period", self.slowd_period, 1)


class Stochastic(Indicator):
    """Slow stochastic with SMA smoothing: ``k`` and ``d`` (TA-Lib ``STOCH`` slowk, slowd).

    A window whose high equals its low gives a raw %K of 0, as in TA-Lib.
    """

    NAME = "stoch"
    OUTPUTS = ("k", "d")
    Params = StochParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, StochParams)
        self.fastk_period = params.fastk_period
        self._warmup = params.fastk_period + params.slowk_period + params.slowd_period - 2
        self._index = 0
        # Monotonic deques of (candle index, price): the window's highest high (lowest low) is
        # at the front; a price beaten by a newer one can never be the extreme again.
        self._highs: deque[tuple[int, float]] = deque()
        self._lows: deque[tuple[int, float]] = deque()
        self._k = RollingSum(params.slowk_period)
        self._d = RollingSum(params.slowd_period)

    def update(self, bar: Bar) -> None:
        index = self._index
        self._index += 1
        highs, lows = self._highs, self._lows
        while highs and highs[-1][1] <= bar.high:
            highs.pop()
        highs.append((index, bar.high))
        if highs[0][0] <= index - self.fastk_period:
            highs.popleft()
        while lows and lows[-1][1] >= bar.low:
            lows.pop()
        lows.append((index, bar.low))
        if lows[0][0] <= index - self.fastk_period:
            lows.popleft()
        if index < self.fastk_period - 1:
            return
        lowest = lows[0][1]
        span = (highs[0][1] - lowest) / 100.0
        self._k.push((bar.close - lowest) / span if span != 0.0 else 0.0)
        if not self._k.full:
            return
        slow_k = self._k.total / self._k.size
        self._d.push(slow_k)
        if self._d.full:
            self._out["k"] = slow_k
            self._out["d"] = self._d.total / self._d.size

    @property
    def warmup(self) -> int:
        return self._warmup
