"""ActionQueueService: what the strategy decided, in order, each decision once.

Orchestrators and strategy code enqueue actions; after the strategy has seen the candle the
container carries them out (orders to the execution model). A repeated signal does not
enter twice: an Open is refused while the symbol has an active position or an Open queued,
unless a Close of that position is queued before it (a reversal).
"""

from __future__ import annotations

import msgspec

from runtime.messages import PositionSide
from workers.services.positions import PositionLifecycleService, PositionState

__all__ = ["Action", "ActionQueueService", "ClosePosition", "OpenPosition"]

_OPEN = PositionState.OPEN  # a module constant: faster to read than the enum member


# Structs rather than frozen dataclasses: built in C in a tenth of the time (a frozen
# dataclass sets each field through object.__setattr__), and a reversal builds two.
class OpenPosition(msgspec.Struct, frozen=True, gc=False):
    """Open a position on ``symbol`` (market order at the next candle's open)."""

    symbol: str
    side: PositionSide
    quantity: float
    reason: str


class ClosePosition(msgspec.Struct, frozen=True, gc=False):
    """Close the open position on ``symbol``."""

    symbol: str
    reason: str


Action = OpenPosition | ClosePosition


_NONE: list[Action] = []  # never appended to: drain() hands it out when nothing is queued


class ActionQueueService:
    """An ordered, deduplicated queue of actions for one strategy."""

    def __init__(self, positions: PositionLifecycleService) -> None:
        self._positions = positions
        self.queue: list[Action] = []  # oldest first; only this service changes it
        self.halted = False  # the kill switch: no Open is queued while it is on
        self.refused = 0

    def enqueue(self, action: Action) -> bool:
        """Queue ``action`` unless it repeats what is already decided; True if queued."""
        queued_close = queued_open = False
        symbol = action.symbol
        for queued in self.queue:
            if queued.symbol == symbol:
                if isinstance(queued, ClosePosition):
                    queued_close = True
                elif isinstance(queued, OpenPosition):
                    queued_open = True
        active = self._positions.active(symbol)
        match action:
            case OpenPosition():
                ok = not self.halted and not queued_open and (active is None or queued_close)
            case ClosePosition():
                ok = not queued_close and active is not None and active.state is _OPEN
        if ok:
            self.queue.append(action)
        else:
            self.refused += 1
        return ok

    def pending(self, symbol: str | None = None) -> list[Action]:
        """Queued actions (of one symbol, or all), oldest first."""
        return [a for a in self.queue if symbol is None or a.symbol == symbol]

    def drain(self) -> list[Action]:
        """Hand over every queued action, oldest first, and empty the queue."""
        if not self.queue:
            return _NONE  # most candles decide nothing: no new list for them
        actions = self.queue[:]
        self.queue.clear()  # the same list object: holders of it (the runner) see it empty
        return actions

    def __len__(self) -> int:
        return len(self.queue)
