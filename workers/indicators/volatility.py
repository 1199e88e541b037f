"""Volatility: Wilder's average true range and Bollinger bands."""

from __future__ import annotations

import math
from collections import deque
from math import floor
from typing import Annotated

from msgspec import Meta

from workers.indicators._base import RESUM_EVERY, Bar, Indicator, IndicatorParams, require_at_least

__all__ = [
    "Atr",
    "AtrParams",
    "BbandsParams",
    "BollingerBands",
    "WindowMoments",
    "true_range",
]


def true_range(high: float, low: float, prev_close: float) -> float:
    """The largest of the bar's range and its distances from the previous close."""
    return max(high - low, abs(prev_close - high), abs(low - prev_close))


class AtrParams(IndicatorParams, frozen=True, tag="atr"):
    """Params of :class:`Atr`."""

    period: Annotated[int, Meta(ge=1)] = 14

    def __post_init__(self) -> None:
        require_at_least("period", self.period, 1)


class Atr(Indicator):
    """Average true range with Wilder's smoothing (TA-Lib ``ATR``).

    The first bar has no previous close, so its true range is skipped: the first ATR is the
    mean of the next ``period`` true ranges.
    """

    NAME = "atr"
    OUTPUTS = ("value",)
    Params = AtrParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, AtrParams)
        self.period = params.period
        self._prev_close: float | None = None
        self._ranges = 0
        self._seed = 0.0

    def update(self, bar: Bar) -> None:
        high, low = bar.high, bar.low
        prev_close, self._prev_close = self._prev_close, bar.close
        if prev_close is None:
            return
        # true_range(high, low, prev_close), inlined (max() keeps the first of equals too).
        tr = high - low
        gap = abs(prev_close - high)
        if gap > tr:
            tr = gap
        gap = abs(low - prev_close)
        if gap > tr:
            tr = gap
        out = self._out
        atr = out["value"]
        p = self.period
        if atr is not None:
            out["value"] = (atr * (p - 1) + tr) / p
            return
        self._seed += tr
        self._ranges += 1
        if self._ranges == p:
            out["value"] = self._seed / p

    @property
    def warmup(self) -> int:
        return self.period + 1


class WindowMoments:
    """The exact sum and sum of squares of the last ``size`` values pushed, in O(1) per push.

    A float is a dyadic rational, so both sums are kept as integers at one binary scale
    ``2**-shift`` and never rounded: they cannot drift, and a flat window's variance is exactly
    0. (Float sums would leave a residue in the variance whose square root, of the order of
    1e-8 of the price, shows up in a near-flat window's deviation.)
    """

    def __init__(self, size: int) -> None:
        require_at_least("size", size, 1)
        self.size = size
        self.window: deque[float] = deque(maxlen=size)
        self._shift = 0
        self._scale = 1.0  # 2.0**shift, or inf once that is too large for a float
        self._sum = 0
        self._squares = 0
        self._renormalize_in = max(size, RESUM_EVERY)

    @property
    def full(self) -> bool:
        """Whether ``size`` values are in."""
        return len(self.window) == self.size

    def _scaled(self, x: float) -> int:
        """``x * 2**shift`` as an integer, first growing the shift if ``x`` needs a finer one."""
        numerator, denominator = x.as_integer_ratio()
        bits = denominator.bit_length() - 1
        if bits > self._shift:
            grow = bits - self._shift
            self._sum <<= grow
            self._squares <<= 2 * grow
            self._shift = bits
            self._scale = 2.0**bits if bits < 1024 else math.inf
        return numerator << (self._shift - bits)

    def push(self, x: float) -> None:
        """Add ``x``, dropping the oldest value once the window is full."""
        # Multiplying by a power of two is exact (short of overflow): when the product is a
        # whole number, it is the scaled integer, and far cheaper to get than by _scaled().
        product = x * self._scale
        scaled = floor(product) if product.is_integer() else self._scaled(x)
        window = self.window
        if len(window) == self.size:
            oldest = window[0]  # a whole number of 2**-shift, as every value in the window
            product = oldest * self._scale
            dropped = floor(product) if product.is_integer() else self._scaled(oldest)
            change = scaled - dropped
            self._sum += change
            self._squares += change * (scaled + dropped)  # scaled**2 - dropped**2
        else:
            self._sum += scaled
            self._squares += scaled * scaled
        window.append(x)
        self._renormalize_in -= 1
        if self._renormalize_in == 0:
            # One tiny value makes the scale, and so the integers, grow for good: start over
            # at the scale the window needs now (O(1) amortised, like RESUM_EVERY).
            self._shift = self._sum = self._squares = 0
            self._scale = 1.0
            for value in window:
                scaled = self._scaled(value)
                self._sum += scaled
                self._squares += scaled * scaled
            self._renormalize_in = max(self.size, RESUM_EVERY)

    def mean(self) -> float:
        """The mean of the window, correctly rounded (int / int is)."""
        return self._sum / (len(self.window) << self._shift)

    def variance(self) -> float:
        """The population variance of the window, correctly rounded."""
        n = len(self.window)
        return (n * self._squares - self._sum * self._sum) / ((n * n) << (2 * self._shift))

    def mean_and_variance(self) -> tuple[float, float]:
        """``(mean(), variance())`` in one call."""
        n, total, shift = len(self.window), self._sum, self._shift
        return (
            total / (n << shift),
            (n * self._squares - total * total) / ((n * n) << (2 * shift)),
        )


class BbandsParams(IndicatorParams, frozen=True, tag="bbands"):
    """Params of :class:`BollingerBands`: window and band widths in standard deviations."""

    period: Annotated[int, Meta(ge=2)] = 5
    nbdev_up: Annotated[float, Meta(ge=0.0)] = 2.0
    nbdev_dn: Annotated[float, Meta(ge=0.0)] = 2.0

    def __post_init__(self) -> None:
        require_at_least("period", self.period, 2)
        require_at_least("nbdev_up", self.nbdev_up, 0.0)
        require_at_least("nbdev_dn", self.nbdev_dn, 0.0)


class BollingerBands(Indicator):
    """SMA of the close with bands ``nbdev`` population standard deviations away (TA-Lib
    ``BBANDS`` with ``matype=SMA``): outputs ``upper``, ``middle``, ``lower``."""

    NAME = "bbands"
    OUTPUTS = ("upper", "middle", "lower")
    Params = BbandsParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, BbandsParams)
        self.period = params.period
        self.nbdev_up = params.nbdev_up
        self.nbdev_dn = params.nbdev_dn
        self._moments = WindowMoments(params.period)

    def update(self, bar: Bar) -> None:
        moments = self._moments
        moments.push(bar.close)
        if len(moments.window) < self.period:
            return
        mean, variance = moments.mean_and_variance()
        deviation = math.sqrt(variance)
        out = self._out
        out["middle"] = mean
        out["upper"] = mean + self.nbdev_up * deviation
        out["lower"] = mean - self.nbdev_dn * deviation

    @property
    def warmup(self) -> int:
        return self.period
