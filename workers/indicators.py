"""Incremental indicators: O(1) work per candle, no recomputation over history."""

from __future__ import annotations

from collections import deque

__all__ = ["RSI", "SMA"]


class SMA:
    """Simple moving average over the last ``period`` values."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("period must be at least 1")
        self.period = period
        self._window: deque[float] = deque(maxlen=period)
        self._sum = 0.0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        """Add one value; returns the average once ``period`` values are in."""
        if len(self._window) == self.period:
            self._sum -= self._window[0]
        self._window.append(x)
        self._sum += x
        if len(self._window) == self.period:
            self.value = self._sum / self.period
        return self.value


class RSI:
    """Relative strength index with Wilder's smoothing (seeded by the first ``period`` moves)."""

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError("period must be at least 1")
        self.period = period
        self._prev: float | None = None
        self._count = 0
        self._gain = 0.0
        self._loss = 0.0
        self.value: float | None = None

    def update(self, close: float) -> float | None:
        """Add one close; returns the RSI once ``period`` moves are in."""
        if self._prev is None:
            self._prev = close
            return None
        change = close - self._prev
        self._prev = close
        gain, loss = max(change, 0.0), max(-change, 0.0)
        self._count += 1
        if self._count <= self.period:
            self._gain += gain / self.period
            self._loss += loss / self.period
            if self._count < self.period:
                return None
        else:
            self._gain = (self._gain * (self.period - 1) + gain) / self.period
            self._loss = (self._loss * (self.period - 1) + loss) / self.period
        if self._loss == 0.0:
            self.value = 100.0 if self._gain > 0.0 else 50.0
        else:
            self.value = 100.0 - 100.0 / (1.0 + self._gain / self._loss)
        return self.value
