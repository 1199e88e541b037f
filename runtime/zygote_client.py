"""The manager's side of the zygote: start it, ask it to fork workers, reap them ourselves.

Linux only (it needs PR_SET_CHILD_SUBREAPER so that forked workers become our children);
anywhere else, or if the zygote dies, workers are started as fresh interpreters instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from runtime.priority import Spawner

__all__ = ["ZygoteClient", "become_subreaper"]

_PR_SET_CHILD_SUBREAPER = 36
_log = logging.getLogger("manager")


class _Reply(msgspec.Struct, frozen=True):
    pid: int = 0
    error: str = ""


_DECODER = msgspec.json.Decoder(_Reply)


def _popen(args: list[str], *, background: bool, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, **kwargs)


def become_subreaper() -> bool:
    """Adopt our descendants' orphans (so a double-forked worker is ours to reap)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


class ZygoteClient:
    """A pre-imported worker factory; ``fork`` returns the new worker's pid."""

    def __init__(
        self,
        run_dir: Path,
        log_path: Path,
        timeout_s: float = 5.0,
        spawner: Spawner | None = None,
    ) -> None:
        self._run_dir = run_dir
        self._spawner = spawner
        self._log_path = log_path
        self._timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        """Start the zygote (it imports while the manager goes on)."""
        # At normal priority: the workers it forks inherit its priority.
        popen = self._spawner.popen if self._spawner is not None else _popen
        with open(self._log_path, "ab") as log:
            self._proc = popen(
                [sys.executable, "-m", "workers.zygote", str(self._run_dir)],
                background=False,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        return True

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def fork(self, spec: Path, log: Path) -> int:
        """Have the zygote fork a worker; 0 if it could not (the caller spawns instead)."""
        if not self.alive:
            return 0
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        request = msgspec.json.encode({"spec": str(spec), "log": str(log)}) + b"\n"
        try:
            self._proc.stdin.write(request)
            self._proc.stdin.flush()
            ready, _, _ = select.select([self._proc.stdout], [], [], self._timeout_s)
            line = self._proc.stdout.readline() if ready else b""
        except OSError as exc:
            _log.warning("zygote unusable (%s); starting workers as new interpreters", exc)
            self.close()
            return 0
        if not line:
            _log.warning("zygote did not answer; starting workers as new interpreters")
            self.close()
            return 0
        reply = _DECODER.decode(line)
        if reply.error:
            _log.warning("zygote could not fork: %s", reply.error)
        return reply.pid

    def close(self) -> None:
        """End the zygote (closing its stdin is its signal to exit)."""
        if self._proc is None:
            return
        if self._proc.stdin:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()
        self._proc = None
