"""The manager and the aggregator run nicer than the broker and the workers (Linux)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest

from tests.harness import RunningSystem, eth_system, sma_strategy, write_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux niceness")


def _nice_by_role(system: RunningSystem) -> dict[str, set[int]]:
    """Nice values of each process's threads, by role; the manager's spawner thread apart
    (it keeps normal priority to start the broker, the zygote and workers)."""
    found: dict[str, set[int]] = {}
    pids = [(row.role, row.pid) for row in system.wait_all_running().values()]
    for role, pid in [*pids, ("manager", system.manager.pid)]:
        found.setdefault(role, set()).update(
            _thread_nice(pid, t.id)
            for t in psutil.Process(pid).threads()
            if _thread_name(pid, t.id) != "spawner"
        )
    return found


def _thread_nice(pid: int, tid: int) -> int:
    # /proc/<pid>/task/<tid>/stat: field 19 is the nice value (after the ")" of the name).
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def _thread_name(pid: int, tid: int) -> str:
    return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()


@pytest.mark.parametrize("background_nice", [None, 5, 10])
def test_manager_and_aggregator_yield_to_broker_and_workers(
    tmp_path: Path, systems: list[RunningSystem], background_nice: int | None
) -> None:
    runtime = "" if background_nice is None else f"background_nice = {background_nice}"
    body = eth_system(speed=3000, runtime=runtime) + sma_strategy("s1", 3, 8)
    body += sma_strategy("s2", 4, 9)
    system = RunningSystem(write_config(tmp_path / "nice.toml", body), tmp_path / "run")
    systems.append(system)
    base = os.nice(0)  # ours: the manager was started from this process
    step = 0 if background_nice is None else background_nice  # the default is 0
    lowered = min(19, base + step)
    assert _nice_by_role(system) == {
        "manager": {lowered},
        "aggregator": {lowered},
        "broker": {base},
        "worker": {base},
    }
    manager = system.manager.pid
    spawners = [
        t.id for t in psutil.Process(manager).threads() if _thread_name(manager, t.id) == "spawner"
    ]
    assert [_thread_nice(manager, tid) for tid in spawners] == ([base] if step else [])
