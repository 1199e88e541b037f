"""Read the end of a log file and follow it by name, across rotation and truncation.

Two layers: raw text lines (:func:`last_lines`, :func:`follow_file`), and log entries
(:class:`Entry`: each line parsed by :func:`runtime.logfmt.parse_line`, filtered), read back
through the rotated files (``name.log.1``, ``.2``...) when the history asks for more lines
than the current file holds (:func:`read_history`, :func:`follow_log`, :func:`follow_logs`).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runtime.log_handler import rotated_path
from runtime.logfmt import LogLine, parse_line

__all__ = [
    "Entry",
    "follow_file",
    "follow_log",
    "follow_logs",
    "last_lines",
    "read_history",
    "rotated_files",
]

_POLL_S = 0.2


def last_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of ``path``."""
    if count <= 0:
        return []
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=count)]


class _Tail:
    """Reads what was appended to one file since the last read, following it by name."""

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = path
        self._handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        if not from_start:
            self._handle.seek(0, os.SEEK_END)
        self.start = self._handle.tell()  # what was there before following began
        self._inode = os.fstat(self._handle.fileno()).st_ino
        self._partial = ""

    @property
    def inode(self) -> int:
        return self._inode

    def fileno(self) -> int:
        """The open file (whatever its name points at now)."""
        return self._handle.fileno()

    def history(self, count: int) -> list[str]:
        """The last ``count`` lines written before following began (none lost, none twice)."""
        if count <= 0 or not self.start:
            return []
        with open(self.path, "rb") as handle:
            data = handle.read(self.start)
        text = data.decode("utf-8", errors="replace")
        return [line for line in deque(text.splitlines(), maxlen=count)]

    def read(self) -> list[str]:
        """Complete lines appended since the last call (none is a normal answer).

        A new file at the same name (rotation, a restart that recreated it) is reopened from
        its start; a file that shrank (truncation) is read again from its start.
        """
        lines: list[str] = []
        while True:
            chunk = self._handle.readline()
            if chunk:
                self._partial += chunk
                if self._partial.endswith("\n"):
                    lines.append(self._partial.rstrip("\n"))
                    self._partial = ""
                continue
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                return lines
            moved = current.st_ino != self._inode
            if not moved and current.st_size >= self._handle.tell():
                return lines
            if self._partial:  # the old file ended mid-line: that fragment is all there will be
                lines.append(self._partial)
                self._partial = ""
            self._handle.close()
            self._handle = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
            self._inode = os.fstat(self._handle.fileno()).st_ino

    def close(self) -> None:
        self._handle.close()


def follow_file(path: Path, history: int = 0) -> Iterator[str]:
    """Yield the last ``history`` lines of ``path``, then every line appended, like ``tail -F``."""
    tail = _Tail(path)
    try:
        yield from tail.history(history)
        while True:
            lines = tail.read()
            yield from lines
            if not lines:
                time.sleep(_POLL_S)  # tail -F polls too: a file offers nothing to wait on
    finally:
        tail.close()


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a log: parsed, and as the file holds it (``is_json`` False: raw output)."""

    line: LogLine
    text: str
    is_json: bool


Keep = Callable[[LogLine], bool]


class _Parser:
    """Parses one file's lines in order; a raw line takes the time of the line before it."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.last_ts = ""

    def __call__(self, text: str) -> Entry:
        line, is_json = parse_line(text, self.process, self.last_ts)
        if is_json:
            self.last_ts = line.ts
        return Entry(line, text, is_json)


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of ``path`` that exist, most recent first (``.1``, ``.2``...)."""
    found: list[Path] = []
    index = 1
    while (candidate := rotated_path(path, index)).exists():
        found.append(candidate)
        index += 1
    return found


_FIRST_BLOCK = 64 * 1024


def _last_entries(fd: int, size: int, process: str, count: int, keep: Keep | None) -> list[Entry]:
    """The entries of the first ``size`` bytes of the file open as ``fd`` that ``keep``
    accepts: the last ``count`` or more, or all if the file holds fewer.

    Reads backwards in growing blocks, so that the last lines of a 10 MiB file cost a read
    of 64 KiB. A block that starts mid-file drops its first (maybe partial) line and must
    start with a JSON line, so that raw lines get the time of the line before them.
    """
    block = _FIRST_BLOCK
    while True:
        start = max(0, size - block)
        lines = os.pread(fd, size - start, start).decode("utf-8", errors="replace").splitlines()
        if start > 0:
            lines = lines[1:]
        parse = _Parser(process)
        entries = [parse(line) for line in lines]
        kept = [e for e in entries if keep is None or keep(e.line)]
        if start == 0 or (len(kept) >= count and entries and entries[0].is_json):
            return kept
        block *= 4


def _read_entries(
    path: Path, process: str, count: int, keep: Keep | None, skip_inode: int = 0
) -> tuple[list[Entry], int]:
    """``(entries, inode)`` of the file at ``path`` (see :func:`_last_entries`); nothing if it
    is gone or is the file with ``skip_inode``."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_ino == skip_inode:
                return [], info.st_ino
            return _last_entries(handle.fileno(), info.st_size, process, count, keep), info.st_ino
    except FileNotFoundError:
        return [], 0


def read_history(
    path: Path, count: int, keep: Keep | None = None, tail: _Tail | None = None
) -> list[Entry]:
    """The last ``count`` entries of the log at ``path`` that ``keep`` accepts, oldest first,
    from the current file and, as far as needed, its rotated files.

    With ``tail`` (a follower), the current file is what it held when following began, so
    that no line is shown twice or missed between history and what follows.
    """
    if count <= 0:
        return []
    process = path.name.removesuffix(".log")
    if tail is not None:
        inode = tail.inode
        current = _last_entries(tail.fileno(), tail.start, process, count, keep)
    else:
        current, inode = _read_entries(path, process, count, keep)
    chunks = [current]
    found = len(current)
    for older in rotated_files(path):
        if found >= count:
            break
        # A file rotated since we opened the current one is the current one: skip it.
        entries, _ = _read_entries(older, process, count - found, keep, skip_inode=inode)
        chunks.append(entries)
        found += len(entries)
    merged = [entry for chunk in reversed(chunks) for entry in chunk]
    return merged[-count:]


def follow_log(path: Path, history: int = 0, keep: Keep | None = None) -> Iterator[Entry]:
    """The last ``history`` entries (see :func:`read_history`), then every entry appended,
    following the file by name across rotation, truncation and restarts of its writer."""
    tail = _Tail(path)
    parse = _Parser(path.name.removesuffix(".log"))
    try:
        earlier = read_history(path, history, keep, tail)
        yield from earlier
        if earlier:
            parse.last_ts = earlier[-1].line.ts
        while True:
            entries = [parse(text) for text in tail.read()]
            yield from (e for e in entries if keep is None or keep(e.line))
            if not entries:
                time.sleep(_POLL_S)  # tail -F polls too: a file offers nothing to wait on
    finally:
        tail.close()


def follow_logs(folder: Path, history: int = 0, keep: Keep | None = None) -> Iterator[Entry]:
    """Every ``*.log`` in ``folder``: the last ``history`` entries of each, merged by time,
    then entries appended to any of them as they come.

    Files there at the start are followed from their end; a log that appears later (a
    strategy added meanwhile) is read from its start.
    """
    tails = {path: _Tail(path) for path in sorted(folder.glob("*.log"))}
    parsers = {path: _Parser(path.name.removesuffix(".log")) for path in tails}
    try:
        earlier = [
            entry
            for path, tail in tails.items()
            for entry in read_history(path, history, keep, tail)
        ]
        yield from sorted(earlier, key=lambda e: e.line.ts)
        while True:
            for path in sorted(folder.glob("*.log")):
                if path not in tails:
                    tails[path] = _Tail(path, from_start=True)
                    parsers[path] = _Parser(path.name.removesuffix(".log"))
            got = False
            for path, tail in tails.items():
                for text in tail.read():
                    got = True
                    entry = parsers[path](text)
                    if keep is None or keep(entry.line):
                        yield entry
            if not got:
                time.sleep(_POLL_S)  # as in follow_file: files offer nothing to wait on
    finally:
        for tail in tails.values():
            tail.close()
