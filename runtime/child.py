"""What every child process (broker, aggregator, worker) does the same way.

Logging as JSON lines to the child's own log file (rotated by size, stdout and stderr kept in
it), a stop flag set by SIGTERM/SIGINT, and the supervision link to the manager: ready once,
heartbeats after.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import msgspec
import setproctitle
import zmq

from runtime.log_handler import JsonFormatter, LineLogger, RotatingJsonHandler
from runtime.messages import (
    SUPERVISION_DOWN_DECODER,
    ChildHeartbeat,
    ChildReady,
    Role,
    SupervisionDown,
)
from runtime.security import CurveKeys, Security
from runtime.specs import ChildSpec, LogSettings
from runtime.transport import RejectCounter, send_payload

__all__ = ["StopFlag", "SupervisionLink", "child_security", "name_process", "setup_logging"]


def name_process(role: str, name: str, spec_path: str | Path) -> None:
    """Show ``stratrun <role> [<name>] <run_dir>`` in ps and top instead of the interpreter's
    command line (a zygote-forked worker would otherwise read as the zygote)."""
    run_dir = Path(spec_path).resolve().parent.parent  # specs live in <run_dir>/specs/
    title = f"stratrun {role} {run_dir}" if name == role else f"stratrun {role} {name} {run_dir}"
    setproctitle.setproctitle(title)


def setup_logging(
    name: str, process: str, level: str = "info", settings: LogSettings | None = None
) -> logging.Logger:
    """Log JSON lines (:class:`runtime.logfmt.LogLine`) for ``process``; returns logger ``name``.

    With a file in ``settings``, the process writes its log itself, rotated by size: print()
    becomes INFO lines of logger ``stdout``, and fds 1 and 2 go to the same file (nothing the
    interpreter or a C library writes there is lost); without one, lines go to stderr.
    Warnings and uncaught exceptions are logged too.
    """
    handler: logging.Handler
    if settings is not None and settings.file:
        handler = RotatingJsonHandler(
            Path(settings.file),
            process,
            settings.max_bytes,
            settings.backups,
            capture_stdio=True,
        )
        # Whole lines only on stderr: half a line there would glue a JSON line onto it.
        if isinstance(sys.stderr, io.TextIOWrapper):
            sys.stderr.reconfigure(line_buffering=True)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(process))
    # Nothing in a LogLine needs the caller's file and line, the thread or the process
    # name: not looking them up for every record takes ~30% off a line (the "Optimization"
    # section of the logging HOWTO).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in root.handlers[:]:  # a forked worker inherits the zygote's handlers
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    log = logging.getLogger(name)
    sys.excepthook = functools.partial(_log_uncaught, log)
    if settings is not None and settings.file:
        sys.stdout = LineLogger(logging.getLogger("stdout"))  # print() becomes INFO lines
    return log


def _log_uncaught(
    log: logging.Logger,
    kind: type[BaseException],
    value: BaseException,
    tb: TracebackType | None,
) -> None:
    """An exception nobody caught: one CRITICAL line with its traceback (not raw stderr)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    log.critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb))


class StopFlag:
    """Set by SIGTERM or SIGINT; the handler only records the request, the loop acts on it."""

    def __init__(self) -> None:
        self.set = False
        self._wakeup: tuple[int, int] | None = None
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set = True

    def wakeup_fd(self) -> int:
        """A file descriptor that turns readable when a signal arrives, for a loop's poll.

        A poll interrupted by a signal is resumed by pyzmq for the rest of its timeout; with
        this fd among the polled ones it returns at once instead, so a loop may sleep until
        its next timed duty and still stop as soon as it is told to.
        """
        if self._wakeup is None:
            read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
            self._wakeup = (read_end, write_end)
        return self._wakeup[0]

    def drain(self) -> None:
        """Empty the wakeup fd (it woke the loop; the flag says what to do)."""
        if self._wakeup is None:
            return
        try:
            while os.read(self._wakeup[0], 64):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Stop writing to the wakeup fd and close it."""
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None


def child_security(
    ctx: zmq.Context[Any], spec: ChildSpec, log: logging.Logger, *, server: bool
) -> Security:
    """The child's socket opener: CURVE with the system's keys on TCP, plain on ipc.

    Raises :class:`~runtime.security.KeysError` when the keys cannot be read.
    """
    keys_dir = spec.endpoints.keys_dir
    keys = CurveKeys.load(keys_dir, server=server) if keys_dir else None
    return Security(ctx, keys, RejectCounter(), log)


class SupervisionLink:
    """A child's DEALER to the manager's supervision ROUTER, identity = the child's name.

    Refused frames are counted in ``security.rejects``, the child's one reject counter,
    and every heartbeat carries that counter's totals to the manager (and on to metrics).
    """

    HEARTBEAT_INTERVAL_S = 1.0

    def __init__(self, security: Security, endpoint: str, name: str, role: Role) -> None:
        self.name = name
        self.role = role
        self.rejects = security.rejects
        self.socket = security.client(
            zmq.DEALER, "supervision", connect=endpoint, identity=name.encode()
        )
        self._next_heartbeat = 0.0

    def ready(self, **detail: str) -> None:
        """Tell the manager this child is serving."""
        send_payload(self.socket, ChildReady(self.name, self.role, os.getpid(), detail))
        self._next_heartbeat = time.monotonic() + self.HEARTBEAT_INTERVAL_S

    def heartbeat_due(self, now: float) -> bool:
        return now >= self._next_heartbeat

    @property
    def next_heartbeat(self) -> float:
        """When the next heartbeat is due (``time.monotonic()`` clock)."""
        return self._next_heartbeat

    def heartbeat(self, now: float, beat: ChildHeartbeat) -> None:
        """Send the child's figures; never blocks (dropped while the manager is away)."""
        self._next_heartbeat = now + self.HEARTBEAT_INTERVAL_S
        beat = msgspec.structs.replace(beat, rejects=self.rejects.totals())
        try:
            send_payload(self.socket, beat, zmq.NOBLOCK)
        except zmq.Again:
            pass

    def receive(self) -> list[SupervisionDown]:
        """Drain commands from the manager; undecodable frames are counted and dropped."""
        commands: list[SupervisionDown] = []
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return commands
            try:
                commands.append(SUPERVISION_DOWN_DECODER.decode(frame))
            except msgspec.DecodeError:
                self.rejects.add("supervision", "decode")
