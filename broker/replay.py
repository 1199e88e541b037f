"""Merge several candle streams into one time-ordered, paced schedule with per-stream seq."""

from __future__ import annotations

import heapq
from collections import deque
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
        self._ahead: deque[tuple[int, int, int]] = deque()  # read past _next by run_length
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

    def next_stream(self) -> int:
        """Index of the stream of the next candle (-1 when finished)."""
        return self._next[1] if self._next is not None else -1

    def run_length(self, elapsed_s: float, limit: int) -> int:
        """How many candles from the next one on are due by ``elapsed_s`` and of the same
        stream, one after the other (at most ``limit``; 0 when the next is not due).

        At speed 0 every candle is due: a run is the stretch of one stream until another
        stream's candle comes between. Paced, a run longer than one means the replay is behind
        its schedule; a candle on time is a run of one.
        """
        if self._next is None or self.seconds_until_next(elapsed_s) > 0.0:
            return 0
        stream = self._next[1]
        ahead = self._ahead
        n = 1
        while n < limit:
            if len(ahead) < n:
                key = next(self._order, None)
                if key is None:
                    break
                ahead.append(key)
            key = ahead[n - 1]
            if key[1] != stream or (
                self.speed and (key[0] - self._t0) / 1000.0 / self.speed > elapsed_s
            ):
                break
            n += 1
        return n

    def peek_run(self, count: int, publish_ns: int = 0) -> list[Candle]:
        """The next ``count`` candles (a run counted by :meth:`run_length`), not consumed."""
        first = self.peek(publish_ns)
        if first is None or self._next is None:
            return []
        stream = self.streams[self._next[1]]
        run = [first]
        for k in range(1, count):
            _, _, n = self._ahead[k - 1]
            row = stream.rows[n]
            run.append(
                Candle(
                    stream.symbol,
                    stream.timeframe,
                    row.open_time,
                    row.open,
                    row.high,
                    row.low,
                    row.close,
                    row.volume,
                    stream.last_seq + 1 + k,
                    publish_ns,
                )
            )
        return run

    def advance(self, count: int = 1) -> None:
        """Mark the ``count`` peeked candles as published."""
        for _ in range(count):
            if self._next is None:
                return
            self.streams[self._next[1]].last_seq += 1
            self.replayed += 1
            self._next = self._ahead.popleft() if self._ahead else next(self._order, None)

    def offset_s(self) -> float:
        """Seconds into the paced schedule at which the next candle is due (0 at speed 0)."""
        if self._next is None or self.speed == 0:
            return 0.0
        return (self._next[0] - self._t0) / 1000.0 / self.speed
