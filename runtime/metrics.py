"""Prometheus metrics served by the aggregator, read from its figures at scrape time.

Workers and the manager send their figures as events; nothing here uses multiprocess mode.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runtime.account_metrics import account_metrics
from runtime.figures import Figures, ProcessTable
from runtime.messages import LATENCY_BUCKETS_S, ProcessRow
from runtime.transport import RejectCounter

__all__ = ["COMMIT_BUCKETS_S", "AggregatorCollector", "AggregatorCounters"]

# Upper bounds (seconds) of the journal-commit histogram: an fsync'd SQLite commit.
COMMIT_BUCKETS_S: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

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
    commit_counts: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_BUCKETS_S) + 1))
    commit_sum_s: float = 0.0
    queue_depth: int = 0  # events received and waiting for the last commit

    def commit(self, seconds: float, events: int) -> None:
        """Count one journal commit of ``events`` events that took ``seconds``."""
        i = bisect.bisect_left(COMMIT_BUCKETS_S, seconds)
        self.commit_counts[i] += 1
        self.commit_sum_s += seconds
        self.queue_depth = events


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
            "Candles a strategy lost for good (a hole older than the broker's history).",
            labels=["strategy_id"],
        )
        gaps = CounterMetricFamily(
            "stratrun_candle_gaps",
            "Holes seen in a stream's seq (candles lost on the way), each then backfilled.",
            labels=["strategy_id"],
        )
        backfilled = CounterMetricFamily(
            "stratrun_candles_backfilled",
            "Candles a strategy took from the broker's history (holes, catch-up on restart).",
            labels=["strategy_id"],
        )
        repeated = CounterMetricFamily(
            "stratrun_candles_duplicate",
            "Candles received again (a restarted broker resending) and dropped.",
            labels=["strategy_id"],
        )
        lag = GaugeMetricFamily(
            "stratrun_strategy_lag_seconds",
            "Broker publish to decision of the strategy's latest live candle.",
            labels=["strategy_id"],
        )
        unrealized = GaugeMetricFamily(
            "stratrun_unrealized_pnl",
            "Mark-to-market PnL of the open positions, net of entry fees, in quote currency.",
            labels=["strategy_id"],
        )
        equity = GaugeMetricFamily(
            "stratrun_equity",
            "Realized plus unrealized PnL in quote currency (the strategy's equity above its "
            "starting capital).",
            labels=["strategy_id"],
        )
        orders = CounterMetricFamily(
            "stratrun_orders", "Orders a strategy submitted.", labels=["strategy_id"]
        )
        fills = CounterMetricFamily("stratrun_fills", "Orders filled.", labels=["strategy_id"])
        order_rejects = CounterMetricFamily(
            "stratrun_orders_rejected", "Orders rejected.", labels=["strategy_id"]
        )
        stale = GaugeMetricFamily(
            "stratrun_feed_stale",
            "1 while the strategy's worker hears nothing from the market-data feed.",
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
            gaps.add_metric([sid], fig.gaps)
            backfilled.add_metric([sid], fig.candles_backfilled)
            repeated.add_metric([sid], fig.candles_duplicate)
            lag.add_metric([sid], fig.lag_s)
            stale.add_metric([sid], 1.0 if fig.feed_stale else 0.0)
            unrealized.add_metric([sid], fig.unrealized_pnl)
            equity.add_metric([sid], fig.realized_pnl + fig.unrealized_pnl)
            orders.add_metric([sid], fig.events_by_kind.get("order_submitted", 0))
            fills.add_metric([sid], fig.events_by_kind.get("order_filled", 0))
            order_rejects.add_metric([sid], fig.events_by_kind.get("order_rejected", 0))
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
        to_journal = HistogramMetricFamily(
            "stratrun_candle_to_journal_seconds",
            "From the broker publishing a candle to the worker holding the acknowledgement "
            "that the events it caused are committed in the journal.",
            labels=["strategy_id"],
        )
        for sid, fig in sorted(snapshot.items()):
            for family, counts, total in (
                (latency, fig.latency_counts, fig.latency_sum_s),
                (to_journal, fig.journal_latency_counts, fig.journal_latency_sum_s),
            ):
                if any(counts):
                    family.add_metric([sid], _cumulative(counts), total)
        yield from (candles, missed, events, positions, pnl, last_seq, rejected, journaled)
        yield from (gaps, backfilled, repeated, lag, stale, duplicates)
        yield from (unrealized, equity, orders, fills, order_rejects)
        yield from account_metrics(snapshot)
        counters = self._counters
        commits = HistogramMetricFamily(
            "stratrun_journal_commit_seconds", "Time of one journal commit (fsync included)."
        )
        cumulative, buckets = 0, []
        for bound, count in zip(COMMIT_BUCKETS_S, counters.commit_counts, strict=False):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", cumulative + counters.commit_counts[-1]))
        commits.add_metric([], buckets, counters.commit_sum_s)
        depth = GaugeMetricFamily(
            "stratrun_aggregator_queue_depth",
            "Events received and waiting for the journal commit (at the last commit).",
        )
        depth.add_metric([], counters.queue_depth)
        yield from (commits, depth, to_journal)
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
    age = GaugeMetricFamily(
        "stratrun_process_heartbeat_age_seconds",
        "Since the process's last heartbeat to the manager (the watchdog's measure).",
        labels=labels,
    )
    published = CounterMetricFamily(
        "stratrun_broker_candles_published", "Candles the broker published (this incarnation)."
    )
    broker_lag = GaugeMetricFamily(
        "stratrun_broker_lag_seconds", "How far the broker's paced replay runs behind schedule."
    )
    for row in rows:
        key = [row.name, row.role]
        age.add_metric(key, row.heartbeat_age_s)
        if row.role == "broker":
            published.add_metric([], row.candles)
            broker_lag.add_metric([], row.lag_s)
        up.add_metric(key, 1.0 if row.state in ("running", "paused") else 0.0)
        restarts.add_metric(key, row.restarts)
        rss.add_metric(key, row.rss_bytes)
        uss.add_metric(key, row.uss_bytes)
        cpu.add_metric(key, row.cpu_percent / 100.0)
        for cause in ("watchdog", "memory"):
            kills.add_metric([*key, cause], row.kills.get(cause, 0))
    yield from (up, restarts, rss, uss, cpu, kills, age, published, broker_lag)


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket latency counts as Prometheus' cumulative ``le`` buckets."""
    cumulative, buckets = 0, []
    for bound, count in zip(LATENCY_BUCKETS_S, counts, strict=False):
        cumulative += count
        buckets.append((repr(bound), float(cumulative)))
    buckets.append(("+Inf", float(cumulative + counts[-1])))
    return buckets
