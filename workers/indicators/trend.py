"""Trend strength: Wilder's ADX with its directional indicators."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from workers.indicators._base import Bar, Indicator, IndicatorParams, require_at_least
from workers.indicators.volatility import true_range

__all__ = ["Adx", "AdxParams"]


class AdxParams(IndicatorParams, frozen=True, tag="adx"):
    """Params of :class:`Adx`."""

    period: Annotated[int, Meta(ge=2)] = 14

    def __post_init__(self) -> None:
        require_at_least("period", self.period, 2)


class Adx(Indicator):
    """Average directional index with ``plus_di`` and ``minus_di`` (TA-Lib ``ADX``,
    ``PLUS_DI``, ``MINUS_DI``).

    As in TA-Lib: the smoothed +DM, -DM and true range start as the plain sums of the first
    ``period - 1`` moves and are Wilder-smoothed from the ``period``-th on, which is when the
    DIs appear; the first ADX is the mean of the next ``period`` DX values. A candle whose DX
    is undefined (no range, or no directional move) leaves the ADX as it was.
    """

    NAME = "adx"
    OUTPUTS = ("adx", "plus_di", "minus_di")
    Params = AdxParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, AdxParams)
        self.period = params.period
        self._prev: tuple[float, float, float] | None = None
        self._moves = 0
        self._plus_dm = 0.0
        self._minus_dm = 0.0
        self._tr = 0.0
        self._dx_sum = 0.0

    def update(self, bar: Bar) -> None:
        high, low, close = bar.high, bar.low, bar.close
        prev, self._prev = self._prev, (high, low, close)
        if prev is None:
            return
        prev_high, prev_low, prev_close = prev
        up = high - prev_high
        down = prev_low - low
        plus_dm = up if up > 0.0 and up > down else 0.0
        minus_dm = down if down > 0.0 and down > up else 0.0
        tr = true_range(high, low, prev_close)
        self._moves += 1
        p = self.period
        if self._moves < p:
            self._plus_dm += plus_dm
            self._minus_dm += minus_dm
            self._tr += tr
            return
        self._plus_dm = self._plus_dm - self._plus_dm / p + plus_dm
        self._minus_dm = self._minus_dm - self._minus_dm / p + minus_dm
        self._tr = self._tr - self._tr / p + tr
        dx: float | None = None
        if self._tr != 0.0:
            plus_di = 100.0 * (self._plus_dm / self._tr)
            minus_di = 100.0 * (self._minus_dm / self._tr)
            if plus_di + minus_di != 0.0:
                dx = 100.0 * (abs(minus_di - plus_di) / (minus_di + plus_di))
        else:
            plus_di = minus_di = 0.0
        self._out["plus_di"] = plus_di
        self._out["minus_di"] = minus_di
        adx = self._out["adx"]
        if adx is not None:
            if dx is not None:
                self._out["adx"] = (adx * (p - 1) + dx) / p
            return
        if dx is not None:
            self._dx_sum += dx
        if self._moves == 2 * p - 1:
            self._out["adx"] = self._dx_sum / p

    @property
    def warmup(self) -> int:
        return 2 * self.period
