"""ChildProcess adoption: a pid is only taken over when its start time matches too."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from runtime.child_process import ChildProcess, describe_exit
from runtime.lifecycle import ProcessState
from runtime.restart_policy import RestartPolicy, RestartSettings


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _child() -> ChildProcess:
    return ChildProcess(
        "w", "worker", Path("w.json"), Path("w.log"), RestartPolicy(RestartSettings())
    )


def test_a_reused_pid_is_not_adopted(sleeper: subprocess.Popen[bytes]) -> None:
    started = psutil.Process(sleeper.pid).create_time()
    child = _child()
    assert not child.adopt(sleeper.pid, started - 5.0)  # same pid, another process's start
    assert child.state is ProcessState.STOPPED and child.pid == 0 and not child.alive


def test_the_recorded_process_is_adopted_and_seen_gone(sleeper: subprocess.Popen[bytes]) -> None:
    started = psutil.Process(sleeper.pid).create_time()
    child = _child()
    assert child.adopt(sleeper.pid, started)
    assert child.state is ProcessState.RUNNING and child.pid == sleeper.pid and child.alive
    assert child.poll_exit() is None
    sleeper.kill()
    sleeper.wait()  # reaped by its parent (us), as init would reap an orphan
    assert child.poll_exit() == 1
    assert not child.alive and "status unknown" in child.last_exit


def test_a_dead_pid_is_not_adopted() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    assert not _child().adopt(proc.pid, started)


def test_exit_statuses_read_as_a_person_would_say_them() -> None:
    assert describe_exit(0) == "status 0"
    assert describe_exit(3) == "status 3"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-15) == "killed by SIGTERM"
