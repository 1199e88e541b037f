"""One log line as every stratrun process writes it (JSON), and as ``stratrun logs`` reads it.

A log file holds one JSON object per line (:class:`LogLine`). It may also hold lines that are
not JSON: what the process wrote to its stdout or stderr outside logging (an interpreter's
traceback before logging was set up, a faulthandler dump, a C library's message). Those are
kept, not dropped: :func:`parse_line` turns each into a line of logger ``stderr`` at level
ERROR, with the time of the line before it (raw output carries no time of its own).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import msgspec

__all__ = [
    "LEVELS",
    "STDERR_LOGGER",
    "LogFilter",
    "LogLine",
    "decode_line",
    "encode_line",
    "encode_lines",
    "format_ts",
    "level_number",
    "parse_line",
    "render",
]

# The standard library's levels, by name; anything else sorts as INFO.
LEVELS: dict[str, int] = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
STDERR_LOGGER = "stderr"
_LEVEL_COLOURS = {"DEBUG": "blue", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bright_red"}


class LogLine(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of a log file.

    Parameters
    ----------
    ts:
        When it was logged: ISO 8601 in UTC with milliseconds (``2026-11-25T15:12:00.123Z``);
        fixed width, so comparing the strings compares the times.
    level:
        ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL``.
    logger:
        The logger's name (``worker``, ``strategy.sma_fast``, ``broker``...); ``stderr`` for
        output that did not go through logging.
    process:
        The process that wrote it: its strategy id for a worker, else ``broker``,
        ``aggregator``, ``manager``.
    msg:
        The message, arguments applied.
    exc:
        The traceback, when an exception was logged.
    pid:
        The writing process's pid (tells two incarnations of a strategy apart).
    """

    ts: str
    level: str
    logger: str
    process: str
    msg: str
    exc: str | None = None
    pid: int = 0


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(LogLine)


def encode_line(line: LogLine) -> bytes:
    """``line`` as one JSON object, newline included."""
    return _ENCODER.encode(line) + b"\n"


def encode_lines(lines: list[LogLine]) -> bytes:
    """Several lines at once: the same bytes as their :func:`encode_line` joined."""
    return _ENCODER.encode_lines(lines)


def decode_line(text: str | bytes) -> LogLine:
    """The :class:`LogLine` in ``text``; raises ``msgspec.DecodeError`` if it is not one."""
    return _DECODER.decode(text)


_last_second: list[tuple[int, str]] = [(-1, "")]  # the last whole second formatted


def format_ts(seconds: float) -> str:
    """``seconds`` since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    cached, text = _last_second[0]
    if cached != whole:  # lines come in bursts within one second: format it once
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _last_second[0] = (whole, text)
    return f"{text}.{millis:03d}Z"


def level_number(level: str) -> int:
    """The numeric level of ``level`` (a name, any case)."""
    return LEVELS.get(level.upper(), LEVELS["INFO"])


def parse_line(text: str, process: str, previous_ts: str = "") -> tuple[LogLine, bool]:
    """``(line, is_json)`` for one line of a log file.

    A line that is not a :class:`LogLine` becomes one of logger ``stderr``, level ERROR,
    stamped ``previous_ts`` (the time of the line before it in the file).
    """
    if text.startswith("{"):
        try:
            return _DECODER.decode(text), True
        except msgspec.DecodeError:
            pass
    return LogLine(previous_ts, "ERROR", STDERR_LOGGER, process, text), False


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What ``stratrun logs`` keeps: from ``since`` on (a :func:`format_ts` string), at least
    ``min_level``, message (or traceback) matching ``pattern``. Empty fields keep all."""

    since: str = ""
    min_level: int = 0
    pattern: re.Pattern[str] | None = None

    def keeps(self, line: LogLine) -> bool:
        # A raw line whose time is unknown (nothing before it) is kept: it may be a crash.
        if self.since and line.ts and line.ts < self.since:
            return False
        if self.min_level and level_number(line.level) < self.min_level:
            return False
        if self.pattern is not None:
            return bool(
                self.pattern.search(line.msg) or (line.exc and self.pattern.search(line.exc))
            )
        return True


def render(line: LogLine, raw: str | None = None, colour: bool = True) -> str:
    """``ts level logger: msg`` (then the traceback), the level coloured when ``colour``.

    ``raw`` is the line as the file holds it when it was not JSON: it is shown as written.
    """
    if raw is not None:
        return raw
    level = f"{line.level:<8}"
    if colour and line.level in _LEVEL_COLOURS:
        import click

        level = click.style(level, fg=_LEVEL_COLOURS[line.level])
    text = f"{line.ts} {level} {line.logger}: {line.msg}"
    if line.exc:
        text += "\n" + line.exc.rstrip("\n")
    return text
