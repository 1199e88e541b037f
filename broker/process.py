"""The broker process: replay candles on PUB, heartbeat, start when the manager says so,
answer history requests on a ROUTER, and resume the replay where it was after a restart."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections import deque
from typing import Any

import msgspec
import zmq

from broker.csv_source import CsvError, Row, read_candles
from broker.cursor import ReplayCursor
from broker.history import History
from broker.replay import Replay, Stream
from broker.resample import Resampler
from runtime.child import StopFlag, SupervisionLink, child_security, name_process, setup_logging
from runtime.messages import (
    ENCODER,
    HEARTBEAT_TOPIC,
    HISTORY_REQUEST_DECODER,
    Candle,
    ChildHeartbeat,
    FeedHeartbeat,
    StartFeed,
    candle_batch_topic,
    candle_topic,
)
from runtime.security import KeysError, Security
from runtime.specs import BrokerSpec, read_spec
from runtime.transport import (
    MAX_BYTES,
    RejectCounter,
    close_all,
    send_frames,
    send_to_peer,
    send_topic,
)

__all__ = ["main"]

# Before the replay starts, heartbeats double as the subscription handshake: send them often.
_HANDSHAKE_INTERVAL_S = 0.05
# At most this many candles in one batch frame (and well under the link's frame size cap).
_MAX_RUN = 100


def main(argv: list[str] | None = None) -> int:
    """Run the broker described by the spec file named in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    spec = read_spec(args[0])
    if not isinstance(spec, BrokerSpec):
        raise SystemExit(f"{args[0]} is not a broker spec")
    log = setup_logging("broker", spec.name, spec.log_level, spec.log)
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
    pub = sup = history_sock = None
    security: Security | None = None
    try:
        try:
            security = child_security(ctx, spec, log, server=True)
        except KeysError as exc:
            log.error("%s", exc)
            return 1
        pub = security.server(
            zmq.XPUB,
            "market_data",
            bind=spec.endpoints.bind("market_data"),
            sndhwm=spec.broker.send_hwm,
        )
        if spec.broker.speed == 0:
            pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only a topic's first
        if spec.endpoints.history:
            history_sock = security.server(
                zmq.ROUTER, "history", bind=spec.endpoints.bind("history")
            )
        sup = SupervisionLink(security, spec.endpoints.supervision, spec.name, "broker")
        publisher = _Publisher(pub, replay, spec)
        cursor = ReplayCursor(spec.cursor_file, spec.epoch, [s.key for s in streams])
        resumed = cursor.load()
        if resumed:
            publisher.skip(resumed)
        log.info(
            "broker %s: %d streams, %d candles, speed %g, epoch %s%s",
            incarnation,
            len(streams),
            sum(len(s.rows) for s in streams),
            spec.broker.speed,
            spec.epoch or "-",
            f", resuming after {resumed} candles" if resumed else "",
        )
        sup.ready()
        _Server(pub, history_sock, sup, publisher, spec, incarnation, cursor, log).serve(stop)
        cursor.save(replay.replayed)
        log.info("broker stopping")
        return 0
    finally:
        close_all(pub, history_sock, sup.socket if sup else None)
        if security is not None:
            security.close()
        ctx.term()


class _Server:
    """The broker's loop: heartbeats, the paced replay, history requests, manager commands."""

    def __init__(
        self,
        pub: zmq.Socket[Any],
        history_sock: zmq.Socket[Any] | None,
        sup: SupervisionLink,
        publisher: _Publisher,
        spec: BrokerSpec,
        incarnation: str,
        cursor: ReplayCursor,
        log: logging.Logger,
    ) -> None:
        self.pub = pub
        self.history_sock = history_sock
        self.sup = sup
        self.publisher = publisher
        self.spec = spec
        self.incarnation = incarnation
        self.cursor = cursor
        self.log = log
        self.rejects = sup.rejects  # reported to the manager with every heartbeat

    def serve(self, stop: StopFlag) -> None:
        pub, sup, publisher = self.pub, self.sup, self.publisher
        replay = publisher.replay
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)
        poller.register(sup.socket, zmq.POLLIN)
        if self.history_sock is not None:
            poller.register(self.history_sock, zmq.POLLIN)
        started = False
        started_at = 0.0
        published = 0
        announced_end = False
        next_heartbeat = 0.0
        interval = self.spec.broker.heartbeat_interval_s
        while not stop.set:
            now = time.monotonic()
            if now >= next_heartbeat:
                self._heartbeat(started)
                if started:
                    self.cursor.save(replay.replayed)
                next_heartbeat = now + (interval if started else _HANDSHAKE_INTERVAL_S)
            if sup.heartbeat_due(now):
                sup.heartbeat(
                    now, ChildHeartbeat(sup.name, candles=published, lag_s=publisher.lag_s)
                )
            wait_s = next_heartbeat - now
            if started:
                wait_s = min(wait_s, replay.seconds_until_next(now - started_at))
            events = dict(poller.poll(max(0, int(wait_s * 1000))))
            if pub in events and _heartbeat_subscribed(pub, self.rejects):
                next_heartbeat = 0.0  # a subscriber just joined: answer it at once (handshake)
            if self.history_sock is not None and self.history_sock in events:
                self._answer_history()
            if sup.socket in events:
                for command in sup.receive():
                    if isinstance(command, StartFeed) and not started:
                        # A resumed replay goes on from where it was, not from its start.
                        started, started_at = True, time.monotonic() - replay.offset_s()
                        self.log.info("feed started")
            if started:
                published += publisher.publish_due(time.monotonic() - started_at, stop)
                if replay.finished and not announced_end:
                    self.log.info(
                        "replay finished after %d candles; heartbeats continue", published
                    )
                    self.cursor.save(replay.replayed)
                    announced_end = True

    def _heartbeat(self, started: bool) -> None:
        beat = FeedHeartbeat(
            self.incarnation,
            time.time_ns(),
            {s.key: s.last_seq for s in self.publisher.streams},
            started,
            self.spec.epoch,
        )
        try:
            send_topic(self.pub, HEARTBEAT_TOPIC, beat, zmq.NOBLOCK)
        except zmq.Again:
            pass  # a full subscriber at speed 0; the next heartbeat will do

    def _answer_history(self) -> None:
        """Answer every queued request; a malformed one is counted and dropped."""
        assert self.history_sock is not None
        for _ in range(100):
            try:
                frames = self.history_sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.rejects.add("history", "frame_count")
                continue
            try:
                request = HISTORY_REQUEST_DECODER.decode(frames[1])
            except msgspec.DecodeError:
                self.rejects.add("history", "decode")
                continue
            reply = self.publisher.history.answer(request, self.incarnation)
            try:
                send_to_peer(self.history_sock, frames[0], reply)
            except zmq.Again:
                pass  # the requester is gone or full; it asks again after its timeout


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
        self.replay = replay
        self._backlog: deque[Candle] = deque()
        self.derived: dict[str, list[tuple[Stream, Resampler]]] = {}
        for feed in spec.broker.feeds:
            self.derived[feed.stream] = [
                (Stream(feed.symbol, tf, ()), Resampler(feed.timeframe, tf))
                for tf in feed.resample_to
            ]
        self.history = History([s.key for s in self.streams], spec.broker.history_limit)
        self.lag_s = 0.0  # behind the paced schedule, at the last candle sent
        self._derived_by_pair = {tuple(k.split("|")): v for k, v in self.derived.items()}
        self._topics: dict[tuple[str, str], bytes] = {}
        self._batch_topics: dict[tuple[str, str], bytes] = {}
        self._run_limits: dict[int, int] = {}  # per replayed stream index: candles per frame

    @property
    def streams(self) -> list[Stream]:
        """Every stream published: the replayed ones and the resampled ones."""
        return [*self.replay.streams, *(s for d in self.derived.values() for s, _ in d)]

    def publish_due(self, elapsed_s: float, stop: StopFlag) -> int:
        """Publish what is due by ``elapsed_s``; returns how many candles went out.

        Candles of one stream due together (speed 0, or a replay behind its schedule) go out
        as one batch frame, which costs a subscriber one receive and one decode instead of one
        per candle; a candle due alone goes alone, so batching adds no latency. Streams that
        others are resampled from are sent one candle at a time: a higher-timeframe candle
        must go out right after the candle that closed it.
        """
        sent = 0
        replay = self.replay
        # Bound one burst so heartbeats and commands are still served at speed 0.
        while sent < 1000 and not stop.set:
            if self._backlog:
                if not self._send(self._backlog[0]):
                    break
                self._backlog.popleft()
                sent += 1
                continue
            stream = replay.next_stream()
            count = replay.run_length(elapsed_s, self._run_limit(stream)) if stream >= 0 else 0
            if not count:
                break
            due_s = replay.offset_s()
            if count == 1:
                candle = replay.peek(time.time_ns())
                assert candle is not None
                if not self._send(candle):
                    break
                self.lag_s = max(0.0, elapsed_s - due_s)
                replay.advance()
                self._resample(candle)
                sent += 1
                continue
            run = replay.peek_run(count, time.time_ns())
            if not self._send_run(run):
                break
            self.lag_s = max(0.0, elapsed_s - due_s)
            replay.advance(count)
            sent += count
        return sent

    def _run_limit(self, stream: int) -> int:
        limit = self._run_limits.get(stream)
        if limit is None:
            s = self.replay.streams[stream]
            resampled = bool(self.derived.get(s.key))
            per_candle = 80 + len(s.symbol) + len(s.timeframe)  # bytes, with room to spare
            fits = MAX_BYTES["market_data"] // 2 // per_candle
            limit = 1 if resampled else max(1, min(_MAX_RUN, fits))
            self._run_limits[stream] = limit
        return limit

    def skip(self, count: int) -> None:
        """Go past the first ``count`` candles without sending them (a resumed replay).

        They, and the higher-timeframe candles built from them, go into the history as if
        published: that is what the broker before the restart had sent.
        """
        while self.replay.replayed < count and not self.replay.finished:
            candle = self.replay.peek(0)
            assert candle is not None
            self.history.append(candle)
            self.replay.advance()
            self._resample(candle)
            while self._backlog:
                self.history.append(self._backlog.popleft())

    def _send(self, candle: Candle) -> bool:
        key = (candle.symbol, candle.timeframe)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = candle_topic(*key)
        try:
            send_topic(self._pub, topic, candle, zmq.NOBLOCK)
        except zmq.Again:
            return False  # subscribers are full (speed 0): try again on the next turn
        self.history.append(candle)
        return True

    def _send_run(self, run: list[Candle]) -> bool:
        key = (run[0].symbol, run[0].timeframe)
        topic = self._batch_topics.get(key)
        if topic is None:
            topic = self._batch_topics[key] = candle_batch_topic(*key)
        try:
            send_frames(self._pub, topic, ENCODER.encode(run), zmq.NOBLOCK)
        except zmq.Again:
            return False
        append = self.history.append
        for candle in run:
            append(candle)
        return True

    def _resample(self, candle: Candle) -> None:
        derived = self._derived_by_pair.get((candle.symbol, candle.timeframe))
        if not derived:
            return
        row = Row(
            candle.open_time, candle.open, candle.high, candle.low, candle.close, candle.volume
        )
        for stream, resampler in derived:
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
