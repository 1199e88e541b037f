"""The manager dies; trading does not. A new manager adopts the survivors, no duplicates."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from tests.harness import (
    RunningSystem,
    alive,
    eth_system,
    sma_strategy,
    wait_until,
    write_config,
)

CONFIG = (
    eth_system(runtime="restart = { delay_s = 0.1, jitter = 0.0 }")
    + sma_strategy("survivor", 3, 8)
    + sma_strategy("casualty", 4, 9)
)


def processes_of(run_dir: Path) -> dict[str, list[int]]:
    """Live stratrun children of ``run_dir`` by name, from their process titles."""
    found: dict[str, list[int]] = {}
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        title = " ".join(process.info["cmdline"] or []).split()
        if process.info["status"] == psutil.STATUS_ZOMBIE or title[:1] != ["stratrun"]:
            continue
        if title[-1] != str(run_dir) or title[1] not in ("worker", "broker", "aggregator"):
            continue
        name = title[2] if title[1] == "worker" else title[1]
        found.setdefault(name, []).append(process.info["pid"])
    return found


def stats_count(system: RunningSystem, sid: str) -> int:
    rows = system.journal_rows(
        "SELECT COUNT(*) FROM events WHERE strategy_id = ? AND kind = 'stats'", sid
    )
    return int(rows[0][0]) if rows else 0


def test_strategies_outlive_the_manager_and_are_adopted(
    tmp_path: Path, systems: list[RunningSystem]
) -> None:
    config = write_config(tmp_path / "crash.toml", CONFIG)
    first = RunningSystem(config, tmp_path / "run")
    systems.append(first)
    before = first.wait_all_running()
    children = {name: row.pid for name, row in before.items()}

    # SIGKILL the manager: no chance to stop anything.
    os.kill(first.manager.pid, signal.SIGKILL)
    first.manager.wait()
    assert all(alive(pid) for pid in children.values())
    journaled = stats_count(first, "survivor")
    wait_until(
        lambda: stats_count(first, "survivor") > journaled + 5,
        20,
        "the survivor to keep trading and the aggregator to keep journaling",
    )

    # One worker dies while nobody supervises.
    os.kill(children["casualty"], signal.SIGKILL)
    wait_until(lambda: not alive(children["casualty"]), 10, "the casualty to die")

    second = RunningSystem(config, tmp_path / "run")
    systems.append(second)
    after = second.wait_all_running()
    for name in ("aggregator", "broker", "survivor"):
        assert after[name].pid == children[name], f"{name} was not adopted"
        assert after[name].restarts == 0
    assert after["casualty"].pid != children["casualty"]
    assert "adopted" in second.output.read_text()

    # Exactly one process per name: nothing was started twice.
    running = processes_of(second.run_dir.root)
    assert {name: len(pids) for name, pids in running.items()} == {n: 1 for n in after}

    # The adopted ones are really supervised: ps figures move, and down stops them.
    moved = after["survivor"].candles
    wait_until(lambda: second.ps()["survivor"].candles > moved, 20, "heartbeats from adoptees")
    second.manager.send_signal(signal.SIGTERM)
    assert second.manager.wait(timeout=60) == 0
    assert not [pid for pid in (row.pid for row in after.values()) if alive(pid)]


def test_up_detached_returns_once_ready_and_down_stops_it(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from tests.harness import REPO, kill_group

    config = write_config(tmp_path / "detached.toml", CONFIG)
    run_dir = tmp_path / "run"
    base = [sys.executable, "-m", "runtime", "--run-dir", str(run_dir)]
    pids: set[int] = set()
    try:
        started = subprocess.run(
            [*base, "up", "-d", str(config)], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert started.returncode == 0, started.stderr
        assert "4 processes running in the background" in started.stdout
        state = json.loads((run_dir / "state.json").read_text())
        pids = {state["manager_pid"], *(c["pid"] for c in state["children"].values())}
        assert all(alive(pid) for pid in pids)
        shown = subprocess.run([*base, "ps"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and shown.stdout.count(" running ") == 4, shown.stdout
        down = subprocess.run([*base, "down"], cwd=REPO, capture_output=True, text=True, timeout=90)
        assert down.returncode == 0, down.stderr
        wait_until(lambda: not any(alive(pid) for pid in pids), 10, "every process to be gone")
    finally:
        for pid in pids:
            if alive(pid):
                kill_group(pid)
