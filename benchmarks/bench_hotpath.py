"""CPU per candle of the worker's and the aggregator's own code on the replay path, in one
process.

Batch frames of 100 real candles (what the broker sends at speed 0) go through the worker's
market-data handling and an SMA-crossover strategy (fast 5, slow 20, as bench_replay's first
worker), with a socket stand-in that keeps the EventBatch frames the worker sends; those
frames then go through the aggregator's intake: decode, journal (a file, synchronous FULL,
~700 events per commit), figures. No sockets, no other process: what zmq costs (sends, its
I/O thread) is left out, and the figures move much less with other load on the machine than
a whole system's. Under callgrind the instruction counts do not move at all; the measured
part runs inside ``functools.reduce``, so::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        .venv/bin/python benchmarks/bench_hotpath.py --laps 2 --rounds 1 --only worker

counts the worker's instructions alone (``--only aggregator``: the aggregator's); divide the
total by the candles printed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from _results import record

from broker.csv_source import read_candles
from runtime.aggregator import _Folds, _Intake
from runtime.config import StrategyConfig
from runtime.figures import Figures, ProcessTable
from runtime.journal import Journal
from runtime.log_handler import RotatingJsonHandler
from runtime.messages import ENCODER, Candle, candle_batch_topic
from runtime.metrics import AggregatorCounters
from runtime.security import Security
from runtime.seq_order import SeqOrder
from runtime.specs import Endpoints, WorkerSpec
from runtime.transport import RejectCounter
from workers.outbox import Outbox
from workers.process import _Worker
from workers.runner import StrategyRunner

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "crypto" / "UNITTEST-BTC-1m.csv"
_PER_COMMIT = 20  # event frames read per commit (about the aggregator's under a flood)


class _Socket:
    """Stands in for every socket the worker opens; keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, frame: bytes, flags: int = 0) -> None:
        self.sent.append(frame)

    def setsockopt(self, option: int, value: Any) -> None:
        pass

    def connect(self, endpoint: str) -> None:
        pass


class _Loopback:
    """Stands in for :class:`runtime.security.Security`: hands out :class:`_Socket`s."""

    def __init__(self) -> None:
        self.rejects = RejectCounter()
        self.sockets: list[_Socket] = []

    def client(self, *args: Any, **kwargs: Any) -> _Socket:
        self.sockets.append(_Socket())
        return self.sockets[-1]


def frames(laps: int) -> tuple[list[list[bytes]], int]:
    """The data ``laps`` times in a row (open times and seqs going on) as batch frames."""
    rows = read_candles(DATA)
    first, step = rows[0][0], 60_000
    now = time.time_ns()
    candles = [
        Candle("UNITTEST-BTC", "1m", first + i * step, *rows[i % len(rows)][1:], i + 1, now)
        for i in range(laps * len(rows))
    ]
    topic = candle_batch_topic("UNITTEST-BTC", "1m")
    out = [[topic, ENCODER.encode(candles[i : i + 100])] for i in range(0, len(candles), 100)]
    return out, len(candles)


def _worker(tmp: Path) -> tuple[_Worker, _Socket]:
    """A worker past its start-up (no handshake: nothing to resume), logging to a file."""
    root = logging.getLogger()
    root.handlers[:] = [RotatingJsonHandler(tmp / "worker.log", "sma0", 10 * 2**20, 2)]
    root.setLevel(logging.INFO)
    logging._srcfile = None  # as runtime.child.setup_logging does
    logging.logThreads = logging.logMultiprocessing = False
    strategy = StrategyConfig(
        id="sma0",
        class_path="workers.strategies.sma_cross:SmaCross",
        symbols=["UNITTEST-BTC"],
        timeframe="1m",
        params={"fast": 5, "slow": 20},
    )
    endpoints = Endpoints(
        market_data="inproc://md", events="inproc://ev", supervision="", control=""
    )
    spec = WorkerSpec(name="sma0", endpoints=endpoints, strategy=strategy)
    loopback = _Loopback()
    worker = _Worker(cast(Security, loopback), spec, cast(Any, None), root, [])
    worker.epoch = "bench"
    worker.runner = StrategyRunner(strategy, Outbox("sma0", 0, worker._send_frame))
    events = loopback.sockets[0]  # the first socket the worker opens is its event link
    return worker, events


def run_worker(data: list[list[bytes]], tmp: Path, toggle: bool) -> tuple[float, list[bytes]]:
    """CPU seconds the worker spent on ``data``, and the event frames it sent."""
    worker, events = _worker(tmp)
    on_market_data = worker._on_market_data
    assert worker.runner is not None
    fill_log = worker.runner._fill_log

    def feed(_a: int, _b: int) -> int:
        for message in data:
            on_market_data(message)
        fill_log.flush()
        return 0

    began = time.process_time()
    if toggle:
        functools.reduce(feed, [0, 0])  # callgrind: --toggle-collect=functools_reduce
    else:
        feed(0, 0)
    return time.process_time() - began, events.sent


def run_aggregator(sent: list[bytes], tmp: Path, toggle: bool) -> float:
    """CPU seconds the aggregator's intake spent journaling ``sent``."""
    journal = Journal(tmp / f"journal{time.monotonic_ns()}.sqlite")
    figures = Figures()
    log = logging.getLogger("aggregator")
    counters = AggregatorCounters()
    router = cast(Any, _Socket())
    order = SeqOrder(journal, _Folds(figures), log)
    intake = _Intake(router, journal, figures, order, counters, log, ProcessTable())
    identity = b"\x00bench"

    def take(_a: int, _b: int) -> int:
        for i, frame in enumerate(sent):
            intake.receive([identity, frame])
            if i % _PER_COMMIT == _PER_COMMIT - 1:
                intake.commit()
        intake.commit()
        return 0

    began = time.process_time()
    try:
        if toggle:
            functools.reduce(take, [0, 0])
        else:
            take(0, 0)
        spent = time.process_time() - began
    finally:
        journal.close()
    db = sqlite3.connect(journal.path)
    try:
        (rows,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        db.close()
    assert rows == counters.journaled > 0, (rows, counters.journaled)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laps", type=int, default=4, help="the data this many times in a row")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each; the best is kept")
    parser.add_argument("--only", choices=("worker", "aggregator"), help="measure one side")
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    data, candles = frames(args.laps)
    worker_us: list[float] = []
    aggregator_us: list[float] = []
    sent: list[bytes] = []
    sent_bytes = 0
    with tempfile.TemporaryDirectory(prefix="stratrun-hotpath-") as tmp:
        for _ in range(args.rounds):
            spent, sent = run_worker(data, Path(tmp), args.only != "aggregator")
            worker_us.append(spent * 1e6 / candles)
            sent_bytes = sum(len(frame) for frame in sent)
            if args.only != "worker":
                spent = run_aggregator(sent, Path(tmp), True)
                aggregator_us.append(spent * 1e6 / candles)
    lines = [
        "| candles | event frames | worker CPU us/candle (best, all) "
        "| aggregator CPU us/candle (best, all) |",
        "|---|---|---|---|",
        f"| {candles:,} | {len(sent):,} ({sent_bytes / 1024:,.0f} KiB) "
        f"| {_figures(worker_us)} | {_figures(aggregator_us)} |",
    ]
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))
    if args.record:
        record(
            "Hot path CPU per candle, in one process",
            (
                f"{candles:,} real 1-minute candles in batch frames of 100 through the "
                "worker's market-data handling and an SMA(5)/SMA(20) crossover, then its "
                "event frames through the aggregator's intake (journal on disk, synchronous "
                "FULL, ~700 events per commit, figures); no sockets. "
                f"Load average {os.getloadavg()[0]:.2f} at the end."
            ),
            "\n".join(lines),
        )


def _figures(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"


if __name__ == "__main__":
    main()
