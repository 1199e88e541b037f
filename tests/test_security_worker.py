"""A worker refuses candles that do not move its stream's time forward, counted by reason;
a restarted broker (a new incarnation in its heartbeat) starts the streams afresh."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from runtime.messages import ENCODER, HEARTBEAT_TOPIC, FeedHeartbeat, Stats
from tests.harness import alive
from tests.test_worker_process import Harness, make_worker, real_candles

__all__ = ["make_worker"]  # the fixture, shared with the worker's own tests


def _by_reason(w: Harness) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for event in w.received:
        if isinstance(event.body, Stats):
            for r in event.body.rejects:
                counts[(r.socket, r.reason)] += r.count
    return counts


def test_old_or_repeated_candles_are_refused_until_the_broker_restarts(make_worker: Any) -> None:
    w: Harness = make_worker("workers.strategies.sma_cross:SmaCross", {"fast": 2, "slow": 4})
    w.handshake()
    candles = real_candles(10)
    for candle in candles:
        w.publish(candle)
    w.publish(candles[9])  # the same candle again
    w.publish(candles[2])  # an older one
    w.pub.send_multipart([HEARTBEAT_TOPIC, b"\xc1 not a heartbeat"])
    w.pump_events(lambda _: w.stats() == (10, 3))
    assert _by_reason(w) == {("market_data", "open_time"): 2, ("market_data", "decode"): 1}

    # A new broker replays from the start: its candles are taken again.
    beat = FeedHeartbeat("restarted", time.time_ns(), {}, True)
    w.pub.send_multipart([HEARTBEAT_TOPIC, ENCODER.encode(beat)])
    for candle in candles[:6]:
        w.publish(candle)
    w.pump_events(lambda _: w.stats() == (16, 3))
    assert alive(w.proc.pid)
