"""Per-strategy figures folded from the event stream (candles, events, positions, PnL).

The aggregator applies every newly journaled event; the metrics collector reads a snapshot
from the HTTP thread, hence the lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.messages import (
    LATENCY_BUCKETS_S,
    AccountUpdated,
    Event,
    FeedStatus,
    OpenPosition,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PendingOrder,
    PositionClosed,
    PositionOpened,
    ProcessRow,
    RejectCount,
    Stats,
)

__all__ = ["Figures", "ProcessTable", "StrategyFigures"]

_EPSILON = 1e-12
_TAGS: dict[type, str] = {}  # body type -> its tag (the kind)


@dataclass(slots=True)
class StrategyFigures:
    """What the journal says about one strategy so far."""

    candles: int = 0
    frames_rejected: int = 0
    candles_missed: int = 0
    candles_backfilled: int = 0
    candles_duplicate: int = 0
    gaps: int = 0
    lag_s: float = 0.0
    feed_stale: bool = False
    unrealized_pnl: float = 0.0
    realized_pnl: float = 0.0
    rejects: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_seq: int = 0
    last_event_ns: int = 0
    events_by_kind: Counter[str] = field(default_factory=Counter)
    positions: dict[str, OpenPosition] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    latency_sum_s: float = 0.0
    journal_latency_counts: list[int] = field(
        default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1)
    )
    journal_latency_sum_s: float = 0.0
    pending_orders: dict[str, PendingOrder] = field(default_factory=dict)
    last_closed: dict[str, PositionClosed] = field(default_factory=dict)  # by symbol
    account: AccountUpdated | None = None  # the sub-account's last point

    def copy(self) -> StrategyFigures:
        return StrategyFigures(
            self.candles,
            self.frames_rejected,
            self.candles_missed,
            self.candles_backfilled,
            self.candles_duplicate,
            self.gaps,
            self.lag_s,
            self.feed_stale,
            self.unrealized_pnl,
            self.realized_pnl,
            Counter(self.rejects),
            self.last_seq,
            self.last_event_ns,
            Counter(self.events_by_kind),
            dict(self.positions),
            list(self.latency_counts),
            self.latency_sum_s,
            list(self.journal_latency_counts),
            self.journal_latency_sum_s,
            dict(self.pending_orders),
            dict(self.last_closed),
            self.account,
        )


class Figures:
    """Figures of every strategy seen, keyed by strategy id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_strategy: dict[str, StrategyFigures] = {}

    def apply(self, event: Event) -> None:
        """Fold one journaled event in (call once per event: the journal deduplicates)."""
        body = event.body
        body_type = type(body)
        kind = _TAGS.get(body_type)
        if kind is None:
            kind = _TAGS[body_type] = str(body_type.__struct_config__.tag)
        fold = _FOLDS.get(body_type)
        with self._lock:
            fig = self._by_strategy.get(event.strategy_id)
            if fig is None:  # not setdefault: that would build one per event
                fig = self._by_strategy[event.strategy_id] = StrategyFigures()
            fig.events_by_kind[kind] += 1
            if event.seq > fig.last_seq:
                fig.last_seq = event.seq
            if event.ts_ns > fig.last_event_ns:
                fig.last_event_ns = event.ts_ns
            if fold is not None:
                fold(fig, body)

    def get(self, strategy_id: str) -> StrategyFigures:
        """A copy of one strategy's figures (zeros for a strategy never seen)."""
        with self._lock:
            fig = self._by_strategy.get(strategy_id)
            return fig.copy() if fig else StrategyFigures()

    def snapshot(self) -> dict[str, StrategyFigures]:
        """A copy of everything, safe to read without the lock."""
        with self._lock:
            return {sid: fig.copy() for sid, fig in self._by_strategy.items()}


# One function per body type that moves a figure, found by the body's type: a ``match`` on
# the body tried each class in turn with isinstance(), which for msgspec structs goes
# through the metaclass (~0.2 us a test) and was the figures' largest cost per event.


def _fold_stats(fig: StrategyFigures, body: Stats) -> None:
    fig.candles += body.candles
    fig.frames_rejected += body.frames_rejected
    by_reason = 0
    for r in body.rejects:
        fig.rejects[(r.socket, r.reason)] += r.count
        by_reason += r.count
    if body.frames_rejected > by_reason:  # from a worker that did not say why
        fig.rejects[("market_data", "invalid")] += body.frames_rejected - by_reason
    fig.candles_missed += body.candles_missed
    fig.candles_backfilled += body.candles_backfilled
    fig.candles_duplicate += body.candles_duplicate
    fig.gaps += body.gaps
    fig.lag_s = body.lag_s
    fig.unrealized_pnl = body.unrealized_pnl
    if len(body.latency_counts) == len(fig.latency_counts):
        for i, count in enumerate(body.latency_counts):
            fig.latency_counts[i] += count
        fig.latency_sum_s += body.latency_sum_s
    if len(body.journal_latency_counts) == len(fig.journal_latency_counts):
        for i, count in enumerate(body.journal_latency_counts):
            fig.journal_latency_counts[i] += count
        fig.journal_latency_sum_s += body.journal_latency_sum_s


def _fold_submitted(fig: StrategyFigures, body: OrderSubmitted) -> None:
    fig.pending_orders[body.order_id] = PendingOrder(
        body.order_id, body.symbol, body.side, body.quantity, body.reason, body.sizing
    )


def _fold_done(fig: StrategyFigures, body: OrderFilled | OrderRejected) -> None:
    fig.pending_orders.pop(body.order_id, None)


def _fold_feed(fig: StrategyFigures, body: FeedStatus) -> None:
    fig.feed_stale = body.state == "stale"


def _fold_opened(fig: StrategyFigures, body: PositionOpened) -> None:
    _open(fig.positions, body)


def _fold_account(fig: StrategyFigures, body: AccountUpdated) -> None:
    fig.account = body


def _fold_closed(fig: StrategyFigures, body: PositionClosed) -> None:
    fig.realized_pnl += body.realized_pnl
    fig.last_closed[body.symbol] = body
    _close(fig.positions, body)


_FOLDS: dict[type, Callable[[StrategyFigures, Any], None]] = {
    Stats: _fold_stats,
    OrderSubmitted: _fold_submitted,
    OrderFilled: _fold_done,
    OrderRejected: _fold_done,
    FeedStatus: _fold_feed,
    PositionOpened: _fold_opened,
    AccountUpdated: _fold_account,
    PositionClosed: _fold_closed,
}


def _open(positions: dict[str, OpenPosition], body: PositionOpened) -> None:
    held = positions.get(body.symbol)
    if held is None or held.side != body.side:
        positions[body.symbol] = OpenPosition(
            body.symbol, body.side, body.quantity, body.entry_price, body.entry_fee, body.opened_at
        )
        return
    total = held.quantity + body.quantity
    price = (held.entry_price * held.quantity + body.entry_price * body.quantity) / total
    positions[body.symbol] = OpenPosition(
        body.symbol, body.side, total, price, held.entry_fee + body.entry_fee, held.opened_at
    )


def _close(positions: dict[str, OpenPosition], body: PositionClosed) -> None:
    held = positions.get(body.symbol)
    if held is None:
        return
    left = held.quantity - body.quantity
    if left <= _EPSILON:
        del positions[body.symbol]
        return
    fee_left = held.entry_fee * left / held.quantity
    positions[body.symbol] = OpenPosition(
        held.symbol, held.side, left, held.entry_price, fee_left, held.opened_at
    )


class ProcessTable:
    """The manager's latest word on every process (state, restarts, memory, CPU, kills)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[ProcessRow] = []
        self._manager_rejects: list[RejectCount] = []

    def update(self, rows: list[ProcessRow], manager_rejects: Sequence[RejectCount] = ()) -> None:
        with self._lock:
            self._rows = list(rows)
            self._manager_rejects = list(manager_rejects)

    def snapshot(self) -> list[ProcessRow]:
        with self._lock:
            return list(self._rows)

    def manager_rejects(self) -> list[RejectCount]:
        """Frames the manager refused, by socket and reason, since it started."""
        with self._lock:
            return list(self._manager_rejects)
