"""Each strategy's journaled events folded into the figures in seq order.

Events can reach the journal out of order: a batch lost on the way (in the socket of an
aggregator that was killed) is resent by its worker after later batches were journaled.
Figures (open positions, pending orders, the last close) depend on order, so an event is
folded in only once every event before it is: until then it is *held*. Acknowledgements
never go past a hole either, so the worker keeps, and resends, what is missing.

A hole is *settled* when a new worker of the strategy says Hello: the worker that had those
events is gone, so they will never come. The journal records it, so a restarted aggregator
does not wait for them again.
"""

from __future__ import annotations

import logging
from typing import Protocol

from runtime.journal import Journal
from runtime.messages import Event

__all__ = ["Fold", "SeqOrder"]


class Fold(Protocol):
    """What events are folded into (the figures, and the risk book with them)."""

    def apply(self, event: Event) -> None: ...


class SeqOrder:
    """Per strategy: the seq up to which the journal has every event, and what is held."""

    def __init__(self, journal: Journal, figures: Fold, log: logging.Logger) -> None:
        self._journal = journal
        self._figures = figures
        self._log = log
        self._upto: dict[str, int] = {}
        self._held: dict[str, dict[int, Event]] = {}

    def rebuild(self) -> None:
        """Fold in what the journal holds (at start), each strategy in seq order up to its
        first hole that is not settled; what lies beyond it is held."""
        settled = self._journal.settled()
        for event in self._journal.events_by_strategy():
            sid = event.strategy_id
            upto = self._upto.setdefault(sid, settled.get(sid, 0))
            if event.seq <= upto:
                self._figures.apply(event)
            elif event.seq == upto + 1 and not self._held.get(sid):
                self._figures.apply(event)
                self._upto[sid] = event.seq
            else:
                self._held.setdefault(sid, {})[event.seq] = event

    def journaled(self, events: list[Event]) -> None:
        """Events just committed (each new to the journal): fold in what has no hole before."""
        touched: set[str] = set()
        upto, held, apply = self._upto, self._held, self._figures.apply
        for event in events:
            sid, seq = event.strategy_id, event.seq
            last = upto.get(sid, 0)
            if seq == last + 1 and sid not in held:  # the usual case: next in line, no hole
                apply(event)
                upto[sid] = seq
                continue
            if seq <= last:
                apply(event)  # a straggler into a settled hole
                continue
            held.setdefault(sid, {})[seq] = event
            touched.add(sid)
        for sid in touched:
            self._advance(sid)

    def upto(self, strategy_id: str) -> int:
        """Every event of the strategy up to this seq is in the journal (or settled)."""
        return self._upto.get(strategy_id, 0)

    def settle(self, strategy_id: str) -> None:
        """A new worker of the strategy starts: fold in everything held, giving up holes."""
        held = self._held.pop(strategy_id, {})
        if not held:
            return
        upto = self._upto.get(strategy_id, 0)
        last = max(held)
        self._log.error(
            "%s: %d events between seq %d and %d never reached the journal; the worker that "
            "had them is gone, they are lost",
            strategy_id,
            last - upto - len(held),
            upto + 1,
            last,
        )
        for seq in sorted(held):
            self._figures.apply(held[seq])
        self._upto[strategy_id] = last
        self._journal.settle(strategy_id, last)

    def _advance(self, strategy_id: str) -> None:
        held = self._held[strategy_id]
        upto = self._upto.get(strategy_id, 0)
        while upto + 1 in held:
            upto += 1
            self._figures.apply(held.pop(upto))
        self._upto[strategy_id] = upto
        if not held:
            del self._held[strategy_id]
