"""The worker's side of the broker's history socket: fetch a range of one stream's candles."""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgspec
import zmq

from runtime.messages import HISTORY_REPLY_DECODER, Candle, HistoryReply, HistoryRequest
from runtime.transport import RejectCounter, send_payload

__all__ = ["HistoryClient", "HistoryUnavailable"]


class HistoryUnavailable(Exception):
    """The broker did not answer in time (it may be restarting)."""


class HistoryClient:
    """A DEALER to the broker's history ROUTER; one request at a time, replies matched by id."""

    def __init__(
        self, socket: zmq.Socket[Any] | None, rejects: RejectCounter, timeout_s: float = 2.0
    ) -> None:
        # No socket (a broker without a history endpoint): every fetch fails at once.
        self.socket = socket
        self._rejects = rejects
        self._timeout_s = timeout_s
        self._ids = itertools.count(1)
        self.requests = 0

    def fetch(self, stream: str, from_seq: int, to_seq: int) -> list[Candle]:
        """Candles ``from_seq..to_seq`` of ``stream``, paging as needed.

        The list starts later than ``from_seq`` when the broker no longer holds the oldest
        ones, and ends earlier than ``to_seq`` when it has not published them (yet).
        Raises :class:`HistoryUnavailable` when the broker does not answer.
        """
        candles: list[Candle] = []
        next_seq = max(1, from_seq)
        while next_seq <= to_seq:
            reply = self._ask(HistoryRequest(next(self._ids), stream, next_seq, to_seq))
            if reply.error or not reply.candles:
                break
            candles += reply.candles
            next_seq = reply.candles[-1].seq + 1
        return candles

    def _ask(self, request: HistoryRequest) -> HistoryReply:
        if self.socket is None:
            raise HistoryUnavailable("the broker has no history endpoint")
        self.requests += 1
        try:
            send_payload(self.socket, request, zmq.NOBLOCK)
        except zmq.Again:
            raise HistoryUnavailable("history requests are queued up") from None
        deadline = time.monotonic() + self._timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if not self.socket.poll(int(remaining * 1000) + 1):
                continue
            try:
                reply = HISTORY_REPLY_DECODER.decode(self.socket.recv())
            except msgspec.DecodeError:
                self._rejects.add("history", "decode")
                continue
            if reply.req_id == request.req_id:
                return reply
            # an answer to an earlier request that timed out: ignore it
        raise HistoryUnavailable(f"no history reply for {request.stream} in {self._timeout_s}s")
