"""Prometheus metrics served by the aggregator, read from its figures at scrape time.

Workers and the manager send their figures as events; nothing here uses multiprocess mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.figures import Figures
from runtime.transport import RejectCounter

__all__ = ["AggregatorCollector", "AggregatorCounters"]


@dataclass(slots=True)
class AggregatorCounters:
    """The aggregator's own figures: frames it refused, events it wrote and skipped."""

    rejects: RejectCounter = field(default_factory=RejectCounter)
    journaled: int = 0
    duplicates: int = 0


class AggregatorCollector(Collector):
    """Per-strategy series plus the aggregator's own counters, built on each scrape."""

    def __init__(self, figures: Figures, counters: AggregatorCounters) -> None:
        self._figures = figures
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        snapshot = self._figures.snapshot()
        candles = CounterMetricFamily(
            "stratrun_candles_processed",
            "Candles a strategy has processed.",
            labels=["strategy_id"],
        )
        events = CounterMetricFamily(
            "stratrun_events", "Events journaled, by kind.", labels=["strategy_id", "kind"]
        )
        positions = GaugeMetricFamily(
            "stratrun_open_positions", "Open positions of a strategy.", labels=["strategy_id"]
        )
        pnl = GaugeMetricFamily(
            "stratrun_realized_pnl",
            "Realized profit and loss, net of fees, in quote currency.",
            labels=["strategy_id"],
        )
        last_seq = GaugeMetricFamily(
            "stratrun_last_event_seq", "Seq of the last journaled event.", labels=["strategy_id"]
        )
        rejected = CounterMetricFamily(
            "stratrun_frames_rejected",
            "Malformed frames counted and dropped, by process and socket.",
            labels=["process", "socket", "reason"],
        )
        for sid, fig in sorted(snapshot.items()):
            candles.add_metric([sid], fig.candles)
            for kind, count in sorted(fig.events_by_kind.items()):
                events.add_metric([sid, kind], count)
            positions.add_metric([sid], len(fig.positions))
            pnl.add_metric([sid], fig.realized_pnl)
            last_seq.add_metric([sid], fig.last_seq)
            rejected.add_metric([sid, "market_data", "invalid"], fig.frames_rejected)
        for (socket, reason), count in sorted(self._counters.rejects.by_reason.copy().items()):
            rejected.add_metric(["aggregator", socket, reason], count)
        journaled = CounterMetricFamily(
            "stratrun_journal_events", "Events written to the journal (duplicates excluded)."
        )
        journaled.add_metric([], self._counters.journaled)
        duplicates = CounterMetricFamily(
            "stratrun_journal_duplicates", "Events received again and not written twice."
        )
        duplicates.add_metric([], self._counters.duplicates)
        yield from (candles, events, positions, pnl, last_seq, rejected, journaled, duplicates)
