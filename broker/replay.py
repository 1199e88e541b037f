"""Merge several candle streams into one time-ordered, paced schedule with per-stream seq."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

from broker.csv_source import Row
from runtime.messages import Candle

__all__ = ["Replay", "Stream"]


class Stream:
    """One replayed stream: its rows and the seq of the last candle published."""

    def __init__(self, symbol: str, timeframe: str, rows: Sequence[Row]) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.rows = rows
        self.last_seq = 0

    @property
    def key(self) -> str:
        return f"{self.symbol}|{self.timeframe}"


def _keys(index: int, rows: Sequence[Row]) -> Iterator[tuple[int, int, int]]:
    """``(open_time, stream index, row index)`` of every row: the merge order."""
    for n, row in enumerate(rows):
        yield row.open_time, index, n


class Replay:
    """Candles of all streams in open-time order, each due at ``(open_time - t0) / speed``.

    With ``speed == 0`` every candle is due at once (pacing is left to the publisher's
    back-pressure).
    """

    def __init__(self, streams: Sequence[Stream], speed: float) -> None:
        self.streams = list(streams)
        self.speed = speed
        self._order: Iterator[tuple[int, int, int]] = heapq.merge(
            *(_keys(i, s.rows) for i, s in enumerate(self.streams))
        )
        self._next = next(self._order, None)
        self._t0 = self._next[0] if self._next else 0
        self.replayed = 0  # candles advanced past, all streams together: the resume cursor

    @property
    def finished(self) -> bool:
        return self._next is None

    def seconds_until_next(self, elapsed_s: float) -> float:
        """Seconds from now until the next candle is due (0 if due, inf when finished)."""
        if self._next is None:
            return float("inf")
        if self.speed == 0:
            return 0.0
        return max(0.0, (self._next[0] - self._t0) / 1000.0 / self.speed - elapsed_s)

    def peek(self, publish_ns: int = 0) -> Candle | None:
        """The next candle, stamped with its seq and ``publish_ns``, without consuming it."""
        if self._next is None:
            return None
        _, i, n = self._next
        stream = self.streams[i]
        row = stream.rows[n]
        return Candle(
            stream.symbol,
            stream.timeframe,
            row.open_time,
            row.open,
            row.high,
            row.low,
            row.close,
            row.volume,
            stream.last_seq + 1,
            publish_ns,
        )

    def advance(self) -> None:
        """Mark the peeked candle as published."""
        if self._next is None:
            return
        self.streams[self._next[1]].last_seq += 1
        self.replayed += 1
        self._next = next(self._order, None)

    def offset_s(self) -> float:
        """Seconds into the paced schedule at which the next candle is due (0 at speed 0)."""
        if self._next is None or self.speed == 0:
            return 0.0
        return (self._next[0] - self._t0) / 1000.0 / self.speed
