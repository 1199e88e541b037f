"""Where the replay is: saved as the broker goes, read back when it restarts.

A restarted broker continues the same replay (same epoch) after the candles it had already
sent, instead of sending the whole file again. The file is written atomically, about once
per heartbeat: it can lag behind what was sent, never run ahead of it, so after a restart
some candles may go out twice (subscribers drop repeated seqs) but none is skipped.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec

__all__ = ["ReplayCursor"]


class _Saved(msgspec.Struct, frozen=True):
    epoch: str
    streams: list[str]
    replayed: int


class ReplayCursor:
    """The saved position of one replay; inert when ``path`` is empty."""

    def __init__(self, path: str, epoch: str, streams: list[str]) -> None:
        self._path = Path(path) if path else None
        self._epoch = epoch
        self._streams = streams
        self._saved = -1

    def load(self) -> int:
        """Candles already replayed in this epoch (0 for a new epoch or another feed set)."""
        if self._path is None or not self._epoch:
            return 0
        try:
            saved = msgspec.json.decode(self._path.read_bytes(), type=_Saved)
        except (OSError, msgspec.DecodeError):
            return 0
        if saved.epoch != self._epoch or saved.streams != self._streams:
            return 0
        self._saved = saved.replayed
        return saved.replayed

    def save(self, replayed: int) -> None:
        """Record that ``replayed`` candles went out (a no-op when nothing changed)."""
        if self._path is None or replayed == self._saved:
            return
        tmp = self._path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_bytes(msgspec.json.encode(_Saved(self._epoch, self._streams, replayed)))
            tmp.replace(self._path)
            self._saved = replayed
