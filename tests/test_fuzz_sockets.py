"""Fuzz every socket of a running system with seeded random and mutated frames.

Targets: the aggregator's events and risk ROUTERs, the broker's history ROUTER, the
manager's control and supervision ROUTERs, the broker's market-data XPUB (what a subscriber
sends upstream) and, through a relay the workers connect to
(``[runtime] connect.market_data``), forged frames published to every worker. Only frames
the protocol must refuse are sent (a generated frame that happens to be valid, like a real
``down`` request, is drawn again), so every frame sent must show up in
``stratrun_frames_rejected_total`` of the process that received it (a forged candle whose
seq a worker has already seen is dropped as a repeat and counted in
``stratrun_candles_duplicate_total``). No process may die, and every strategy must keep
trading on the real feed. A new target is one more :class:`Target` in ``TARGETS``.
"""

from __future__ import annotations

import math
import queue
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from runtime.messages import (
    CANDLE_DECODER,
    CONTROL_REQUEST_DECODER,
    ENCODER,
    EVENTS_UP_DECODER,
    FEED_HEARTBEAT_DECODER,
    HEARTBEAT_TOPIC,
    HISTORY_REQUEST_DECODER,
    Candle,
    ChildHeartbeat,
    ChildReady,
    DownRequest,
    Event,
    FeedHeartbeat,
    Hello,
    HistoryRequest,
    ProcessFigures,
    ProcessRow,
    PsRequest,
    Signal,
    Stats,
    StopRequest,
    StrictDecoder,
    candle_topic,
)
from runtime.risk_messages import RISK_REQUEST_DECODER, RiskCheck
from runtime.transport import MAX_FRAME_BYTES
from tests.harness import RunningSystem, eth_system, fetch, sma_strategy, wait_until, write_config

SEED = 20261125
STRATEGIES = ("s1", "s2")
TOPIC = candle_topic("ETH-BTC", "5m")
FIRST_OPEN_TIME = 1515560100000  # the first candle of the bundled ETH-BTC 5m file

Frames = list[bytes]


# --------------------------------------------------------------------------- generator


def _mutate(rng: random.Random, payload: bytes) -> bytes:
    """One random mutation of a valid payload (or of random bytes)."""
    data = bytearray(payload)
    match rng.randrange(7):
        case 0 if data:  # flip bytes
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        case 1 if data:  # truncate
            del data[rng.randrange(len(data)) :]
        case 2:  # insert random bytes
            at = rng.randint(0, len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        case 3 if data:  # duplicate a slice
            a = rng.randrange(len(data))
            data += data[a : a + rng.randint(1, 16)]
        case 4:  # random bytes altogether
            return rng.randbytes(rng.randint(0, 300))
        case 5:  # a random msgpack value of the wrong shape
            return ENCODER.encode(rng.choice([None, 1, -1, "x", [1, 2], {"type": "nope"}, 1e308]))
        case _:  # the payload one byte short (or a msgpack byte that is never valid)
            return bytes(data[:-1]) if data else b"\xc1"
    return bytes(data)


def _frames(rng: random.Random, payload: bytes, usual: int) -> Frames:
    """Mostly ``usual`` frames; sometimes a wrong frame count."""
    if rng.random() < 0.9:
        return [payload, *(rng.randbytes(rng.randint(0, 20)) for _ in range(usual - 1))]
    count = rng.choice([n for n in range(1, 5) if n != usual])
    return [payload, *(rng.randbytes(rng.randint(0, 20)) for _ in range(count - 1))]


def _decodes(decoder: StrictDecoder[Any], payload: bytes) -> Any:
    try:
        return decoder.decode(payload)
    except msgspec.DecodeError:
        return None


def _bad_candles() -> list[bytes]:
    """Well-formed frames with values a candle may not have: each must be refused."""
    good = Candle("ETH-BTC", "5m", FIRST_OPEN_TIME + 300_000, 0.1, 0.11, 0.09, 0.1, 5.0, 7)
    fields = msgspec.structs.asdict(good)
    bad: list[dict[str, Any]] = [
        {"open": math.nan},
        {"close": math.inf},
        {"high": -math.inf},
        {"low": -0.1},
        {"open": 0.0},
        {"high": 0.05},  # high below open and close
        {"low": 0.2},  # low above them
        {"volume": -1.0},
        {"seq": 0},
        {"open_time": FIRST_OPEN_TIME - 1},  # older than any real candle: time went back
        {"open_time": 1},
        {"symbol": "LTC-BTC"},  # payload of another stream under this topic
    ]
    return [ENCODER.encode(list({**fields, **change}.values())) for change in bad]


VALID_CANDLE = ENCODER.encode(
    Candle("ETH-BTC", "5m", FIRST_OPEN_TIME - 300_000, 0.1, 0.11, 0.09, 0.1, 5.0, 3)
)
VALID_BEAT = ENCODER.encode(FeedHeartbeat("forged", 1, {"ETH-BTC|5m": 1}, True))
BAD_CANDLES = _bad_candles()


def market_data_frame(rng: random.Random) -> Frames | None:
    """A forged publication every worker subscribed to ETH-BTC 5m receives and must refuse."""
    kind = rng.random()
    if kind < 0.15:
        topic, payload = TOPIC, rng.choice(BAD_CANDLES)
    elif kind < 0.55:
        topic, payload = TOPIC, _mutate(rng, VALID_CANDLE)
    elif kind < 0.8:
        topic, payload = HEARTBEAT_TOPIC, _mutate(rng, VALID_BEAT)
    else:  # a topic that passes the subscription prefix but is not a stream
        topic = rng.choice([TOPIC, HEARTBEAT_TOPIC]) + rng.randbytes(rng.randint(1, 6))
        payload = VALID_CANDLE
    frames = [topic, *_frames(rng, payload, 1)]  # [topic, payload] most of the time
    if rng.random() < 0.03:
        frames = [topic]  # a topic alone
    if (
        len(frames) == 2
        and frames[0] == HEARTBEAT_TOPIC
        and _decodes(FEED_HEARTBEAT_DECODER, frames[1])
    ):
        return None  # a well-formed heartbeat is not refusable
    if len(frames) == 2 and frames[0] == TOPIC:
        candle = _decodes(CANDLE_DECODER, frames[1])
        same_stream = candle is not None and (candle.symbol, candle.timeframe) == ("ETH-BTC", "5m")
        if same_stream and candle.open_time >= FIRST_OPEN_TIME:
            return None  # indistinguishable from a real candle: not a refusable frame
    return frames


EVENT_SAMPLES = [
    ENCODER.encode(Event("s1", 1, 1, Stats(3))),
    ENCODER.encode(Event("s9", 4, 2, Signal("ETH-BTC", "5m", "long"))),
    ENCODER.encode(Hello("s1", 123)),
    ENCODER.encode(ProcessFigures([ProcessRow("s1", "worker", 1, "running", 1.0, 0)])),
]


def events_frame(rng: random.Random) -> Frames | None:
    frames = _frames(rng, _mutate(rng, rng.choice(EVENT_SAMPLES)), 1)
    if len(frames) == 1 and _decodes(EVENTS_UP_DECODER, frames[0]) is not None:
        return None  # a valid event would be journaled: not a refusable frame
    return frames


HISTORY_SAMPLES = [
    ENCODER.encode(HistoryRequest(1, "ETH-BTC|5m", 1, 10)),
    ENCODER.encode(HistoryRequest(2, "ETH-BTC|5m", 0, 5000)),
    ENCODER.encode(HistoryRequest(3, "NOPE|1m", 4, 2)),
]


def history_frame(rng: random.Random) -> Frames | None:
    frames = _frames(rng, _mutate(rng, rng.choice(HISTORY_SAMPLES)), 1)
    if len(frames) == 1 and _decodes(HISTORY_REQUEST_DECODER, frames[0]) is not None:
        return None  # a well-formed request is answered, not refused
    return frames


CONTROL_SAMPLES = [
    ENCODER.encode(StopRequest(1, "s1")),
    ENCODER.encode(DownRequest(2)),
    ENCODER.encode(PsRequest(3)),
]


def control_frame(rng: random.Random) -> Frames | None:
    frames = _frames(rng, _mutate(rng, rng.choice(CONTROL_SAMPLES)), 1)
    if len(frames) == 1 and _decodes(CONTROL_REQUEST_DECODER, frames[0]) is not None:
        return None  # a valid command would be obeyed: not a refusable frame
    return frames


RISK_SAMPLES = [
    ENCODER.encode(RiskCheck(1, "s1", "s1-900", "ETH-BTC", "buy", 0.1, 0.1)),
    ENCODER.encode(RiskCheck(2, "s2", "s2-900", "ETH-BTC", "sell", 5.0)),
]


def risk_frame(rng: random.Random) -> Frames | None:
    frames = _frames(rng, _mutate(rng, rng.choice(RISK_SAMPLES)), 1)
    if len(frames) == 1 and _decodes(RISK_REQUEST_DECODER, frames[0]) is not None:
        return None  # a well-formed check is answered (and may reserve), not refused
    return frames


SUPERVISION_SAMPLES = [
    ENCODER.encode(ChildReady("s1", "worker", 1)),
    ENCODER.encode(ChildHeartbeat("broker", candles=5)),
]


def supervision_frame(rng: random.Random) -> Frames | None:
    # From an identity the manager never started: even a well-formed frame is refused.
    if rng.random() < 0.05:
        return [rng.choice(SUPERVISION_SAMPLES)]
    return _frames(rng, _mutate(rng, rng.choice(SUPERVISION_SAMPLES)), 1)


def upstream_frame(rng: random.Random) -> Frames | None:
    """What a subscriber sends the broker besides (un)subscriptions.

    One frame per message: libzmq's XPUB looks at every frame of an upstream message for a
    subscription, so a multi-frame message is not one unit there and cannot be tallied.
    """
    first = _mutate(rng, b"\x01c|ETH-BTC|5m|")
    if first[:1] in (b"\x00", b"\x01"):
        return None  # a subscription (to whatever prefix) is legitimate
    return [first]


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One socket under fire: how to reach it, what to send, whose counters must add up.

    ``counted_by`` are the ``(process, socket)`` pairs of ``stratrun_frames_rejected_total``
    that must each grow by the number of frames sent.
    """

    name: str
    count: int
    make: Callable[[random.Random], Frames | None]
    counted_by: tuple[tuple[str, str], ...]
    kind: int = zmq.DEALER
    endpoint: Callable[[RunningSystem], str] | None = None  # None: through the relay
    identity: bytes | None = None


TARGETS = [
    Target(
        "events ROUTER (aggregator)",
        30_000,
        events_frame,
        (("aggregator", "events"),),
        endpoint=lambda s: s.run_dir.endpoint("events"),
    ),
    Target(
        "history ROUTER (broker)",
        10_000,
        history_frame,
        (("broker", "history"),),
        endpoint=lambda s: s.run_dir.endpoint("history"),
    ),
    Target(
        "control ROUTER (manager)",
        20_000,
        control_frame,
        (("manager", "control"),),
        endpoint=lambda s: s.run_dir.endpoint("control"),
    ),
    Target(
        "supervision ROUTER (manager)",
        20_000,
        supervision_frame,
        (("manager", "supervision"),),
        endpoint=lambda s: s.run_dir.endpoint("supervision"),
        identity=b"fuzz-not-a-child",
    ),
    Target(
        "risk ROUTER (aggregator)",
        10_000,
        risk_frame,
        (("aggregator", "risk"),),
        endpoint=lambda s: s.run_dir.endpoint("risk"),
    ),
    Target(
        "market-data XPUB upstream (broker)",
        5_000,
        upstream_frame,
        (("broker", "market_data"),),
        kind=zmq.XSUB,
        endpoint=lambda s: s.run_dir.endpoint("market_data"),
    ),
    Target(
        "forged publisher (every worker)",
        30_000,
        market_data_frame,
        tuple((sid, "market_data") for sid in STRATEGIES),
    ),
]


def generate(target: Target, rng: random.Random) -> Iterator[Frames]:
    sent = 0
    while sent < target.count:
        frames = target.make(rng)
        if frames is not None:
            sent += 1
            yield frames


# --------------------------------------------------------------------------- the relay


class Relay:
    """Sits between the broker and the workers (they connect to it), forwarding both ways;
    it also publishes the forged frames it is handed. Runs in its own thread."""

    def __init__(self, ctx: zmq.Context[Any], broker: str, bind: str) -> None:
        self._ctx = ctx
        self._broker = broker
        self._bind = bind
        self.forged: queue.Queue[list[Frames]] = queue.Queue()
        self.stop = threading.Event()
        self.bound = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.bound.wait(5), "the relay did not bind"

    def _run(self) -> None:
        xsub = self._ctx.socket(zmq.XSUB)
        xpub = self._ctx.socket(zmq.XPUB)
        for sock in (xsub, xpub):
            sock.linger = 0
        xpub.sndhwm = 0  # forged frames must not be dropped on the way: they are counted
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        xpub.bind(self._bind)
        xsub.connect(self._broker)
        self.bound.set()
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        try:
            while not self.stop.is_set():
                ready = dict(poller.poll(10))
                if xsub in ready:
                    for _ in range(1000):
                        try:
                            xpub.send_multipart(xsub.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                if xpub in ready:
                    for _ in range(1000):
                        try:
                            xsub.send_multipart(xpub.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            break
                try:
                    batch = self.forged.get_nowait()
                except queue.Empty:
                    continue
                for frames in batch:
                    xpub.send_multipart(frames)
        finally:
            xsub.close(0)
            xpub.close(0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


# --------------------------------------------------------------------------- the test


def _rejects(url: str) -> Counter[tuple[str, str, str]]:
    """``stratrun_frames_rejected_total`` by (process, socket, reason), from one scrape.

    A forged candle whose seq a worker has already seen is dropped as a repeat (what a
    resumed broker resends looks the same), counted in ``stratrun_candles_duplicate_total``:
    it is added here as reason ``duplicate``, so every forged frame is accounted for.
    """
    found: Counter[tuple[str, str, str]] = Counter()
    scrape = fetch(url)
    for labels, value in re.findall(
        r"^stratrun_frames_rejected_total\{(.*)\} (\S+)$", scrape, re.M
    ):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found[(label["process"], label["socket"], label["reason"])] += int(float(value))
    for sid, value in re.findall(
        r'^stratrun_candles_duplicate_total\{strategy_id="([^"]*)"\} (\S+)$', scrape, re.M
    ):
        found[(sid, "market_data", "duplicate")] += int(float(value))
    return found


def _by_socket(counts: Counter[tuple[str, str, str]]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for (process, socket, _), value in counts.items():
        out[(process, socket)] += value
    return out


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[RunningSystem, Relay]]:
    relay_address = f"ipc://{tmp_path}/relay"
    head = eth_system(speed=3000, runtime=f'connect = {{ market_data = "{relay_address}" }}')
    head += "\n[risk]\nmax_open_orders = 1000\n"  # so that the risk ROUTER is there too
    body = head + "".join(sma_strategy(sid, 5 + i, 20 + i) for i, sid in enumerate(STRATEGIES))
    config = write_config(tmp_path / "fuzz.toml", body)
    ctx: zmq.Context[Any] = zmq.Context()
    relay = Relay(ctx, f"ipc://{tmp_path}/run/sock/market_data", relay_address)
    running = RunningSystem(config, tmp_path / "run")
    try:
        yield running, relay
    finally:
        leftovers = running.cleanup()
        relay.close()
        ctx.term()
        assert not leftovers, f"processes left running: {leftovers}"


def test_fuzzed_sockets_refuse_and_count_every_frame_and_trading_goes_on(
    system: tuple[RunningSystem, Relay],
) -> None:
    running, relay = system
    rows = running.wait_all_running()
    pids = {name: row.pid for name, row in rows.items()}
    url = rows["aggregator"].detail["metrics_url"]
    wait_until(
        lambda: all(r.candles > 0 for n, r in running.ps().items() if n in STRATEGIES),
        30,
        "every strategy to trade on the real feed",
    )
    before = _rejects(url)
    rng = random.Random(SEED)
    ctx: zmq.Context[Any] = zmq.Context()
    sent: dict[str, int] = {}
    clients: list[zmq.Socket[Any]] = []  # open until the end: queued frames must get out
    try:
        for target in TARGETS:
            frames = generate(target, rng)
            if target.endpoint is None:
                batch: list[Frames] = []
                for message in frames:
                    batch.append(message)
                    if len(batch) == 1000:
                        relay.forged.put(batch)
                        batch = []
                relay.forged.put(batch)
            else:
                sock = ctx.socket(target.kind)
                sock.linger = 0
                sock.sndhwm = 0
                if target.identity is not None:
                    sock.identity = target.identity
                sock.connect(target.endpoint(running))
                clients.append(sock)
                for message in frames:
                    sock.send_multipart(message)
            sent[target.name] = target.count

        last: list[Counter[tuple[str, str, str]]] = [Counter()]

        def settled() -> Counter[tuple[str, str, str]] | None:
            last[0] = now = _rejects(url)
            grown = _by_socket(now) - _by_socket(before)
            for target in TARGETS:
                if any(grown[key] != target.count for key in target.counted_by):
                    return None
            return now

        try:
            after = wait_until(settled, 40, "the reject counters to add up to what was sent")
        except AssertionError as exc:
            grown = _by_socket(last[0]) - _by_socket(before)
            expected = {key: t.count for t in TARGETS for key in t.counted_by}
            raise AssertionError(f"{exc}: counted {dict(grown)}, sent {expected}") from None
        # Oversized frames never reach the code: libzmq drops the sender (ZMQ_MAXMSGSIZE).
        for target in TARGETS:
            if target.endpoint is None or target.kind != zmq.DEALER:
                continue
            big = ctx.socket(zmq.DEALER)
            big.linger = 0
            big.connect(target.endpoint(running))
            clients.append(big)
            big.send(b"\x00" * (MAX_FRAME_BYTES * 9))
            if target.counted_by == (("manager", "control"),):
                # Had the manager read it, it would answer "bad request" at once.
                assert not big.poll(1000), "an oversized control frame got a reply"
        assert running.ps(), "the manager still answers after the oversized frames"
        assert _by_socket(_rejects(url)) == _by_socket(after), "oversized frames never counted"
    finally:
        ctx.destroy(linger=0)

    print(f"\nfuzz (seed {SEED}): {sum(sent.values())} frames sent")
    for target in TARGETS:
        print(f"  {target.name:<38} {target.count:>7} frames")
    print("rejects counted (process, socket, reason):")
    for key, value in sorted((after - before).items()):
        print(f"  {'/'.join(key):<50} {value:>7}")
    assert sum(sent.values()) >= 100_000

    rows = running.ps()
    assert {n: r.pid for n, r in rows.items()} == pids, "no process died or was restarted"
    assert all(r.state == "running" and r.restarts == 0 for r in rows.values())
    candles = {sid: rows[sid].candles for sid in STRATEGIES}
    wait_until(
        lambda: all(running.ps()[sid].candles > candles[sid] for sid in STRATEGIES),
        30,
        "every strategy to keep trading on the real feed after the fuzzing",
    )
    ids = {sid for (sid,) in running.journal_rows("SELECT DISTINCT strategy_id FROM events")}
    assert ids <= set(STRATEGIES), f"the journal took events from nobody: {ids}"
