"""A worker drops repeated candles, refuses one whose seq moves on while its time does not
(counted by reason), and starts its streams afresh on a new feed epoch."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import msgspec

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


def test_repeats_are_dropped_and_a_newer_seq_at_an_older_time_is_refused(
    make_worker: Any,
) -> None:
    w: Harness = make_worker("workers.strategies.sma_cross:SmaCross", {"fast": 2, "slow": 4})
    w.handshake()
    candles = real_candles(10)
    for candle in candles:
        w.publish(candle)
    w.publish(candles[9])  # the same candle again: a resumed broker resending
    w.publish(candles[2])  # an older one again
    # seq 11 but the time of seq 3: forged or corrupt, never used
    w.publish(msgspec.structs.replace(candles[2], seq=11))
    w.pub.send_multipart([HEARTBEAT_TOPIC, b"\xc1 not a heartbeat"])
    w.pump_events(lambda _: w.stats() == (10, 2))
    assert _by_reason(w) == {("market_data", "open_time"): 1, ("market_data", "decode"): 1}
    repeated = sum(e.body.candles_duplicate for e in w.received if isinstance(e.body, Stats))
    assert repeated == 2

    # A new replay (a new feed epoch: another `stratrun up`) starts the streams afresh.
    beat = FeedHeartbeat("restarted", time.time_ns(), {}, True, epoch="another")
    w.pub.send_multipart([HEARTBEAT_TOPIC, ENCODER.encode(beat)])
    for candle in candles[:6]:
        w.publish(candle)
    w.pump_events(lambda _: w.stats() == (16, 2))
    assert alive(w.proc.pid)
