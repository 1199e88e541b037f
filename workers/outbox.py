"""The strategy's event outbox: stamps seq and strategy id, batches, keeps until acknowledged.

Events emitted while one candle is processed go out together as one ``EventBatch`` frame
with the strategy's cursor, so the journal holds all of a candle's effects or none. A batch
stays until the aggregator acknowledges its last seq; :meth:`resend` sends every
unacknowledged batch again (the journal ignores what it already has). Past
``max_unacked`` events the oldest batches go to a spill file instead of growing memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from time import monotonic, time_ns

from runtime.messages import ENCODER, Event, EventBatch, EventBody
from workers.spill import SpillFile

__all__ = ["Outbox"]


class Outbox:
    """Every event a strategy emits goes through here; ``send`` puts one frame on the wire."""

    def __init__(
        self,
        strategy_id: str,
        last_seq: int,
        send: Callable[[bytes], None],
        *,
        spill: SpillFile | None = None,
        max_unacked: int = 100_000,
        tap: Callable[[Event], None] | None = None,
    ) -> None:
        self.strategy_id = strategy_id
        self.last_seq = last_seq
        self.acked_seq = last_seq
        self.last_emit_monotonic = monotonic()
        self.spill = spill
        self.max_unacked = max_unacked
        self.batches_sent = 0
        self._send = send
        self._tap = tap  # sees every event as it is emitted (tests, tools)
        self._open: list[Event] = []
        # last seq of a batch -> (its event count, its frame)
        self._unacked: OrderedDict[int, tuple[int, bytes]] = OrderedDict()
        self._unacked_events = 0
        self.before_flush: Callable[[], None] | None = None  # called first by every flush

    def emit(self, body: EventBody) -> Event:
        """Wrap ``body`` in an envelope with the next seq; it goes out with the next flush."""
        self.last_seq = seq = self.last_seq + 1
        event = Event(self.strategy_id, seq, time_ns(), body)
        self._open.append(event)
        self.last_emit_monotonic = monotonic()
        if self._tap is not None:
            self._tap(event)
        return event

    def flush(self, cursor: dict[str, int], epoch: str = "") -> int:
        """Send what was emitted since the last flush as one batch; returns how many events."""
        if self.before_flush is not None:
            self.before_flush()
        events = self._open
        if not events:
            return 0
        self._open = []
        # Encoded at once: the batch is never kept, so the live cursor needs no copy.
        frame = ENCODER.encode(EventBatch(self.strategy_id, events, cursor, epoch))
        self._unacked[events[-1].seq] = (len(events), frame)
        self._unacked_events += len(events)
        self.batches_sent += 1
        self._send(frame)
        if self._unacked_events > self.max_unacked and self.spill is not None:
            self._spill_oldest()
        return len(events)

    def ack(self, seq: int) -> None:
        """Everything up to ``seq`` is in the journal."""
        if seq <= self.acked_seq:
            return
        self.acked_seq = seq
        unacked = self._unacked
        while unacked and next(iter(unacked)) <= seq:
            count, _ = unacked.popitem(last=False)[1]
            self._unacked_events -= count
        if self.spill and self.spill.last_seq <= seq:
            self.spill.clear()

    def resend(self) -> int:
        """Send every unacknowledged batch again, spilled ones first; returns how many."""
        sent = 0
        if self.spill:
            for frame in self.spill.frames(self.acked_seq):
                self._send(frame)
                sent += 1
        for _, frame in self._unacked.values():
            self._send(frame)
            sent += 1
        return sent

    @property
    def unacked_events(self) -> int:
        """Events emitted and not yet acknowledged (in memory, spilled or not yet flushed)."""
        return max(0, self.last_seq - self.acked_seq)

    @property
    def all_acked(self) -> bool:
        return self.last_seq <= self.acked_seq

    def spill_all(self) -> int:
        """Move every unacknowledged batch to the spill file (a graceful stop that got no
        acknowledgement in time: the next worker of the strategy sends them first); returns
        how many events went there (0 without a spill file)."""
        if self.spill is None:
            return 0
        batches = [(last_seq, count, frame) for last_seq, (count, frame) in self._unacked.items()]
        self.spill.append_many(batches)
        self._unacked.clear()
        moved, self._unacked_events = self._unacked_events, 0
        return moved

    def _spill_oldest(self) -> None:
        assert self.spill is not None
        batches = []
        while self._unacked_events > self.max_unacked // 2 and self._unacked:
            last_seq, (count, frame) = self._unacked.popitem(last=False)
            batches.append((last_seq, count, frame))
            self._unacked_events -= count
        self.spill.append_many(batches)
