"""One supervised child process as the manager sees it: spawn, reap, stop, restart delay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.messages import ChildHeartbeat, Role

__all__ = ["ChildProcess"]

_MODULES: dict[Role, str] = {
    "broker": "broker",
    "aggregator": "runtime.aggregator",
    "worker": "workers",
}


@dataclass(slots=True)
class ChildProcess:
    """A broker, aggregator or worker process and its supervision record.

    States: ``starting`` (spawned, not ready), ``running`` (said ready), ``backoff`` (exited,
    waiting to restart), ``stopping``, ``stopped``, ``failed`` (gave up).
    """

    name: str
    role: Role
    spec_path: Path
    log_path: Path
    state: str = "stopped"
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.monotonic() of the last spawn
    ready_at: float = 0.0
    restarts: int = 0
    restart_at: float = 0.0
    restart_delay_s: float = 0.0
    last_exit: int | None = None
    figures: ChildHeartbeat | None = None
    detail: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen is not None else 0

    def spawn(self) -> None:
        """Start the process in its own session (own process group), output to its log file."""
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", _MODULES[self.role], str(self.spec_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.state = "starting"
        self.started_at = time.monotonic()
        self.ready_at = 0.0
        self.figures = None

    def poll_exit(self) -> int | None:
        """Reap the process if it exited (non-blocking); returns its exit status then."""
        if self.popen is None:
            return None
        code = self.popen.poll()
        if code is not None:
            self.last_exit = code
        return code

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's process group (it leads its own session)."""
        if self.popen is None or self.popen.returncode is not None:
            return
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.state = "stopping"
        self.signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    def uptime_s(self, now: float) -> float:
        return now - self.started_at if self.state in ("starting", "running", "stopping") else 0.0
