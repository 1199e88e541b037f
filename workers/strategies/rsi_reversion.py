"""RSI mean reversion: buy when oversold, sell back when the RSI recovers."""

from __future__ import annotations

from typing import Annotated

import msgspec

from runtime.messages import Candle
from workers.indicators import RSI
from workers.strategy import Strategy, StrategyContext

__all__ = ["RsiReversion", "RsiReversionParams"]


class RsiReversionParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Parameters of :class:`RsiReversion`.

    Parameters
    ----------
    period:
        RSI period (Wilder smoothing).
    oversold:
        Enter long when the RSI falls below this.
    exit_above:
        Close the long when the RSI rises above this.
    """

    period: Annotated[int, msgspec.Meta(ge=2)] = 14
    oversold: Annotated[float, msgspec.Meta(gt=0, lt=100)] = 30.0
    exit_above: Annotated[float, msgspec.Meta(gt=0, lt=100)] = 50.0

    def __post_init__(self) -> None:
        if self.oversold >= self.exit_above:
            raise ValueError("oversold must be below exit_above")


class RsiReversion(Strategy):
    """Long below ``oversold``, flat again above ``exit_above``."""

    Params = RsiReversionParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, RsiReversionParams)
        self.p = params
        self._rsi: dict[str, RSI] = {}

    def on_candle(self, candle: Candle) -> None:
        rsi = self._rsi.setdefault(candle.symbol, RSI(self.p.period)).update(candle.close)
        if rsi is None:
            return
        holding = self.ctx.position(candle.symbol) is not None
        if not holding and rsi < self.p.oversold:
            reason = f"rsi {rsi:.1f} < {self.p.oversold:g}"
            self.ctx.signal(
                candle, "long", strength=(self.p.oversold - rsi) / self.p.oversold, reason=reason
            )
            self.ctx.target(candle.symbol, "long", reason)
        elif holding and rsi > self.p.exit_above:
            reason = f"rsi {rsi:.1f} > {self.p.exit_above:g}"
            self.ctx.signal(candle, "flat", reason=reason)
            self.ctx.target(candle.symbol, "flat", reason)
