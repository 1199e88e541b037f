"""`make bench`: stratrun measured against the raw pyzmq + msgspec floor, in one run.

Measures, on this machine and in this run: the floor (benchmarks/floor.py: bare PUB/SUB
throughput into 1 and 10 subscribers, one-way latency, child start time and idle USS, 100
subscribers on 10 streams at 1 candle/s each), then stratrun (broker -> worker decision ->
journal throughput with 1, 10 and 100 workers; publish -> decision latency one candle at a
time; spawn -> ready and warm-up time; pause/resume; idle worker memory; 100 strategies on 10
symbols at 1 candle/s each), and the backtest (bench_backtest.py: candles/s of the engine
against backtesting.py on the same crossover), and prints each figure with its ratio to the
floor and the issue's target. Writes the raw numbers to ``benchmarks/results/<UTC time>.json``;
``--record`` also appends a section to RESULTS.md.

    .venv/bin/python benchmarks/suite.py [--quick] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_backtest
import bench_capacity
import bench_replay
import bench_supervision
import floor
import zmq
from _results import record

from runtime import top
from runtime.control_client import ControlClient, ControlError
from runtime.messages import LIFECYCLE_DECODER, PsReply, PsRequest, RestartRequest
from runtime.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"
_WARM = re.compile(r"warmed up on (\d+) candles, caught up on (\d+), in ([0-9.]+) ms")


def _probe_config(speed: float) -> str:
    return f"""
[runtime]
plugin_paths = ["{REPO / "benchmarks"}"]
[broker]
speed = {speed}
[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{DATA}"
[aggregator]
metrics_port = 0
[[strategies]]
id = "probe"
class = "probe:LatencyProbe"
symbols = ["ETH-BTC"]
timeframe = "5m"
warmup_candles = 1000
"""


def _ps(client: ControlClient) -> PsReply | None:
    try:
        reply = client.request(PsRequest(ControlClient.next_id()))
    except ControlError:
        return None
    return reply if isinstance(reply, PsReply) else None


def probe_latency(speed: float, restarts: int) -> dict[str, Any]:
    """Publish -> decision latency of one worker, one candle at a time (the replay paced so
    candles never queue), then ``restarts`` restarts mid-replay: spawn -> ready and warm-up."""
    with tempfile.TemporaryDirectory(prefix="stratrun-probe-") as tmp:
        cfg = Path(tmp) / "probe.toml"
        cfg.write_text(_probe_config(speed))
        run_dir = RunDir.at(Path(tmp) / "run")
        run_dir.create()
        ctx: zmq.Context[Any] = zmq.Context()
        lifecycle = ctx.socket(zmq.SUB)
        lifecycle.linger = 0
        lifecycle.connect(run_dir.endpoint("lifecycle"))
        lifecycle.setsockopt(zmq.SUBSCRIBE, b"lc|probe|")
        manager = subprocess.Popen(
            [sys.executable, "-m", "runtime", "--run-dir", str(run_dir.root), "up", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        ready_ms: list[float] = []
        try:
            client = ControlClient(run_dir.endpoint("control"), timeout_s=10)
            deadline = time.monotonic() + 120
            candles = 0
            while time.monotonic() < deadline and candles < 2000:
                reply = _ps(client)
                rows = {r.name: r for r in reply.rows} if reply else {}
                candles = rows["probe"].candles if "probe" in rows else 0
                time.sleep(0.1)  # polling another process's figures
            spawned = 0
            restarts_from_ns = time.time_ns()  # latency samples after this are catch-up ones
            for _ in range(restarts):
                client.request(RestartRequest(ControlClient.next_id(), "probe"))
            end = time.monotonic() + 30
            while len(ready_ms) < restarts and time.monotonic() < end:
                if not lifecycle.poll(200):
                    continue
                event = LIFECYCLE_DECODER.decode(lifecycle.recv_multipart()[1])
                if event.event == "spawn":
                    spawned = event.ts_ns
                elif event.event == "ready" and spawned:
                    ready_ms.append((event.ts_ns - spawned) / 1e6)
            reply = _ps(client)
            assert reply is not None, "the manager stopped answering"
            url = next(r.detail["metrics_url"] for r in reply.rows if r.role == "aggregator")
            to_journal = top.parse_latency(
                top.fetch_metrics(url), "stratrun_candle_to_journal_seconds"
            ).get("probe")
            # the last restart's warm-up is logged just after ready
            log = run_dir.log_file("probe")
            end = time.monotonic() + 10
            while len(_WARM.findall(log.read_text())) <= restarts and time.monotonic() < end:
                time.sleep(0.05)  # polling another process's log
        finally:
            if manager.poll() is None:
                manager.send_signal(signal.SIGTERM)
                manager.wait(timeout=60)
            lifecycle.close(0)
            ctx.term()
        warm = [(int(a), float(ms)) for a, _, ms in _WARM.findall(log.read_text())][1:]
        db = sqlite3.connect(run_dir.journal)
        # Only the first worker's live candles: a restarted one catches up on candles from
        # history, whose publish time is long past.
        latencies = [
            int(m) / 1000
            for (m,) in db.execute(
                "SELECT json_extract(body, '$.message') FROM events "
                "WHERE strategy_id = 'probe' AND kind = 'log' AND ts_ns < ? ORDER BY seq",
                (restarts_from_ns,),
            )
        ]
        db.close()
    journal_us = (
        {
            name: (top.quantile(q, to_journal) or float("nan")) * 1e6
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999))
        }
        if to_journal
        else {}
    )
    return {
        "samples": len(latencies),
        "decision_us": floor.percentiles(latencies),
        "journal_us": journal_us,
        "restart_ready_ms": statistics.median(ready_ms) if ready_ms else float("nan"),
        "warm_candles": statistics.median(w for w, _ in warm) if warm else 0,
        "warm_ms": statistics.median(ms for _, ms in warm) if warm else float("nan"),
    }


def _row(what: str, floor_value: str, ours: str, ratio: str, target: str) -> str:
    return f"| {what} | {floor_value} | {ours} | {ratio} | {target} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, no 100-worker run")
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    quick = args.quick
    out: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"

    def step(name: str, fn: Any, *a: Any) -> Any:
        print(f"-- {name} ...", flush=True)
        started = time.monotonic()
        result = fn(*a)
        print(f"   {result} ({time.monotonic() - started:.0f}s)", flush=True)
        out[name] = result
        return result

    raw1 = step("floor_throughput_1", floor.raw_throughput, 1, 100_000 if quick else 200_000)
    raw10 = step("floor_throughput_10", floor.raw_throughput, 10, 20_000 if quick else 50_000)
    raw_lat = step("floor_latency", floor.raw_latency, 2000 if quick else 5000)
    # The same, one candle every 10 ms as stratrun's probe gets them: idle threads between
    # candles wake up for each one, which the back-to-back figure above never pays.
    raw_paced = step("floor_latency_paced", floor.raw_latency, 500 if quick else 1000, 0.01)
    raw_start = step("floor_start", floor.raw_start, 5 if quick else 10)
    # As many candles as the floor sends (13,681 per lap): a single lap lasts ~0.15 s, where
    # start-up transients weigh more than in the floor's ~1 s.
    e2e1 = step("stratrun_throughput_1", bench_replay.run, 1, 8 if quick else 15)
    e2e10 = step("stratrun_throughput_10", bench_replay.run, 10, 2 if quick else 4)
    e2e100 = None if quick else step("stratrun_throughput_100", bench_replay.run, 100)
    lat = step("stratrun_latency", probe_latency, 30_000.0, 3 if quick else 5)
    sup = step("stratrun_supervision", bench_supervision.run, 10, 20 if quick else 50, True)
    # The 100-strategy shape bare (100 forked subscribers on 10 streams at 1 candle/s), right
    # before stratrun's own, over a window of the same length.
    window = 10.0 if quick else 20.0
    burst = step("floor_burst_100", floor.raw_burst, 100, 10, window)
    cap = step("stratrun_capacity_100", bench_capacity.run, 100, 300.0, window, 10)
    # The backtest issue's figure: the same SMA crossover in stratrun's engine and in
    # backtesting.py, on the GOOG candles repeated (bench_backtest.py, best of the rounds).
    backtest = step(
        "backtest", bench_backtest.measure, 200_000 if quick else 1_000_000, 1 if quick else 2
    )

    one_way = raw_paced["one_way_us"]
    ours = lat["decision_us"]
    start_to_warm = sup["ready_p50_ms"] + lat["warm_ms"]
    rows = [
        "| measure | raw floor | stratrun | ratio | target |",
        "|---|---|---|---|---|",
        _row(
            "throughput, 1 worker (candles/s)",
            f"{raw1:,.0f}",
            f"{e2e1['candles_per_worker_per_s']:,.0f}",
            f"{e2e1['candles_per_worker_per_s'] / raw1:.2f}",
            ">= 0.50",
        ),
        _row(
            "throughput per worker, 10 workers (candles/s)",
            f"{raw10:,.0f}",
            f"{e2e10['candles_per_worker_per_s']:,.0f}",
            f"{e2e10['candles_per_worker_per_s'] / raw10:.2f}",
            ">= 0.50",
        ),
    ]
    if e2e100:
        rows.append(
            _row(
                "throughput per worker, 100 workers (candles/s)",
                "-",
                f"{e2e100['candles_per_worker_per_s']:,.0f}",
                "-",
                "-",
            )
        )
    for q, limit in (("p50", 2.0), ("p90", None), ("p99", 3.0), ("p99.9", None)):
        rows.append(
            _row(
                f"publish -> decision {q} (µs; floor paced, back to back)",
                f"{one_way[q]:.0f}, {raw_lat['one_way_us'][q]:.0f}",
                f"{ours[q]:.0f}",
                f"{ours[q] / one_way[q]:.1f}x",
                f"<= {limit:g}x" if limit else "-",
            )
        )
    for q in ("p50", "p90", "p99", "p99.9"):
        rows.append(
            _row(
                f"publish -> journal commit acknowledged {q} (µs, from histogram buckets)",
                f"{raw_lat['round_trip_us'][q]:.0f} (round trip)",
                f"{lat['journal_us'].get(q, float('nan')):.0f}",
                "-",
                "-",
            )
        )
    rows += [
        _row(
            "start -> ready (ms)",
            f"fork {raw_start['fork']['start_ms']:.0f}, "
            f"forkserver {raw_start['forkserver']['start_ms']:.0f}, "
            f"fresh {raw_start['fresh']['start_ms']:.0f}",
            f"{sup['ready_p50_ms']:.1f} (restart mid-run {lat['restart_ready_ms']:.1f})",
            "-",
            "-",
        ),
        _row(
            "start -> warm (ms)",
            "-",
            f"{start_to_warm:.1f} (warm-up on {lat['warm_candles']:.0f} candles: "
            f"{lat['warm_ms']:.1f})",
            "-",
            "< 50",
        ),
        _row("pause/resume switch p50 (ms)", "-", f"{sup['switch_p50_ms']:.2f}", "-", "-"),
        _row(
            "idle worker USS (MiB)",
            f"fork {raw_start['fork']['uss_mib']:.1f}, fresh {raw_start['fresh']['uss_mib']:.1f}",
            f"{sup['uss_mib']:.1f} (PSS {sup['pss_mib']:.1f}, RSS {sup['rss_mib']:.1f})",
            "-",
            "< 10",
        ),
        _row(
            "100 strategies, 10 symbols x 1 candle/s: decided within 10 ms (floor: received)",
            f"{burst['within_10ms']:.1%}, worst subscriber {burst['worst_within_10ms']:.0%}",
            f"{cap['within_10ms']:.1%}, worst worker {cap['worst_within_10ms']:.0%}",
            f"{cap['within_10ms'] / burst['within_10ms']:.2f}" if burst["within_10ms"] else "-",
            "-",
        ),
        _row(
            "100 strategies, 10 symbols x 1 candle/s: p99 bucket (ms)",
            f"<= {burst['p99_bucket'] * 1000:g} (p50 {burst['ms']['p50']:.1f}, "
            f"p99 {burst['ms']['p99']:.1f}, p99.9 {burst['ms']['p99.9']:.1f}), "
            f"worst subscriber <= {burst['worst_p99_bucket'] * 1000:g}; lost {burst['lost']}",
            f"<= {cap['p99_bucket'] * 1000:g}, worst worker <= {cap['worst_p99_bucket'] * 1000:g}"
            f"; gaps {cap['gaps']:.0f}, lost {cap['missed']:.0f}",
            f"{cap['p99_bucket'] / burst['p99_bucket']:.1f}x (buckets)",
            "< 10, no gaps",
        ),
        _row(
            "100 strategies: CPU per worker (ms per s, 1 candle/s each)",
            f"{burst['cpu_ms_per_s']:.2f}",
            f"{cap['cpu_ms_per_s'].get('worker', float('nan')):.2f} (manager "
            f"{cap['cpu_ms_per_s'].get('manager', float('nan')):.0f}, aggregator "
            f"{cap['cpu_ms_per_s'].get('aggregator', float('nan')):.0f}, broker "
            f"{cap['cpu_ms_per_s'].get('broker', float('nan')):.1f})",
            f"{cap['cpu_ms_per_s'].get('worker', float('nan')) / burst['cpu_ms_per_s']:.0f}x"
            if burst["cpu_ms_per_s"]
            else "-",
            "-",
        ),
        _row(
            f"backtest, SMA crossover on {backtest['candles']:,} candles (candles/s; floor: "
            "backtesting.py `Backtest.run()`; stratrun: engine + statistics)",
            f"{backtest['candles'] / backtest['reference_s']:,.0f}",
            f"{backtest['candles'] / backtest['engine_and_stats_s']:,.0f} (engine alone "
            f"{backtest['candles'] / backtest['engine_s']:,.0f}, whole run_backtest "
            f"{backtest['candles'] / backtest['run_backtest_s']:,.0f})",
            f"{backtest['reference_s'] / backtest['engine_and_stats_s']:.2f}x",
            ">= 5x",
        ),
    ]
    table = "\n".join(rows)
    print(table)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"raw figures: {path.relative_to(REPO)}")
    if args.record:
        record(
            "Suite: stratrun against the raw floor",
            (
                "One run of `make bench`. Floor: bare pyzmq PUB/SUB over ipc with one "
                "msgspec-encoded Candle per message, separate processes. stratrun: whole system "
                "(`stratrun up`), SMA workers at speed 0 on 13,681 1-minute candles replayed "
                "15 times in a row for 1 worker, 4 for 10, once for 100, for throughput "
                "(through decision to journal), one LatencyProbe worker at 100 "
                "candles/s for latency, zygote-forked workers. 100 strategies: 100 SMA "
                "workers, 10 per stream, on 10 streams at 1 candle/s each, against 100 "
                "forked bare SUB processes subscribed the same way (each decodes its candle "
                "and notes publish -> receive), over windows of the same length; the floor's "
                "CPU per subscriber and stratrun's per worker are psutil/process CPU time "
                "over the window. Backtest: bench_backtest.measure(), SMA(10)/SMA(20) "
                "crossover with reversals on the GOOG daily candles repeated, stratrun's "
                "engine and backtesting.py in the same process, interleaved, best of the "
                "rounds. "
                f"Raw figures: `{path.relative_to(REPO)}`."
            ),
            table,
        )


if __name__ == "__main__":
    main()
