"""What the broker keeps of each stream it published, to answer backfill and warm-up.

Only published candles are held (a worker must never see a candle before its time), the
newest ``limit`` per stream; older ones are forgotten and a request for them says so through
the reply's ``first_seq``.
"""

from __future__ import annotations

from runtime.messages import HISTORY_PAGE, Candle, HistoryReply, HistoryRequest

__all__ = ["History", "StreamHistory"]


class StreamHistory:
    """The newest published candles of one stream, by seq."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._candles: list[Candle] = []
        self._start = 0  # index of the oldest kept candle (trimmed in chunks, not per append)
        self.last_seq = 0

    @property
    def first_seq(self) -> int:
        """The oldest seq still held, 0 when nothing is."""
        kept = len(self._candles) - self._start
        return self.last_seq - kept + 1 if kept else 0

    def append(self, candle: Candle) -> None:
        """Record a published candle (its seq follows the last one)."""
        self._candles.append(candle)
        self.last_seq = candle.seq
        if len(self._candles) - self._start > self._limit:
            self._start += 1
            if self._start >= self._limit:  # drop the forgotten part now and then
                del self._candles[: self._start]
                self._start = 0

    def range(self, from_seq: int, to_seq: int) -> list[Candle]:
        """Held candles with ``from_seq <= seq <= to_seq``, at most one page.

        ``from_seq == 0`` means the newest page up to ``to_seq``.
        """
        first = self.first_seq
        if not first:
            return []
        to_seq = min(to_seq, self.last_seq)
        if from_seq == 0:
            from_seq = to_seq - HISTORY_PAGE + 1
        from_seq = max(from_seq, first)
        to_seq = min(to_seq, from_seq + HISTORY_PAGE - 1)
        if to_seq < from_seq:
            return []
        base = self._start - first
        return self._candles[base + from_seq : base + to_seq + 1]


class History:
    """The history of every stream, keyed ``SYMBOL|TF``."""

    def __init__(self, streams: list[str], limit: int) -> None:
        self.streams = {key: StreamHistory(limit) for key in streams}
        # keyed by (symbol, timeframe): no string built per candle on the publishing path
        self._by_pair = {(k.split("|")[0], k.split("|")[1]): h for k, h in self.streams.items()}

    def append(self, candle: Candle) -> None:
        self._by_pair[candle.symbol, candle.timeframe].append(candle)

    def answer(self, request: HistoryRequest, incarnation: str) -> HistoryReply:
        """The reply to one request (an unknown stream gets an error, not silence)."""
        stream = self.streams.get(request.stream)
        if stream is None:
            return HistoryReply(request.req_id, incarnation, 0, 0, [], error="unknown stream")
        return HistoryReply(
            request.req_id,
            incarnation,
            stream.first_seq,
            stream.last_seq,
            stream.range(request.from_seq, request.to_seq),
        )
