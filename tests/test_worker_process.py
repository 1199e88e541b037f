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
    EventBatch,
    FeedHeartbeat,
    Hello,
    HistoryReply,
    HistoryRequest,
    Log,
    OrderFilled,
    OrderRejected,
    Stats,
    Welcome,
    candle_batch_topic,
    candle_topic,
)
from runtime.specs import Endpoints, WorkerSpec, write_spec
from tests.harness import DATA, REPO, alive, kill_group, wait_until

TOPIC = candle_topic("ETH-BTC", "5m")


def real_candles(count: int) -> list[Candle]:
    rows = read_candles(DATA / "crypto" / "ETH-BTC-5m.csv")[:count]
    return [Candle("ETH-BTC", "5m", *row, seq=i + 1) for i, row in enumerate(rows)]


class Harness:
    """Binds the three sockets a worker connects to, and starts the worker."""

    def __init__(
        self, tmp: Path, class_path: str, params: dict[str, Any], risk_timeout_ms: float = 0.0
    ) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.endpoints = Endpoints(
            market_data=f"ipc://{tmp}/md",
            events=f"ipc://{tmp}/events",
            supervision=f"ipc://{tmp}/sup",
            control=f"ipc://{tmp}/control",
            history=f"ipc://{tmp}/history",
        )
        self.pub = self._bind(zmq.XPUB, self.endpoints.market_data)
        self.events = self._bind(zmq.ROUTER, self.endpoints.events)
        self.sup = self._bind(zmq.ROUTER, self.endpoints.supervision)
        self.history = self._bind(zmq.ROUTER, self.endpoints.history)
        self.history_held: list[Candle] = []  # what the "broker" can backfill from
        self.history_requests: list[HistoryRequest] = []
        self.received: list[Event] = []
        self.batches: list[EventBatch] = []  # as they came (resent ones too)
        strategy = StrategyConfig(
            id="w1",
            class_path=class_path,
            symbols=["ETH-BTC"],
            timeframe="5m",
            params=params,
            stats_interval_s=0.1,
        )
        write_spec(
            tmp / "w1.json",
            WorkerSpec(
                name="w1",
                endpoints=self.endpoints,
                strategy=strategy,
                risk_timeout_ms=risk_timeout_ms,
            ),
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

    def handshake(self, welcome: Welcome | None = None, beat: FeedHeartbeat | None = None) -> None:
        """Answer Hello (with ``welcome``), heartbeat the feed (with ``beat``) until the
        worker says ready."""
        assert self.events.poll(20_000), "no Hello from the worker"
        identity, payload = self.events.recv_multipart()
        hello = EVENTS_UP_DECODER.decode(payload)
        assert isinstance(hello, Hello) and hello.strategy_id == "w1"
        welcome = welcome or Welcome("w1", 0, [], 0.0, 0)
        self.events.send_multipart([identity, ENCODER.encode(welcome)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sent = beat or FeedHeartbeat("test", time.time_ns(), {}, False)
            self.pub.send_multipart([HEARTBEAT_TOPIC, ENCODER.encode(sent)])
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
        """Receive and acknowledge events like the aggregator (and answer history requests
        like the broker), until ``until(received)``."""
        deadline = time.monotonic() + timeout
        while not until(self.received):
            assert time.monotonic() < deadline, f"events so far: {self.received[-5:]}"
            self.answer_history()
            if self.events.poll(20):
                identity, payload = self.events.recv_multipart()
                batch = EVENTS_UP_DECODER.decode(payload)
                assert isinstance(batch, EventBatch)
                self.batches.append(batch)
                seen = {e.seq for e in self.received}
                self.received += [e for e in batch.events if e.seq not in seen]
                last = batch.events[-1].seq
                self.events.send_multipart([identity, ENCODER.encode(Ack("w1", last))])

    def answer_history(self) -> None:
        while self.history.poll(0):
            identity, payload = self.history.recv_multipart()
            request = msgspec.msgpack.decode(payload, type=HistoryRequest)
            self.history_requests.append(request)
            held = [c for c in self.history_held if request.from_seq <= c.seq <= request.to_seq]
            first = self.history_held[0].seq if self.history_held else 0
            last = self.history_held[-1].seq if self.history_held else 0
            reply = HistoryReply(request.req_id, "test", first, last, held)
            self.history.send_multipart([identity, ENCODER.encode(reply)])

    def stats(self) -> tuple[int, int]:
        bodies = [e.body for e in self.received if isinstance(e.body, Stats)]
        return sum(b.candles for b in bodies), sum(b.frames_rejected for b in bodies)

    def close(self) -> None:
        if self.proc.poll() is None:
            kill_group(self.proc.pid)
            self.proc.wait()
        for sock in (self.pub, self.events, self.sup, self.history):
            sock.close(0)
        self.ctx.term()
        self.log.close()


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(
        class_path: str, params: dict[str, Any] | None = None, risk_timeout_ms: float = 0.0
    ) -> Harness:
        harness = Harness(tmp_path, class_path, params or {}, risk_timeout_ms)
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


def _stats_total(w: Harness, field: str) -> int:
    return sum(int(getattr(e.body, field)) for e in w.received if isinstance(e.body, Stats))


def test_a_hole_in_a_stream_is_backfilled_before_the_candle_after_it_is_used(
    make_worker: Any,
) -> None:
    w: Harness = make_worker("tests.sample_strategies:SeqRecorder")
    w.handshake()
    candles = real_candles(20)
    w.history_held = candles  # the broker's history holds everything it published
    sent = candles[:5] + candles[8:17]  # 6, 7, 8 lost in the middle; 18-20 lost at the end
    for candle in sent:
        w.publish(candle)
    # A heartbeat follows the candles sent before it: it reveals the lost tail.
    beat = FeedHeartbeat("test", time.time_ns(), {"ETH-BTC|5m": 20}, True)
    w.pub.send_multipart([HEARTBEAT_TOPIC, ENCODER.encode(beat)])
    w.pump_events(lambda _: _stats_total(w, "candles") == 20)
    # The strategy saw every candle exactly once, in seq order.
    seen = [int(e.body.message) for e in w.received if isinstance(e.body, Log)]
    assert seen == list(range(1, 21))
    assert _stats_total(w, "gaps") == 2
    assert _stats_total(w, "candles_backfilled") == 6
    assert _stats_total(w, "candles_missed") == 0
    asked = [(r.from_seq, r.to_seq) for r in w.history_requests]
    assert (6, 8) in asked and (18, 20) in asked


def test_a_batch_frame_is_checked_and_used_candle_by_candle_its_events_in_one_batch(
    make_worker: Any,
) -> None:
    w: Harness = make_worker("tests.sample_strategies:SeqRecorder")
    w.handshake()
    candles = real_candles(12)
    w.history_held = candles
    topic = candle_batch_topic("ETH-BTC", "5m")
    other = Candle("LTC-BTC", "5m", candles[1].open_time, 1.0, 1.0, 1.0, 1.0, 1.0, 2)
    w.pub.send_multipart([topic, b"\xc1 not msgpack"])
    w.pub.send_multipart([topic, ENCODER.encode([candles[0], other])])  # not all this stream's
    w.pub.send_multipart([topic, ENCODER.encode(candles[:4])])
    # 3 and 4 again (a resumed broker), then 5 and 6 lost on the way
    w.pub.send_multipart([topic, ENCODER.encode(candles[2:4] + candles[6:])])
    w.pump_events(lambda _: _stats_total(w, "candles") == 12)
    seen = [int(e.body.message) for e in w.received if isinstance(e.body, Log)]
    assert seen == list(range(1, 13)), "each candle once, in seq order, the hole filled first"
    assert _stats_total(w, "frames_rejected") == 2
    assert (_stats_total(w, "gaps"), _stats_total(w, "candles_backfilled")) == (1, 2)
    assert _stats_total(w, "candles_duplicate") == 2
    # One EventBatch per frame: a frame's candles are journaled all or none, with the cursor
    # after its last candle.
    decided = [
        ([int(e.body.message) for e in b.events if isinstance(e.body, Log)], b.cursor)
        for b in w.batches
        if any(isinstance(e.body, Log) for e in b.events)
    ]
    assert decided == [
        ([1, 2, 3, 4], {"ETH-BTC|5m": 4}),
        (list(range(5, 13)), {"ETH-BTC|5m": 12}),
    ]


def test_the_candles_of_a_batch_frame_price_the_risk_check(make_worker: Any) -> None:
    """The pre-trade check values an order at the last close the worker saw: a candle that
    came in a batch frame counts as much as one that came alone."""
    # Risk limits but no risk service to ask: every opening order is refused, and the
    # reason says whether a price was known (the check was asked) or not.
    w: Harness = make_worker("tests.sample_strategies:Flip", risk_timeout_ms=50)
    w.handshake()
    candles = real_candles(3)
    w.pub.send_multipart([candle_batch_topic("ETH-BTC", "5m"), ENCODER.encode(candles)])
    w.pump_events(lambda _: _stats_total(w, "candles") == 3)
    reasons = [e.body.reason for e in w.received if isinstance(e.body, OrderRejected)]
    assert reasons, "Flip wants to open on the first candle"
    assert set(reasons) == {"risk service unavailable"}, reasons


def test_a_hole_older_than_history_is_reported_lost_and_the_stream_goes_on(
    make_worker: Any,
) -> None:
    w: Harness = make_worker("tests.sample_strategies:SeqRecorder")
    w.handshake()
    candles = real_candles(12)
    w.history_held = candles[6:]  # the broker has forgotten seqs 1-6
    sent = candles[:3] + candles[8:]  # 4-8 lost; only 7 and 8 can be backfilled
    for candle in sent:
        w.publish(candle)
    w.pump_events(lambda _: _stats_total(w, "candles") == 9)
    seen = [int(e.body.message) for e in w.received if isinstance(e.body, Log)]
    assert seen == [1, 2, 3, 7, 8, 9, 10, 11, 12]
    assert _stats_total(w, "candles_missed") == 3
    assert _stats_total(w, "candles_backfilled") == 2


def test_candles_an_earlier_worker_acted_on_are_warmed_on_not_acted_on_again(
    make_worker: Any,
) -> None:
    w: Harness = make_worker("tests.sample_strategies:WarmthReporter")
    candles = real_candles(15)
    # The journal's cursor is at 10, but the broker restarted from its saved position at 6
    # (it saves about once a heartbeat) and sends 7-10 again.
    w.history_held = candles[:6]
    stream = "ETH-BTC|5m"
    welcome = Welcome("w1", 0, [], 0.0, 0, {stream: 10}, [], "e1")
    w.handshake(welcome, FeedHeartbeat("b2", time.time_ns(), {stream: 6}, True, "e1"))
    for candle in candles[6:]:
        w.publish(candle)
    w.history_held = candles

    def decided(_: Any) -> list[str]:
        return [e.body.message for e in w.received if isinstance(e.body, Log)]

    w.pump_events(lambda _: len(decided(_)) >= 5)
    # 1-10 rebuilt its state (6 from history, 7-10 as they came again); it acted on 11-15.
    assert decided(None) == [f"seen={s} seq={s}" for s in range(11, 16)]


def test_a_batch_lost_on_the_way_is_resent_when_an_ack_shows_the_hole(
    make_worker: Any,
) -> None:
    w: Harness = make_worker("tests.sample_strategies:SeqRecorder")
    w.handshake()
    for candle in real_candles(10):
        w.publish(candle)
    journal: dict[int, Event] = {}
    dropped: EventBatch | None = None

    def logged() -> list[int]:
        upto = 0
        while upto + 1 in journal:
            upto += 1
        bodies = [journal[s].body for s in range(1, upto + 1)]
        return [int(b.message) for b in bodies if isinstance(b, Log)]

    deadline = time.monotonic() + 20
    while logged() != list(range(1, 11)):
        assert time.monotonic() < deadline, f"journal so far: {sorted(journal)}"
        if not w.events.poll(20):
            continue
        identity, payload = w.events.recv_multipart()
        batch = EVENTS_UP_DECODER.decode(payload)
        assert isinstance(batch, EventBatch)
        is_third = any(isinstance(e.body, Log) and e.body.message == "3" for e in batch.events)
        if dropped is None and is_third:
            dropped = batch  # lost in a killed aggregator's socket
            continue
        journal.update({e.seq: e for e in batch.events})
        upto = 0
        while upto + 1 in journal:
            upto += 1
        # As the aggregator does: acknowledged up to the hole, and what it received.
        w.events.send_multipart([identity, ENCODER.encode(Ack("w1", upto, max(journal)))])
    assert dropped is not None
    # Resent on seeing the hole, not after the 5 s ack stall (its log line comes after
    # the resend, so it may reach the file a moment after the frames reached us).
    wait_until(lambda: "journal hole after seq" in w.log_path.read_text(), 10, "the log line")
