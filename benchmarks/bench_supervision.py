"""Supervision figures of a real system: start-to-ready, pause/resume round trip, idle memory.

Starts ``stratrun up`` with N SMA-crossover workers on a slow replay (they are nearly idle;
both ways of starting a worker: forked from the zygote and as a new interpreter),
then reads from the manager's lifecycle events how long each worker took from spawn to
ready, times ``pause`` + ``resume`` round trips through the control socket (CLI -> manager
-> worker -> manager -> CLI, each answered only once the worker confirmed), and reads RSS and
USS per worker from ``ps``.

    .venv/bin/python benchmarks/bench_supervision.py --workers 10 [--record]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import zmq
from _results import record

from runtime.control_client import ControlClient
from runtime.messages import (
    LIFECYCLE_DECODER,
    OkReply,
    PauseRequest,
    ProcessRow,
    PsReply,
    PsRequest,
    ResumeRequest,
)
from runtime.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"


def config(workers: int, zygote: bool) -> str:
    head = f"""
[runtime]
zygote = {str(zygote).lower()}
[broker]
speed = 60
[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{DATA}"
[aggregator]
metrics_port = 0
"""
    return head + "".join(
        f'\n[[strategies]]\nid = "w{i}"\nclass = "workers.strategies.sma_cross:SmaCross"\n'
        f'symbols = ["ETH-BTC"]\ntimeframe = "5m"\n'
        for i in range(workers)
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _sampled_workers(client: ControlClient, deadline: float) -> list[ProcessRow]:
    """Worker rows once the manager has sampled every worker's memory."""
    while True:
        reply = client.request(PsRequest(ControlClient.next_id()))
        assert isinstance(reply, PsReply)
        rows = [r for r in reply.rows if r.role == "worker"]
        if all(r.uss_bytes for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)  # the manager samples once a second; poll until it has


def run(workers: int, cycles: int, zygote: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stratrun-bench-") as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(config(workers, zygote))
        run_dir = RunDir.at(Path(tmp) / "run")
        run_dir.create()
        ctx: zmq.Context[Any] = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.connect(run_dir.endpoint("lifecycle"))  # ipc connect works before the bind
        sub.setsockopt(zmq.SUBSCRIBE, b"lc|")
        manager = subprocess.Popen(
            [sys.executable, "-m", "runtime", "--run-dir", str(run_dir.root), "up", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        spawned: dict[str, int] = {}
        ready_ms: list[float] = []
        try:
            deadline = time.monotonic() + 120
            while len(ready_ms) < workers and time.monotonic() < deadline:
                if not sub.poll(200):
                    continue
                event = LIFECYCLE_DECODER.decode(sub.recv_multipart()[1])
                if event.role != "worker":
                    continue
                if event.event == "spawn":
                    spawned[event.name] = event.ts_ns
                elif event.event == "ready" and event.name in spawned:
                    ready_ms.append((event.ts_ns - spawned[event.name]) / 1e6)
            client = ControlClient(run_dir.endpoint("control"), timeout_s=10)
            switch_ms: list[float] = []
            for i in range(cycles):
                name = f"w{i % workers}"
                start = time.perf_counter()
                paused = client.request(PauseRequest(ControlClient.next_id(), name))
                resumed = client.request(ResumeRequest(ControlClient.next_id(), name))
                switch_ms.append((time.perf_counter() - start) * 1000 / 2)
                assert isinstance(paused, OkReply) and isinstance(resumed, OkReply)
            rows = _sampled_workers(client, time.monotonic() + 10)
            pss = _pss_mib([r.pid for r in rows])
        finally:
            if manager.poll() is None:
                manager.send_signal(signal.SIGTERM)
                manager.wait(timeout=60)
            sub.close(0)
            ctx.term()
    return {
        "workers": workers,
        "start": "zygote fork" if zygote else "new interpreter",
        "ready_p50_ms": statistics.median(ready_ms),
        "ready_p95_ms": _pct(ready_ms, 0.95),
        "switch_p50_ms": statistics.median(switch_ms),
        "switch_p95_ms": _pct(switch_ms, 0.95),
        "rss_mib": statistics.median(r.rss_bytes for r in rows) / 2**20,
        "uss_mib": statistics.median(r.uss_bytes for r in rows) / 2**20,
        "pss_mib": statistics.median(pss) if pss else float("nan"),
    }


def _pss_mib(pids: list[int]) -> list[float]:
    """Proportional set size of each live process (pages shared with the zygote and the
    other workers counted in shares), read here: the manager samples RSS and USS only."""
    sizes = []
    for pid in pids:
        try:
            sizes.append(psutil.Process(pid).memory_full_info().pss / 2**20)
        except psutil.Error:
            continue  # gone or not readable: left out of the median
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    lines = [
        "| workers | start | spawn to ready p50 (ms) | p95 (ms) | pause or resume p50 (ms) "
        "| p95 (ms) | RSS per idle worker (MiB) | PSS (MiB) | USS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for zygote in (True, False):
        r = run(args.workers, args.cycles, zygote)
        lines.append(
            f"| {r['workers']} | {r['start']} | {r['ready_p50_ms']:.0f} | {r['ready_p95_ms']:.0f} "
            f"| {r['switch_p50_ms']:.1f} | {r['switch_p95_ms']:.1f} | {r['rss_mib']:.1f} "
            f"| {r['pss_mib']:.1f} | {r['uss_mib']:.1f} |"
        )
    print("\n".join(lines))
    if args.record:
        record(
            "Supervision",
            (
                "Workers start one after another, forked from the pre-imported zygote (the "
                "default) or as new interpreters; spawn to ready is timed from the manager's "
                "lifecycle events; a pause or resume is half of a pause + resume round trip "
                "through the control socket, each answered once the worker confirmed; memory "
                "is ps's median over the workers."
            ),
            "\n".join(lines),
        )


if __name__ == "__main__":
    main()
