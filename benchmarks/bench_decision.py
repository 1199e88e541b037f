"""Per-candle decision time of a declarative strategy, and the cost of one event.

The strategy has 6 indicators (EMA 12, EMA 26, MACD, RSI 14, Bollinger 20, ATR 14) and 4
analyzers (cross, MACD, oscillator, Bollinger), with entry thresholds, four exit rules and a
volatility filter: the whole per-candle path of a worker (fills, marks, indicators, score,
exit and entry orchestrators, action queue, events tagged and encoded as MessagePack), fed
the 5,760 real ETH-BTC 5-minute candles. Sockets are left out: they are measured elsewhere.

    .venv/bin/python benchmarks/bench_decision.py [--record]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import msgspec
from _results import record

from broker.csv_source import read_candles
from runtime.config import StrategyConfig
from runtime.messages import Candle, Stats
from workers.outbox import Outbox
from workers.runner import StrategyRunner

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"

CONFIG = {
    "id": "bench",
    "symbols": ["ETH-BTC"],
    "timeframe": "5m",
    "indicators": {
        "ema_fast": {"type": "ema", "period": 12},
        "ema_slow": {"type": "ema", "period": 26},
        "macd": {"type": "macd"},
        "rsi": {"type": "rsi", "period": 14},
        "bands": {"type": "bbands", "period": 20},
        "atr": {"type": "atr", "period": 14},
    },
    "analyzers": [
        {"type": "cross", "fast": "ema_fast", "slow": "ema_slow", "weight": 2.0},
        {"type": "macd", "indicator": "macd"},
        {"type": "oscillator", "indicator": "rsi", "weight": 0.5},
        {"type": "bollinger", "indicator": "bands", "weight": 0.5},
    ],
    "entry": {"long_threshold": 0.5, "short_threshold": -0.5},
    "exit": {
        "stop_loss_pct": 1.5,
        "take_profit_pct": 3.0,
        "trailing_stop_pct": 1.0,
        "time_stop_candles": 96,
    },
    "filters": {"volatility_floor": {"indicator": "atr", "min_pct": 0.05}},
}


def _percentile(sorted_ns: list[int], q: float) -> float:
    return float(sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))])


def _discard(frame: bytes) -> None:
    pass


def decision_times(rounds: int) -> tuple[list[int], int]:
    """Nanoseconds per candle over ``rounds`` replays (each with fresh services)."""
    rows = read_candles(DATA)
    candles = [Candle("ETH-BTC", "5m", *row, seq=i + 1) for i, row in enumerate(rows)]
    config = msgspec.convert(CONFIG, StrategyConfig)
    timings: list[int] = []
    events = 0
    for _ in range(rounds):
        encoded: list[bytes] = []
        outbox = Outbox("bench", 0, encoded.append)
        cursor = {"ETH-BTC|5m": 0}
        runner = StrategyRunner(config, outbox)
        runner.start()
        clock = time.perf_counter_ns
        for candle in candles:
            start = clock()
            runner.on_candle(candle)
            cursor["ETH-BTC|5m"] = candle.seq
            outbox.flush(cursor)  # as the worker does: the candle's events in one frame
            timings.append(clock() - start)
            outbox.ack(outbox.last_seq)  # as the aggregator would, so the outbox stays small
        runner.stop()
        events += len(encoded)
    return timings, events


def event_cost(count: int) -> tuple[float, float]:
    """Nanoseconds to tag one event (envelope, seq, clock, kept until acked), then with encoding."""
    body = Stats(candles=1, frames_rejected=0, rss_bytes=123456)
    outbox = Outbox("bench", 0, _discard)
    start = time.perf_counter_ns()
    for _ in range(count):
        outbox.emit(body)
        outbox.ack(outbox.last_seq)
    tag_ns = (time.perf_counter_ns() - start) / count
    encoded = Outbox("bench", 0, _discard)
    cursor = {"ETH-BTC|5m": 1}
    start = time.perf_counter_ns()
    for _ in range(count):
        encoded.emit(body)
        encoded.flush(cursor)
        encoded.ack(encoded.last_seq)
    both_ns = (time.perf_counter_ns() - start) / count
    return tag_ns, both_ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    timings, events = decision_times(args.rounds)
    timings.sort()
    tag_ns, both_ns = event_cost(200_000)
    lines = [
        "| candles timed | events emitted | median (µs) | p90 (µs) | p99 (µs) | max (µs) "
        "| tag one event (µs) | tag + encode one event (µs) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(timings):,} | {events:,} | {statistics.median(timings) / 1000:.1f} "
        f"| {_percentile(timings, 0.90) / 1000:.1f} | {_percentile(timings, 0.99) / 1000:.1f} "
        f"| {timings[-1] / 1000:.1f} | {tag_ns / 1000:.2f} | {both_ns / 1000:.2f} |",
    ]
    print("\n".join(lines))
    if args.record:
        record(
            "Decision time per candle",
            (
                "A declarative strategy with 6 indicators and 4 analyzers on 5,760 real "
                "ETH-BTC 5-minute candles, the whole in-worker path (fills, marks, indicators, "
                "score, orchestrators, events tagged and encoded), no sockets; each candle "
                "timed with perf_counter_ns."
            ),
            "\n".join(lines),
        )


if __name__ == "__main__":
    main()
