"""One strategy at work: fills first, then the strategy's hook, every failure contained."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import msgspec

from runtime.config import StrategyConfig
from runtime.messages import (
    Candle,
    Direction,
    Error,
    EventBody,
    Log,
    OpenPosition,
    Side,
    Signal,
)
from workers.loader import load_strategy_class
from workers.outbox import Outbox
from workers.paper import PaperExecution
from workers.strategy import PositionView, Strategy

__all__ = ["StrategyRunner"]

_worker_log = logging.getLogger("worker")
_LEVELS = {logging.WARNING: "warning", logging.ERROR: "error", logging.CRITICAL: "error"}


class _EventLogHandler(logging.Handler):
    """Forwards the strategy's warnings and errors to the event stream as Log events."""

    def __init__(self, emit: Any) -> None:
        super().__init__(logging.WARNING)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVELS.get(record.levelno, "warning")
        self._emit(Log(level, record.getMessage(), record.name))  # type: ignore[arg-type]


class StrategyRunner:
    """Owns the strategy object, its paper execution and its outbox; implements its context."""

    def __init__(self, config: StrategyConfig, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.candles = 0
        self.errors = 0
        self._log = logging.getLogger(f"strategy.{config.id}")
        self._log.addHandler(_EventLogHandler(outbox.emit))
        self.execution = PaperExecution(
            config.id,
            config.execution.fee_bps,
            config.execution.slippage_bps,
            self.emit,
            first_order_number=outbox.last_seq + 1,
        )
        cls = load_strategy_class(config.class_path)
        params = msgspec.convert(config.params, cls.Params)
        self.strategy: Strategy = cls(self, params)

    # -- StrategyContext ---------------------------------------------------------------

    @property
    def strategy_id(self) -> str:
        return self.config.id

    @property
    def log(self) -> logging.Logger:
        return self._log

    def position(self, symbol: str) -> PositionView | None:
        pos = self.execution.positions.get(symbol)
        if pos is None:
            return None
        return PositionView(pos.symbol, pos.side, pos.quantity, pos.entry_price, pos.opened_at)

    def submit_market_order(self, symbol: str, side: Side, quantity: float, reason: str) -> str:
        return self.execution.submit(symbol, side, quantity, reason)

    def target(self, symbol: str, direction: Direction, reason: str) -> None:
        size = self.config.execution.quantity
        wanted = {"long": size, "short": -size, "flat": 0.0}[direction]
        pos = self.execution.positions.get(symbol)
        held = 0.0 if pos is None else (pos.quantity if pos.side == "long" else -pos.quantity)
        delta = wanted - held - self.execution.pending_quantity(symbol)
        if abs(delta) > 1e-12:
            self.execution.submit(symbol, "buy" if delta > 0 else "sell", abs(delta), reason)

    def signal(
        self, candle: Candle, direction: Direction, strength: float = 1.0, reason: str = ""
    ) -> None:
        self.emit(Signal(candle.symbol, candle.timeframe, direction, strength, reason))

    # -- driven by the worker ----------------------------------------------------------

    def emit(self, body: EventBody) -> None:
        self.outbox.emit(body)

    def restore(self, positions: list[OpenPosition], realized_pnl: float) -> None:
        """Take back what the journal says the strategy held before a restart."""
        self.execution.restore(positions, realized_pnl)

    def start(self) -> None:
        self._guarded("on_start", self.strategy.on_start)

    def stop(self) -> None:
        self._guarded("on_stop", self.strategy.on_stop)

    def on_candle(self, candle: Candle) -> None:
        """Fill what is pending at this candle's open, then let the strategy decide on it."""
        self.candles += 1
        for fill in self.execution.on_candle(candle):
            self._log.info(
                "filled %s %s %g @ %.8g (fee %.6g)",
                fill.order_id,
                fill.side,
                fill.quantity,
                fill.price,
                fill.fee,
            )
            self._guarded("on_fill", self.strategy.on_fill, fill)
        self._guarded("on_candle", self.strategy.on_candle, candle)

    def _guarded(self, where: str, hook: Any, *args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:
            self.errors += 1
            _worker_log.exception("%s raised %s: %s", where, type(exc).__name__, exc)
            self.emit(Error(where, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
