"""ExitOrchestrator: stop loss, take profit, trailing stop, time stop, opposite signal.

Exits are decided on a closed candle and filled, like every market order, at the next
candle's open. Stop loss and take profit count as hit when the candle's low or high touched
their level; the trailing stop is judged on the close (the order of high and low inside a
candle is unknown, so a trail raised by this candle's high is not also hit by its low).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from runtime.messages import Direction
from workers.indicators import Bar
from workers.services.actions import ActionQueueService, ClosePosition
from workers.services.positions import ManagedPosition, PositionLifecycleService, PositionState

__all__ = ["ExitConfig", "ExitOrchestrator"]

_OPEN = PositionState.OPEN  # a module constant: faster to read than the enum member

Pct = Annotated[float, msgspec.Meta(gt=0, lt=100)]


class ExitConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[strategies.exit]``: each rule is off unless set.

    Parameters
    ----------
    stop_loss_pct, take_profit_pct:
        Distance from the entry price, in percent.
    trailing_stop_pct:
        Distance from the best price since entry, in percent.
    time_stop_candles:
        Close after this many decision-timeframe candles.
    on_opposite_signal:
        Close when the signal turns to the other side.
    """

    stop_loss_pct: Pct | None = None
    take_profit_pct: Annotated[float, msgspec.Meta(gt=0)] | None = None
    trailing_stop_pct: Pct | None = None
    time_stop_candles: Annotated[int, msgspec.Meta(ge=1)] | None = None
    on_opposite_signal: bool = True


class ExitOrchestrator:
    """Queues the close of an open position when one of its exit rules fires."""

    def __init__(
        self, config: ExitConfig, positions: PositionLifecycleService, actions: ActionQueueService
    ) -> None:
        self.config = config
        self._positions = positions
        self._actions = actions
        self.fired: dict[str, int] = {}

    def on_candle(self, symbol: str, bar: Bar, direction: Direction) -> str | None:
        """Judge the open position on ``symbol``; returns the rule that fired, if any."""
        position = self._positions.active(symbol)
        if position is None or position.state is not _OPEN:
            return None
        rule = self._rule(position, bar, direction)
        if rule is not None and self._actions.enqueue(ClosePosition(symbol, rule)):
            self.fired[rule] = self.fired.get(rule, 0) + 1
        return rule

    def _rule(self, p: ManagedPosition, bar: Bar, direction: Direction) -> str | None:
        c = self.config
        stop, take, trail = c.stop_loss_pct, c.take_profit_pct, c.trailing_stop_pct
        if p.side == "long":
            if stop is not None and bar.low <= p.entry_price * (1 - stop / 100):
                return "stop_loss"
            if take is not None and bar.high >= p.entry_price * (1 + take / 100):
                return "take_profit"
            if trail is not None and bar.close <= p.best_price * (1 - trail / 100):
                return "trailing_stop"
        else:
            if stop is not None and bar.high >= p.entry_price * (1 + stop / 100):
                return "stop_loss"
            if take is not None and bar.low <= p.entry_price * (1 - take / 100):
                return "take_profit"
            if trail is not None and bar.close >= p.best_price * (1 + trail / 100):
                return "trailing_stop"
        if c.time_stop_candles is not None and p.candles_held >= c.time_stop_candles:
            return "time_stop"
        if c.on_opposite_signal and direction != "flat" and direction != p.side:
            return "opposite_signal"
        return None
