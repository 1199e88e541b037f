"""A strategy for benchmarks: it reports how late each candle reached its decision point."""

from __future__ import annotations

import time

from runtime.messages import Candle
from workers.strategy import Strategy

__all__ = ["LatencyProbe"]


class LatencyProbe(Strategy):
    """Logs, per candle, the nanoseconds from the broker's publish to this call (a warning,
    so it travels as a Log event into the journal, where the benchmark reads it)."""

    def on_candle(self, candle: Candle) -> None:
        if candle.publish_ns:
            self.ctx.log.warning("%d", time.time_ns() - candle.publish_ns)
