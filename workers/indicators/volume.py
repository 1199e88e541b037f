"""Volume-based: session VWAP anchored to the UTC day, and on-balance volume."""

from __future__ import annotations

from workers.indicators._base import Bar, Indicator, IndicatorParams

__all__ = ["Obv", "ObvParams", "Vwap", "VwapParams"]

DAY_MS = 86_400_000


class VwapParams(IndicatorParams, frozen=True, tag="vwap"):
    """Params of :class:`Vwap` (none besides the timeframe)."""


class Vwap(Indicator):
    """Volume-weighted average of the typical price ``(high + low + close) / 3`` since the
    start of the candle's UTC day (by ``open_time``); None until the session has volume."""

    NAME = "vwap"
    OUTPUTS = ("value",)
    Params = VwapParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        self._day: int | None = None
        self._price_volume = 0.0
        self._volume = 0.0

    def update(self, bar: Bar) -> None:
        day = bar.open_time // DAY_MS
        if day != self._day:
            self._day = day
            self._price_volume = 0.0
            self._volume = 0.0
            self._out["value"] = None
        self._price_volume += (bar.high + bar.low + bar.close) / 3.0 * bar.volume
        self._volume += bar.volume
        if self._volume > 0.0:
            self._out["value"] = self._price_volume / self._volume

    @property
    def warmup(self) -> int:
        return 1


class ObvParams(IndicatorParams, frozen=True, tag="obv"):
    """Params of :class:`Obv` (none besides the timeframe)."""


class Obv(Indicator):
    """On-balance volume (TA-Lib ``OBV``): starts at the first candle's volume, then adds
    the volume of each candle that closes higher and subtracts that of each that closes
    lower."""

    NAME = "obv"
    OUTPUTS = ("value",)
    Params = ObvParams

    def __init__(self, params: IndicatorParams) -> None:
        super().__init__(params)
        self._prev_close: float | None = None

    def update(self, bar: Bar) -> None:
        prev_close, self._prev_close = self._prev_close, bar.close
        obv = self._out["value"]
        if prev_close is None or obv is None:
            self._out["value"] = bar.volume
        elif bar.close > prev_close:
            self._out["value"] = obv + bar.volume
        elif bar.close < prev_close:
            self._out["value"] = obv - bar.volume

    @property
    def warmup(self) -> int:
        return 1
