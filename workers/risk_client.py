"""The worker's client of the risk service: one check at a time, a deadline, fail closed.

A DEALER on the ``risk`` link. Each check carries a request id; a reply with another id is
one that came after its deadline and is dropped. No answer within ``timeout_ms`` (or no
connection at all: the socket queues only to completed connections) means the order is
rejected with :data:`UNAVAILABLE`: a risk service that does not answer blocks new orders.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import zmq

from runtime.messages import Side
from runtime.risk_messages import RISK_REPLY_DECODER, RiskCheck
from runtime.security import Security
from runtime.transport import RejectCounter, send_payload

__all__ = ["UNAVAILABLE", "RiskClient"]

UNAVAILABLE = "risk service unavailable"


class RiskClient:
    """Asks the risk service; ``ask`` is a :data:`workers.services.risk_gate.Ask`."""

    def __init__(
        self,
        security: Security,
        endpoint: str,
        strategy_id: str,
        timeout_ms: float,
        rejects: RejectCounter,
    ) -> None:
        self.socket: zmq.Socket[Any] = security.client(zmq.DEALER, "risk")
        # Queue only to a connected service: with none, a send fails at once (no wait).
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.connect(endpoint)
        self._sid = strategy_id
        self._timeout_s = timeout_ms / 1000.0
        self._rejects = rejects
        self._req_id = 0
        self.unanswered = 0
        self.late = 0

    def ask(self, order_id: str, symbol: str, side: Side, notional: float, price: float) -> str:
        self._req_id += 1
        req_id = self._req_id
        check = RiskCheck(req_id, self._sid, order_id, symbol, side, notional, price)
        sock = self.socket
        deadline = time.perf_counter() + self._timeout_s
        try:
            send_payload(sock, check, zmq.NOBLOCK)
        except zmq.Again:
            self.unanswered += 1
            return UNAVAILABLE
        while (remaining := deadline - time.perf_counter()) > 0:
            if not sock.poll(max(1, int(remaining * 1000 + 0.999))):
                continue
            try:
                verdict = RISK_REPLY_DECODER.decode(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                continue
            except msgspec.DecodeError:
                self._rejects.add("risk", "decode")
                continue
            if verdict.req_id != req_id:
                self.late += 1  # the answer to a check already given up on
                continue
            return "" if verdict.allowed else verdict.reason or "risk: refused"
        self.unanswered += 1
        return UNAVAILABLE
