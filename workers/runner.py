"""One strategy at work: its container, its hooks guarded, its error limit.

Per candle: on the decision timeframe, fill what is pending at this candle's open and mark
the open positions; feed the indicators and the gate; call the strategy; carry out what it
decided. A hook that raises becomes an ``error`` event and that candle is skipped; after
``max_consecutive_errors`` failures in a row the strategy stops itself (state ``errored``).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import msgspec

from runtime.config import StrategyConfig
from runtime.messages import (
    AccountUpdated,
    Candle,
    Error,
    EventBody,
    Log,
    OpenPosition,
    OrderRejected,
    PendingOrder,
    PositionClosed,
    Side,
)
from workers.container import StrategyServiceContainer
from workers.factory import build_container
from workers.fill_log import FillLog
from workers.loader import load_strategy_class
from workers.outbox import Outbox
from workers.services.actions import ClosePosition
from workers.strategy import Strategy

__all__ = ["StrategyRunner"]

_worker_log = logging.getLogger("worker")
_LEVELS = {logging.WARNING: "warning", logging.ERROR: "error", logging.CRITICAL: "error"}


class _EventLogHandler(logging.Handler):
    """Forwards the strategy's warnings and errors to the event stream as Log events."""

    def __init__(self, emit: Callable[[EventBody], None]) -> None:
        super().__init__(logging.WARNING)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVELS.get(record.levelno, "warning")
        self._emit(Log(level, record.getMessage(), record.name))  # type: ignore[arg-type]


class StrategyRunner:
    """Owns the strategy object and its service container; drives them candle by candle."""

    def __init__(
        self, config: StrategyConfig, outbox: Outbox, *, account_points: bool = True
    ) -> None:
        """``account_points`` False: the ledger's curve is not emitted (the backtest, which
        follows the equity after every candle itself)."""
        self.config = config
        self.outbox = outbox
        self.candles = 0
        self.errors = 0
        self.consecutive_errors = 0
        self.state = "running"
        self.warm_candles = 0
        self._muted = False  # while warming up: what the strategy emits is not news
        logger = logging.getLogger(f"strategy.{config.id}")
        self._handler = _EventLogHandler(self.emit)
        logger.addHandler(self._handler)
        self.container: StrategyServiceContainer = build_container(
            config, self.emit, first_order_number=outbox.last_seq + 1, logger=logger
        )
        # "filled ..." lines, written in bulk (see workers.fill_log)
        self._fill_log = fill_log = FillLog(logger)
        outbox.before_flush = fill_log.flush_due

        def close_logs() -> None:
            fill_log.close()
            logger.removeHandler(self._handler)

        self.container.on_close.append(close_logs)
        cls = load_strategy_class(config.class_path)
        params = msgspec.convert(config.params, cls.Params)
        self.strategy: Strategy = cls(self.container, params)
        # Bound once: on_candle runs for every candle and these never change.
        self._decision_tf = config.timeframe
        self._fills = self.container.execution.on_candle
        self._waiting = self.container.execution.waiting  # the live list
        self._mark = self.container.positions.mark
        # None when the strategy declares no indicators (it may keep its own, as SmaCross does).
        indicators = self.container.indicators
        self._update_indicators = indicators.update if len(indicators) else None
        self._decide = self.strategy.on_candle
        self._queued = self.container.actions.queue  # the live list, emptied by drain()
        self._ledger = self.container.ledger
        self._point_every = self._ledger.every_ms if account_points else 0

    @property
    def log(self) -> logging.Logger:
        return self.container.logger

    def emit(self, body: EventBody) -> None:
        if not self._muted:
            self.outbox.emit(body)

    def restore(
        self,
        positions: list[OpenPosition],
        realized_pnl: float,
        pending: list[PendingOrder] = [],  # noqa: B006 (never mutated)
        last_closed: list[PositionClosed] = [],  # noqa: B006 (never mutated)
        account: AccountUpdated | None = None,
    ) -> None:
        """Take back what the journal says the strategy held, had ordered, last closed and
        had in its sub-account before a restart."""
        c = self.container
        c.positions.restore(positions, realized_pnl, last_closed)
        for order in pending:
            fraction = order.quantity if order.sizing == "equity" else 0.0
            c.execution.restore(order.order_id, order.symbol, order.side, order.quantity, fraction)
            held = c.positions.active(order.symbol)
            closes = held is not None and (held.side == "long") == (order.side == "sell")
            if closes:
                c.positions.exit_sent(order.symbol, order.order_id, order.reason)
            else:
                c.positions.entry_sent(
                    order.symbol,
                    "long" if order.side == "buy" else "short",
                    order.quantity,
                    order.order_id,
                )
        reason = c.ledger.restore(account)
        if reason is not None and self._point_every:
            self.emit(c.ledger.point(account.at if account is not None else 0, reason))

    def warm(self, candle: Candle) -> None:
        """A candle from before the strategy's cursor: rebuild indicators, the gate, the
        strategy's own state and the excursions of held positions; act on nothing."""
        if self.state in ("errored", "stopped"):
            return
        self.warm_candles += 1
        c = self.container
        symbol, timeframe = candle.symbol, candle.timeframe
        if timeframe == self.config.timeframe:
            c.positions.mark_held_since(candle, symbol, candle.open_time)
        c.indicators.update(candle, symbol, timeframe)
        if c.gate is not None:
            c.gate.observe(candle, symbol, timeframe)
        self._muted = True
        logger = c.logger
        logger.disabled = True  # history replayed is not news for its log either
        try:
            self.strategy.on_candle(candle)
        except Exception:
            pass  # it decided nothing that counts; a real failure shows on live candles
        finally:
            self._muted = False
            logger.disabled = False
            c.actions.drain()

    def start(self) -> None:
        self._guarded("on_start", self.strategy.on_start)
        self.container.carry_out()

    def stop(self) -> None:
        """Let the strategy stop, then close its services."""
        if self.state != "errored":
            self._guarded("on_stop", self.strategy.on_stop)
            self.state = "stopped"
        self.container.close()

    @property
    def halted(self) -> bool:
        return self.container.actions.halted

    def halt(self, flatten: bool, reason: str = "") -> None:
        """The kill switch: open nothing from now on, withdraw entry orders not yet filled,
        and with ``flatten`` close every open position (at the next candle's open)."""
        c = self.container
        first = not c.actions.halted
        c.actions.halted = True
        withdrawn = 0
        for p in c.positions.pending_entries():
            if c.execution.cancel(p.entry_order_id):
                c.positions.cancel_entry(p.entry_order_id)
                side: Side = "buy" if p.side == "long" else "sell"
                self.emit(OrderRejected(p.entry_order_id, p.symbol, side, p.quantity, "halted"))
                withdrawn += 1
        closing = 0
        if flatten and not c.closed:
            for p in c.positions.open_positions():
                closing += c.actions.enqueue(ClosePosition(p.symbol, "halt"))
            c.carry_out()
        if first or closing or withdrawn:
            what = f"; closing {closing} positions" if flatten else ""
            self.emit(
                Log(
                    "warning",
                    f"trading halted{f' ({reason})' if reason else ''}: no new positions"
                    f"{what}; {withdrawn} entry orders withdrawn",
                    "killswitch",
                )
            )

    def resume_trading(self) -> None:
        """The kill switch is lifted."""
        if self.container.actions.halted:
            self.container.actions.halted = False
            self.emit(Log("warning", "trading resumed: the kill switch is lifted", "killswitch"))

    def pause(self) -> None:
        """Stop acting on candles; indicators, fills and marks still follow the market."""
        if self.state == "running":
            self.state = "paused"

    def resume(self) -> None:
        if self.state == "paused":
            self.state = "running"

    def on_candle(self, candle: Candle) -> None:
        """Run one candle through the services and the strategy."""
        # Written for CPython's specialising interpreter, as this runs on every candle: the
        # bound methods kept on self are read into locals before the call (a method call on
        # an instance attribute is never specialised), and the rare fill path is a method of
        # its own (a long if-body makes its compare's jump too far to specialise).
        paused = False
        state = self.state
        if state != "running":
            if state != "paused":
                return  # errored or stopped
            paused = True
        self.candles += 1
        c = self.container
        symbol, timeframe = candle.symbol, candle.timeframe
        if timeframe == self._decision_tf:
            if self._waiting and not self._take_fills(candle, symbol):
                return  # it gave up inside on_fill: this candle ends here too
            mark = self._mark
            mark(candle, symbol)
            every = self._point_every
            if every and (self._ledger.dirty or not candle.open_time % every):
                self._account_point(candle.open_time)
        update_indicators = self._update_indicators
        if update_indicators is not None:
            update_indicators(candle, symbol, timeframe)
        gate = c.gate
        if gate is not None:
            gate.observe(candle, symbol, timeframe)
        if paused:
            return
        decide = self._decide
        try:  # _guarded("on_candle", ...), written out
            decide(candle)
        except Exception as exc:
            self._failed("on_candle", exc)
            c.actions.drain()  # what a failing hook half-decided is not acted on
            return
        self.consecutive_errors = 0
        if self._queued:  # most candles decide nothing: skip the call
            c.carry_out()

    def _take_fills(self, candle: Candle, symbol: str) -> bool:
        """Apply the fills the candle gives the orders waiting on it; False if the strategy
        gave up inside ``on_fill`` (after recording the fills it had taken)."""
        positions = self.container.positions
        for fill in self._fills(candle):
            self._ledger.on_fill(fill, positions.on_fill(fill))
            self._fill_log.add(fill, symbol)
            self._guarded("on_fill", self.strategy.on_fill, fill)
        if self.state == "errored":
            self._account_point(candle.open_time)
            return False
        return True

    def _account_point(self, open_time: int) -> None:
        """A point of the sub-account's curve, if one is due after this candle."""
        if self._point_every and self._ledger.due(open_time):
            self.emit(self._ledger.point(open_time))

    def _guarded(self, where: str, hook: Callable[..., Any], *args: Any) -> bool:
        try:
            hook(*args)
        except Exception as exc:
            self._failed(where, exc)
            return False
        self.consecutive_errors = 0
        return True

    def _failed(self, where: str, exc: Exception) -> None:
        """Count and report the exception being handled; give up after too many in a row."""
        self.errors += 1
        self.consecutive_errors += 1
        _worker_log.exception("%s raised %s: %s", where, type(exc).__name__, exc)
        self.emit(Error(where, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        if self.consecutive_errors >= self.config.max_consecutive_errors:
            self._give_up()

    def _give_up(self) -> None:
        self.state = "errored"
        message = (
            f"stopped after {self.consecutive_errors} consecutive errors; "
            "the worker stays up, idle, until the strategy is restarted"
        )
        _worker_log.error("strategy %s %s", self.config.id, message)
        self.emit(Error("strategy", message))
        self.container.close()
