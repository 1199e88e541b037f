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

    def text_before_start(self) -> str:
        """What the file held when following began (read from the open file, not by name)."""
        if not self.start:
            return ""
        data = os.pread(self._handle.fileno(), self.start, 0)
        return data.decode("utf-8", errors="replace")

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


def _entries(text: str, process: str, keep: Keep | None) -> list[Entry]:
    parse = _Parser(process)
    entries = (parse(line) for line in text.splitlines())
    return [e for e in entries if keep is None or keep(e.line)]


def _read_text(path: Path) -> tuple[str, int]:
    """The text of ``path`` and its inode ("", 0 if it is gone)."""
    try:
        with open(path, "rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino
            return handle.read().decode("utf-8", errors="replace"), inode
    except FileNotFoundError:
        return "", 0


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
        text, inode = tail.text_before_start(), tail.inode
    else:
        text, inode = _read_text(path)
    chunks = [_entries(text, process, keep)]
    found = len(chunks[0])
    for older in rotated_files(path):
        if found >= count:
            break
        text, older_inode = _read_text(older)
        if older_inode == inode:  # rotated since we opened it: already read
            continue
        chunks.append(_entries(text, process, keep))
        found += len(chunks[-1])
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
