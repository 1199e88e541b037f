"""The indicator interface, its config base and the O(1) rolling building blocks."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import ClassVar, Protocol

import msgspec

__all__ = [
    "RESUM_EVERY",
    "Bar",
    "Indicator",
    "IndicatorParams",
    "RollingSum",
    "require_at_least",
]


class Bar(Protocol):
    """One closed OHLCV candle: ``runtime.messages.Candle`` and ``broker.csv_source.Row``."""

    @property
    def open_time(self) -> int:
        """Open time in milliseconds since the epoch, UTC."""
        ...

    @property
    def open(self) -> float: ...

    @property
    def high(self) -> float: ...

    @property
    def low(self) -> float: ...

    @property
    def close(self) -> float: ...

    @property
    def volume(self) -> float: ...


class IndicatorParams(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"
):
    """Base of every indicator's config params.

    `timeframe`: None = the strategy's decision timeframe.
    """

    timeframe: str | None = None


def require_at_least(name: str, value: float, minimum: float) -> None:
    """Raise ValueError unless ``value >= minimum`` (and, for floats, finite)."""
    if not value >= minimum or math.isinf(value):
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


class Indicator:
    """An incremental indicator: fed one closed candle at a time, O(1) work per candle.

    Every output is ``None`` until it first exists: at the candle where TA-Lib's function for
    it returns its first value, where TA-Lib has one. The first name in ``OUTPUTS`` is the
    primary output.
    """

    NAME: ClassVar[str]
    OUTPUTS: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[IndicatorParams]]

    def __init__(self, params: IndicatorParams) -> None:
        if not isinstance(params, self.Params):
            raise TypeError(
                f"{type(self).__name__} takes {self.Params.__name__}, got {type(params).__name__}"
            )
        self.params = params
        self._out: dict[str, float | None] = dict.fromkeys(self.OUTPUTS)

    def update(self, bar: Bar) -> None:
        """Take one closed candle."""
        raise NotImplementedError

    def output(self, name: str | None = None) -> float | None:
        """The latest value of output ``name`` (the primary one if None); None until warm."""
        return self._out[self.OUTPUTS[0] if name is None else name]

    def reader(self, name: str | None = None) -> Callable[[], float | None]:
        """A function of no arguments that returns ``self.output(name)``, for hot loops.

        It reads the live value each time it is called (nothing is copied), without the cost
        of a Python method call; an unknown ``name`` raises KeyError here already.
        """
        if type(self).output is not Indicator.output:  # a subclass reads its outputs its own way
            return partial(self.output, name)
        key = self.OUTPUTS[0] if name is None else name
        if key not in self._out:
            raise KeyError(key)  # as output(name) would
        # ``_out`` is created once in __init__ and only ever updated in place.
        return partial(self._out.__getitem__, key)

    @property
    def ready(self) -> bool:
        """Whether the primary output has a value."""
        return self._out[self.OUTPUTS[0]] is not None

    @property
    def warmup(self) -> int:
        """The number of candles until the primary output first exists."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


# Rounding errors of a running sum do not cancel out, and a sum that once held large values
# keeps their absolute error after the values fall: re-adding the window exactly every so
# often bounds both. Doing it every ``max(size, RESUM_EVERY)`` pushes keeps the cost O(1)
# amortised.
RESUM_EVERY = 4096


class RollingSum:
    """The sum of the last ``size`` values pushed, in O(1) per push."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.window: deque[float] = deque(maxlen=size)
        self.total = 0.0
        self._resum_in = max(size, RESUM_EVERY)

    @property
    def full(self) -> bool:
        """Whether ``size`` values are in."""
        return len(self.window) == self.size

    def push(self, x: float) -> None:
        """Add ``x``, dropping the oldest value once the window is full."""
        if len(self.window) == self.size:
            self.total -= self.window[0]
        self.window.append(x)
        self.total += x
        self._resum_in -= 1
        if self._resum_in == 0:
            self.total = math.fsum(self.window)
            self._resum_in = max(self.size, RESUM_EVERY)
