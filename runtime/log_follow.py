"""Read the end of a log file and follow it by name, across rotation and truncation."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

__all__ = ["follow_dir", "follow_file", "last_lines"]

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


def follow_dir(folder: Path, history: int = 0) -> Iterator[tuple[str, str]]:
    """Yield ``(name, line)``: the last ``history`` lines of every ``*.log`` in ``folder``,
    then lines appended to any of them as they come.

    Files there at the start are followed from their end; a log that appears later (a
    strategy added meanwhile) is read from its start.
    """
    tails = {path: _Tail(path) for path in sorted(folder.glob("*.log"))}
    try:
        for path, tail in tails.items():
            for line in tail.history(history):
                yield path.stem, line
        while True:
            for path in sorted(folder.glob("*.log")):
                if path not in tails:
                    tails[path] = _Tail(path, from_start=True)
            got = False
            for path, tail in tails.items():
                for line in tail.read():
                    got = True
                    yield path.stem, line
            if not got:
                time.sleep(_POLL_S)  # as in follow_file: files offer nothing to wait on
    finally:
        for tail in tails.values():
            tail.close()
