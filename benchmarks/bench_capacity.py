"""How many strategies one machine runs with candle-to-decision p99 under 10 ms.

For each N, starts ``stratrun up`` with N SMA-crossover workers (zygote-forked), half on
ETH-BTC and half on LTC-BTC 5-minute candles replayed at ``--speed`` times real time, lets
it run, and reads the aggregator's ``stratrun_candle_to_decision_seconds`` histogram (broker
publish to decision, measured by each worker) over a window after start-up. Prints, per N,
the share of candles decided within 10 ms and the bucket holding the p99, over all workers
and for the worst worker; and the CPU each process used over the window (ms per second,
mean per role, from psutil): unlike the latency, robust to other load on the machine.

    .venv/bin/python benchmarks/bench_capacity.py --workers 10 25 50 100 [--record]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
from _results import record

from runtime.control_client import ControlClient, ControlError
from runtime.messages import PsReply, PsRequest
from runtime.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "crypto"
_COUNTER = re.compile(
    r"^stratrun_(candle_gaps|candles_missed|candles_backfilled)_total"
    r'\{strategy_id="([^"]+)"\} (\S+)$'
)
_BUCKET = re.compile(
    r'^stratrun_candle_to_decision_seconds_bucket\{le="([^"]+)",strategy_id="([^"]+)"\} (\S+)$'
)


SYMBOLS = ["ETH-BTC", "LTC-BTC", "ADA-BTC", "DASH-BTC", "TRX-BTC", "XLM-BTC", "XMR-BTC", "ZEC-BTC"]
# Eight 5m pairs are bundled; streams 9 and 10 replay two of them again under other names
# (same candles, same times: for the broker and the workers they are two more streams).
SYMBOLS += ["ETH-BTC.2", "LTC-BTC.2"]


def _data_file(symbol: str) -> Path:
    return DATA / f"{symbol.removesuffix('.2')}-5m.csv"


def config(workers: int, speed: float, symbols: int = 2, background_nice: int | None = None) -> str:
    """N SMA workers spread round-robin over the first ``symbols`` bundled 5m pairs."""
    runtime = "" if background_nice is None else f"background_nice = {background_nice}"
    text = f"""
[runtime]
{runtime}
[broker]
speed = {speed}
[aggregator]
metrics_port = 0
[defaults]
timeframe = "5m"
"""
    for symbol in SYMBOLS[:symbols]:
        text += (
            f'\n[[broker.feeds]]\nsymbol = "{symbol}"\ntimeframe = "5m"\n'
            f'path = "{_data_file(symbol)}"\n'
        )
    for i in range(workers):
        symbol = SYMBOLS[i % symbols]
        text += (
            f'\n[[strategies]]\nid = "s{i}"\nclass = "workers.strategies.sma_cross:SmaCross"\n'
            f'symbols = ["{symbol}"]\nparams = {{ fast = {3 + i % 5}, slow = {20 + i % 7} }}\n'
        )
    return text


def data_path_counts(url: str) -> dict[str, float]:
    """Gaps, candles lost and candles backfilled, summed over strategies, from one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        match = _COUNTER.match(line)
        if match:
            totals[match[1]] += float(match[3])
    return dict(totals)


def histogram(url: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts per strategy, from one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, dict[float, float]] = defaultdict(dict)
    for line in text.splitlines():
        match = _BUCKET.match(line)
        if match:
            bound = float("inf") if match[1] == "+Inf" else float(match[1])
            found[match[2]][bound] = float(match[3])
    return found


def _share_within(buckets: dict[float, float], bound: float) -> float:
    total = buckets.get(float("inf"), 0.0)
    return buckets.get(bound, 0.0) / total if total else 1.0


def _p99_bucket(buckets: dict[float, float]) -> float:
    total = buckets.get(float("inf"), 0.0)
    for bound in sorted(buckets):
        if total and buckets[bound] >= 0.99 * total:
            return bound
    return float("inf")


def _cpu_s(pids: dict[int, str]) -> dict[int, float]:
    """CPU seconds (user + system, all threads) each process has used so far."""
    used: dict[int, float] = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        used[pid] = times.user + times.system
    return used


def _cpu_ms_per_s(
    pids: dict[int, str], before: dict[int, float], after: dict[int, float], seconds: float
) -> dict[str, float]:
    """Milliseconds of CPU per second per process, averaged within each role."""
    per_role: dict[str, list[float]] = defaultdict(list)
    for pid, role in pids.items():
        if pid in before and pid in after:
            per_role[role].append((after[pid] - before[pid]) * 1000 / seconds)
    return {role: sum(v) / len(v) for role, v in per_role.items()}


def run(
    workers: int,
    speed: float,
    window_s: float,
    symbols: int = 2,
    background_nice: int | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stratrun-cap-") as tmp:
        cfg = Path(tmp) / "capacity.toml"
        cfg.write_text(config(workers, speed, symbols, background_nice))
        run_dir = RunDir.at(Path(tmp) / "run")
        manager = subprocess.Popen(
            [sys.executable, "-m", "runtime", "--run-dir", str(run_dir.root), "up", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            client = ControlClient(run_dir.endpoint("control"), timeout_s=5)
            url = ""
            pids: dict[int, str] = {}
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    reply = client.request(PsRequest(ControlClient.next_id()))
                except ControlError:
                    reply = None
                if isinstance(reply, PsReply) and all(r.state == "running" for r in reply.rows):
                    url = next(
                        r.detail["metrics_url"] for r in reply.rows if r.role == "aggregator"
                    )
                    pids = {r.pid: str(r.role) for r in reply.rows if r.pid}
                    pids[manager.pid] = "manager"
                    break
                time.sleep(0.2)  # polling another process until it is ready
            if not url:
                raise SystemExit(f"{workers} workers never all became ready")
            time.sleep(2.0)  # let start-up settle before the measured window opens
            before = histogram(url)
            cpu_before, load_before, started = _cpu_s(pids), os.getloadavg()[0], time.monotonic()
            time.sleep(window_s)  # the measured window: candles flow, workers decide
            cpu_after, elapsed = _cpu_s(pids), time.monotonic() - started
            after = histogram(url)
            counts = data_path_counts(url)
        finally:
            if manager.poll() is None:
                manager.send_signal(signal.SIGTERM)
                manager.wait(timeout=120)
    per_strategy: dict[str, dict[float, float]] = {}
    overall: dict[float, float] = defaultdict(float)
    for sid, buckets in after.items():
        diff = {b: c - before.get(sid, {}).get(b, 0.0) for b, c in buckets.items()}
        per_strategy[sid] = diff
        for bound, count in diff.items():
            overall[bound] += count
    worst = min(per_strategy.values(), key=lambda b: _share_within(b, 0.01))
    cpu = _cpu_ms_per_s(pids, cpu_before, cpu_after, elapsed)
    return {
        "workers": workers,
        "decisions": overall.get(float("inf"), 0.0),
        "within_10ms": _share_within(overall, 0.01),
        "p99_bucket": _p99_bucket(overall),
        "worst_within_10ms": _share_within(worst, 0.01),
        "worst_p99_bucket": _p99_bucket(worst),
        "gaps": counts.get("candle_gaps", 0.0),
        "missed": counts.get("candles_missed", 0.0),
        "backfilled": counts.get("candles_backfilled", 0.0),
        # CPU per process (ms per second of the window), mean within a role: what each
        # worker pays for its candles and its timed duties, robust to other load.
        "cpu_ms_per_s": {role: round(ms, 2) for role, ms in sorted(cpu.items())},
        "load_average": (round(load_before, 2), round(os.getloadavg()[0], 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--speed", type=float, default=1500.0, help="5 candles/s per stream")
    parser.add_argument("--window", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--symbols", type=int, default=2, choices=range(1, len(SYMBOLS) + 1))
    parser.add_argument(
        "--background-nice", type=int, help="[runtime] background_nice (default: the config's)"
    )
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    lines = [
        "| workers | decisions measured | within 10 ms | p99 bucket (ms) "
        "| worst worker within 10 ms | worst worker p99 bucket (ms) |",
        "|---|---|---|---|---|---|",
    ]
    largest = 0
    for n in args.workers:
        r = run(n, args.speed, args.window, args.symbols, args.background_nice)
        if r["p99_bucket"] <= 0.01 and r["worst_p99_bucket"] <= 0.01:
            largest = max(largest, n)
        lines.append(
            f"| {n} | {r['decisions']:,.0f} | {r['within_10ms']:.2%} "
            f"| <= {r['p99_bucket'] * 1000:g} | {r['worst_within_10ms']:.2%} "
            f"| <= {r['worst_p99_bucket'] * 1000:g} |"
        )
        print(lines[-1], flush=True)
        cpu = ", ".join(f"{role} {ms:g}" for role, ms in r["cpu_ms_per_s"].items())
        print(f"  CPU ms per second per process: {cpu}; load average {r['load_average']}")
    summary = f"Largest N tried with every worker's p99 within 10 ms: {largest or 'none'}."
    print(summary)
    if args.record:
        record(
            "Capacity",
            (
                f"N SMA workers spread over {args.symbols} 5-minute streams replayed at "
                f"{args.speed:g}x ({args.speed / 300:g} candles/s per stream); latency from the "
                "broker's publish to the worker's decision, read from the aggregator's "
                "histogram over the window (bucket bounds 0.5, 1, 2.5, 5, 10, 25 ms ...)."
            ),
            "\n".join(lines) + f"\n\n{summary}",
        )


if __name__ == "__main__":
    main()
