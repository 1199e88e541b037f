"""Read the end of a log file and follow it by name, across rotation and truncation."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

__all__ = ["follow_file", "last_lines"]

_POLL_S = 0.2


def last_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of ``path``."""
    if count <= 0:
        return []
    with open(path, encoding="utf-8", errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=count)]


def follow_file(path: Path) -> Iterator[str]:
    """Yield lines appended to ``path`` from its current end, like ``tail -F``.

    A new file at the same name (rotation, a restart that recreated it) is reopened from its
    start; a file that shrank (truncation) is read again from its start.
    """
    handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - reopened below
    handle.seek(0, os.SEEK_END)
    inode = os.fstat(handle.fileno()).st_ino
    partial = ""
    try:
        while True:
            chunk = handle.readline()
            if chunk:
                partial += chunk
                if partial.endswith("\n"):
                    yield partial.rstrip("\n")
                    partial = ""
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino != inode or current.st_size < handle.tell()):
                if partial:  # the old file ended mid-line: that fragment is all there will be
                    yield partial
                    partial = ""
                handle.close()
                handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                inode = os.fstat(handle.fileno()).st_ino
                continue
            time.sleep(_POLL_S)  # tail -F polls too: a file offers nothing to wait on
    finally:
        handle.close()
