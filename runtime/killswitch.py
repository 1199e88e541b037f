"""The kill switch: "open no position" for every strategy, kept in the run directory.

It survives a restart of any process: the manager reads it when it starts and tells every
worker that becomes ready; a worker restarted while it is on is halted again (and, when it
was asked to flatten, closes what it still holds).
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

__all__ = ["KillSwitch"]


class _State(msgspec.Struct, frozen=True):
    flatten: bool
    since_ns: int
    reason: str = ""


class KillSwitch:
    """On or off, saved to ``path`` (present = on)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: _State | None = None
        try:
            self.state = msgspec.json.decode(path.read_bytes(), type=_State)
        except FileNotFoundError:
            pass
        except (OSError, msgspec.DecodeError):
            # Unreadable: fail safe, the switch stays on until someone lifts it.
            self.state = _State(False, time.time_ns(), f"unreadable {path.name}")

    @property
    def on(self) -> bool:
        return self.state is not None

    @property
    def flatten(self) -> bool:
        return self.state is not None and self.state.flatten

    def engage(self, flatten: bool, reason: str) -> None:
        """Turn it on (a later flatten request widens an earlier halt)."""
        flatten = flatten or self.flatten
        since = self.state.since_ns if self.state is not None else time.time_ns()
        self.state = _State(flatten, since, reason)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(self.state))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def lift(self) -> None:
        self.state = None
        self.path.unlink(missing_ok=True)
