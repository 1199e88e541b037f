"""The strategy's event outbox: stamps seq and strategy id, keeps events until acknowledged."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from time import monotonic, time_ns

from runtime.messages import Event, EventBody

__all__ = ["Outbox"]


class Outbox:
    """Every event a strategy emits goes through here.

    ``seq`` continues from the last one the journal holds; an event stays in :attr:`unacked`
    until the aggregator acknowledges its seq, and :meth:`resend` sends them all again (the
    journal ignores the ones it already has).
    """

    def __init__(self, strategy_id: str, last_seq: int, send: Callable[[Event], None]) -> None:
        self.strategy_id = strategy_id
        self.last_seq = last_seq
        self.acked_seq = last_seq
        self.unacked: OrderedDict[int, Event] = OrderedDict()
        self.last_emit_monotonic = monotonic()
        self._send = send

    def emit(self, body: EventBody) -> Event:
        """Wrap ``body`` in an envelope with the next seq, send it and keep it until acked."""
        self.last_seq = seq = self.last_seq + 1
        event = Event(self.strategy_id, seq, time_ns(), body)
        self.unacked[seq] = event
        self.last_emit_monotonic = monotonic()
        self._send(event)
        return event

    def ack(self, seq: int) -> None:
        """Everything up to ``seq`` is in the journal."""
        if seq <= self.acked_seq:
            return
        self.acked_seq = seq
        unacked = self.unacked
        if seq >= self.last_seq:  # every event emitted so far (the usual case)
            unacked.clear()
            return
        while unacked and next(iter(unacked)) <= seq:
            unacked.popitem(last=False)

    def resend(self) -> int:
        """Send every unacknowledged event again; returns how many."""
        for event in self.unacked.values():
            self._send(event)
        return len(self.unacked)

    @property
    def all_acked(self) -> bool:
        return not self.unacked
