"""The risk gate's figures, served with the aggregator's metrics.

Counted by the risk thread, read at scrape time by :class:`RiskCollector` (hence the lock).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["CHECK_BUCKETS_S", "RiskCollector", "RiskCounters"]

# Upper bounds of the service-side time of one check (decode, book, the reply encoded).
CHECK_BUCKETS_S: tuple[float, ...] = (0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005)


class RiskCounters:
    """Checks by outcome and reason, their handling time, halts engaged by the gate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_reason: Counter[str] = Counter()  # "" = allowed
        self.bucket_counts = [0] * (len(CHECK_BUCKETS_S) + 1)
        self.seconds = 0.0
        self.outstanding = 0
        self.halts = 0

    def checked(self, code: str, seconds: float, outstanding: int) -> None:
        with self._lock:
            self.by_reason[code] += 1
            self.seconds += seconds
            self.outstanding = outstanding
            for i, bound in enumerate(CHECK_BUCKETS_S):
                if seconds <= bound:
                    self.bucket_counts[i] += 1
                    break
            else:
                self.bucket_counts[-1] += 1

    def snapshot(self) -> tuple[Counter[str], list[int], float, int, int]:
        with self._lock:
            return (
                Counter(self.by_reason),
                list(self.bucket_counts),
                self.seconds,
                self.outstanding,
                self.halts,
            )


class RiskCollector(Collector):
    """``stratrun_risk_*`` series."""

    def __init__(self, counters: RiskCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        by_reason, buckets, seconds, outstanding, halts = self._counters.snapshot()
        checks = CounterMetricFamily(
            "stratrun_risk_checks",
            "Pre-trade checks answered, by outcome and, when refused, reason.",
            labels=["outcome", "reason"],
        )
        for code, count in sorted(by_reason.items()):
            checks.add_metric(["allowed" if not code else "rejected", code], count)
        reserved = GaugeMetricFamily(
            "stratrun_risk_reservations",
            "Opening orders allowed and not yet filled or rejected (after the last check).",
        )
        reserved.add_metric([], outstanding)
        tripped = CounterMetricFamily(
            "stratrun_risk_halts",
            "Times the daily loss limit engaged the kill switch.",
        )
        tripped.add_metric([], halts)
        latency = HistogramMetricFamily(
            "stratrun_risk_check_seconds",
            "Time the risk service spends on one check (decode, book, the reply encoded).",
        )
        cumulative, points = 0, []
        for bound, count in zip(CHECK_BUCKETS_S, buckets, strict=False):
            cumulative += count
            points.append((repr(bound), float(cumulative)))
        points.append(("+Inf", float(cumulative + buckets[-1])))
        latency.add_metric([], points, seconds)
        yield from (checks, reserved, tripped, latency)
