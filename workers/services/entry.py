"""EntryOrchestrator: from the combined score to an entry, past the filters and the gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import msgspec

from runtime.messages import Direction, EventBody, Signal
from workers.indicators import Bar
from workers.services.actions import ActionQueueService, OpenPosition
from workers.services.filters import FilterOrchestrator
from workers.services.gate import MultiTimeframeGate
from workers.services.positions import PositionLifecycleService

__all__ = ["EntryConfig", "EntryOrchestrator"]


class EntryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[strategies.entry]``: score thresholds.

    Parameters
    ----------
    long_threshold:
        A score at or above this is a long signal.
    short_threshold:
        A score at or below this is a short signal; leave it out for a long-only strategy.
    """

    long_threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    short_threshold: Annotated[float, msgspec.Meta(ge=-1, lt=0)] | None = None


class EntryOrchestrator:
    """Turns a score into a direction, reports changes as signals, queues entries."""

    def __init__(
        self,
        config: EntryConfig,
        timeframe: str,
        quantity: float,
        positions: PositionLifecycleService,
        actions: ActionQueueService,
        filters: FilterOrchestrator,
        gate: MultiTimeframeGate | None,
        emit: Callable[[EventBody], None],
    ) -> None:
        self.config = config
        self._timeframe = timeframe
        self._quantity = quantity
        self._positions = positions
        self._actions = actions
        self._filters = filters
        self._gate = gate
        self._emit = emit
        self._last: dict[str, Direction] = {}

    def direction(self, score: float | None) -> Direction:
        """What the score says: long, short or flat."""
        if score is None:
            return "flat"
        if score >= self.config.long_threshold:
            return "long"
        short = self.config.short_threshold
        if short is not None and score <= short:
            return "short"
        return "flat"

    def on_candle(self, symbol: str, bar: Bar, score: float | None) -> Direction:
        """Judge one decision candle; returns the direction it signalled."""
        direction = self.direction(score)
        if self._last.get(symbol, "flat") != direction:
            self._last[symbol] = direction
            strength = abs(score) if score is not None else 0.0
            self._emit(
                Signal(
                    symbol,
                    self._timeframe,
                    direction,
                    strength,
                    f"score {score:+.3f}" if score is not None else "no score",
                )
            )
        if direction == "flat" or self._positions.active(symbol) is not None:
            return direction
        veto = self._filters.veto(symbol, bar)
        if veto is None and self._gate is not None:
            veto = self._gate.veto(symbol, direction)
        if veto is None:
            reason = f"{direction} on score {score:+.3f}" if score is not None else direction
            self._actions.enqueue(OpenPosition(symbol, direction, self._quantity, reason))
        return direction
