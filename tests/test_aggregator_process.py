"""The aggregator as a real process: journals once, acknowledges, survives malformed frames."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from runtime.config import AggregatorConfig
from runtime.journal import Journal
from runtime.messages import (
    ENCODER,
    EVENTS_DOWN_DECODER,
    SUPERVISION_UP_DECODER,
    Ack,
    ChildReady,
    Event,
    EventBatch,
    Hello,
    OrderSubmitted,
    PositionOpened,
    Stats,
    Welcome,
)
from runtime.specs import AggregatorSpec, Endpoints, write_spec
from tests.harness import REPO, alive, fetch, kill_group, wait_until


class AggregatorUnderTest:
    def __init__(self, tmp: Path) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.endpoints = Endpoints(
            market_data=f"ipc://{tmp}/md",
            events=f"ipc://{tmp}/events",
            supervision=f"ipc://{tmp}/sup",
            control=f"ipc://{tmp}/control",
        )
        self.sup = self.ctx.socket(zmq.ROUTER)
        self.sup.linger = 0
        self.sup.bind(self.endpoints.supervision)
        self.journal = tmp / "journal.sqlite"
        spec = AggregatorSpec(
            name="aggregator",
            endpoints=self.endpoints,
            aggregator=AggregatorConfig(metrics_port=0),
            journal=str(self.journal),
        )
        write_spec(tmp / "aggregator.json", spec)
        self.log = open(tmp / "aggregator.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.aggregator", str(tmp / "aggregator.json")],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.ready = self._await_ready()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.connect(self.endpoints.events)

    def _await_ready(self) -> ChildReady:
        assert self.sup.poll(20_000), "aggregator never reported ready"
        _, payload = self.sup.recv_multipart()
        message = SUPERVISION_UP_DECODER.decode(payload)
        assert isinstance(message, ChildReady)
        return message

    def reply(self, timeout_ms: int = 5000) -> Welcome | Ack:
        assert self.dealer.poll(timeout_ms), "no reply from the aggregator"
        message: Welcome | Ack = EVENTS_DOWN_DECODER.decode(self.dealer.recv())
        return message

    def close(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc.pid)
            self.proc.wait()
        self.dealer.close(0)
        self.sup.close(0)
        self.ctx.term()
        self.log.close()


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[AggregatorUnderTest]:
    under_test = AggregatorUnderTest(tmp_path)
    try:
        yield under_test
    finally:
        under_test.close()


def _event(seq: int, body: Any, sid: str = "s1") -> Event:
    return Event(sid, seq, 1_700_000_000_000_000_000 + seq, body)


def test_journals_each_event_once_and_acknowledges(aggregator: AggregatorUnderTest) -> None:
    d = aggregator.dealer
    d.send(ENCODER.encode(Hello("s1", os.getpid())))
    welcome = aggregator.reply()
    assert isinstance(welcome, Welcome) and welcome.last_seq == 0

    events = [
        _event(1, Stats(candles=10)),
        _event(2, OrderSubmitted("s1-1", "ETH-BTC", "buy", 1.0)),
        _event(3, PositionOpened("ETH-BTC", "long", 1.0, 0.1, 0.0001, 1000)),
    ]
    for event in events:
        d.send(ENCODER.encode(event))
    acked = 0
    while acked < 3:
        reply = aggregator.reply()
        assert isinstance(reply, Ack) and reply.strategy_id == "s1"
        acked = reply.seq
    d.send(ENCODER.encode(events[1]))  # a resend: acknowledged again, journaled once
    reply = aggregator.reply()
    assert isinstance(reply, Ack) and reply.seq == 3  # everything journaled up to 3

    d.send(ENCODER.encode(Hello("s1", os.getpid())))
    welcome = aggregator.reply()
    assert isinstance(welcome, Welcome)
    assert welcome.last_seq == 3 and welcome.candles == 10
    assert [p.symbol for p in welcome.open_positions] == ["ETH-BTC"]

    text = fetch(aggregator.ready.detail["metrics_url"])
    assert 'stratrun_candles_processed_total{strategy_id="s1"} 10.0' in text
    assert "stratrun_journal_duplicates_total 1.0" in text

    aggregator.proc.send_signal(signal.SIGTERM)
    assert aggregator.proc.wait(timeout=10) == 0
    journal = Journal(aggregator.journal)
    assert [e for _, e in journal.events()] == events
    journal.close()


def test_malformed_frames_are_counted_and_dropped(aggregator: AggregatorUnderTest) -> None:
    d = aggregator.dealer
    garbage = [
        [b"\xc1\xff not msgpack"],
        [msgspec.msgpack.encode({"strategy_id": "s1", "seq": 1})],  # untagged
        [ENCODER.encode(Stats(candles=1))],  # a body without its envelope
        [
            msgspec.msgpack.encode(
                {
                    "type": "event",
                    "strategy_id": "s1",
                    "seq": 0,
                    "ts_ns": 1,
                    "body": {"kind": "stats", "candles": 1},
                }
            )
        ],  # seq 0
        [b"two", b"frames"],
        [b""],
    ]
    for frames in garbage:
        d.send_multipart(frames)
    d.send(ENCODER.encode(_event(1, Stats(candles=5))))
    reply = aggregator.reply()
    assert isinstance(reply, Ack) and reply.seq == 1, "still serving after the garbage"

    def rejected() -> int:
        text = fetch(aggregator.ready.detail["metrics_url"])
        found = re.findall(
            r'stratrun_frames_rejected_total\{process="aggregator"[^}]*\} (\S+)', text
        )
        return int(sum(float(x) for x in found))

    assert wait_until(lambda: rejected() == len(garbage), 5, "the rejects to be counted")
    assert alive(aggregator.proc.pid)
    journal = Journal(aggregator.journal)
    assert [e.seq for _, e in journal.events()] == [1]
    journal.close()


def test_an_ack_never_covers_a_hole_until_a_new_worker_settles_it(
    aggregator: AggregatorUnderTest,
) -> None:
    d = aggregator.dealer
    d.send(ENCODER.encode(EventBatch("s1", [_event(1, Stats(candles=1))])))
    reply = aggregator.reply()
    assert isinstance(reply, Ack) and (reply.seq, reply.received) == (1, 1)
    # Batch 2 is lost on the way: 3 is journaled, but the ack stays at 1 and says that
    # something after the hole arrived, so the worker resends at once.
    d.send(ENCODER.encode(EventBatch("s1", [_event(3, Stats(candles=1))])))
    reply = aggregator.reply()
    assert isinstance(reply, Ack) and (reply.seq, reply.received) == (1, 3)
    d.send(ENCODER.encode(EventBatch("s1", [_event(2, Stats(candles=1))])))  # the resend
    reply = aggregator.reply()
    assert isinstance(reply, Ack) and reply.seq == 3

    # A worker killed before it could resend leaves a hole for good: its successor's
    # Hello settles it (Welcome tells it to go on after the last seq journaled).
    d.send(ENCODER.encode(EventBatch("s1", [_event(5, Stats(candles=1))])))
    reply = aggregator.reply()
    assert isinstance(reply, Ack) and (reply.seq, reply.received) == (3, 5)
    d.send(ENCODER.encode(Hello("s1", os.getpid())))
    welcome = aggregator.reply()
    assert isinstance(welcome, Welcome) and welcome.last_seq == 5 and welcome.candles == 4
    d.send(ENCODER.encode(EventBatch("s1", [_event(6, Stats(candles=1))])))
    reply = aggregator.reply()
    assert isinstance(reply, Ack) and reply.seq == 6
