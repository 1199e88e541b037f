"""An example Python strategy: a channel breakout with an ATR stop, written against the API.

Run it with ``stratrun up examples/breakout.toml`` (its config adds this folder to
``runtime.plugin_paths``, so the class path is simply ``breakout:Breakout``).
"""

from __future__ import annotations

from collections import deque

import msgspec

from runtime.messages import Candle, OrderFilled
from workers.strategy import Strategy, StrategyContext


class BreakoutParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``lookback`` candles make the channel; exit at ``atr_stop`` ATRs below the entry."""

    lookback: int = 20
    atr_stop: float = 2.0


class Breakout(Strategy):
    """Long when the close breaks the highest high of the last ``lookback`` candles."""

    Params = BreakoutParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, BreakoutParams)
        self.p = params
        self.highs: dict[str, deque[float]] = {}
        self.stops: dict[str, float] = {}

    def on_start(self) -> None:
        self.ctx.log.info("breakout on a %d-candle channel", self.p.lookback)

    def on_candle(self, candle: Candle) -> None:
        highs = self.highs.setdefault(candle.symbol, deque(maxlen=self.p.lookback))
        atr = self.ctx.indicators.value(candle.symbol, "atr")  # declared in the config
        held = self.ctx.position(candle.symbol)
        if held is not None:
            stop = self.stops.get(candle.symbol)
            if stop is not None and candle.close < stop:
                self.ctx.close_position(candle.symbol, f"close under the ATR stop {stop:.6g}")
        elif len(highs) == highs.maxlen and atr is not None and candle.close > max(highs):
            self.ctx.signal(candle, "long", reason=f"close above the {len(highs)}-candle high")
            self.ctx.open_position(candle.symbol, "long", "channel breakout")
        highs.append(candle.high)

    def on_fill(self, fill: OrderFilled) -> None:
        atr = self.ctx.indicators.value(fill.symbol, "atr")
        if fill.side == "buy" and atr is not None:
            self.stops[fill.symbol] = fill.price - self.p.atr_stop * atr
