"""Moving-average crossover: long when the fast SMA is above the slow one."""

from __future__ import annotations

from typing import Annotated

import msgspec

from runtime.messages import Candle, Direction
from workers.indicators import SmaPair
from workers.strategy import Strategy, StrategyContext

__all__ = ["SmaCross", "SmaCrossParams"]


class SmaCrossParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Parameters of :class:`SmaCross`.

    Parameters
    ----------
    fast, slow:
        Periods of the two simple moving averages of the close; ``fast < slow``.
    allow_short:
        Go short on a downward cross instead of flat.
    """

    fast: Annotated[int, msgspec.Meta(ge=1)] = 10
    slow: Annotated[int, msgspec.Meta(ge=2)] = 30
    allow_short: bool = False

    def __post_init__(self) -> None:
        if self.fast >= self.slow:
            raise ValueError("fast must be smaller than slow")


class _Cross(SmaPair):
    """One symbol's averages (fast, slow) and which side of the slow one the fast one was last."""

    __slots__ = ("above",)

    def __init__(self, fast: int, slow: int) -> None:
        super().__init__(fast, slow)
        self.above: bool | None = None


class SmaCross(Strategy):
    """Goes long when SMA(fast) crosses above SMA(slow); flat (or short) on the cross down."""

    Params = SmaCrossParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, SmaCrossParams)
        self.p = params
        self._crosses: dict[str, _Cross] = {}  # one lookup per candle, not one per average

    def warmup(self) -> int:
        return self.p.slow - 1

    def on_candle(self, candle: Candle) -> None:
        key = candle.symbol
        cross = self._crosses.get(key)
        if cross is None:
            cross = self._crosses[key] = _Cross(self.p.fast, self.p.slow)
        above = cross.update(candle.close)
        if above is None:
            return
        was_above = cross.above
        if above is was_above:
            return
        cross.above = above
        if was_above is None:
            return
        direction: Direction = "long" if above else ("short" if self.p.allow_short else "flat")
        reason = f"sma{self.p.fast} {'above' if above else 'below'} sma{self.p.slow}"
        self.ctx.signal(candle, direction, reason=reason)
        self.ctx.target(candle.symbol, direction, reason)
