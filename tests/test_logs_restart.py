"""`stratrun logs ID -f` keeps following a strategy when its worker is killed and restarted,
and `stratrun logs` shows every process's JSON lines from a real system."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import RunningSystem, eth_system, sma_strategy, wait_until, write_config
from tests.log_helpers import LogsFollower, run_logs


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    body = eth_system(speed=500) + sma_strategy("s1", 5, 20) + sma_strategy("s2", 10, 30)
    config = write_config(tmp_path / "restart.toml", body)
    running = RunningSystem(config, tmp_path / "run")
    try:
        yield running
    finally:
        leftovers = running.cleanup()
        assert not leftovers, f"processes left running: {leftovers}"


def _ready_line_of(pid: int) -> Callable[[list[str]], bool]:
    def probe(lines: list[str]) -> bool:
        for line in lines:
            record = json.loads(line)
            if record.get("pid") == pid and record["msg"].startswith("strategy s1 ready"):
                return True
        return False

    return probe


def test_follow_goes_on_across_a_worker_restart(system: RunningSystem) -> None:
    rows = system.wait_all_running()
    old_pid = rows["s1"].pid
    as_json = LogsFollower(system.run_dir.root, "s1", "-f", "--json", "-n", "50")
    human = LogsFollower(system.run_dir.root, "s1", "-f", "-n", "50")
    try:
        as_json.read_until(_ready_line_of(old_pid), 30, "the first incarnation's ready line")
        human.read_until(
            lambda lines: any("worker.s1: strategy s1 ready" in line for line in lines),
            30,
            "the ready line, human-readable",
        )
        seen_before = len(as_json.lines)

        os.kill(old_pid, signal.SIGKILL)

        def restarted() -> int | None:
            row = (system.try_ps() or {}).get("s1")
            if row is None or row.state != "running" or row.pid in (0, old_pid):
                return None
            return int(row.pid)

        new_pid = wait_until(restarted, 30, "s1 restarted by the manager")
        # The same follower, never restarted, shows the new incarnation's lines.
        as_json.read_until(_ready_line_of(new_pid), 30, "the new incarnation's ready line")
        later = [json.loads(line) for line in as_json.lines[seen_before:]]
        mine = [r for r in later if r.get("pid") == new_pid]
        assert mine and all(r["process"] == "s1" for r in mine)
        assert any("resuming after seq" in r["msg"] for r in mine)
        human.read_until(
            lambda lines: sum("worker.s1: strategy s1 ready" in line for line in lines) >= 2,
            30,
            "the second ready line, human-readable",
        )
    finally:
        as_json.close()
        human.close()


def test_every_process_logs_json_lines(system: RunningSystem) -> None:
    system.wait_all_running()
    logs = system.run_dir.logs_dir
    for name in ("aggregator", "broker", "s1", "s2"):
        path = logs / f"{name}.log"

        def written(path: Path = path) -> list[str] | None:
            return path.read_text().splitlines() if path.exists() else None

        lines = wait_until(written, 30, f"{name}'s log")
        records = [json.loads(line) for line in lines]
        assert {r["process"] for r in records} == {name}
        assert all(r["ts"].endswith("Z") and len(r["ts"]) == 24 for r in records)
    done = run_logs(system.run_dir.root, "--level", "info", "-n", "5")
    assert done.returncode == 0, done.stderr
    names = {line.split(" |")[0].strip() for line in done.stdout.splitlines() if " |" in line}
    assert {"aggregator", "broker", "s1", "s2"} <= names
