"""The strategy log's "filled ..." lines, written in bulk off the per-candle path.

Users read one line per fill in the strategy's log. Through :mod:`logging` each cost about
25 us (a LogRecord, the handler's lock, an ``fstat`` for rotation, a ``write``): on a
speed-0 replay, a third of the worker's time. :meth:`FillLog.add` keeps the values and the
time (about 0.3 us); the very same lines are written later, many in one ``write``: before
any other line reaches the same log file (so the file keeps the order things happened in),
when the worker's loop flushes its outbox and the oldest has waited ``DELAY_S`` (the loop
wakes at least once per stats interval), when ``LIMIT`` wait, and when the strategy's
container closes. A SIGKILL can lose the lines of the last moments; the fills themselves
are events, journaled as ever.
"""

from __future__ import annotations

import logging
import os
import time

from runtime.log_handler import RotatingJsonHandler
from runtime.logfmt import LogLine, encode_lines, format_ts
from runtime.messages import OrderFilled

__all__ = ["FillLog"]

_FORMAT = "filled %s %s %g %s @ %.8g (fee %.6g)"
DELAY_S = 0.1  # how long a line may wait for others to share its write
LIMIT = 256  # how many may wait


class FillLog:
    """The fill lines of one strategy's ``logger``, deferred."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending: list[tuple[float, OrderFilled, str]] = []
        self._hooked = _file_handlers(logger)
        for handler in self._hooked:
            handler.before_line.append(self.flush)

    def add(self, fill: OrderFilled, symbol: str) -> None:
        """A fill of an order on ``symbol``; its line is written at the next :meth:`flush`."""
        if self._logger.isEnabledFor(logging.INFO):
            pending = self._pending
            pending.append((time.time(), fill, symbol))
            if len(pending) >= LIMIT:
                self.flush()

    def flush_due(self) -> None:
        """Write the lines waiting if the oldest has waited ``DELAY_S``."""
        pending = self._pending
        if pending and time.time() - pending[0][0] >= DELAY_S:
            self.flush()

    def flush(self) -> None:
        """Write the lines of the fills added since the last flush."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        logger = self._logger
        if logger.filters:  # a filter may drop or change records: let logging decide
            for t, fill, symbol in pending:
                logger.handle(_record(logger, t, fill, symbol))
            return
        handlers: list[logging.Handler] = []
        node: logging.Logger | None = logger
        while node is not None:
            handlers.extend(node.handlers)
            node = node.parent if node.propagate else None
        records: list[logging.LogRecord] = []
        for handler in handlers:
            if handler.level > logging.INFO:
                continue
            if isinstance(handler, RotatingJsonHandler) and not handler.filters:
                handler.write(_lines(logger.name, handler.formatter_json.process, pending))
                continue
            if not records:
                records = [_record(logger, t, fill, symbol) for t, fill, symbol in pending]
            for record in records:
                handler.handle(record)

    def close(self) -> None:
        """Write what is left and stop being called before other lines."""
        self.flush()
        for handler in self._hooked:
            if self.flush in handler.before_line:
                handler.before_line.remove(self.flush)
        self._hooked = []


def _message(fill: OrderFilled, symbol: str) -> str:
    return _FORMAT % (fill.order_id, fill.side, fill.quantity, symbol, fill.price, fill.fee)


def _lines(name: str, process: str, pending: list[tuple[float, OrderFilled, str]]) -> bytes:
    """The JSON lines :class:`runtime.log_handler.JsonFormatter` would make of them."""
    pid = os.getpid()
    return encode_lines(
        [
            LogLine(format_ts(t), "INFO", name, process, _message(fill, symbol), pid=pid)
            for t, fill, symbol in pending
        ]
    )


def _record(logger: logging.Logger, t: float, fill: OrderFilled, symbol: str) -> logging.LogRecord:
    """The record ``logger.info`` would have made at time ``t``."""
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        "(unknown file)",
        0,
        _FORMAT,
        (fill.order_id, fill.side, fill.quantity, symbol, fill.price, fill.fee),
        None,
    )
    record.created = t
    record.msecs = (t - int(t)) * 1000
    record.relativeCreated = (t - logging._startTime) * 1000  # type: ignore[attr-defined]
    return record


def _file_handlers(logger: logging.Logger) -> list[RotatingJsonHandler]:
    """The log files ``logger``'s lines reach."""
    found: list[RotatingJsonHandler] = []
    node: logging.Logger | None = logger
    while node is not None:
        found.extend(h for h in node.handlers if isinstance(h, RotatingJsonHandler))
        node = node.parent if node.propagate else None
    return found
