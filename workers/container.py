"""StrategyServiceContainer: everything one strategy owns, with typed access and one close().

It is also what a strategy's ``self.ctx`` is: the read-only views and the few actions a
strategy may take (open, close, target, signal) all go through the services held here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from runtime.config import StrategyConfig
from runtime.messages import Candle, Direction, EventBody, PositionSide, Side, Signal
from runtime.secrets import Secret, SecretError, resolve
from workers.services.actions import ActionQueueService, ClosePosition, OpenPosition
from workers.services.analyzers import AnalyzerRegistry
from workers.services.entry import EntryOrchestrator
from workers.services.execution import PaperExecution
from workers.services.exit import ExitOrchestrator
from workers.services.filters import FilterOrchestrator
from workers.services.gate import MultiTimeframeGate
from workers.services.indicator_registry import IndicatorRegistry
from workers.services.ledger import LedgerService
from workers.services.positions import PositionLifecycleService, PositionState
from workers.services.risk_gate import RiskGate
from workers.strategy import PositionView

__all__ = ["ContainerClosed", "StrategyServiceContainer"]

_OPEN = PositionState.OPEN  # a module constant: faster to read than the enum member


class ContainerClosed(Exception):
    """A closed container was asked to act."""


@dataclass(eq=False)
class StrategyServiceContainer:
    """The per-strategy services, built only by :func:`workers.factory.build_container`."""

    config: StrategyConfig
    emit_event: Callable[[EventBody], None]
    logger: logging.Logger
    indicators: IndicatorRegistry
    analyzers: AnalyzerRegistry
    positions: PositionLifecycleService
    actions: ActionQueueService
    execution: PaperExecution
    filters: FilterOrchestrator
    gate: MultiTimeframeGate | None
    entry: EntryOrchestrator
    exit: ExitOrchestrator
    ledger: LedgerService
    on_close: list[Callable[[], None]] = field(default_factory=list)
    closed: bool = False
    risk: RiskGate | None = None  # the pre-trade check, when the config has [risk] limits

    # -- what a strategy sees (StrategyContext) -----------------------------------------

    @property
    def strategy_id(self) -> str:
        return self.config.id

    @property
    def log(self) -> logging.Logger:
        return self.logger

    def secret(self, name: str) -> Secret:
        """The secret ``name`` of the config, read now from its variable or file."""
        ref = self.config.secrets.get(name)
        if ref is None:
            raise SecretError(f"no secret named {name!r} in the strategy's config")
        return resolve(ref)

    def position(self, symbol: str) -> PositionView | None:
        """The open position on ``symbol`` (pending entries and closing exits excluded)."""
        p = self.positions.active(symbol)
        if p is None or p.state is not _OPEN:
            return None
        return PositionView(p.symbol, p.side, p.quantity, p.entry_price, p.opened_at)

    def open_position(
        self, symbol: str, side: PositionSide, reason: str, quantity: float = 0.0
    ) -> bool:
        """Queue an entry (default quantity from the config); False if it repeats one."""
        self._check_open()
        size = quantity or self.config.execution.quantity
        return self.actions.enqueue(OpenPosition(symbol, side, size, reason))

    def close_position(self, symbol: str, reason: str) -> bool:
        """Queue the exit of the open position on ``symbol``; False if there is none."""
        self._check_open()
        return self.actions.enqueue(ClosePosition(symbol, reason))

    def target(self, symbol: str, direction: Direction, reason: str) -> None:
        """Be long, short or flat on ``symbol``: closes and opens as needed."""
        self._check_open()
        active = self.positions.active(symbol)
        if active is not None and active.side != direction:
            if active.state is _OPEN:
                self.actions.enqueue(ClosePosition(symbol, reason))
            else:
                return  # the entry is still pending: decide again on the next candle
        if direction != "flat" and (active is None or active.side != direction):
            size = self.config.execution.quantity
            self.actions.enqueue(OpenPosition(symbol, direction, size, reason))

    def signal(
        self, candle: Candle, direction: Direction, strength: float = 1.0, reason: str = ""
    ) -> None:
        """Report a change of view on the candle's stream."""
        self._check_open()
        self.emit_event(Signal(candle.symbol, candle.timeframe, direction, strength, reason))

    # -- driven by the runner ----------------------------------------------------------

    def carry_out(self) -> int:
        """Send the queued actions to the execution model, oldest first; returns how many."""
        actions = self.actions.drain()
        for action in actions:
            match action:
                case ClosePosition():
                    p = self.positions.active(action.symbol)
                    if p is None or p.state is not _OPEN:
                        continue  # it closed some other way since it was queued
                    side: Side = "sell" if p.side == "long" else "buy"
                    order_id = self.execution.submit(action.symbol, side, p.quantity, action.reason)
                    self.positions.exit_sent(action.symbol, order_id, action.reason)
                case OpenPosition():
                    side = "buy" if action.side == "long" else "sell"
                    execution = self.config.execution
                    fraction = execution.equity_fraction if execution.sizing == "equity" else 0.0
                    if self.risk is not None and not self._risk_allows(action, side, fraction):
                        continue
                    order_id = self.execution.submit(
                        action.symbol, side, action.quantity, action.reason, fraction
                    )
                    self.positions.entry_sent(action.symbol, action.side, action.quantity, order_id)
        return len(actions)

    def _risk_allows(self, action: OpenPosition, side: Side, fraction: float) -> bool:
        """Ask the risk gate; a refused order is reported as rejected, with the reason."""
        assert self.risk is not None
        cash = fraction * self.positions.free_cash() if fraction else 0.0
        quantity = 0.0 if fraction else action.quantity
        order_id = self.execution.next_order_id
        reason = self.risk.check(order_id, action.symbol, side, quantity, cash)
        if not reason:
            return True
        self.execution.refuse(action.symbol, side, quantity, reason)
        self.logger.info("order %s on %s refused: %s", order_id, action.symbol, reason)
        return False

    def close(self) -> None:
        """Release every service; callbacks (the worker's unsubscribe) run once."""
        if self.closed:
            return
        self.closed = True
        self.actions.drain()
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback()

    def _check_open(self) -> None:
        if self.closed:
            raise ContainerClosed(f"strategy {self.config.id}'s services are closed")
