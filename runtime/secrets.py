"""Secrets (exchange keys) a strategy needs: named in the config, read only when used.

A config never holds a secret's value, only where to find it: an environment variable, or a
file that only its owner can read (mode 0600 or stricter). Specs on disk, logs and events
carry the reference at most; a :class:`Secret` prints as ``Secret('***')``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec

__all__ = ["Secret", "SecretError", "SecretRef", "problem", "resolve"]


class SecretError(Exception):
    """A secret cannot be read (unset variable, missing file, loose file mode)."""


class SecretRef(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Where one secret is: ``{ env = "NAME" }`` or ``{ file = "path" }`` (exactly one)."""

    env: str | None = None
    file: str | None = None


class Secret:
    """A secret value that does not show itself by accident (repr, str, f-strings, logs)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one call that needs it (an exchange client)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def problem(ref: SecretRef) -> str | None:
    """What keeps ``ref`` from being read, or None (nothing is read but the file's mode)."""
    if (ref.env is None) == (ref.file is None):
        return 'give exactly one of env = "NAME" or file = "path"'
    if ref.env is not None:
        return None if os.environ.get(ref.env) else f"environment variable {ref.env} is not set"
    path = Path(str(ref.file))
    try:
        info = path.stat()
    except OSError:
        return f"no such file: {path}"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file: {path}"
    if stat.S_IMODE(info.st_mode) & 0o077:
        return f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; a secret file must be 0600"
    if info.st_uid != os.getuid():
        return f"{path} belongs to another user"
    return None


def resolve(ref: SecretRef) -> Secret:
    """Read the secret now (so a rotated key is picked up by the next start)."""
    if (why := problem(ref)) is not None:
        raise SecretError(why)
    if ref.env is not None:
        return Secret(os.environ[ref.env])
    return Secret(Path(str(ref.file)).read_text(encoding="utf-8").strip())
