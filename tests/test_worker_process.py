"""A worker as a real process, with the test playing broker, aggregator and manager."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from broker.csv_source import read_candles
from runtime.config import StrategyConfig
from runtime.messages import (
    ENCODER,
    EVENTS_UP_DECODER,
    HEARTBEAT_TOPIC,
    SUPERVISION_UP_DECODER,
    Ack,
    Candle,
    ChildHeartbeat,
    ChildReady,
    Error,
    Event,
    FeedHeartbeat,
    Hello,
    OrderFilled,
    Stats,
    Welcome,
    candle_topic,
)
from runtime.specs import Endpoints, WorkerSpec, write_spec
from tests.harness import DATA, REPO, alive, kill_group

TOPIC = candle_topic("ETH-BTC", "5m")


def real_candles(count: int) -> list[Candle]:
    rows = read_candles(DATA / "crypto" / "ETH-BTC-5m.csv")[:count]
    return [Candle("ETH-BTC", "5m", *row, seq=i + 1) for i, row in enumerate(rows)]


class Harness:
    """Binds the three sockets a worker connects to, and starts the worker."""

    def __init__(self, tmp: Path, class_path: str, params: dict[str, Any]) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.endpoints = Endpoints(
            market_data=f"ipc://{tmp}/md",
            events=f"ipc://{tmp}/events",
            supervision=f"ipc://{tmp}/sup",
            control=f"ipc://{tmp}/control",
        )
        self.pub = self._bind(zmq.XPUB, self.endpoints.market_data)
        self.events = self._bind(zmq.ROUTER, self.endpoints.events)
        self.sup = self._bind(zmq.ROUTER, self.endpoints.supervision)
        self.received: list[Event] = []
        strategy = StrategyConfig(
            id="w1",
            class_path=class_path,
            symbols=["ETH-BTC"],
            timeframe="5m",
            params=params,
            stats_interval_s=0.1,
        )
        write_spec(
            tmp / "w1.json", WorkerSpec(name="w1", endpoints=self.endpoints, strategy=strategy)
        )
        self.log_path = tmp / "w1.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers", str(tmp / "w1.json")],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _bind(self, kind: int, endpoint: str) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.ctx.socket(kind)
        sock.linger = 0
        sock.bind(endpoint)
        return sock

    def handshake(self) -> None:
        """Answer Hello, heartbeat the feed until the worker says ready."""
        assert self.events.poll(20_000), "no Hello from the worker"
        identity, payload = self.events.recv_multipart()
        hello = EVENTS_UP_DECODER.decode(payload)
        assert isinstance(hello, Hello) and hello.strategy_id == "w1"
        self.events.send_multipart([identity, ENCODER.encode(Welcome("w1", 0, [], 0.0, 0))])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            beat = FeedHeartbeat("test", time.time_ns(), {}, False)
            self.pub.send_multipart([HEARTBEAT_TOPIC, ENCODER.encode(beat)])
            if self.sup.poll(50):
                _, payload = self.sup.recv_multipart()
                if isinstance(SUPERVISION_UP_DECODER.decode(payload), ChildReady):
                    return
        raise AssertionError(f"worker never ready:\n{self.log_path.read_text()}")

    def publish(self, candle: Candle) -> None:
        self.pub.send_multipart(
            [candle_topic(candle.symbol, candle.timeframe), ENCODER.encode(candle)]
        )

    def pump_events(self, until: Any, timeout: float = 20) -> None:
        """Receive and acknowledge events like the aggregator, until ``until(received)``."""
        deadline = time.monotonic() + timeout
        while not until(self.received):
            assert time.monotonic() < deadline, f"events so far: {self.received[-5:]}"
            if self.events.poll(50):
                identity, payload = self.events.recv_multipart()
                event = EVENTS_UP_DECODER.decode(payload)
                assert isinstance(event, Event)
                if all(e.seq != event.seq for e in self.received):
                    self.received.append(event)
                self.events.send_multipart([identity, ENCODER.encode(Ack("w1", event.seq))])

    def stats(self) -> tuple[int, int]:
        bodies = [e.body for e in self.received if isinstance(e.body, Stats)]
        return sum(b.candles for b in bodies), sum(b.frames_rejected for b in bodies)

    def close(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc.pid)
            self.proc.wait()
        for sock in (self.pub, self.events, self.sup):
            sock.close(0)
        self.ctx.term()
        self.log.close()


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(class_path: str, params: dict[str, Any] | None = None) -> Harness:
        harness = Harness(tmp_path, class_path, params or {})
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in made:
            harness.close()


def test_malformed_market_data_is_counted_and_dropped(make_worker: Any) -> None:
    w: Harness = make_worker("workers.strategies.sma_cross:SmaCross", {"fast": 2, "slow": 4})
    w.handshake()
    good = real_candles(30)
    bad_candle = msgspec.msgpack.encode(
        ["ETH-BTC", "5m", 1, 1.0, 0.5, 0.9, 1.0, 1.0, 1]  # high below open
    )
    other_stream = ENCODER.encode(Candle("LTC-BTC", "5m", 1, 1.0, 1.0, 1.0, 1.0, 1.0, 1))
    malformed: list[list[bytes]] = [
        [TOPIC],  # one frame
        [TOPIC, b"x", b"y"],  # three frames
        [TOPIC, b"\xc1 not msgpack"],
        [TOPIC, bad_candle],
        [TOPIC, other_stream],  # payload of another stream under this topic
        [TOPIC + b"extra", ENCODER.encode(good[0])],  # a longer topic with our prefix
    ]
    for frames in malformed:
        w.pub.send_multipart(frames)
    for candle in good:
        w.publish(candle)
    w.pump_events(lambda _: w.stats() == (len(good), len(malformed)))
    assert alive(w.proc.pid)
    fills = [e.body for e in w.received if isinstance(e.body, OrderFilled)]
    assert fills, "the valid candles were traded on"
    opens = {c.open for c in good}
    assert all(f.price in opens for f in fills), "paper fills happen at a candle's open"
    assert [e.seq for e in w.received] == list(range(1, len(w.received) + 1))
    assert all(e.strategy_id == "w1" for e in w.received)

    w.proc.send_signal(signal.SIGTERM)
    w.pump_events(lambda _: w.proc.poll() is not None, timeout=15)
    assert w.proc.returncode == 0


def test_a_raising_strategy_is_contained_and_reported(make_worker: Any) -> None:
    w: Harness = make_worker("tests.sample_strategies:Flaky", {"every": 3})
    w.handshake()
    good = real_candles(12)
    for candle in good:
        w.publish(candle)
    w.pump_events(lambda _: w.stats()[0] == len(good))
    errors = [e.body for e in w.received if isinstance(e.body, Error)]
    assert len(errors) == len(good) // 3
    assert all(e.where == "on_candle" and "RuntimeError: flaky" in e.message for e in errors)
    assert all("Traceback" in e.traceback for e in errors)
    assert alive(w.proc.pid)
    # It kept trading between the failures.
    assert any(isinstance(e.body, OrderFilled) for e in w.received)

    heartbeat_seen = False
    deadline = time.monotonic() + 5
    while not heartbeat_seen and time.monotonic() < deadline:
        if w.sup.poll(100):
            _, payload = w.sup.recv_multipart()
            message = SUPERVISION_UP_DECODER.decode(payload)
            heartbeat_seen = isinstance(message, ChildHeartbeat) and message.candles == len(good)
    assert heartbeat_seen, "the worker reports its figures to the manager"


def test_a_hole_in_a_stream_is_counted(make_worker: Any) -> None:
    w: Harness = make_worker("workers.strategies.sma_cross:SmaCross", {"fast": 2, "slow": 4})
    w.handshake()
    candles = real_candles(20)
    sent = candles[:5] + candles[8:]  # seqs 6, 7 and 8 never arrive
    for candle in sent:
        w.publish(candle)
    w.pump_events(lambda _: w.stats()[0] == len(sent))
    missed = sum(e.body.candles_missed for e in w.received if isinstance(e.body, Stats))
    assert missed == 3
