"""Candle-to-decision latency, counted in the buckets the aggregator's histogram uses."""

from __future__ import annotations

from bisect import bisect_left

from runtime.messages import LATENCY_BUCKETS_S

__all__ = ["LatencyCounts"]


class LatencyCounts:
    """Counts per bucket (plus one for slower than the last bound) and their sum."""

    def __init__(self) -> None:
        self._counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._sum = 0.0

    def add(self, seconds: float) -> None:
        """Count one latency (a bucket's bound is inclusive, as Prometheus's ``le``)."""
        self._counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._sum += seconds

    def add_all(self, seconds: list[float]) -> None:
        """Count several latencies (those of a batch frame's candles): one call, not one each."""
        counts, bounds, total = self._counts, LATENCY_BUCKETS_S, self._sum
        for value in seconds:
            counts[bisect_left(bounds, value)] += 1
            total += value
        self._sum = total

    def take(self) -> tuple[list[int], float]:
        """The counts and sum since the last take, and start again (empty if none)."""
        if not any(self._counts):
            return [], 0.0
        counts, total = self._counts, self._sum
        self._counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._sum = 0.0
        return counts, total
