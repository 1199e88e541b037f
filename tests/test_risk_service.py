"""The risk service's thread on real sockets, in this process: answers checks, counts and
drops malformed frames, and asks a (stand-in) manager for the kill switch until it confirms."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from runtime.messages import (
    CONTROL_REQUEST_DECODER,
    ENCODER,
    Event,
    HaltRequest,
    OkReply,
    PositionClosed,
)
from runtime.risk_config import RiskConfig
from runtime.risk_messages import RISK_REPLY_DECODER, RiskCheck, RiskVerdict
from runtime.risk_service import RiskService
from runtime.security import Security
from runtime.transport import RejectCounter
from tests.harness import wait_until


class _Setup:
    def __init__(self, tmp: Path, config: RiskConfig) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.rejects = RejectCounter()
        self.security = Security(self.ctx, None, self.rejects, logging.getLogger("test"))
        self.manager = self.ctx.socket(zmq.ROUTER)
        self.manager.linger = 0
        self.manager.bind(f"ipc://{tmp}/control")
        self.halt_file = tmp / "halt.json"
        self.service = RiskService(
            config,
            self.security,
            bind=f"ipc://{tmp}/risk",
            control=f"ipc://{tmp}/control",
            halt_file=self.halt_file,
            state_file=tmp / "risk.json",
            log=logging.getLogger("test"),
        )
        self.worker = self.ctx.socket(zmq.DEALER)
        self.worker.linger = 0
        self.worker.connect(f"ipc://{tmp}/risk")

    def ask(self, check: RiskCheck) -> RiskVerdict:
        self.worker.send(ENCODER.encode(check))
        assert self.worker.poll(5000), "no answer"
        return RISK_REPLY_DECODER.decode(self.worker.recv())

    def close(self) -> None:
        self.service.close()
        self.worker.close(0)
        self.manager.close(0)
        self.security.close()
        self.ctx.term()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[_Setup]:
    made = _Setup(tmp_path, RiskConfig(max_symbol_exposure=0.15, max_daily_loss=1.0))
    try:
        yield made
    finally:
        made.close()


def test_answers_checks_and_drops_malformed_frames(setup: _Setup) -> None:
    setup.service.start()
    setup.worker.send(b"\x93not a check")
    setup.worker.send_multipart([b"two", b"frames"])
    assert setup.ask(RiskCheck(1, "a", "a-1", "ETH-BTC", "buy", 0.1, 0.1)) == RiskVerdict(1, True)
    refused = setup.ask(RiskCheck(2, "b", "b-1", "ETH-BTC", "buy", 0.1, 0.1))
    assert refused.req_id == 2 and not refused.allowed
    assert refused.reason.startswith("risk: symbol limit: ETH-BTC")
    assert setup.rejects.by_reason == {("risk", "decode"): 1, ("risk", "frame_count"): 1}
    by_reason = setup.service.counters.snapshot()[0]
    assert by_reason == {"": 1, "symbol": 1}


def test_a_trip_asks_the_manager_until_it_confirms(setup: _Setup) -> None:
    setup.service.start()
    closed = PositionClosed("ETH-BTC", "long", 1.0, 0.1, 0.1, 0.0, -2.0, 86_400_001, 86_400_002)
    setup.service.apply(Event("a", 1, 0, closed))
    assert setup.service.book.trip_pending
    refused = setup.ask(RiskCheck(1, "a", "a-1", "ETH-BTC", "buy", 0.01, 0.1))
    assert refused.reason == "risk: daily loss limit: trading halted"
    asked: list[HaltRequest] = []
    while len(asked) < 2:  # not confirmed: asked again (about once a second)
        assert setup.manager.poll(5000), "no halt request"
        identity, payload = setup.manager.recv_multipart()
        request = CONTROL_REQUEST_DECODER.decode(payload)
        assert isinstance(request, HaltRequest)
        asked.append(request)
    assert asked[-1].reason == "daily loss limit" and not asked[-1].flatten
    setup.halt_file.write_text("{}")  # what the manager does before it answers
    setup.manager.send_multipart([identity, ENCODER.encode(OkReply(asked[-1].req_id, "ok"))])
    wait_until(lambda: not setup.service.book.trip_pending, 10, "the confirmation taken")
    assert setup.service.counters.snapshot()[4] == 1
    assert (setup.halt_file.parent / "risk.json").read_text() == '{"tripped_day":1}'
    # resume-trading removes the file: opening orders are allowed again, no second trip.
    setup.halt_file.unlink()
    wait_until(lambda: not setup.service.book.halted, 10, "the kill switch seen lifted")
    assert setup.ask(RiskCheck(2, "a", "a-2", "ETH-BTC", "buy", 0.01, 0.1)).allowed
