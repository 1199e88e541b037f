"""MultiTimeframeGate: a higher timeframe must agree before the strategy enters."""

from __future__ import annotations

from typing import Literal

import msgspec

from runtime.messages import PositionSide
from workers.indicators import Bar
from workers.services.indicator_registry import IndicatorRegistry

__all__ = ["GateConfig", "MultiTimeframeGate"]


class GateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[strategies.gate]``: the trend on ``timeframe`` must agree with the entry.

    Parameters
    ----------
    timeframe:
        The higher timeframe (the broker resamples it from the base stream).
    indicator:
        An indicator declared with this ``timeframe``.
    rule:
        ``close_vs_indicator``: long only while the last higher-timeframe close is above the
        indicator, short only while it is below.
    """

    timeframe: str
    indicator: str
    rule: Literal["close_vs_indicator"] = "close_vs_indicator"


class MultiTimeframeGate:
    """Remembers the last higher-timeframe close per symbol and judges entries by it."""

    def __init__(self, config: GateConfig, indicators: IndicatorRegistry) -> None:
        self.config = config
        self._indicators = indicators
        self._last_close: dict[str, float] = {}
        self.blocked = 0

    def observe(self, bar: Bar, symbol: str, timeframe: str) -> None:
        """Every candle goes by here; only the gate's timeframe is kept."""
        if timeframe == self.config.timeframe:
            self._last_close[symbol] = bar.close

    def veto(self, symbol: str, side: PositionSide) -> str | None:
        """None if the higher timeframe agrees with ``side``, else why not."""
        tf, name = self.config.timeframe, self.config.indicator
        close = self._last_close.get(symbol)
        level = self._indicators.value(symbol, name)
        if close is None or level is None:
            reason = f"gate: {name} on {tf} is not warm yet"
        elif (side == "long" and close > level) or (side == "short" and close < level):
            return None
        else:
            reason = f"gate: {tf} close {close:.8g} vs {name} {level:.8g} disagrees with {side}"
        self.blocked += 1
        return reason
