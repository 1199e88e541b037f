"""`stratrun top`: the p99 from a Prometheus histogram, the table, and one frame of a real
system (`stratrun top --once`)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.messages import ProcessRow
from runtime.top import Frame, Histogram, Sampler, parse_latency, quantile, render
from tests.harness import REPO, RunningSystem, eth_system, sma_strategy, wait_until, write_config

INF = math.inf


def test_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    # 100 observations: 50 up to 1 ms, 40 more up to 5 ms, 10 more up to 10 ms.
    h = Histogram(((0.001, 50.0), (0.005, 90.0), (0.01, 100.0), (INF, 100.0)))
    assert quantile(0.5, h) == pytest.approx(0.001)
    assert quantile(0.7, h) == pytest.approx(0.001 + 0.004 * 20 / 40)
    assert quantile(0.99, h) == pytest.approx(0.005 + 0.005 * 9 / 10)
    assert quantile(0.99, Histogram(((0.001, 0.0), (INF, 0.0)))) is None
    # Past the largest finite bound: that bound (as histogram_quantile answers).
    assert quantile(0.99, Histogram(((0.001, 1.0), (INF, 10.0)))) == pytest.approx(0.001)


def test_the_window_is_what_was_observed_since_the_last_frame() -> None:
    before = Histogram(((0.001, 10.0), (0.01, 10.0), (INF, 10.0)))
    after = Histogram(((0.001, 10.0), (0.01, 30.0), (INF, 30.0)))
    recent = after.minus(before)
    assert recent.buckets == ((0.001, 0.0), (0.01, 20.0), (INF, 20.0))
    assert quantile(0.99, recent) == pytest.approx(0.001 + 0.009 * 19.8 / 20)
    # Counts that went down (the aggregator restarted): the new counts as they are.
    assert before.minus(after) == before
    assert after.minus(None) == after


SCRAPE = """\
# HELP stratrun_candle_to_decision_seconds From the broker publishing a candle to the strategy.
# TYPE stratrun_candle_to_decision_seconds histogram
stratrun_candle_to_decision_seconds_bucket{strategy_id="a",le="0.001"} 98.0
stratrun_candle_to_decision_seconds_bucket{strategy_id="a",le="0.01"} 100.0
stratrun_candle_to_decision_seconds_bucket{strategy_id="a",le="+Inf"} 100.0
stratrun_candle_to_decision_seconds_count{strategy_id="a"} 100.0
stratrun_candle_to_decision_seconds_sum{strategy_id="a"} 0.05
# HELP stratrun_open_positions Open positions of a strategy.
# TYPE stratrun_open_positions gauge
stratrun_open_positions{strategy_id="a"} 1.0
"""


def test_parse_latency_reads_each_strategys_buckets() -> None:
    found = parse_latency(SCRAPE)
    assert list(found) == ["a"]
    assert found["a"].buckets == ((0.001, 98.0), (0.01, 100.0), (INF, 100.0))
    assert quantile(0.99, found["a"]) == pytest.approx(0.001 + 0.009 * 1 / 2)


def _row(name: str, role: str = "worker", **kw: object) -> ProcessRow:
    base: dict[str, object] = {"pid": 100, "state": "running", "uptime_s": 75.0, "restarts": 0}
    base.update(kw)
    return ProcessRow(name, role, **base)  # type: ignore[arg-type]


def test_render_shows_one_row_per_strategy_and_the_services_on_one_line() -> None:
    rows = [
        _row("aggregator", "aggregator", rss_bytes=30 * 2**20),
        _row("broker", "broker", rss_bytes=20 * 2**20),
        _row(
            "zeta",
            pid=321,
            realized_pnl=-0.5,
            capital=1000.0,
            equity=999.25,
            open_positions=2,
            candles=1200,
            rss_bytes=21 * 2**20,
            cpu_percent=3.0,
            restarts=4,
            uptime_s=3725.0,
        ),
        _row("alpha", state="failed", pid=0, uptime_s=0.0),
    ]
    lines = render(Frame(rows, {"zeta": 0.0042, "alpha": None}, taken_at=0.0))
    assert lines[0].startswith("stratrun top") and "strategies: 2, 1 running" in lines[0]
    assert "equity 999.25  realized PnL -0.5" in lines[0]
    assert lines[1] == "services: aggregator running (30.0M), broker running (20.0M)"
    header = lines[3].split()
    assert header == [
        "STRATEGY",
        "STATE",
        "PID",
        "EQUITY",
        "REALIZED_PNL",
        "OPEN",
        "CANDLES",
        "P99",
        "RSS",
        "CPU",
        "RESTARTS",
        "UPTIME",
    ]
    alpha, zeta = lines[4].split(), lines[5].split()  # sorted by name
    assert alpha == ["alpha", "failed", "-", "-", "+0", "0", "0", "-", "-", "-", "0", "0s"]
    assert zeta == [
        "zeta",
        "running",
        "321",
        "999.25",
        "-0.5",
        "2",
        "1200",
        "4.2ms",
        "21.0M",
        "3%",
        "4",
        "1h02m",
    ]
    # Columns line up: every row as wide as the header.
    assert len({len(line) for line in lines[3:6]}) == 1
    assert all(len(line) <= 40 for line in render(Frame(rows), width=40))


def test_render_with_nothing_to_show() -> None:
    lines = render(Frame([], note="metrics unavailable"))
    assert "(no strategies)" in lines and lines[-1] == "metrics unavailable"


def test_the_sampler_takes_p99_over_the_interval_when_candles_came() -> None:
    scrapes = iter(
        [
            SCRAPE,
            SCRAPE.replace('le="0.01"} 100.0', 'le="0.01"} 200.0').replace(
                'le="+Inf"} 100.0', 'le="+Inf"} 200.0'
            ),
            SCRAPE.replace('le="0.01"} 100.0', 'le="0.01"} 200.0').replace(
                'le="+Inf"} 100.0', 'le="+Inf"} 200.0'
            ),
        ]
    )
    rows = [_row("a", "worker"), _row("aggregator", "aggregator", detail={"metrics_url": "u"})]
    sampler = Sampler(lambda: rows, lambda url: next(scrapes))
    assert sampler.frame().p99_s["a"] == pytest.approx(0.0055)  # the run so far
    assert sampler.frame().p99_s["a"] == pytest.approx(0.001 + 0.009 * 0.99)  # 100 slow ones
    assert sampler.frame().p99_s["a"] == pytest.approx(0.001 + 0.009 * 100 / 102)  # no new: run


# --------------------------------------------------------------------------- a real system


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    body = eth_system(speed=500) + sma_strategy("fast", 5, 20) + sma_strategy("slow", 10, 30)
    running = RunningSystem(write_config(tmp_path / "top.toml", body), tmp_path / "run")
    try:
        yield running
    finally:
        leftovers = running.cleanup()
        assert not leftovers, f"processes left running: {leftovers}"


def test_top_once_shows_every_strategy_of_a_running_system(system: RunningSystem) -> None:
    system.wait_all_running()

    def candles_in_both() -> dict[str, Any] | None:
        rows = system.try_ps()
        return rows if rows and all(rows[s].candles >= 20 for s in ("fast", "slow")) else None

    rows = wait_until(candles_in_both, 60, "candles processed by both strategies")
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(system.run_dir.root), "top", "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "strategies: 2, 2 running" in lines[0]
    assert lines[1].startswith("services: ") and "aggregator running" in lines[1]
    table = {line.split()[0]: line.split() for line in lines[3:] if line.strip()}
    for sid in ("fast", "slow"):
        cells = table[sid]
        assert cells[1] == "running"
        assert cells[2] == str(rows[sid].pid)
        assert float(cells[3]) > 0  # equity: the allocation at least, before any trade
        assert int(cells[6]) >= 20  # candles
        assert cells[7] != "-" and cells[7][-2:] in ("us", "ms")  # p99 from the histogram
        assert cells[8].endswith("M")  # RSS


def test_top_without_a_system_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(tmp_path), "top", "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("stratrun: ") and done.stdout == ""


def test_top_refreshes_on_a_terminal_and_quits_on_q(system: RunningSystem) -> None:
    import os
    import pty
    import select

    system.wait_all_running()
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime",
            "--run-dir",
            str(system.run_dir.root),
            "top",
            "-i",
            "0.2",
        ],
        cwd=REPO,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen = b""
    try:

        def frames() -> int | None:
            nonlocal seen
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                seen += os.read(controller, 65536)
            count = seen.count(b"stratrun top - ")
            return count if count >= 2 else None  # it refreshed

        wait_until(frames, 30, "two frames of top")
        assert b"\x1b[H\x1b[2J" in seen and b"(q to quit)" in seen  # a terminal: redrawn
        os.write(controller, b"q")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        os.close(controller)
