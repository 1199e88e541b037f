"""ZeroMQ plumbing every process shares: sockets with safe defaults and framed sends.

One context per process, made in the process's ``main()``; every socket closed with
linger 0 on the way out (see :func:`close_all`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import zmq

from runtime.messages import ENCODER, RejectCount

__all__ = [
    "MAX_BYTES",
    "MAX_FRAME_BYTES",
    "RejectCounter",
    "close_all",
    "open_socket",
    "send_frames",
    "send_payload",
    "send_to_peer",
    "send_topic",
]

# Frames bigger than this are refused by libzmq before they reach us (ZMQ_MAXMSGSIZE): the
# peer that sent one is disconnected. The default, and the cap of each link by what it carries.
MAX_FRAME_BYTES = 1 << 20
MAX_BYTES: dict[str, int] = {
    "market_data": 64 << 10,  # a candle is ~100 bytes, a feed heartbeat ~50 per stream
    "events": 8 << 20,  # an error's traceback; the manager's figures of every process
    "supervision": 64 << 10,  # ready, heartbeats, commands
    "control": 64 << 10,  # requests are a name or a path (replies go the other way)
    "control_reply": 16 << 20,  # ps of a large system, on the CLI's side
    "lifecycle": 64 << 10,
    "risk": 4 << 10,  # one check or verdict: a few ids and numbers
}


def open_socket(
    ctx: zmq.Context[Any],
    kind: int,
    *,
    bind: str | None = None,
    connect: str | None = None,
    identity: bytes | None = None,
    sndhwm: int | None = None,
    rcvhwm: int | None = None,
    max_bytes: int = MAX_FRAME_BYTES,
    configure: Callable[[zmq.Socket[Any]], None] | None = None,
) -> zmq.Socket[Any]:
    """A socket with linger 0 and a frame-size cap, bound or connected as asked.

    ``configure`` runs before bind/connect (security options must be set by then).
    """
    sock: zmq.Socket[Any] = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    if configure is not None:
        configure(sock)
    if bind is not None:
        sock.bind(bind)
    if connect is not None:
        sock.connect(connect)
    return sock


def send_payload(sock: zmq.Socket[Any], message: msgspec.Struct, flags: int = 0) -> None:
    """Send one MessagePack frame."""
    sock.send(ENCODER.encode(message), flags)


def send_topic(
    sock: zmq.Socket[Any], topic: bytes, message: msgspec.Struct, flags: int = 0
) -> None:
    """Send ``[topic, payload]``; two ``send`` calls, measured faster than ``send_multipart``."""
    sock.send(topic, flags | zmq.SNDMORE)
    sock.send(ENCODER.encode(message), flags)


def send_frames(sock: zmq.Socket[Any], topic: bytes, payload: bytes, flags: int = 0) -> None:
    """Send ``[topic, payload]`` with the payload already encoded."""
    sock.send(topic, flags | zmq.SNDMORE)
    sock.send(payload, flags)


def send_to_peer(sock: zmq.Socket[Any], identity: bytes, message: msgspec.Struct) -> None:
    """ROUTER side: send one payload frame to the peer ``identity`` without blocking.

    Raises ``zmq.Again`` when that peer's queue is full.
    """
    sock.send(identity, zmq.SNDMORE | zmq.NOBLOCK)
    sock.send(ENCODER.encode(message), zmq.NOBLOCK)


def close_all(*sockets: zmq.Socket[Any] | None) -> None:
    """Close sockets with linger 0; None entries (never opened) are skipped."""
    for sock in sockets:
        if sock is not None and not sock.closed:
            sock.close(linger=0)


class RejectCounter:
    """Frames refused on each socket, by reason; read by whoever reports figures.

    Thread-safe: the security layer counts refused handshakes from its own thread.
    """

    def __init__(self) -> None:
        self.by_reason: Counter[tuple[str, str]] = Counter()
        self._reported: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, socket: str, reason: str, count: int = 1) -> None:
        with self._lock:
            self.by_reason[(socket, reason)] += count

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_reason.values())

    def totals(self) -> list[RejectCount]:
        """Every count since the start, for a cumulative report (heartbeats, figures)."""
        with self._lock:
            items = sorted(self.by_reason.items())
        return [RejectCount(socket, reason, count) for (socket, reason), count in items]

    def take_new(self) -> list[RejectCount]:
        """The counts added since the previous call, for a report of deltas (Stats)."""
        with self._lock:
            new = self.by_reason - self._reported
            self._reported = Counter(self.by_reason)
        return [
            RejectCount(socket, reason, count) for (socket, reason), count in sorted(new.items())
        ]
