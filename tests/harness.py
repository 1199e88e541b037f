"""Helpers for tests that run real processes: polling with a deadline, process cleanup."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from runtime.control_client import ControlClient
from runtime.messages import LIFECYCLE_DECODER, LifecycleEvent, PsReply, PsRequest
from runtime.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data"
T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True while ``pid`` is a process that has not exited (zombies count as exited)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (children run in their own sessions)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


class RunningSystem:
    """``stratrun up CONFIG`` started as a real process tree; :meth:`cleanup` always runs."""

    def __init__(self, config: Path, run_dir: Path) -> None:
        self.config = config
        self.run_dir = RunDir.at(run_dir)
        self.seen_pids: set[int] = set()
        self.output = run_dir.parent / "manager.out"
        with open(self.output, "wb") as out:
            self.manager = subprocess.Popen(
                [sys.executable, "-m", "runtime", "--run-dir", str(run_dir), "up", str(config)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen_pids.add(self.manager.pid)

    def ps(self) -> dict[str, Any]:
        """Rows of ``ps`` by process name (asks the manager over its control socket)."""
        reply = ControlClient(self.run_dir.endpoint("control"), timeout_s=5).request(
            PsRequest(ControlClient.next_id())
        )
        assert isinstance(reply, PsReply)
        rows = {row.name: row for row in reply.rows}
        self.seen_pids.update(row.pid for row in reply.rows if row.pid)
        return rows

    def try_ps(self) -> dict[str, Any] | None:
        try:
            return self.ps()
        except Exception:
            return None

    def wait_all_running(self, timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            if self.manager.poll() is not None:
                raise AssertionError(f"manager exited early:\n{self.output.read_text()}")
            rows = self.try_ps()
            if rows and all(r.state == "running" for r in rows.values()):
                return rows
            return None

        return wait_until(probe, timeout, "every process to be running")

    def journal_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Query the journal read-only, as another process would."""
        if not self.run_dir.journal.exists():
            return []
        db = sqlite3.connect(f"file:{self.run_dir.journal}?mode=ro", uri=True)
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def state_pids(self) -> set[int]:
        try:
            state = json.loads(self.run_dir.state_file.read_text())
        except (OSError, ValueError):
            return set()
        return {int(c["pid"]) for c in state["children"].values() if c["pid"]}

    def cleanup(self) -> list[int]:
        """Stop the manager (SIGTERM, then SIGKILL), kill whatever it left; return the leftovers."""
        self.seen_pids |= self.state_pids()
        if self.manager.poll() is None:
            self.manager.send_signal(signal.SIGTERM)
            try:
                self.manager.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(self.manager.pid)
                self.manager.wait()
        self.seen_pids |= self.state_pids()
        leftovers = [pid for pid in self.seen_pids if alive(pid)]
        for pid in leftovers:
            kill_group(pid)
        return leftovers


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


class LifecycleListener:
    """Subscribes to the manager's lifecycle events of one process (or all)."""

    def __init__(self, run_dir: RunDir, name: str = "") -> None:
        import zmq

        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.connect(run_dir.endpoint("lifecycle"))
        self._sub.setsockopt(zmq.SUBSCRIBE, f"lc|{name}|".encode() if name else b"lc|")
        self.events: list[LifecycleEvent] = []

    def drain(self, wait_ms: int = 50) -> list[LifecycleEvent]:
        """Collect what has arrived (waiting up to ``wait_ms`` for the first)."""
        while self._sub.poll(wait_ms):
            _, payload = self._sub.recv_multipart()
            self.events.append(LIFECYCLE_DECODER.decode(payload))
            wait_ms = 0
        return self.events

    def wait_for(self, event: str, timeout: float, count: int = 1) -> list[LifecycleEvent]:
        """Events so far once ``count`` of kind ``event`` arrived."""

        def probe() -> list[LifecycleEvent] | None:
            seen = self.drain()
            return seen if sum(e.event == event for e in seen) >= count else None

        return wait_until(probe, timeout, f"{count} lifecycle event(s) {event!r}")

    def close(self) -> None:
        self._sub.close(0)
        self._ctx.term()


def eth_system(speed: float = 3000, runtime: str = "") -> str:
    """The head of a test config: one real ETH-BTC 5m feed at ``speed``, metrics on a free
    port, defaults every test strategy shares; ``runtime`` lines go in ``[runtime]``.
    The repository is a plugin path, so ``tests.sample_strategies`` classes load."""
    return f"""
[runtime]
plugin_paths = ["{REPO}"]
{runtime}

[broker]
speed = {speed}
heartbeat_interval_s = 0.5

[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{DATA}/crypto/ETH-BTC-5m.csv"

[aggregator]
metrics_port = 0

[defaults]
timeframe = "5m"
symbols = ["ETH-BTC"]
stats_interval_s = 0.2
"""


def stratrun(system: RunningSystem, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI against the system under test, as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(system.run_dir.root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )


def sma_strategy(sid: str, fast: int, slow: int) -> str:
    """A ``[[strategies]]`` table of the built-in SMA crossover."""
    return (
        f'\n[[strategies]]\nid = "{sid}"\nclass = "workers.strategies.sma_cross:SmaCross"\n'
        f"params = {{ fast = {fast}, slow = {slow} }}\n"
    )
