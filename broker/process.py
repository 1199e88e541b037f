"""The broker process: replay candles on PUB, heartbeat, start when the manager says so."""

from __future__ import annotations

import sys
import time
import uuid
from collections import deque
from typing import Any

import zmq

from broker.csv_source import CsvError, Row, read_candles
from broker.replay import Replay, Stream
from broker.resample import Resampler
from runtime.child import StopFlag, SupervisionLink, child_security, name_process, setup_logging
from runtime.messages import (
    HEARTBEAT_TOPIC,
    Candle,
    ChildHeartbeat,
    FeedHeartbeat,
    StartFeed,
    candle_topic,
)
from runtime.security import KeysError, Security
from runtime.specs import BrokerSpec, read_spec
from runtime.transport import RejectCounter, close_all, send_topic

__all__ = ["main"]

# Before the replay starts, heartbeats double as the subscription handshake: send them often.
_HANDSHAKE_INTERVAL_S = 0.05
# Room for bursts at speed 0; beyond it XPUB_NODROP makes sends wait rather than drop.
_SEND_HWM = 100_000


def main(argv: list[str] | None = None) -> int:
    """Run the broker described by the spec file named in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    spec = read_spec(args[0])
    if not isinstance(spec, BrokerSpec):
        raise SystemExit(f"{args[0]} is not a broker spec")
    log = setup_logging("broker", spec.log_level)
    name_process("broker", spec.name, args[0])
    stop = StopFlag()
    try:
        streams = [Stream(f.symbol, f.timeframe, read_candles(f.path)) for f in spec.broker.feeds]
    except (OSError, CsvError) as exc:
        log.error("cannot read market data: %s", exc)
        return 1
    replay = Replay(streams, spec.broker.speed)
    incarnation = uuid.uuid4().hex[:12]
    ctx: zmq.Context[Any] = zmq.Context()
    pub = sup = None
    security: Security | None = None
    try:
        try:
            security = child_security(ctx, spec, log, server=True)
        except KeysError as exc:
            log.error("%s", exc)
            return 1
        pub = security.server(
            zmq.XPUB, "market_data", bind=spec.endpoints.bind("market_data"), sndhwm=_SEND_HWM
        )
        if spec.broker.speed == 0:
            pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only a topic's first
        sup = SupervisionLink(security, spec.endpoints.supervision, spec.name, "broker")
        log.info(
            "broker %s: %d streams, %d candles, speed %g",
            incarnation,
            len(streams),
            sum(len(s.rows) for s in streams),
            spec.broker.speed,
        )
        sup.ready()
        _serve(pub, sup, replay, spec, incarnation, stop, log)
        log.info("broker stopping")
        return 0
    finally:
        close_all(pub, sup.socket if sup else None)
        if security is not None:
            security.close()
        ctx.term()


def _serve(
    pub: zmq.Socket[Any],
    sup: SupervisionLink,
    replay: Replay,
    spec: BrokerSpec,
    incarnation: str,
    stop: StopFlag,
    log: Any,
) -> None:
    poller = zmq.Poller()
    poller.register(pub, zmq.POLLIN)
    poller.register(sup.socket, zmq.POLLIN)
    publisher = _Publisher(pub, replay, spec)
    started = False
    started_at = 0.0
    published = 0
    announced_end = False
    next_heartbeat = 0.0
    interval = spec.broker.heartbeat_interval_s
    while not stop.set:
        now = time.monotonic()
        if now >= next_heartbeat:
            beat = FeedHeartbeat(
                incarnation, time.time_ns(), {s.key: s.last_seq for s in publisher.streams}, started
            )
            try:
                send_topic(pub, HEARTBEAT_TOPIC, beat, zmq.NOBLOCK)
            except zmq.Again:
                pass  # a full subscriber at speed 0; the next heartbeat will do
            next_heartbeat = now + (interval if started else _HANDSHAKE_INTERVAL_S)
        if sup.heartbeat_due(now):
            sup.heartbeat(now, ChildHeartbeat(sup.name, candles=published))
        wait_s = next_heartbeat - now
        if started:
            wait_s = min(wait_s, replay.seconds_until_next(now - started_at))
        events = dict(poller.poll(max(0, int(wait_s * 1000))))
        if pub in events and _heartbeat_subscribed(pub, sup.rejects):
            next_heartbeat = 0.0  # a subscriber just joined: answer it at once (handshake)
        if sup.socket in events:
            for command in sup.receive():
                if isinstance(command, StartFeed) and not started:
                    started, started_at = True, time.monotonic()
                    log.info("feed started")
        if started:
            published += publisher.publish_due(time.monotonic() - started_at, stop)
            if replay.finished and not announced_end:
                log.info("replay finished after %d candles; heartbeats continue", published)
                announced_end = True


_HEARTBEAT_SUBSCRIBE = b"\x01" + HEARTBEAT_TOPIC


def _heartbeat_subscribed(pub: zmq.Socket[Any], rejects: RejectCounter) -> bool:
    """Read XPUB's (un)subscription frames; True if someone subscribed to heartbeats.

    Anything else a subscriber sends upstream is counted and dropped.

    A worker is ready once it has seen a heartbeat (its subscriptions have then reached us),
    so answering a new heartbeat subscriber at once makes a restarted worker ready in
    milliseconds instead of up to one heartbeat interval.
    """
    joined = False
    while True:
        try:
            frame = pub.recv(zmq.NOBLOCK)
        except zmq.Again:
            return joined
        if not frame or frame[0] not in (0, 1) or pub.getsockopt(zmq.RCVMORE):
            rejects.add("market_data", "not_subscription")
            while pub.getsockopt(zmq.RCVMORE):
                pub.recv()
            continue
        joined = joined or frame == _HEARTBEAT_SUBSCRIBE


class _Publisher:
    """Publishes the replay's candles and the higher-timeframe candles built from them.

    A resampled candle is queued when its last base candle goes out and sent before the next
    base candle, so at speed 0 (where a send may have to wait) none is ever dropped.
    """

    def __init__(self, pub: zmq.Socket[Any], replay: Replay, spec: BrokerSpec) -> None:
        self._pub = pub
        self._replay = replay
        self._backlog: deque[Candle] = deque()
        self.derived: dict[str, list[tuple[Stream, Resampler]]] = {}
        for feed in spec.broker.feeds:
            self.derived[feed.stream] = [
                (Stream(feed.symbol, tf, ()), Resampler(feed.timeframe, tf))
                for tf in feed.resample_to
            ]

    @property
    def streams(self) -> list[Stream]:
        """Every stream published: the replayed ones and the resampled ones."""
        return [*self._replay.streams, *(s for d in self.derived.values() for s, _ in d)]

    def publish_due(self, elapsed_s: float, stop: StopFlag) -> int:
        """Publish what is due by ``elapsed_s``; returns how many candles went out."""
        sent = 0
        # Bound one burst so heartbeats and commands are still served at speed 0.
        while sent < 1000 and not stop.set:
            if self._backlog:
                if not self._send(self._backlog[0]):
                    break
                self._backlog.popleft()
            elif self._replay.seconds_until_next(elapsed_s) == 0.0:
                candle = self._replay.peek(time.time_ns())
                assert candle is not None
                if not self._send(candle):
                    break
                self._replay.advance()
                self._resample(candle)
            else:
                break
            sent += 1
        return sent

    def _send(self, candle: Candle) -> bool:
        try:
            send_topic(
                self._pub, candle_topic(candle.symbol, candle.timeframe), candle, zmq.NOBLOCK
            )
        except zmq.Again:
            return False  # subscribers are full (speed 0): try again on the next turn
        return True

    def _resample(self, candle: Candle) -> None:
        row = Row(
            candle.open_time, candle.open, candle.high, candle.low, candle.close, candle.volume
        )
        for stream, resampler in self.derived.get(f"{candle.symbol}|{candle.timeframe}", ()):
            for bar in resampler.update(row):
                stream.last_seq += 1
                self._backlog.append(
                    Candle(
                        stream.symbol,
                        stream.timeframe,
                        *bar,
                        seq=stream.last_seq,
                        publish_ns=time.time_ns(),
                    )
                )


if __name__ == "__main__":
    sys.exit(main())
