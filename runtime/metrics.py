"""Prometheus metrics served by the aggregator, read from its figures at scrape time.

Workers and the manager send their figures as events; nothing here uses multiprocess mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runtime.figures import Figures, ProcessTable
from runtime.messages import LATENCY_BUCKETS_S, ProcessRow
from runtime.transport import RejectCounter

__all__ = ["AggregatorCollector", "AggregatorCounters"]

# Series that exist at zero from the start (a rate() over them has data before any reject).
_WORKER_REJECTS = [
    ("market_data", reason)
    for reason in ("frame_count", "topic", "decode", "topic_mismatch", "open_time")
]
_AGGREGATOR_REJECTS = [("events", "frame_count"), ("events", "decode")]


@dataclass(slots=True)
class AggregatorCounters:
    """The aggregator's own figures: frames it refused, events it wrote and skipped."""

    rejects: RejectCounter = field(default_factory=RejectCounter)
    journaled: int = 0
    duplicates: int = 0


class AggregatorCollector(Collector):
    """Per-strategy series plus the aggregator's own counters, built on each scrape."""

    def __init__(
        self, figures: Figures, counters: AggregatorCounters, processes: ProcessTable
    ) -> None:
        self._figures = figures
        self._counters = counters
        self._processes = processes

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
        missed = CounterMetricFamily(
            "stratrun_candles_missed",
            "Candles a strategy never received (a hole in its stream's seq).",
            labels=["strategy_id"],
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
            "Frames and connections refused and dropped, by process, socket and reason.",
            labels=["process", "socket", "reason"],
        )
        for sid, fig in sorted(snapshot.items()):
            candles.add_metric([sid], fig.candles)
            missed.add_metric([sid], fig.candles_missed)
            for kind, count in sorted(fig.events_by_kind.items()):
                events.add_metric([sid, kind], count)
            positions.add_metric([sid], len(fig.positions))
            pnl.add_metric([sid], fig.realized_pnl)
            last_seq.add_metric([sid], fig.last_seq)
            by_reason = {key: 0 for key in _WORKER_REJECTS} | dict(fig.rejects)
            for (socket, reason), count in sorted(by_reason.items()):
                rejected.add_metric([sid, socket, reason], count)
        own = {key: 0 for key in _AGGREGATOR_REJECTS}
        own |= {(r.socket, r.reason): r.count for r in self._counters.rejects.totals()}
        for (socket, reason), count in sorted(own.items()):
            rejected.add_metric(["aggregator", socket, reason], count)
        for r in self._processes.manager_rejects():
            rejected.add_metric(["manager", r.socket, r.reason], r.count)
        for row in self._processes.snapshot():
            if row.role == "broker":  # workers report through Stats, the aggregator above
                for r in row.rejects:
                    rejected.add_metric([row.name, r.socket, r.reason], r.count)
        journaled = CounterMetricFamily(
            "stratrun_journal_events", "Events written to the journal (duplicates excluded)."
        )
        journaled.add_metric([], self._counters.journaled)
        duplicates = CounterMetricFamily(
            "stratrun_journal_duplicates", "Events received again and not written twice."
        )
        duplicates.add_metric([], self._counters.duplicates)
        latency = HistogramMetricFamily(
            "stratrun_candle_to_decision_seconds",
            "From the broker publishing a candle to the strategy having decided on it.",
            labels=["strategy_id"],
        )
        for sid, fig in sorted(snapshot.items()):
            if any(fig.latency_counts):
                cumulative, buckets = 0, []
                for bound, count in zip(LATENCY_BUCKETS_S, fig.latency_counts, strict=False):
                    cumulative += count
                    buckets.append((repr(bound), cumulative))
                buckets.append(("+Inf", cumulative + fig.latency_counts[-1]))
                latency.add_metric([sid], buckets, fig.latency_sum_s)
        yield from (candles, missed, events, positions, pnl, last_seq, rejected, journaled)
        yield duplicates
        yield latency
        yield from _process_metrics(self._processes.snapshot())


def _process_metrics(rows: list[ProcessRow]) -> Iterator[Metric]:
    """Per-process figures the manager sends every second."""
    labels = ["process", "role"]
    up = GaugeMetricFamily(
        "stratrun_process_up", "1 while the process runs (or is paused).", labels=labels
    )
    restarts = CounterMetricFamily(
        "stratrun_process_restarts", "Restarts by the manager since it started.", labels=labels
    )
    rss = GaugeMetricFamily(
        "stratrun_process_resident_memory_bytes", "Resident memory (RSS).", labels=labels
    )
    uss = GaugeMetricFamily(
        "stratrun_process_unique_memory_bytes",
        "Memory only this process holds (USS): what stopping it would free.",
        labels=labels,
    )
    cpu = GaugeMetricFamily(
        "stratrun_process_cpu_ratio", "CPU use over the last second (1 = one core).", labels=labels
    )
    kills = CounterMetricFamily(
        "stratrun_process_kills",
        "Processes the manager killed, by cause (watchdog: no heartbeat; memory: over its cap).",
        labels=[*labels, "cause"],
    )
    for row in rows:
        key = [row.name, row.role]
        up.add_metric(key, 1.0 if row.state in ("running", "paused") else 0.0)
        restarts.add_metric(key, row.restarts)
        rss.add_metric(key, row.rss_bytes)
        uss.add_metric(key, row.uss_bytes)
        cpu.add_metric(key, row.cpu_percent / 100.0)
        for cause in ("watchdog", "memory"):
            kills.add_metric([*key, cause], row.kills.get(cause, 0))
    yield from (up, restarts, rss, uss, cpu, kills)
