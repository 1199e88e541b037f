"""The worker's outbox (seq, ack, resend) and the aggregator's figures folded from events."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from runtime.figures import Figures, StrategyFigures
from runtime.messages import (
    EVENTS_UP_DECODER,
    Event,
    EventBatch,
    EventBody,
    Log,
    OpenPosition,
    PositionClosed,
    PositionOpened,
    Signal,
    Stats,
)
from workers.outbox import Outbox
from workers.spill import SpillFile

# --------------------------------------------------------------------------- Outbox


def _outbox(last_seq: int = 0, **kwargs: Any) -> tuple[Outbox, list[EventBatch]]:
    """An outbox whose wire is a list of decoded batches."""
    sent: list[EventBatch] = []

    def send(frame: bytes) -> None:
        message = EVENTS_UP_DECODER.decode(frame)
        assert isinstance(message, EventBatch)
        sent.append(message)

    return Outbox("strat", last_seq, send, **kwargs), sent


def _seqs(batches: list[EventBatch]) -> list[list[int]]:
    return [[e.seq for e in b.events] for b in batches]


def test_seq_continues_from_last_seq() -> None:
    outbox, sent = _outbox(last_seq=41)
    first = outbox.emit(Stats(1))
    second = outbox.emit(Log("warning", "x"))
    assert (first.seq, second.seq) == (42, 43)
    assert outbox.last_seq == 43
    assert sent == []  # nothing goes out before the flush
    assert outbox.flush({"ETH|1m": 7}, "ep") == 2
    (batch,) = sent
    assert batch.events == [first, second]
    assert batch.cursor == {"ETH|1m": 7}
    assert batch.epoch == "ep"
    assert batch.strategy_id == "strat"
    assert first.ts_ns > 0
    assert first.ts_ns <= second.ts_ns


def test_flush_with_nothing_emitted_sends_nothing() -> None:
    outbox, sent = _outbox()
    assert outbox.flush({"ETH|1m": 1}) == 0
    assert sent == []


def test_fresh_outbox_starts_at_one() -> None:
    outbox, _ = _outbox()
    assert outbox.emit(Stats(0)).seq == 1
    assert outbox.acked_seq == 0


def test_batches_stay_unacked_until_their_last_seq_is_acked() -> None:
    outbox, sent = _outbox(last_seq=10)
    assert outbox.all_acked
    for n in range(5):
        outbox.emit(Stats(n))
        if n % 2 == 0:
            outbox.flush({})
    assert _seqs(sent) == [[11], [12, 13], [14, 15]]
    assert outbox.unacked_events == 5
    assert not outbox.all_acked

    outbox.ack(13)
    assert outbox.unacked_events == 2
    sent.clear()
    assert outbox.resend() == 1
    assert _seqs(sent) == [[14, 15]]

    outbox.ack(12)  # a stale ack changes nothing
    assert outbox.acked_seq == 13

    outbox.ack(15)
    assert outbox.all_acked
    sent.clear()
    assert outbox.resend() == 0
    assert sent == []


def test_ack_at_or_below_last_journaled_seq_is_ignored() -> None:
    outbox, _ = _outbox(last_seq=10)
    outbox.emit(Stats(1))
    outbox.flush({})
    outbox.ack(10)
    assert outbox.unacked_events == 1


def test_past_the_memory_bound_batches_spill_to_a_file_and_are_resent_from_it(
    tmp_path: Path,
) -> None:
    spill = SpillFile(tmp_path / "s.spill")
    outbox, sent = _outbox(spill=spill, max_unacked=10)
    for n in range(30):
        outbox.emit(Stats(n))
        outbox.flush({"ETH|1m": n})
    assert spill.path.exists()
    assert spill.events >= 10  # the oldest went to disk
    sent.clear()
    outbox.ack(3)
    outbox.resend()
    # Every unacknowledged event goes out again, oldest first, none twice, none lost.
    assert [s for b in _seqs(sent) for s in b] == list(range(4, 31))
    outbox.ack(30)
    assert not spill.path.exists()


def test_a_stop_without_acknowledgement_spills_everything_unacknowledged(
    tmp_path: Path,
) -> None:
    spill = SpillFile(tmp_path / "s.spill")
    outbox, _ = _outbox(spill=spill)
    for n in range(6):
        outbox.emit(Stats(n))
        outbox.flush({"ETH|1m": n})
    outbox.ack(2)
    assert outbox.spill_all() == 4
    # What the next worker of the strategy sends before its Hello: seqs 3..6, in order.
    again = [EVENTS_UP_DECODER.decode(f) for f in SpillFile(spill.path).frames()]
    assert [e.seq for b in again if isinstance(b, EventBatch) for e in b.events] == [3, 4, 5, 6]


def test_a_torn_last_spill_record_is_ignored(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "s.spill")
    spill.append(5, 1, b"first")
    spill.append(9, 1, b"second")
    data = spill.path.read_bytes()
    spill.path.write_bytes(data[:-3])  # killed mid-write
    assert list(SpillFile(spill.path).frames()) == [b"first"]
    assert list(SpillFile(spill.path).frames(after_seq=5)) == []


# --------------------------------------------------------------------------- Figures


class _Feed:
    """Events for one strategy with consecutive seqs."""

    def __init__(self, figures: Figures, strategy_id: str) -> None:
        self.figures = figures
        self.strategy_id = strategy_id
        self.seq = 0

    def __call__(self, body: EventBody, ts_ns: int | None = None) -> None:
        self.seq += 1
        ts = 1_000 * self.seq if ts_ns is None else ts_ns
        self.figures.apply(Event(self.strategy_id, self.seq, ts, body))


def test_unknown_strategy_has_zero_figures() -> None:
    assert Figures().get("nobody") == StrategyFigures()
    assert Figures().snapshot() == {}


def test_stats_sum_candles_and_rejected_frames() -> None:
    figures = Figures()
    feed = _Feed(figures, "a")
    feed(Stats(10))
    feed(Stats(5, frames_rejected=2))
    feed(Stats(0, frames_rejected=1))
    fig = figures.get("a")
    assert fig.candles == 15
    assert fig.frames_rejected == 3
    assert fig.last_seq == 3


def test_events_by_kind_and_last_seq() -> None:
    figures = Figures()
    feed = _Feed(figures, "a")
    feed(Stats(1))
    feed(Signal("ETH-BTC", "5m", "long"))
    feed(Signal("ETH-BTC", "5m", "flat"))
    feed(Log("warning", "w"), ts_ns=5)  # older wall clock than the previous event
    fig = figures.get("a")
    assert fig.events_by_kind == {"stats": 1, "signal": 2, "log": 1}
    assert fig.last_seq == 4
    assert fig.last_event_ns == 3_000  # a maximum, not the last value


def test_strategies_are_kept_apart() -> None:
    figures = Figures()
    _Feed(figures, "a")(Stats(3))
    _Feed(figures, "b")(Stats(4))
    assert figures.get("a").candles == 3
    assert figures.get("b").candles == 4
    assert set(figures.snapshot()) == {"a", "b"}


def test_positions_open_add_partial_close_and_close() -> None:
    figures = Figures()
    feed = _Feed(figures, "a")
    feed(PositionOpened("ETH-BTC", "long", 1.0, 100.0, 0.1, 1))
    feed(PositionOpened("LTC-BTC", "short", 2.0, 10.0, 0.02, 2))
    fig = figures.get("a")
    assert len(fig.positions) == 2

    # Adding to the long averages the price and sums the fees.
    feed(PositionOpened("ETH-BTC", "long", 3.0, 120.0, 0.36, 3))
    eth = figures.get("a").positions["ETH-BTC"]
    assert eth.quantity == 4.0
    assert eth.entry_price == pytest.approx(115.0)
    assert eth.entry_fee == pytest.approx(0.46)
    assert eth.opened_at == 1

    # Partial close: quantity and entry fee shrink pro rata, PnL accumulates.
    feed(PositionClosed("ETH-BTC", "long", 1.0, 115.0, 125.0, 0.24, 9.76, 1, 4))
    fig = figures.get("a")
    eth = fig.positions["ETH-BTC"]
    assert eth.quantity == 3.0
    assert eth.entry_price == pytest.approx(115.0)
    assert eth.entry_fee == pytest.approx(0.46 * 3 / 4)
    assert fig.realized_pnl == pytest.approx(9.76)
    assert len(fig.positions) == 2

    # Full closes remove the positions.
    feed(PositionClosed("ETH-BTC", "long", 3.0, 115.0, 110.0, 0.7, -15.7, 1, 5))
    feed(PositionClosed("LTC-BTC", "short", 2.0, 10.0, 9.0, 0.04, 1.96, 2, 6))
    fig = figures.get("a")
    assert fig.positions == {}
    assert fig.realized_pnl == pytest.approx(9.76 - 15.7 + 1.96)
    assert fig.events_by_kind == {"position_opened": 3, "position_closed": 3}


def test_reversal_is_closed_then_opened_the_other_way() -> None:
    figures = Figures()
    feed = _Feed(figures, "a")
    feed(PositionOpened("ETH-BTC", "long", 1.0, 100.0, 0.1, 1))
    feed(PositionClosed("ETH-BTC", "long", 1.0, 100.0, 110.0, 0.21, 9.79, 1, 2))
    feed(PositionOpened("ETH-BTC", "short", 1.0, 110.0, 0.11, 2))
    fig = figures.get("a")
    assert fig.positions == {"ETH-BTC": OpenPosition("ETH-BTC", "short", 1.0, 110.0, 0.11, 2)}
    assert fig.realized_pnl == pytest.approx(9.79)


def test_close_of_unknown_position_still_counts_pnl() -> None:
    figures = Figures()
    _Feed(figures, "a")(PositionClosed("ETH-BTC", "long", 1.0, 100.0, 101.0, 0.2, 0.8, 1, 2))
    fig = figures.get("a")
    assert fig.positions == {}
    assert fig.realized_pnl == pytest.approx(0.8)


def test_get_and_snapshot_are_copies() -> None:
    figures = Figures()
    feed = _Feed(figures, "a")
    feed(PositionOpened("ETH-BTC", "long", 1.0, 100.0, 0.1, 1))
    copy = figures.get("a")
    copy.positions.clear()
    copy.events_by_kind["stats"] += 100
    copy.candles = 999
    snap = figures.snapshot()
    snap["a"].positions.clear()
    fig = figures.get("a")
    assert list(fig.positions) == ["ETH-BTC"]
    assert fig.events_by_kind == {"position_opened": 1}
    assert fig.candles == 0


def test_apply_from_several_threads_loses_nothing() -> None:
    figures = Figures()

    def work(strategy_id: str) -> None:
        for seq in range(1, 501):
            figures.apply(Event(strategy_id, seq, seq, Stats(1)))

    threads = [threading.Thread(target=work, args=(f"s{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert {sid: f.candles for sid, f in figures.snapshot().items()} == {
        f"s{n}": 500 for n in range(4)
    }
