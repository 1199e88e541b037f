"""The run directory: every path and ipc endpoint a running system owns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_RUN_DIR", "RunDir", "RunDirError"]

DEFAULT_RUN_DIR = ".stratrun"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_IPC_PATH = 107


class RunDirError(Exception):
    """The run directory cannot be used (path too long for ipc, not writable, ...)."""


@dataclass(frozen=True, slots=True)
class RunDir:
    """Paths under one run directory; :meth:`create` makes it with mode 0700."""

    root: Path

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        """The run directory at ``path`` (made absolute, not created)."""
        return cls(Path(path).expanduser().resolve())

    @property
    def sock_dir(self) -> Path:
        return self.root / "sock"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def specs_dir(self) -> Path:
        return self.root / "specs"

    @property
    def journal(self) -> Path:
        return self.root / "journal.sqlite"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def audit_log(self) -> Path:
        """Every control command: who, what, when, result (JSON lines)."""
        return self.root / "audit.log"

    @property
    def endpoints_file(self) -> Path:
        """Where the running system's sockets are (the CLI reads the control address)."""
        return self.root / "endpoints.json"

    @property
    def keys_dir(self) -> Path:
        """CURVE keys when the links are TCP and no other folder is configured."""
        return self.root / "keys"

    @property
    def lock_file(self) -> Path:
        return self.root / "manager.lock"

    def log_file(self, name: str) -> Path:
        """The log file of one process (a strategy id, ``broker``, ``aggregator``...)."""
        return self.logs_dir / f"{name}.log"

    def endpoint(self, name: str) -> str:
        """The ipc endpoint ``name`` (market_data, events, supervision, control)."""
        return f"ipc://{self.sock_dir / name}"

    def check(self) -> None:
        """Raise :class:`RunDirError` if this directory cannot be ours: ipc paths too long
        for the OS, a file in the way, or a directory of another user. Creates nothing."""
        longest = self.sock_dir / "market_data"
        if len(os.fsencode(longest)) > _MAX_IPC_PATH:
            raise RunDirError(
                f"run directory {self.root} is too deep for ipc sockets "
                f"({len(os.fsencode(longest))} > {_MAX_IPC_PATH} bytes); choose a shorter path"
            )
        if self.root.exists():
            if not self.root.is_dir():
                raise RunDirError(f"run directory {self.root} exists and is not a directory")
            if self.root.stat().st_uid != os.getuid():
                raise RunDirError(f"run directory {self.root} belongs to another user")

    def create(self) -> None:
        """Make the directory tree (0700, also when it existed with looser modes), after
        :meth:`check`."""
        self.check()
        for path in (self.root, self.sock_dir, self.logs_dir, self.specs_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)  # made earlier, or by hand, with looser modes: close it
