"""``stratrun up`` as real processes: journal, metrics, a SIGKILLed worker, a clean stop."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    DATA,
    RunningSystem,
    alive,
    fetch,
    stratrun,
    wait_until,
    write_config,
)

CONFIG = f"""
[runtime]
stop_timeout_s = 5
restart = {{ delay_s = 0.2 }}

[broker]
speed = 3000            # 10 candles a second per 5-minute stream
heartbeat_interval_s = 0.5

[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{DATA}/crypto/ETH-BTC-5m.csv"

[[broker.feeds]]
symbol = "LTC-BTC"
timeframe = "5m"
path = "{DATA}/crypto/LTC-BTC-5m.csv"

[aggregator]
metrics_port = 0

[defaults]
timeframe = "5m"
stats_interval_s = 0.2
execution = {{ fee_bps = 10, quantity = 1.0 }}

[[strategies]]
id = "sma_a"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC"]
params = {{ fast = 3, slow = 8 }}

[[strategies]]
id = "sma_b"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC", "LTC-BTC"]
params = {{ fast = 5, slow = 12, allow_short = true }}

[[strategies]]
id = "rsi_c"
class = "workers.strategies.rsi_reversion:RsiReversion"
symbols = ["LTC-BTC"]
params = {{ period = 6, oversold = 40, exit_above = 55 }}
"""

STRATEGIES = ("sma_a", "sma_b", "rsi_c")


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    config = write_config(tmp_path / "e2e.toml", CONFIG)
    running = RunningSystem(config, tmp_path / "run")
    try:
        yield running
    finally:
        leftovers = running.cleanup()
        assert not leftovers, f"processes left behind: {leftovers}"


def test_up_journal_metrics_restart_and_down(system: RunningSystem) -> None:
    rows = system.wait_all_running()
    assert {r.role for r in rows.values()} == {"broker", "aggregator", "worker"}
    assert set(STRATEGIES) <= set(rows)

    # Every strategy trades: its events are journaled under its own id, seqs without holes.
    def traded() -> bool:
        found = system.journal_rows(
            "SELECT strategy_id FROM events WHERE kind = 'order_filled' GROUP BY strategy_id"
        )
        return {sid for (sid,) in found} >= set(STRATEGIES)

    wait_until(traded, 60, "a fill from every strategy")
    for sid in STRATEGIES:
        seqs = [
            s
            for (s,) in system.journal_rows(
                "SELECT seq FROM events WHERE strategy_id = ? ORDER BY seq", sid
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1)), f"{sid} journal seqs have holes"
    foreign = system.journal_rows(
        "SELECT COUNT(*) FROM events WHERE strategy_id NOT IN (?, ?, ?)", *STRATEGIES
    )
    assert foreign == [(0,)]

    # Prometheus text from the aggregator, one series per strategy.
    metrics_url = rows["aggregator"].detail["metrics_url"]
    text = fetch(metrics_url)
    for sid in STRATEGIES:
        assert f'stratrun_candles_processed_total{{strategy_id="{sid}"}}' in text
        assert f'stratrun_events_total{{kind="order_filled",strategy_id="{sid}"}}' in text
        assert re.search(
            rf'^stratrun_candle_to_decision_seconds_count{{strategy_id="{sid}"}} [1-9]', text, re.M
        ), f"no candle-to-decision latency for {sid}"

    def processes_in_metrics() -> bool:
        page = fetch(metrics_url)
        return all(
            f'stratrun_process_up{{process="{name}",role="{row.role}"}} 1.0' in page
            for name, row in rows.items()
        )

    wait_until(processes_in_metrics, 10, "the manager's process figures in the metrics")

    # SIGKILL one worker: it comes back with a new pid while the others keep receiving candles.
    victim = rows["sma_a"]
    before = {sid: rows[sid].candles for sid in ("sma_b", "rsi_c")}
    last_seq_before = system.journal_rows(
        "SELECT MAX(seq) FROM events WHERE strategy_id = 'sma_a'"
    )[0][0]
    os.kill(victim.pid, signal.SIGKILL)

    def restarted() -> object:
        now = system.ps()["sma_a"]
        return now.state == "running" and now.pid != victim.pid and now.restarts == 1

    wait_until(restarted, 30, "sma_a to be restarted")

    def others_progress() -> bool:
        now = system.ps()
        return all(now[sid].candles > before[sid] for sid in before) and all(
            now[sid].pid == rows[sid].pid and now[sid].restarts == 0 for sid in before
        )

    wait_until(others_progress, 30, "the other strategies to keep receiving candles")

    # The restarted strategy carries on its own seq instead of starting again from 1.
    def resumed() -> bool:
        rows_after = system.journal_rows(
            "SELECT MAX(seq), COUNT(*) FROM events WHERE strategy_id = 'sma_a'"
        )
        max_seq, count = rows_after[0]
        return bool(max_seq and max_seq > last_seq_before and max_seq == count)

    wait_until(resumed, 30, "sma_a to journal new events with continuing seqs")

    # The CLI a user would type in another shell.
    shown = stratrun(system, "ps")
    assert shown.returncode == 0, shown.stderr
    for sid in STRATEGIES:
        assert re.search(rf"^{sid} +worker +\d+ +running ", shown.stdout, re.M), shown.stdout
    assert "metrics: http://127.0.0.1:" in shown.stdout
    logged = stratrun(system, "logs", "sma_b", "-n", "3")
    assert logged.returncode == 0 and len(logged.stdout.splitlines()) == 3, logged.stderr

    # `stratrun down` stops everything; nothing is left running.
    pids = {row.pid for row in system.ps().values()}
    down = stratrun(system, "down")
    assert down.returncode == 0, down.stderr
    assert system.manager.wait(timeout=30) == 0
    assert not [pid for pid in pids if alive(pid)]
    output = system.output.read_text()
    for name in (*STRATEGIES, "broker", "aggregator"):
        assert re.search(rf"stopped +\w+ +{name} +status 0", output), output
