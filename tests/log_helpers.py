"""``stratrun logs`` run as a real process, its output read line by line with a deadline."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.harness import REPO


def logs_command(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "runtime", "--run-dir", str(run_dir), "logs", *args]


def run_logs(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``stratrun logs ARGS`` to completion (no -f)."""
    return subprocess.run(
        logs_command(run_dir, *args), cwd=REPO, capture_output=True, text=True, timeout=60
    )


class LogsFollower:
    """``stratrun logs ARGS`` left running; :meth:`close` kills its process group."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            logs_command(run_dir, *args),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._pending = b""

    def read_until(self, done: Callable[[list[str]], bool], timeout: float, what: str) -> None:
        """Read output until ``done(lines so far)``; fail at the deadline."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            left = deadline - time.monotonic()
            if left <= 0:
                tail = "\n".join(self.lines[-20:])
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}:\n{tail}")
            if self.proc.poll() is not None and not self._pending:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"stratrun logs exited ({self.proc.returncode}): {err}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:  # raw reads: a buffered readline would hide lines from select
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    continue
                self._pending += chunk
                *complete, self._pending = self._pending.split(b"\n")
                self.lines += [line.decode() for line in complete]

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
