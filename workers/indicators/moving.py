"""Moving averages of the close: simple, exponential (TA-Lib seeding) and linearly weighted."""

from __future__ import annotations

import math
from collections import deque
from typing import Annotated

from msgspec import Meta

from workers.indicators._base import (
    RESUM_EVERY,
    Bar,
    Indicator,
    IndicatorParams,
    require_at_least,
)

__all__ = ["SMA", "Ema", "EmaCore", "EmaParams", "Sma", "SmaPair", "SmaParams", "Wma", "WmaParams"]


class SMA:
    """Simple moving average of plain floats: ``SMA(period).update(x) -> float | None``.

    RollingSum's arithmetic written out in one method (same operations in the same order,
    so the same values to the last bit): strategies call this on every candle. Once the
    window is full (``value`` set) the update takes the short path.
    """

    __slots__ = ("_resum_every", "_resum_in", "_total", "_window", "period", "value")

    def __init__(self, period: int) -> None:
        require_at_least("period", period, 1)
        self.period = period
        self._window: deque[float] = deque(maxlen=period)
        self._total = 0.0
        self._resum_every = max(period, RESUM_EVERY)
        self._resum_in = self._resum_every
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        """Add one value; returns the average once ``period`` values are in."""
        window = self._window
        if self.value is not None:  # the window is full: the common case, kept short
            total = self._total - window[0] + x
            window.append(x)
            resum_in = self._resum_in - 1
            if resum_in:
                self._resum_in = resum_in
            else:
                total = math.fsum(window)
                self._resum_in = self._resum_every
            self._total = total
            self.value = value = total / self.period
            return value
        window.append(x)
        self._total += x
        self._resum_in -= 1
        if self._resum_in == 0:
            self._total = math.fsum(window)
            self._resum_in = self._resum_every
        if len(window) == self.period:
            self.value = value = self._total / self.period
            return value
        return None


class SmaPair:
    """Two :class:`SMA` of the same values, updated together: ``update(x)`` answers whether
    the first is above the second (``None`` until both windows are full).

    What a crossover needs on every candle in one call. Once both windows are full the pair
    keeps the two running totals itself and re-sums both on one countdown (two SMAs made and
    fed together count down alike); the averages are the same divisions of the same totals
    as :meth:`SMA.update`'s, so the same values to the last bit.
    """

    __slots__ = ("_a", "_b", "_every", "_na", "_nb", "_resum_in", "_ta", "_tb", "_wa", "_wb")

    def __init__(self, first: int, second: int) -> None:
        self._a = SMA(first)  # until both are full (and for good if they re-sum apart)
        self._b = SMA(second)
        self._na, self._nb = float(first), float(second)
        self._wa: deque[float] | None = None  # the windows, once the pair runs on its own
        self._wb: deque[float] | None = None
        self._ta = self._tb = 0.0
        self._resum_in = self._every = 0

    @property
    def first(self) -> float | None:
        """The first average (``None`` until its window is full)."""
        return self._a.value if self._wa is None else self._ta / self._na

    @property
    def second(self) -> float | None:
        """The second average (``None`` until its window is full)."""
        return self._b.value if self._wa is None else self._tb / self._nb

    def update(self, x: float) -> bool | None:
        """Add one value to both; ``first > second`` once both have an average."""
        wa, wb = self._wa, self._wb
        if wa is None or wb is None:
            return self._update_apart(x)
        ta = self._ta - wa[0] + x
        tb = self._tb - wb[0] + x
        wa.append(x)
        wb.append(x)
        resum_in = self._resum_in - 1
        if resum_in:
            self._resum_in = resum_in
        else:
            ta, tb = math.fsum(wa), math.fsum(wb)
            self._resum_in = self._every
        self._ta = ta
        self._tb = tb
        return ta / self._na > tb / self._nb

    def _update_apart(self, x: float) -> bool | None:
        """Each SMA updated on its own; the pair takes over once both are full."""
        a, b = self._a, self._b
        first, second = a.update(x), b.update(x)
        if first is None or second is None:
            return None
        if a._resum_every == b._resum_every:  # then their countdowns are equal too
            self._wa, self._wb = a._window, b._window
            self._ta, self._tb = a._total, b._total
            self._resum_in, self._every = a._resum_in, a._resum_every
        return first > second


class EmaCore:
    """EMA of plain floats, seeded like TA-Lib with the mean of its first ``period`` values.

    The first ``skip`` values are ignored: MACD uses that to seed its fast EMA on the same
    candle as its slow one.
    """

    __slots__ = ("_seed", "_seen", "_skip", "k", "period", "value")

    def __init__(self, period: int, skip: int = 0) -> None:
        require_at_least("period", period, 1)
        self.period = period
        self.k = 2.0 / (period + 1.0)
        self._skip = skip
        self._seen = 0
        self._seed = 0.0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        """Add one value; returns the EMA once it is seeded."""
        if self.value is not None:
            self.value = (x - self.value) * self.k + self.value
        elif self._skip > 0:
            self._skip -= 1
        else:
            self._seed += x
            self._seen += 1
            if self._seen == self.period:
                self.value = self._seed / self.period
        return self.value


class SmaParams(IndicatorParams, frozen=True, tag="sma"):
    """Params of :class:`Sma`."""

    period: Annotated[int, Meta(ge=1)] = 30

    def __post_init__(self) -> None:
        require_at_least("period", self.period, 1)


class Sma(Indicator):
    """Simple moving average of the close (TA-Lib ``SMA``)."""

    NAME = "sma"
    OUTPUTS = ("value",)
    Params = SmaParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, SmaParams)
        self._sma = SMA(params.period)

    def update(self, bar: Bar) -> None:
        self._out["value"] = self._sma.update(bar.close)

    @property
    def warmup(self) -> int:
        return self._sma.period


class EmaParams(IndicatorParams, frozen=True, tag="ema"):
    """Params of :class:`Ema`."""

    period: Annotated[int, Meta(ge=1)] = 30

    def __post_init__(self) -> None:
        require_at_least("period", self.period, 1)


class Ema(Indicator):
    """Exponential moving average of the close, ``k = 2 / (period + 1)`` (TA-Lib ``EMA``)."""

    NAME = "ema"
    OUTPUTS = ("value",)
    Params = EmaParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, EmaParams)
        self._ema = EmaCore(params.period)

    def update(self, bar: Bar) -> None:
        ema = self._ema
        value = ema.value
        if value is None:
            self._out["value"] = ema.update(bar.close)
        else:  # EmaCore.update once seeded, inlined: this runs on every candle
            ema.value = value = (bar.close - value) * ema.k + value
            self._out["value"] = value

    @property
    def warmup(self) -> int:
        return self._ema.period


class WmaParams(IndicatorParams, frozen=True, tag="wma"):
    """Params of :class:`Wma`."""

    period: Annotated[int, Meta(ge=1)] = 30

    def __post_init__(self) -> None:
        require_at_least("period", self.period, 1)


class Wma(Indicator):
    """Linearly weighted moving average of the close, newest weight ``period`` (TA-Lib ``WMA``)."""

    NAME = "wma"
    OUTPUTS = ("value",)
    Params = WmaParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        assert isinstance(params, WmaParams)
        self.period = params.period
        self._window: deque[float] = deque(maxlen=params.period)
        self._sum = 0.0
        self._weighted = 0.0
        self._divisor = params.period * (params.period + 1) / 2.0
        self._resum_in = max(params.period, RESUM_EVERY)

    def update(self, bar: Bar) -> None:
        x = bar.close
        window = self._window
        if len(window) == self.period:
            # Every weight drops by one (the oldest value's to zero) and x comes in at the top.
            self._weighted += self.period * x - self._sum
            self._sum += x - window[0]
        else:
            self._weighted += (len(window) + 1) * x
            self._sum += x
        window.append(x)
        self._resum_in -= 1
        if self._resum_in == 0:  # see RESUM_EVERY
            self._sum = math.fsum(window)
            self._weighted = math.fsum(i * v for i, v in enumerate(window, start=1))
            self._resum_in = max(self.period, RESUM_EVERY)
        if len(window) == self.period:
            self._out["value"] = self._weighted / self._divisor

    @property
    def warmup(self) -> int:
        return self.period
