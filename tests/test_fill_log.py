"""The strategy log's fill lines, deferred: the same lines as logging makes, in order."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.log_handler import RotatingJsonHandler
from runtime.logfmt import decode_line, format_ts
from runtime.messages import OrderFilled
from workers.fill_log import DELAY_S, LIMIT, FillLog
from workers.outbox import Outbox

FILL = OrderFilled("s1-000007", "ETH-BTC", "buy", 0.25, 0.031234567891, 0.0000078, 0)
MESSAGE = "filled s1-000007 buy 0.25 ETH-BTC @ 0.031234568 (fee 7.8e-06)"


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[logging.Logger, RotatingJsonHandler]]:
    """Logger ``fill_test.s1`` whose lines go to a log file (and not to the root)."""
    parent = logging.getLogger("fill_test")
    handler = RotatingJsonHandler(tmp_path / "s1.log", "s1", 1_000_000, 1)
    parent.addHandler(handler)
    parent.propagate = False
    logger = logging.getLogger("fill_test.s1")
    logger.setLevel(logging.INFO)
    try:
        yield logger, handler
    finally:
        parent.removeHandler(handler)
        parent.propagate = True
        handler.close()
        logger.setLevel(logging.NOTSET)


def _lines(handler: RotatingJsonHandler) -> list[str]:
    return handler.path.read_text().splitlines()


def test_written_at_flush_as_logging_writes_them(
    logged: tuple[logging.Logger, RotatingJsonHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler = logged
    fills = FillLog(logger)
    monkeypatch.setattr("time.time", lambda: 1_790_000_000.25)
    fills.add(FILL, "ETH-BTC")
    logger.info("filled %s %s %g %s @ %.8g (fee %.6g)", "s1-000007", "buy", 0.25, "ETH-BTC",
                0.031234567891, 0.0000078)  # fmt: skip
    monkeypatch.undo()
    lines = _lines(handler)
    assert len(lines) == 2  # the deferred one first: it came first
    assert lines[0] == lines[1]  # byte for byte what logger.info writes at the same time
    line = decode_line(lines[0])
    assert (line.ts, line.level, line.logger, line.process, line.msg) == (
        format_ts(1_790_000_000.25),
        "INFO",
        "fill_test.s1",
        "s1",
        MESSAGE,
    )


def test_held_until_due_then_written_in_order(
    logged: tuple[logging.Logger, RotatingJsonHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler = logged
    fills = FillLog(logger)
    sent: list[bytes] = []
    outbox = Outbox("s1", 0, sent.append)
    outbox.before_flush = fills.flush_due
    clock = [1_790_000_000.0]
    monkeypatch.setattr("time.time", lambda: clock[0])
    for _ in range(3):
        fills.add(FILL, "ETH-BTC")
    outbox.emit(FILL)
    outbox.flush({})
    assert len(sent) == 1
    assert _lines(handler) == []  # nothing written on the candle's path
    clock[0] += DELAY_S * 1.5
    outbox.flush({})  # the worker's loop flushes its outbox on every turn
    assert [decode_line(t).msg for t in _lines(handler)] == [MESSAGE] * 3
    fills.add(FILL, "ETH-BTC")
    logger.warning("after")  # any other line: the fill line goes first
    fills.add(FILL, "ETH-BTC")
    fills.close()  # the container closing writes what is left
    logger.warning("closed")  # and no longer calls it
    monkeypatch.undo()
    assert [decode_line(t).msg for t in _lines(handler)] == [MESSAGE] * 4 + [
        "after",
        MESSAGE,
        "closed",
    ]
    assert handler.before_line == []


def test_not_kept_when_info_is_off(logged: tuple[logging.Logger, RotatingJsonHandler]) -> None:
    logger, handler = logged
    logger.setLevel(logging.WARNING)
    fills = FillLog(logger)
    fills.add(FILL, "ETH-BTC")
    fills.flush()
    assert _lines(handler) == []


def test_many_waiting_are_written_without_a_flush(
    logged: tuple[logging.Logger, RotatingJsonHandler],
) -> None:
    logger, handler = logged
    fills = FillLog(logger)
    for _ in range(LIMIT * 3 + 1):
        fills.add(FILL, "ETH-BTC")
    assert len(_lines(handler)) == LIMIT * 3  # bounded memory in a run nobody flushes
    fills.flush()
    assert len(_lines(handler)) == LIMIT * 3 + 1


def test_other_handlers_and_filters_get_records(
    logged: tuple[logging.Logger, RotatingJsonHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler = logged
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logger.addHandler(keep)
    dropped_order = 0

    def only_buys(record: logging.LogRecord) -> bool:
        nonlocal dropped_order
        keeps = record.args is not None and record.args[1] == "buy"  # type: ignore[index]
        dropped_order += not keeps
        return keeps

    try:
        fills = FillLog(logger)
        monkeypatch.setattr("time.time", lambda: 1_790_000_001.5)
        fills.add(FILL, "ETH-BTC")
        monkeypatch.undo()
        fills.flush()
        assert [(r.getMessage(), r.created, r.levelno) for r in records] == [
            (MESSAGE, 1_790_000_001.5, logging.INFO)
        ]
        logger.addFilter(only_buys)  # a filter on the logger: every record through logging
        fills.add(FILL, "ETH-BTC")
        fills.add(OrderFilled("s1-000008", "ETH-BTC", "sell", 0.25, 0.03, 0.0, 0), "ETH-BTC")
        fills.flush()
        assert len(records) == 2 and dropped_order == 1
        assert [decode_line(t).msg for t in _lines(handler)] == [MESSAGE, MESSAGE]
    finally:
        logger.removeHandler(keep)
        logger.removeFilter(only_buys)
