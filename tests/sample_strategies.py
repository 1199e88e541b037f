"""Strategies used only by tests (imported by worker processes by dotted path)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from runtime.messages import Candle
from workers.strategy import Strategy, StrategyContext


class FlakyParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    every: Annotated[int, msgspec.Meta(ge=1)] = 3


class Flaky(Strategy):
    """Raises on every ``every``-th candle; buys on the others when flat, sells when long."""

    Params = FlakyParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, FlakyParams)
        self.every = params.every
        self.seen = 0

    def on_candle(self, candle: Candle) -> None:
        self.seen += 1
        if self.seen % self.every == 0:
            raise RuntimeError(f"flaky on candle {candle.seq}")
        held = self.ctx.position(candle.symbol) is not None
        self.ctx.target(candle.symbol, "flat" if held else "long", "flip")
