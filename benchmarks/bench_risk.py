"""The latency the pre-trade risk check adds to an opening order.

A real aggregator process with a ``[risk]`` table serves the checks; this process plays a
worker: the worker's own RiskClient (DEALER, ipc) asks, and the round trip (encode, send,
the service's thread locks the book and reserves, reply, decode) is timed with
perf_counter_ns. After each allowed check the "worker" reports the order rejected on the
events link, as a worker would, so the book's reservations are released through the journal
as in a live system. Two runs: the aggregator otherwise idle, and the aggregator busy
journaling a flood of events from another process (batches of 100 events, as fast as it
takes them), which is when the risk thread competes with the main loop.

Run: .venv/bin/python benchmarks/bench_risk.py [--checks N] [--record]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import zmq
from _results import record

from runtime.config import AggregatorConfig
from runtime.messages import (
    ENCODER,
    SUPERVISION_UP_DECODER,
    ChildReady,
    Event,
    EventBatch,
    Hello,
    Log,
    OrderRejected,
)
from runtime.risk_config import RiskConfig
from runtime.risk_messages import RISK_REQUEST_DECODER, RiskVerdict
from runtime.security import Security
from runtime.specs import AggregatorSpec, Endpoints, write_spec
from runtime.transport import RejectCounter
from workers.risk_client import RiskClient

REPO = Path(__file__).resolve().parents[1]
_FLOOD_PER_S = 20_000  # about twice what ten replaying workers journal (bench_replay.py)


def _echo(endpoint: str) -> None:
    """Child process: answer every check "allowed" at once, single-threaded, no book: the
    floor of a round trip on this machine."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind(endpoint)
    while True:
        identity, payload = sock.recv_multipart()
        check = RISK_REQUEST_DECODER.decode(payload)
        sock.send_multipart([identity, ENCODER.encode(RiskVerdict(check.req_id, True))])


def _flood(endpoint: str) -> None:
    """Child process: send event batches to the aggregator until killed (_FLOOD_PER_S
    events a second, in batches of 100)."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvhwm = 1000
    sock.connect(endpoint)
    sock.send(ENCODER.encode(Hello("flood", os.getpid())))
    seq = 0
    began = time.monotonic()
    while True:
        events = []
        for _ in range(100):
            seq += 1
            events.append(Event("flood", seq, time.time_ns(), Log("info", "x" * 80)))
        sock.send(ENCODER.encode(EventBatch("flood", events)))
        while sock.poll(0):
            sock.recv()  # acknowledgements: drop
        ahead = seq / _FLOOD_PER_S - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)


def _percentile(sorted_ns: list[int], p: float) -> float:
    index = min(len(sorted_ns) - 1, int(p / 100.0 * len(sorted_ns)))
    return sorted_ns[index] / 1000.0


def _stats(times: list[int], refused: int) -> dict[str, float]:
    times.sort()
    return {
        "p50": _percentile(times, 50),
        "p99": _percentile(times, 99),
        "p99.9": _percentile(times, 99.9),
        "max": times[-1] / 1000.0,
        "refused": refused,
    }


def _service_within_100us(url: str) -> float:
    """Percent of checks the risk service itself handled (decode, book, reply encoded) within
    100 µs, from its histogram: what the service costs, apart from the trip there and back."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found = dict(
        line.rsplit(" ", 1)
        for line in text.splitlines()
        if line.startswith("stratrun_risk_check_seconds_")
    )
    count = float(found["stratrun_risk_check_seconds_count"])
    within = float(found['stratrun_risk_check_seconds_bucket{le="0.0001"}'])
    return 100.0 * within / count if count else 0.0


def _pause(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def _run_echo(tmp: Path, checks: int, gap_s: float) -> dict[str, float]:
    endpoint = f"ipc://{tmp}/echo"
    echo = subprocess.Popen([sys.executable, __file__, "--echo", endpoint], cwd=REPO)
    ctx: zmq.Context[Any] = zmq.Context()
    security = Security(ctx, None, RejectCounter(), logging.getLogger("bench"))
    client = RiskClient(security, endpoint, "bench", 1000, RejectCounter())
    try:
        while client.ask("bench-0", "ETH-BTC", "buy", 0.1, 0.1):
            time.sleep(0.01)
        times = []
        for n in range(1, checks + 1):
            _pause(gap_s)
            began = time.perf_counter_ns()
            client.ask(f"bench-{n}", "ETH-BTC", "buy", 0.1, 0.1)
            times.append(time.perf_counter_ns() - began)
        return _stats(times, 0)
    finally:
        client.socket.close(linger=0)
        echo.kill()
        echo.wait()
        security.close()
        ctx.term()


def _run(tmp: Path, checks: int, busy: bool, gap_s: float, echo: bool = False) -> dict[str, float]:
    """Checks against the aggregator's risk service; with ``echo``, against a bare echo
    process while the aggregator journals the flood: the floor under the same load."""
    ends = Endpoints(
        market_data=f"ipc://{tmp}/md",
        events=f"ipc://{tmp}/events",
        supervision=f"ipc://{tmp}/sup",
        control=f"ipc://{tmp}/control",
        risk=f"ipc://{tmp}/risk",
    )
    ctx: zmq.Context[Any] = zmq.Context()
    sup = ctx.socket(zmq.ROUTER)
    sup.linger = 0
    sup.bind(ends.supervision)
    journal = tmp / "journal.sqlite"
    journal.unlink(missing_ok=True)
    spec = AggregatorSpec(
        name="aggregator",
        endpoints=ends,
        aggregator=AggregatorConfig(metrics_port=0),
        journal=str(journal),
        risk=RiskConfig(max_symbol_exposure=1e12, max_open_orders=100_000, timeout_ms=1000),
        kill_switch_file=str(tmp / "halt.json"),
    )
    write_spec(tmp / "aggregator.json", spec)
    procs: list[subprocess.Popen[bytes]] = []
    log = open(tmp / "aggregator.log", "wb")  # noqa: SIM115 - closed below
    events = ctx.socket(zmq.DEALER)
    events.linger = 0
    security = Security(ctx, None, RejectCounter(), logging.getLogger("bench"))
    client: RiskClient | None = None
    try:
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "runtime.aggregator", str(tmp / "aggregator.json")],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        assert sup.poll(20_000), "the aggregator did not report ready"
        ready = SUPERVISION_UP_DECODER.decode(sup.recv_multipart()[1])
        assert isinstance(ready, ChildReady)
        if busy:
            procs.append(
                subprocess.Popen([sys.executable, __file__, "--flood", ends.events], cwd=REPO)
            )
        events.connect(ends.events)
        events.send(ENCODER.encode(Hello("bench", os.getpid())))
        target = ends.risk
        if echo:
            target = f"ipc://{tmp}/echo"
            procs.append(subprocess.Popen([sys.executable, __file__, "--echo", target], cwd=REPO))
        client = RiskClient(security, target, "bench", 1000, RejectCounter())
        for _ in range(1000):  # connected, and the flood under way
            if not client.ask("bench-0", "ETH-BTC", "buy", 0.1, 0.1).startswith("risk service"):
                break
            time.sleep(0.01)
        time.sleep(1.0 if busy else 0.1)
        times: list[int] = []
        refused = 0
        seq = 0
        for n in range(1, checks + 1):
            order_id = f"bench-{n}"
            _pause(gap_s)
            began = time.perf_counter_ns()
            reason = client.ask(order_id, "ETH-BTC", "buy", 0.1, 0.1)
            times.append(time.perf_counter_ns() - began)
            if reason:
                refused += 1
                continue
            if echo:
                continue  # the service never saw it: nothing to release
            seq += 1
            rejected = OrderRejected(order_id, "ETH-BTC", "buy", 1.0, "released by the bench")
            events.send(ENCODER.encode(Event("bench", seq, time.time_ns(), rejected)), zmq.NOBLOCK)
            while events.poll(0):
                events.recv()
        figures = _stats(times, refused)
        if not echo:
            figures["service"] = _service_within_100us(ready.detail["metrics_url"])
        return figures
    finally:
        if client is not None:
            client.socket.close(linger=0)
        for proc in reversed(procs):
            proc.kill()
            proc.wait()
        events.close(0)
        sup.close(0)
        security.close()
        ctx.term()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--gap-ms", type=float, default=1.0, help="between two checks")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--flood", help=argparse.SUPPRESS)
    parser.add_argument("--echo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        _flood(args.flood)
        return
    if args.echo:
        _echo(args.echo)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-risk-") as tmp:
        for mode in ("echo", "idle", "echo-busy", "busy"):
            gap_s = args.gap_ms / 1000
            if mode == "echo":
                figures = _run_echo(Path(tmp), args.checks, gap_s)
            else:
                busy = mode != "idle"
                figures = _run(Path(tmp), args.checks, busy, gap_s, echo=mode == "echo-busy")
            load = {
                "echo": "none: a bare echo process (the floor)",
                "idle": "risk service, aggregator otherwise idle",
                "echo-busy": f"none: bare echo, aggregator journaling {_FLOOD_PER_S:,} events/s",
                "busy": f"risk service, aggregator journaling {_FLOOD_PER_S:,} events/s",
            }[mode]
            service = f"{figures['service']:.1f}" if "service" in figures else "-"
            rows.append(
                f"| {load} | {args.checks:,} | {figures['p50']:.0f} | {figures['p99']:.0f} "
                f"| {figures['p99.9']:.0f} | {figures['max']:.0f} | {figures['refused']:.0f} "
                f"| {service} |"
            )
            print(rows[-1], flush=True)
    table = (
        "| answered by | checks | p50 (µs) | p99 (µs) | p99.9 (µs) | max (µs) | refused "
        "| handled by the service within 100 µs (%) |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(table)
    if args.record:
        record(
            "Pre-trade risk check latency",
            f"A real aggregator with a [risk] table; this process asks through the worker's "
            f"RiskClient over ipc, one check every {args.gap_ms:g} ms, and times each round "
            "trip (worker -> risk service thread -> "
            "worker, reservation included); each allowed order is then released through the "
            "journal as a worker would. Busy: another process sends the aggregator "
            f"{_FLOOD_PER_S:,} events/s in batches of 100 meanwhile. The floor: the same "
            "client against a single-threaded process that answers at once, alone and "
            "while the aggregator journals the same flood (what the machine's load alone "
            "costs a round trip). Target: p99 "
            f"under 1 ms. Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.",
            table,
        )


if __name__ == "__main__":
    main()
