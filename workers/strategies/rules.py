"""The declarative strategy: everything it does is written in the config.

Indicators, weighted analyzers, entry thresholds, exit rules, filters and the
multi-timeframe gate come from the strategy's TOML section; this class only drives the
orchestrators on each decision-timeframe candle: exits first, then entries.
"""

from __future__ import annotations

import msgspec

from runtime.messages import Candle
from workers.container import StrategyServiceContainer
from workers.strategy import Strategy, StrategyContext

__all__ = ["RuleStrategy"]


class RuleStrategy(Strategy):
    """Scores every decision candle with the analyzers and lets the orchestrators act."""

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        if not isinstance(ctx, StrategyServiceContainer):
            raise TypeError("RuleStrategy runs on a StrategyServiceContainer")
        self.services = ctx

    def on_candle(self, candle: Candle) -> None:
        s = self.services
        if candle.timeframe != s.config.timeframe:
            return
        score = s.analyzers.score(candle.symbol, candle)
        s.exit.on_candle(candle.symbol, candle, s.entry.direction(score))
        s.entry.on_candle(candle.symbol, candle, score)
