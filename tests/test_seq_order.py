"""Events journaled out of seq order reach the figures in seq order; holes hold acks back."""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.figures import Figures
from runtime.journal import Journal
from runtime.messages import Event, EventBody, OrderFilled, OrderSubmitted, PositionOpened, Stats
from runtime.seq_order import SeqOrder

LOG = logging.getLogger("test")


def _event(seq: int, body: EventBody, sid: str = "s") -> Event:
    return Event(sid, seq, seq, body)


def _trade(first: int, order: str) -> list[Event]:
    """An order submitted, then filled and the position opened: three events from ``first``."""
    return [
        _event(first, OrderSubmitted(order, "ETH-BTC", "sell", 1.0, "x")),
        _event(first + 1, OrderFilled(order, "ETH-BTC", "sell", 1.0, 0.09, 0.0, 1)),
        _event(first + 2, PositionOpened("ETH-BTC", "short", 1.0, 0.09, 0.0, 1)),
    ]


def _journaled(journal: Journal, order: SeqOrder, events: list[Event]) -> None:
    order.journaled(journal.append(events))


def test_a_batch_journaled_late_is_folded_in_before_what_came_after_it(tmp_path: Path) -> None:
    journal, figures = Journal(tmp_path / "j.sqlite"), Figures()
    order = SeqOrder(journal, figures, LOG)
    submitted, *filled = _trade(1, "o-1")
    # The batch with the submission was lost on the way; the one with the fill came first.
    _journaled(journal, order, filled)
    assert order.upto("s") == 0, "an ack must not cover the hole"
    assert figures.get("s").last_seq == 0, "nothing folded in above the hole"
    _journaled(journal, order, [submitted])  # resent by the worker
    assert order.upto("s") == 3
    fig = figures.get("s")
    # In seq order: submitted, then filled: no order left pending, the short is open.
    assert fig.pending_orders == {} and list(fig.positions) == ["ETH-BTC"]


def test_a_restarted_aggregator_waits_for_a_hole_but_not_for_a_settled_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    order = SeqOrder(journal, Figures(), LOG)
    _journaled(journal, order, [_event(1, Stats(1)), *_trade(3, "o-1")[1:]])  # 2, 3 missing
    order.settle("s")  # a new worker said Hello: 2 and 3 will never come
    assert order.upto("s") == 5
    _journaled(journal, order, [_event(6, Stats(1)), _event(8, Stats(1))])  # 7 on its way
    assert order.upto("s") == 6
    journal.close()

    journal = Journal(path)
    figures = Figures()
    again = SeqOrder(journal, figures, LOG)
    again.rebuild()
    assert again.upto("s") == 6, "the settled hole is not waited for; the open one is"
    assert figures.get("s").last_seq == 6
    _journaled(journal, again, [_event(7, Stats(1))])
    assert again.upto("s") == 8 and figures.get("s").last_seq == 8
    assert figures.get("s").candles == 4
    journal.close()
