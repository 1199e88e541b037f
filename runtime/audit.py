"""The audit log: every control command, who sent it, when, and what came of it.

One JSON object per line in ``<run_dir>/audit.log``: a ``request`` line when a command
arrives and a ``reply`` line when it is answered, both with the peer and the request id.
On TCP the peer is the CURVE public key the authenticator accepted (``user_id``) and its
address; on ipc the socket lives in the owner-only run directory, so the peer is that uid.
The file rotates by size like the process logs (``audit.log.1`` is the most recent), but
always keeps at least one old file: an audit record is never simply truncated away.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec
import zmq

from runtime.log_handler import rotate_files

__all__ = ["AuditLog", "peer_of"]


def peer_of(frame: zmq.Frame, curve: bool) -> dict[str, Any]:
    """Who sent ``frame``: CURVE key and address on TCP, the run directory's owner on ipc."""
    if curve:
        return {
            "transport": "tcp",
            "user_id": _property(frame, "User-Id"),
            "address": _property(frame, "Peer-Address"),
        }
    return {"transport": "ipc", "uid": os.getuid()}


def _property(frame: zmq.Frame, name: str) -> str:
    try:
        value = frame.get(name)
    except (zmq.ZMQError, UnicodeDecodeError):
        return ""
    return str(value)


class AuditLog:
    """Appends request and reply records; a line is flushed as soon as it is written.

    Before a line would take the file past ``max_bytes`` (0: never) it is rotated, keeping
    ``max(backups, 1)`` older files.
    """

    def __init__(self, path: Path, max_bytes: int = 0, backups: int = 1) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(backups, 1)
        self._file = self._open_file()
        self._open: dict[tuple[bytes, int], dict[str, Any]] = {}

    def _open_file(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")

    def request(self, identity: bytes, peer: dict[str, Any], request: msgspec.Struct) -> None:
        """A decoded command arrived from ``peer``."""
        fields = msgspec.to_builtins(request)
        command = fields.pop("type", type(request).__name__)
        req_id = int(fields.pop("req_id", 0))
        who = {"identity": identity.hex(), **peer}
        self._open[(identity, req_id)] = {"peer": who, "command": command, "args": fields}
        self._write(
            {"event": "request", "req_id": req_id, "peer": who, "command": command, **fields}
        )

    def reply(self, identity: bytes, reply: msgspec.Struct) -> None:
        """The command with the same request id from ``identity`` was answered."""
        fields = msgspec.to_builtins(reply)
        req_id = int(fields.get("req_id", 0))
        opened = self._open.pop((identity, req_id), {"peer": {"identity": identity.hex()}})
        result = fields.get("type", "")
        record: dict[str, Any] = {
            "event": "reply",
            "req_id": req_id,
            "peer": opened["peer"],
            "command": opened.get("command", ""),
            "result": "error" if result == "error" else "ok",
        }
        if "message" in fields:
            record["message"] = fields["message"]
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        stamp = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds")
        line = json.dumps({"ts": stamp, **record}, default=str) + "\n"
        if self.max_bytes > 0:
            size = self._file.tell()
            if size and size + len(line.encode()) > self.max_bytes:
                self._rotate()
        self._file.write(line)
        self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        rotate_files(self.path, self.backups)
        self._file = self._open_file()

    def close(self) -> None:
        self._file.close()
