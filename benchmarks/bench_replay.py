"""Replay throughput of a whole system: broker -> N workers -> aggregator -> journal.

Starts ``stratrun up`` at speed 0 (as fast as the subscribers take candles) on the 13,681
real 1-minute candles of UNITTEST-BTC, with N SMA-crossover workers all on that stream, and
measures how long until every worker has processed every candle and the journal holds every
event they emitted. Prints the figures; ``--record`` appends them to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_replay.py --workers 3
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from _results import record

from runtime.control_client import ControlClient
from runtime.logfmt import parse_line
from runtime.messages import ProcessRow, PsReply, PsRequest
from runtime.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data" / "crypto" / "UNITTEST-BTC-1m.csv"
CANDLES = sum(1 for _ in DATA.open()) - 1


def laps_csv(laps: int, directory: Path) -> tuple[Path, int]:
    """The data replayed ``laps`` times back to back (open times moved on, one minute
    apart), for a run long enough that CPU times and py-spy samples mean something;
    returns the file and its number of candles."""
    if laps <= 1:
        return DATA, CANDLES
    header, *rows = DATA.read_text().splitlines()
    step = 60_000
    first = int(datetime.fromisoformat(rows[0].split(",", 1)[0]).timestamp() * 1000)
    out = [header]
    for i in range(laps * len(rows)):
        stamp = datetime.fromtimestamp((first + i * step) / 1000, UTC)
        out.append(
            stamp.strftime("%Y-%m-%dT%H:%M:%SZ") + "," + rows[i % len(rows)].split(",", 1)[1]
        )
    path = directory / "laps.csv"
    path.write_text("\n".join(out) + "\n")
    return path, len(out) - 1


def config(workers: int, data: Path = DATA) -> str:
    head = f"""
[broker]
speed = 0
[[broker.feeds]]
symbol = "UNITTEST-BTC"
timeframe = "1m"
path = "{data}"
[aggregator]
metrics_port = 0
[defaults]
stats_interval_s = 0.02
"""
    body = "".join(
        f"""
[[strategies]]
id = "sma{i}"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["UNITTEST-BTC"]
timeframe = "1m"
params = {{ fast = {5 + i}, slow = {20 + i} }}
"""
        for i in range(workers)
    )
    return head + body


def ps(run_dir: RunDir) -> PsReply:
    reply = ControlClient(run_dir.endpoint("control")).request(PsRequest(ControlClient.next_id()))
    assert isinstance(reply, PsReply)
    return reply


def run(workers: int, laps: int = 1) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="stratrun-bench-") as tmp:
        data, candles = laps_csv(laps, Path(tmp))
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(config(workers, data))
        run_dir = RunDir.at(Path(tmp) / "run")
        started = time.monotonic()
        manager = subprocess.Popen(
            [sys.executable, "-m", "runtime", "--run-dir", str(run_dir.root), "up", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            ready_at = 0.0
            ready_wall_ns = 0
            # CPU times of every process, taken at each poll until all are ready: the one
            # taken last before the broker started the feed is where the replay's count
            # starts (a poll can come after the feed started, at speed 0 even after much of
            # a short replay).
            snapshots: list[tuple[int, dict[str, tuple[str, psutil.Process, float]]]] = []
            deadline = started + 300
            while time.monotonic() < deadline:
                try:
                    rows = ps(run_dir).rows
                except Exception:
                    rows = []
                if not ready_at and len(rows) == workers + 2 and all(r.pid > 0 for r in rows):
                    snapshots.append((time.time_ns(), _cpu_start(rows)))
                if rows and not ready_at and all(r.state == "running" for r in rows):
                    ready_at = time.monotonic()
                    ready_wall_ns = time.time_ns()
                w = [r for r in rows if r.role == "worker"]
                if w and all(r.candles >= candles for r in w):
                    break
                time.sleep(0.02)  # polling another process's figures
            else:
                raise SystemExit("timed out")
            worker_rows = [r for r in rows if r.role == "worker"]
            lost = sum(candles - r.candles for r in worker_rows)
            # Every candle decided; now wait for the journal to hold it (the aggregator may
            # still be committing a backlog), then stop.
            db = sqlite3.connect(f"file:{run_dir.journal}?mode=ro", uri=True)
            while time.monotonic() < deadline:
                if all(_counted(db, r.name) >= candles for r in worker_rows):
                    break
                time.sleep(0.1)  # polling another process's journal
            feed_ns = _feed_started_ns(run_dir)
            start_ns = feed_ns or ready_wall_ns
            before = [snap for t, snap in snapshots if t <= start_ns]
            if not before:
                print("CPU counted from after the feed started: too low", file=sys.stderr)
            cpu_from = before[-1] if before else snapshots[-1][1] if snapshots else {}
            pids = {r.pid for r in rows}  # a process that changed pid since is left out
            kept = {k: v for k, v in cpu_from.items() if v[1].pid in pids}
            cpu_us = _cpu_per_candle(kept, candles, len(worker_rows))
            done_ns = max(_completed_ns(db, r.name, candles) for r in worker_rows)
            journaled = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            db.close()
            manager.send_signal(signal.SIGTERM)
            manager.wait(timeout=120)
        finally:
            if manager.poll() is None:
                os.killpg(manager.pid, signal.SIGKILL)
                manager.wait()
    replay_s = (done_ns - start_ns) / 1e9
    return {
        "workers": workers,
        "start_to_all_ready_s": ready_at - started,
        "replay_s": replay_s,
        "candles_per_worker_per_s": candles / replay_s,
        "candles_delivered_per_s": candles * workers / replay_s,
        "candles_lost": lost,
        "events_journaled": journaled,
        **cpu_us,
    }


def _feed_started_ns(run_dir: RunDir) -> int:
    """When the broker started the feed (its log line, to the millisecond); 0 if not found."""
    try:
        text = run_dir.log_file("broker").read_text()
    except OSError:
        return 0
    for raw in text.splitlines():
        line, is_json = parse_line(raw, "broker")
        if is_json and line.msg == "feed started":
            when = datetime.strptime(line.ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            return int(when.timestamp() * 1000) * 1_000_000
    return 0


def _cpu_start(rows: list[ProcessRow]) -> dict[str, tuple[str, psutil.Process, float]]:
    """Each process's CPU time (user + system) so far, by name, with its role."""
    start: dict[str, tuple[str, psutil.Process, float]] = {}
    for r in rows:
        try:
            proc = psutil.Process(r.pid)
            t = proc.cpu_times()
        except psutil.Error:
            continue
        start[r.name] = (r.role, proc, t.user + t.system)
    return start


def _cpu_per_candle(
    start: dict[str, tuple[str, psutil.Process, float]], candles: int, workers: int
) -> dict[str, float]:
    """CPU microseconds per candle spent since ``start``, by role: the broker's per candle
    published, a worker's (their mean) and the aggregator's per candle decided by a worker.
    Robust to other load on the machine, unlike the wall-clock rate."""
    spent: dict[str, float] = {}
    measured = 0  # workers
    for role, proc, before in start.values():
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        spent[role] = spent.get(role, 0.0) + t.user + t.system - before
        measured += role == "worker"
    per = {"broker": candles, "worker": candles * measured, "aggregator": candles * workers}
    return {f"cpu_us_{role}": s * 1e6 / per[role] for role, s in spent.items() if per.get(role)}


def _counted(db: sqlite3.Connection, strategy_id: str) -> int:
    """Candles the journal's Stats events of one strategy add up to."""
    row = db.execute(
        "SELECT COALESCE(SUM(json_extract(body, '$.candles')), 0) FROM events "
        "WHERE strategy_id = ? AND kind = 'stats'",
        (strategy_id,),
    ).fetchone()
    return int(row[0])


def _completed_ns(db: sqlite3.Connection, strategy_id: str, candles: int) -> int:
    """Worker clock time of the Stats event that brought its candle count to ``candles``."""
    seen = 0
    for ts_ns, counted in db.execute(
        "SELECT ts_ns, json_extract(body, '$.candles') FROM events "
        "WHERE strategy_id = ? AND kind = 'stats' ORDER BY seq",
        (strategy_id,),
    ):
        seen += counted
        if seen >= candles:
            return int(ts_ns)
    raise SystemExit(f"{strategy_id} journaled only {seen} of {candles} candles")


def _us(result: dict[str, float], role: str) -> str:
    value = result.get(f"cpu_us_{role}")
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument(
        "--laps", type=int, default=1, help="replay the data this many times in a row"
    )
    parser.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    results = [run(n, args.laps) for n in args.workers]
    lines = [
        "| workers | start to all ready (s) | replay (s) | candles/s per worker "
        "| candles delivered/s | lost | events journaled "
        "| CPU us/candle: worker, aggregator, broker |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['workers']} | {r['start_to_all_ready_s']:.2f} | {r['replay_s']:.2f} "
            f"| {r['candles_per_worker_per_s']:,.0f} | {r['candles_delivered_per_s']:,.0f} "
            f"| {r['candles_lost']:.0f} | {r['events_journaled']:.0f} "
            f"| {', '.join(_us(r, role) for role in ('worker', 'aggregator', 'broker'))} |"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))
    if args.record:
        record(
            "Replay throughput",
            (
                f"{CANDLES * args.laps:,} real 1-minute candles ({args.laps} laps of "
                f"{CANDLES:,}) at speed 0, each worker an SMA crossover on the one stream; "
                "timed from the broker's 'feed started' log line to the Stats event (every "
                "20 ms) in which the last worker counted its last candle; CPU per candle of "
                "each process (psutil) over the same span."
            ),
            "\n".join(lines),
        )


if __name__ == "__main__":
    main()
