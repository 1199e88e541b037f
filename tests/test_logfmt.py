"""One log line: JSON encoding, parsing (raw output included), filters, rendering."""

from __future__ import annotations

import logging
import re
import sys

import msgspec
import pytest

from runtime.log_handler import JsonFormatter
from runtime.logfmt import (
    LogFilter,
    LogLine,
    decode_line,
    encode_line,
    encode_lines,
    format_ts,
    parse_line,
    render,
)


def test_a_line_survives_encoding_and_decoding() -> None:
    line = LogLine("2026-11-25T10:00:00.123Z", "ERROR", "worker", "s1", "boom", "Traceback...", 42)
    data = encode_line(line)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert decode_line(data) == line
    # Defaults are left out: a line without a traceback has no exc key.
    assert b'"exc"' not in encode_line(LogLine("t", "INFO", "w", "s1", "m"))


def test_lines_encoded_together_are_the_lines_encoded_one_by_one() -> None:
    lines = [
        LogLine(
            "2026-11-25T10:00:00.123Z", "INFO", "strategy.s1", "s1", 'filled "x" \u00e9', pid=7
        ),
        LogLine("2026-11-25T10:00:01.000Z", "ERROR", "worker", "s1", "boom", "Traceback...\n"),
        LogLine("t", "INFO", "w", "s1", ""),
    ]
    assert encode_lines(lines) == b"".join(encode_line(line) for line in lines)
    assert encode_lines([]) == b""


def test_decoding_is_strict_about_types() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_line(b'{"ts":"t","level":"INFO","logger":"w","process":"s1","msg":3}')
    with pytest.raises(msgspec.DecodeError):
        decode_line(b"not json")


def test_timestamps_are_utc_with_milliseconds_and_sort_as_strings() -> None:
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(1_764_064_800.5) == "2025-11-25T10:00:00.500Z"
    assert format_ts(1.999) == "1970-01-01T00:00:01.999Z"
    assert format_ts(9.5) < format_ts(10.25) < format_ts(100.0)


def test_the_formatter_writes_every_field_and_the_traceback() -> None:
    formatter = JsonFormatter("s1")
    try:
        raise ValueError("bad value")
    except ValueError:
        record = logging.LogRecord(
            "strategy.s1", logging.ERROR, __file__, 1, "candle %d: %s", (7, "x"), sys.exc_info()
        )
    record.created = 1_764_064_800.25
    line = decode_line(formatter.format(record))
    assert line.ts == "2025-11-25T10:00:00.250Z"
    assert (line.level, line.logger, line.process, line.msg) == (
        "ERROR",
        "strategy.s1",
        "s1",
        "candle 7: x",
    )
    assert line.exc is not None and "ValueError: bad value" in line.exc
    assert line.pid > 0


def test_a_raw_line_is_kept_as_an_error_with_the_time_before_it() -> None:
    json_text = encode_line(LogLine("2026-11-25T10:00:00.000Z", "INFO", "w", "s1", "hi")).decode()
    line, is_json = parse_line(json_text.rstrip("\n"), "s1")
    assert is_json and line.msg == "hi"
    raw, is_json = parse_line("Traceback (most recent call last):", "s1", line.ts)
    assert not is_json
    assert (raw.ts, raw.level, raw.logger, raw.process) == (line.ts, "ERROR", "stderr", "s1")
    assert raw.msg == "Traceback (most recent call last):"
    # Something that starts like JSON but is not a log line is raw output too.
    assert parse_line('{"half": ', "s1")[1] is False


def _line(ts: str, level: str, msg: str, exc: str | None = None) -> LogLine:
    return LogLine(ts, level, "worker", "s1", msg, exc)


def test_filters_since_level_and_grep() -> None:
    early = _line("2026-11-25T09:59:59.999Z", "ERROR", "early error")
    info = _line("2026-11-25T10:00:00.000Z", "INFO", "filled order 3")
    warning = _line("2026-11-25T10:00:01.000Z", "WARNING", "slow candle")
    crash = _line("2026-11-25T10:00:02.000Z", "CRITICAL", "uncaught", "ZeroDivisionError")
    lines = [early, info, warning, crash]

    def kept(f: LogFilter) -> list[LogLine]:
        return [line for line in lines if f.keeps(line)]

    assert kept(LogFilter()) == lines
    assert kept(LogFilter(since="2026-11-25T10:00:00.000Z")) == [info, warning, crash]
    assert kept(LogFilter(min_level=30)) == [early, warning, crash]
    assert kept(LogFilter(min_level=40)) == [early, crash]
    assert kept(LogFilter(pattern=re.compile(r"order \d"))) == [info]
    assert kept(LogFilter(pattern=re.compile("Division"))) == [crash]  # the traceback counts
    combined = LogFilter("2026-11-25T10:00:00.000Z", 30, re.compile("candle|uncaught"))
    assert kept(combined) == [warning, crash]
    # A raw line with no time before it cannot be placed: --since keeps it.
    assert LogFilter(since="2026-11-25T10:00:00.000Z").keeps(_line("", "ERROR", "raw"))


def test_render_is_ts_level_logger_message_then_the_traceback() -> None:
    line = _line("2026-11-25T10:00:00.000Z", "ERROR", "it broke", "Traceback\n  line 1\n")
    assert render(line, colour=False) == (
        "2026-11-25T10:00:00.000Z ERROR    worker: it broke\nTraceback\n  line 1"
    )
    coloured = render(line, colour=True)
    assert "\x1b[" in coloured and "it broke" in coloured
    # Raw output is shown as it was written.
    assert render(_line("", "ERROR", "x"), raw="  File 'a.py', line 3") == "  File 'a.py', line 3"


def test_format_ts_is_right_across_seconds_in_any_order() -> None:
    # it keeps the last second formatted: each call must still stand alone
    assert format_ts(1_764_000_000.5) == "2025-11-24T16:00:00.500Z"
    assert format_ts(1_764_000_000.25) == "2025-11-24T16:00:00.250Z"
    assert format_ts(1_764_000_001.0) == "2025-11-24T16:00:01.000Z"
    assert format_ts(1_764_000_000.999) == "2025-11-24T16:00:00.999Z"
    assert format_ts(0.0) == "1970-01-01T00:00:00.000Z"
