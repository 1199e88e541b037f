"""The writing side of a process's log: JSON lines, rotated by size, stdout and stderr kept.

The process itself is the only writer of its log file. It points its own file descriptors
1 and 2 at the same file (and again at the new file after each rotation), so what bypasses
logging (an uncaught traceback printed by the interpreter, a faulthandler dump, a C library's
message) lands in the log, in order, next to the JSON lines. Each line is one ``write`` on an
``O_APPEND`` descriptor, so the two never cut into each other's lines.

Rotation is ``logging.handlers.RotatingFileHandler``'s scheme: ``name.log`` becomes
``name.log.1``, ``.1`` becomes ``.2``, ... up to ``backups`` files; ``backups = 0`` empties
the file instead. A follower (``stratrun logs -f``, ``tail -F``) reads on by name.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from runtime.logfmt import LogLine, encode_line, format_ts

__all__ = ["JsonFormatter", "LineLogger", "RotatingJsonHandler", "rotate_files", "rotated_path"]


def rotated_path(path: Path, index: int) -> Path:
    """The ``index``-th rotated file of ``path`` (``name.log.1`` is the most recent)."""
    return path.with_name(f"{path.name}.{index}")


def rotate_files(path: Path, backups: int) -> None:
    """Shift ``path.1`` .. ``path.{backups-1}`` up by one (the oldest is overwritten) and
    move ``path`` to ``path.1``; the caller then opens a new ``path``."""
    for index in range(backups - 1, 0, -1):
        older = rotated_path(path, index)
        if older.exists():
            os.replace(older, rotated_path(path, index + 1))
    try:
        os.replace(path, rotated_path(path, 1))
    except FileNotFoundError:
        pass  # someone removed it: start a new one


class JsonFormatter(logging.Formatter):
    """Formats a record as one :class:`LogLine` (JSON, no newline)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def line(self, record: logging.LogRecord) -> LogLine:
        exc = None
        if record.exc_info:
            exc = self.formatException(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        if record.stack_info:
            exc = (exc + "\n" if exc else "") + self.formatStack(record.stack_info)
        return LogLine(
            ts=format_ts(record.created),
            level=record.levelname,
            logger=record.name,
            process=self.process,
            msg=record.getMessage(),
            exc=exc,
            pid=record.process or os.getpid(),
        )

    def format(self, record: logging.LogRecord) -> str:
        return encode_line(self.line(record)).decode().rstrip("\n")


class RotatingJsonHandler(logging.Handler):
    """Appends JSON lines to ``path``; rotates it before a line would take it past ``max_bytes``.

    With ``capture_stdio`` the process's fds 1 and 2 follow the file across rotations.
    """

    def __init__(
        self,
        path: Path,
        process: str,
        max_bytes: int,
        backups: int,
        *,
        capture_stdio: bool = False,
    ) -> None:
        super().__init__()
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.capture_stdio = capture_stdio
        self.formatter_json = JsonFormatter(process)
        self.setFormatter(self.formatter_json)
        self._fd = self._open()
        self.rotations = 0
        # Called before each line is written: whoever holds lines back to write them in
        # bulk (workers.fill_log) writes them first, so the file keeps the order of events.
        self.before_line: list[Callable[[], None]] = []

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self.capture_stdio:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os.dup2(fd, 1)
            os.dup2(fd, 2)
        return fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            for flush in self.before_line:
                flush()
            self._append(encode_line(self.formatter_json.line(record)))
        except Exception:
            self.handleError(record)

    def write(self, lines: bytes) -> None:
        """Append ``lines`` (whole JSON lines, each ending in a newline) in one write."""
        self.acquire()
        try:
            if self._fd >= 0:  # not closed
                self._append(lines)
        finally:
            self.release()

    def _append(self, data: bytes) -> None:
        if self.max_bytes > 0:
            size = os.fstat(self._fd).st_size  # includes what fds 1 and 2 wrote
            if size and size + len(data) > self.max_bytes:
                self._rotate()
        _write_all(self._fd, data)

    def _rotate(self) -> None:
        if self.backups > 0:
            rotate_files(self.path, self.backups)
            old, self._fd = self._fd, self._open()
            os.close(old)
        else:
            os.ftruncate(self._fd, 0)
        self.rotations += 1

    def close(self) -> None:
        self.acquire()
        try:
            if self._fd >= 0:
                if not self.capture_stdio:  # fds 1 and 2 still point at the file: keep it
                    os.close(self._fd)
                self._fd = -1
        finally:
            self.release()
        super().close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class LineLogger(io.TextIOBase):
    """A text stream whose every line becomes a log record (for code that prints)."""

    def __init__(self, logger: logging.Logger, level: int = logging.INFO) -> None:
        super().__init__()
        self._logger = logger
        self._level = level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._logger.log(self._level, "%s", line)
        return len(text)
