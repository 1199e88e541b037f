"""One supervised child process as the manager sees it: spawn, reap, signal, sample.

Its state moves only through :func:`runtime.lifecycle.next_state`, so an impossible move
(ready while stopping, pause while backing off) raises instead of corrupting the record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from runtime.lifecycle import ProcessState, Trigger, next_state
from runtime.messages import ChildHeartbeat, Role
from runtime.priority import Spawner
from runtime.restart_policy import RestartPolicy
from runtime.zygote_client import ZygoteClient

__all__ = ["ChildProcess", "Resources"]

_MODULES: dict[Role, str] = {
    "broker": "broker",
    "aggregator": "runtime.aggregator",
    "worker": "workers",
}


@dataclass(slots=True)
class Resources:
    """Memory and CPU of one process, sampled by the manager."""

    rss_bytes: int = 0
    uss_bytes: int = 0
    cpu_percent: float = 0.0


@dataclass(slots=True)
class ChildProcess:
    """A broker, aggregator or worker process and its supervision record."""

    name: str
    role: Role
    spec_path: Path
    log_path: Path
    policy: RestartPolicy
    state: ProcessState = ProcessState.STOPPED
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.monotonic() of the last spawn
    ready_at: float = 0.0
    last_heartbeat: float = 0.0
    restarts: int = 0
    restart_at: float = 0.0
    stop_deadline: float = 0.0
    last_exit: str = ""
    kill_reason: str = ""  # set when the manager kills it (watchdog, memory cap, not ready)
    figures: ChildHeartbeat | None = None
    detail: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    kills: dict[str, int] = field(default_factory=dict)  # by cause, since the manager started
    adopted_pid: int = 0  # a live process an earlier manager started (not our child)
    forked_pid: int = 0  # forked by the zygote, re-parented to us (we reap it with waitpid)
    forked_reaped: bool = False
    spec_digest: str = ""  # hash of the spec it was started with: a changed one is not adopted
    _ps: psutil.Process | None = None

    @property
    def pid(self) -> int:
        if self.popen is not None:
            return self.popen.pid
        return self.forked_pid or self.adopted_pid

    @property
    def alive(self) -> bool:
        """Spawned (or forked, or adopted) and not yet reaped (or seen gone)."""
        if self.popen is not None:
            return self.popen.returncode is None
        if self.forked_pid:
            return not self.forked_reaped
        return self.adopted_pid != 0

    @property
    def create_time(self) -> float:
        """The OS's start time of the process (with the pid, what identifies it)."""
        if self._ps is None:
            return 0.0
        try:
            return float(self._ps.create_time())
        except psutil.Error:
            return 0.0

    def adopt(self, pid: int, create_time: float) -> bool:
        """Take over a live process an earlier manager started, if it really is that one.

        A pid alone could have been reused by an unrelated process since: the start time
        must match too, so such a process is never adopted (nor signalled).
        """
        try:
            process = psutil.Process(pid)
            same = abs(process.create_time() - create_time) < 0.01
            if not same or process.status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.Error:
            return False
        self.move(Trigger.ADOPTED)
        self.popen = None
        self.forked_pid = 0
        self.adopted_pid = pid
        self._ps = process
        now = time.monotonic()
        self.started_at = now - max(0.0, time.time() - create_time)
        self.ready_at = self.last_heartbeat = now
        process.cpu_percent(None)
        return True

    def move(self, trigger: Trigger) -> ProcessState:
        """Apply ``trigger`` through the transition table; returns the new state."""
        self.state = next_state(self.state, trigger)
        return self.state

    def spawn(
        self, trigger: Trigger, zygote: ZygoteClient | None = None, spawner: Spawner | None = None
    ) -> None:
        """Start the process in its own session (own process group), output to its log file.

        A worker is forked from the zygote when there is one; anything else, or a worker the
        zygote could not fork, starts as a new interpreter, through ``spawner`` when given
        (the aggregator at the manager's lowered priority, the others at normal priority).
        """
        self.move(trigger)
        self.adopted_pid = self.forked_pid = 0
        self.forked_reaped = False
        self.popen = None
        if zygote is not None and self.role == "worker":
            self.forked_pid = zygote.fork(self.spec_path, self.log_path)
        if not self.forked_pid:
            popen = spawner.popen if spawner is not None else _popen
            with open(self.log_path, "ab") as log:
                self.popen = popen(
                    [sys.executable, "-m", _MODULES[self.role], str(self.spec_path)],
                    background=self.role == "aggregator",
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        now = time.monotonic()
        self.started_at = self.last_heartbeat = now
        self.ready_at = 0.0
        self.kill_reason = ""
        self.figures = None
        self.resources = Resources()
        self.policy.record_start(now)
        try:
            self._ps = psutil.Process(self.pid)
            self._ps.cpu_percent(None)  # the first call only sets the baseline
        except psutil.Error:
            self._ps = None

    def poll_exit(self) -> int | None:
        """Reap the process if it exited (non-blocking); returns its exit status then."""
        if self.popen is None and self.forked_pid:
            return None if self.forked_reaped else self._poll_forked()
        if self.popen is None and self.adopted_pid:
            return self._poll_adopted()
        if self.popen is None or self.popen.returncode is not None:
            return None
        code = self.popen.poll()
        if code is not None:
            self.last_exit = describe_exit(code)
        return code

    def _poll_forked(self) -> int | None:
        """A zygote-forked worker is our child by re-parenting: waitpid gives its status."""
        try:
            pid, status = os.waitpid(self.forked_pid, os.WNOHANG)
        except ChildProcessError:  # not ours after all (no subreaper): watch it like an adoptee
            self.adopted_pid, self.forked_pid = self.forked_pid, 0
            return self._poll_adopted()
        if pid == 0:
            return None
        code = os.waitstatus_to_exitcode(status)
        self.forked_reaped = True
        self.last_exit = describe_exit(code)
        return code

    def _poll_adopted(self) -> int | None:
        """An adopted process is not our child: we see it gone, not its exit status."""
        assert self._ps is not None
        try:
            gone = not self._ps.is_running() or self._ps.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            gone = True
        if not gone:
            return None
        self.adopted_pid = 0
        self.last_exit = "exited (adopted: status unknown)"
        return 1  # unknown: counted as a failure, so the restart policy treats it as a crash

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's process group (it leads its own session)."""
        if not self.alive:
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def terminate(self, grace_s: float) -> None:
        """Ask it to stop (SIGTERM); the manager sends SIGKILL after ``grace_s``."""
        self.move(Trigger.STOP)
        self.stop_deadline = time.monotonic() + grace_s
        self.signal_group(signal.SIGTERM)

    def kill(self, reason: str) -> None:
        """SIGKILL the process group now, remembering why."""
        self.kill_reason = reason
        self.signal_group(signal.SIGKILL)

    def sample(self, with_uss: bool = True) -> Resources:
        """Read RSS and CPU of the process, and USS when asked (zeros once it is gone).

        USS costs the kernel a walk of the process's page tables (~0.3 ms for a worker, about
        20 times RSS), so the manager asks for it less often and keeps the last value.
        """
        if self._ps is None or not self.alive:
            self.resources = Resources()
            return self.resources
        try:
            with self._ps.oneshot():
                rss = self._ps.memory_info().rss
                cpu = self._ps.cpu_percent(None)
            uss = _uss_bytes(self._ps) if with_uss else self.resources.uss_bytes
            self.resources = Resources(rss, uss, cpu)
        except psutil.Error:
            self.resources = Resources()
        return self.resources

    def uptime_s(self, now: float) -> float:
        live = (ProcessState.STARTING, ProcessState.RUNNING, ProcessState.PAUSED)
        return now - self.started_at if self.state in live or self.alive else 0.0


def _popen(args: list[str], *, background: bool, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, **kwargs)


def _uss_bytes(process: psutil.Process) -> int:
    """Memory only this process holds: its private pages, from /proc/<pid>/smaps_rollup
    (a summary the kernel adds up, ~3x cheaper than psutil's parse of the full smaps)."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup", "rb") as rollup:
            return sum(
                int(line.split()[1]) * 1024
                for line in rollup
                if line.startswith((b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:"))
            )
    except OSError:
        return int(process.memory_full_info().uss)


def describe_exit(code: int) -> str:
    """``status 3`` or ``killed by SIGKILL``, as a person would say it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"status {code}"
