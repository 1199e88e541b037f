"""The CLI's side of the control socket: a DEALER, one request id per call, a timeout."""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq

from runtime.messages import CONTROL_REPLY_DECODER, ControlReply, ControlRequest
from runtime.rundir import RunDir
from runtime.security import CurveKeys, Security
from runtime.specs import Endpoints
from runtime.transport import RejectCounter, close_all, send_payload

__all__ = ["ControlClient", "ControlError"]

_ids = itertools.count(1)


class ControlError(Exception):
    """No manager answered, or it answered with an error."""


class ControlClient:
    """Sends one request at a time and waits for the reply carrying the same id."""

    def __init__(
        self, endpoint: str, timeout_s: float = 5.0, keys: CurveKeys | None = None
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.keys = keys
        self.endpoints: Endpoints | None = None
        self.lock_file: Path | None = None  # the manager's lock, holding its pid

    @classmethod
    def for_run_dir(cls, run_dir: RunDir, timeout_s: float = 5.0) -> ControlClient:
        """A client of the system in ``run_dir``: its control address and, on TCP, its keys."""
        try:
            ends = msgspec.json.decode(run_dir.endpoints_file.read_bytes(), type=Endpoints)
        except (OSError, msgspec.DecodeError):
            client = cls(run_dir.endpoint("control"), timeout_s)
        else:
            keys = CurveKeys.load(ends.keys_dir, server=False) if ends.keys_dir else None
            client = cls(ends.control, timeout_s, keys)
            client.endpoints = ends
        client.lock_file = run_dir.lock_file
        return client

    def _check_manager_alive(self) -> None:
        """Fail at once, instead of after the timeout, when what the run directory names
        cannot answer: no ipc socket, or the pid in the manager's lock file has exited (an
        ``endpoints.json`` or a socket file left behind by a killed manager)."""
        path = self.endpoint.removeprefix("ipc://")
        if self.endpoint.startswith("ipc://") and not os.path.exists(path):
            raise ControlError(f"no stratrun manager is running (no socket {path})")
        pid = _lock_holder(self.lock_file) if self.lock_file is not None else None
        if pid is not None and not _alive(pid):
            raise ControlError(
                f"no stratrun manager is running (pid {pid} in {self.lock_file} has exited)"
            )

    def request(self, request: ControlRequest) -> ControlReply:
        """Send ``request``; replies with another id (stale ones) are dropped."""
        self._check_manager_alive()
        ctx: zmq.Context[Any] = zmq.Context()
        security = Security(ctx, self.keys, RejectCounter(), logging.getLogger("stratrun"))
        sock = security.client(zmq.DEALER, "control_reply", connect=self.endpoint)
        try:
            send_payload(sock, request)
            deadline = time.monotonic() + self.timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                if not sock.poll(int(remaining * 1000) + 1):
                    break
                try:
                    reply: ControlReply = CONTROL_REPLY_DECODER.decode(sock.recv())
                except msgspec.DecodeError:
                    continue
                if reply.req_id == request.req_id:
                    return reply
            raise ControlError(f"the manager did not answer within {self.timeout_s:g}s")
        finally:
            close_all(sock)
            security.close()
            ctx.term()

    @staticmethod
    def next_id() -> int:
        """A request id unique within this process."""
        return next(_ids) + (os.getpid() << 20)


def _lock_holder(lock_file: Path) -> int | None:
    """The pid the manager wrote in its lock file, or None if there is none to read."""
    try:
        text = lock_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
