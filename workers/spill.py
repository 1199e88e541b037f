"""Unacknowledged event batches moved out of memory while the aggregator is away.

Each record is the batch's last seq (8 bytes), its length (4 bytes) and the encoded
``EventBatch`` frame, appended and fsynced: a worker killed while the aggregator is away
leaves its events here, and the next worker of that strategy sends them first.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

__all__ = ["SpillFile"]

_HEADER = struct.Struct("<QI")


class SpillFile:
    """An append-only file of ``(last_seq, frame)`` records for one strategy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_seq = 0
        self.batches = 0
        self.events = 0

    def append(self, last_seq: int, event_count: int, frame: bytes) -> None:
        """Add one batch; it is on disk when this returns."""
        self.append_many([(last_seq, event_count, frame)])

    def append_many(self, batches: list[tuple[int, int, bytes]]) -> None:
        """Add ``(last_seq, event count, frame)`` batches, oldest first, with one fsync."""
        if not batches:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            for last_seq, event_count, frame in batches:
                handle.write(_HEADER.pack(last_seq, len(frame)))
                handle.write(frame)
                self.last_seq = last_seq
                self.batches += 1
                self.events += event_count
            handle.flush()
            os.fsync(handle.fileno())

    def frames(self, after_seq: int = 0) -> Iterator[bytes]:
        """The frames of the batches ending after ``after_seq``, oldest first; a torn last
        record (killed mid-write) is ignored."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        offset = 0
        while offset + _HEADER.size <= len(data):
            last_seq, size = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            if offset + size > len(data):
                return
            if last_seq > after_seq:
                yield data[offset : offset + size]
            offset += size

    def clear(self) -> None:
        """Everything spilled is acknowledged: remove the file."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.last_seq = self.batches = self.events = 0

    def __bool__(self) -> bool:
        return self.batches > 0
