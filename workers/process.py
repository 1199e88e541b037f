"""The worker process: one strategy, its market-data subscription and its event link.

Start-up order: say Hello to the aggregator (learn the last seq and open positions),
subscribe to the strategy's streams, wait for a feed heartbeat (proof the subscriptions
reached the broker), then report ready to the manager.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import msgspec
import psutil
import zmq

from runtime.child import StopFlag, SupervisionLink, child_security, name_process, setup_logging
from runtime.messages import (
    CANDLE_DECODER,
    EVENTS_DOWN_DECODER,
    FEED_HEARTBEAT_DECODER,
    HEARTBEAT_TOPIC,
    Ack,
    ChildHeartbeat,
    Event,
    Heartbeat,
    Hello,
    Pause,
    Resume,
    Stats,
    SupervisionDown,
    Welcome,
    candle_topic,
)
from runtime.security import KeysError, Security
from runtime.specs import WorkerSpec, read_spec
from runtime.transport import close_all, send_payload
from workers.latency import LatencyCounts
from workers.loader import add_plugin_paths
from workers.outbox import Outbox
from workers.runner import StrategyRunner

__all__ = ["main"]

_QUIET_HEARTBEAT_S = 5.0  # a Heartbeat event after this long without any other event
_RESEND_AFTER_S = 5.0  # resend unacknowledged events when no ack came for this long
_FLUSH_TIMEOUT_S = 3.0  # on stop, how long to wait for the last acknowledgement


class StartupError(Exception):
    """The worker could not get ready (aggregator or broker did not answer in time)."""


def main(argv: list[str] | None = None) -> int:
    """Run the worker described by the spec file named in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    spec = read_spec(args[0])
    if not isinstance(spec, WorkerSpec):
        raise SystemExit(f"{args[0]} is not a worker spec")
    log = setup_logging(f"worker.{spec.strategy.id}", spec.log_level)
    add_plugin_paths(spec.plugin_paths)
    name_process("worker", spec.strategy.id, args[0])
    stop = StopFlag()
    ctx: zmq.Context[Any] = zmq.Context()
    sockets: list[zmq.Socket[Any]] = []
    security: Security | None = None
    try:
        security = child_security(ctx, spec, log, server=False)
        worker = _Worker(security, spec, stop, log, sockets)
        worker.start()
        worker.run()
        worker.finish()
        return 0
    except (StartupError, KeysError) as exc:
        log.error("not ready: %s", exc)
        return 1
    finally:
        close_all(*sockets)
        if security is not None:
            security.close()
        ctx.term()


class _Worker:
    def __init__(
        self,
        security: Security,
        spec: WorkerSpec,
        stop: StopFlag,
        log: logging.Logger,
        sockets: list[zmq.Socket[Any]],
    ) -> None:
        self.spec = spec
        self.sid = spec.strategy.id
        self.stop = stop
        self.log = log
        self.rejects = security.rejects
        self.events = security.client(
            zmq.DEALER, "events", connect=spec.endpoints.events, sndhwm=100_000
        )
        self.sub = security.client(zmq.SUB, "market_data", rcvhwm=100_000)
        sockets += [self.events, self.sub]
        self.sup = SupervisionLink(security, spec.endpoints.supervision, spec.name, "worker")
        sockets.append(self.sup.socket)
        self.topics = {candle_topic(*s.split("|")) for s in spec.strategy.streams}
        self.process = psutil.Process()
        self.started_at = time.monotonic()
        self.candles_reported = 0
        self.rejects_reported = 0
        self.last_ack_progress = time.monotonic()
        self.runner: StrategyRunner | None = None
        self.candles_before = 0
        self.latency = LatencyCounts()
        self.last_seq: dict[bytes, int] = {}  # per stream, to see candles that never came
        self.last_open_time: dict[bytes, int] = {}  # per stream: time only moves forward
        self.incarnation = ""  # of the broker; a new one starts its streams afresh
        self.missed = 0
        self.missed_reported = 0

    # -- start-up ------------------------------------------------------------------

    def start(self) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout_s
        send_payload(self.events, Hello(self.sid, os.getpid()))
        welcome = self._await_welcome(deadline)
        outbox = Outbox(self.sid, welcome.last_seq, self._send_event)
        self.runner = StrategyRunner(self.spec.strategy, outbox)
        self.runner.restore(welcome.open_positions, welcome.realized_pnl)
        self.runner.container.on_close.append(self._unsubscribe)
        self.candles_before = welcome.candles
        for topic in sorted(self.topics):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        # Subscriptions travel on one pipe and are sent in topic order ("c|..." before "hb|"),
        # so a heartbeat received means the candle subscriptions reached the broker too.
        self.sub.connect(self.spec.endpoints.market_data)
        self.sub.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        self._await_feed(deadline)
        self.runner.start()
        self.log.info(
            "strategy %s ready: streams %s, resuming after seq %d with %d open positions",
            self.sid,
            ", ".join(self.spec.strategy.streams),
            welcome.last_seq,
            len(welcome.open_positions),
        )
        self.sup.ready()

    def _await_welcome(self, deadline: float) -> Welcome:
        while not self.stop.set:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self.events.poll(int(remaining * 1000) + 1):
                try:
                    reply = EVENTS_DOWN_DECODER.decode(self.events.recv())
                except msgspec.DecodeError:
                    self.rejects.add("events", "decode")
                    continue
                if isinstance(reply, Welcome) and reply.strategy_id == self.sid:
                    return reply
        raise StartupError("the aggregator did not answer Hello")

    def _await_feed(self, deadline: float) -> None:
        while not self.stop.set:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self.sub.poll(int(remaining * 1000) + 1):
                frames = self.sub.recv_multipart()
                if self._on_market_data(frames):  # a heartbeat or a candle: the feed is live
                    return
        raise StartupError("no feed heartbeat from the broker")

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        assert self.runner is not None
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.events, zmq.POLLIN)
        poller.register(self.sup.socket, zmq.POLLIN)
        next_stats = time.monotonic() + self.spec.strategy.stats_interval_s
        while not self.stop.set:
            ready = dict(poller.poll(100))
            if self.sub in ready:
                self._drain_market_data()
            if self.events in ready:
                self._drain_acks()
            if self.sup.socket in ready:
                self._on_commands(self.sup.receive())
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + self.spec.strategy.stats_interval_s
                self._report_stats()
            if now - self.runner.outbox.last_emit_monotonic >= _QUIET_HEARTBEAT_S:
                self.runner.emit(Heartbeat(os.getpid(), now - self.started_at))
            outbox = self.runner.outbox
            if outbox.unacked and now - self.last_ack_progress >= _RESEND_AFTER_S:
                self.log.warning(
                    "no acknowledgement for %.0fs; resending %d events",
                    now - self.last_ack_progress,
                    len(outbox.unacked),
                )
                outbox.resend()
                self.last_ack_progress = now
            if self.sup.heartbeat_due(now):
                self.sup.heartbeat(now, self._figures())

    def _unsubscribe(self) -> None:
        """The strategy's services closed (stopped or errored): stop taking its candles."""
        for topic in sorted(self.topics):
            self.sub.setsockopt(zmq.UNSUBSCRIBE, topic)
        self.log.info("strategy %s unsubscribed from %d streams", self.sid, len(self.topics))

    def _on_commands(self, commands: list[SupervisionDown]) -> None:
        assert self.runner is not None
        for command in commands:
            match command:
                case Pause():
                    self.runner.pause()
                case Resume():
                    self.runner.resume()
                case _:
                    continue
            self.log.info("strategy %s %s", self.sid, self.runner.state)
            # An immediate heartbeat carries the new state: it is the manager's confirmation.
            self.sup.heartbeat(time.monotonic(), self._figures())

    def finish(self) -> None:
        """Graceful stop: let the strategy stop, report, wait briefly for the last ack."""
        assert self.runner is not None
        self.runner.stop()
        self._report_stats(always=True)
        deadline = time.monotonic() + _FLUSH_TIMEOUT_S
        while not self.runner.outbox.all_acked and time.monotonic() < deadline:
            if self.events.poll(50):
                self._drain_acks()
        left = len(self.runner.outbox.unacked)
        if left:
            self.log.warning("stopping with %d events not acknowledged", left)
        outbox = self.runner.outbox
        self.log.info(
            "strategy %s stopped after %d candles; last event seq %d, %d unacknowledged",
            self.sid,
            self.runner.candles,
            outbox.last_seq,
            len(outbox.unacked),
        )

    def _drain_market_data(self) -> None:
        for _ in range(1000):
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_market_data(frames)

    def _on_market_data(self, frames: list[bytes]) -> bool:
        """Act on one market-data message; a bad one is counted by reason and dropped.

        Returns whether it was a valid heartbeat or candle.
        """
        assert self.runner is not None
        if len(frames) != 2:
            self.rejects.add("market_data", "frame_count")
            return False
        topic, payload = frames
        if topic == HEARTBEAT_TOPIC:
            return self._on_feed_heartbeat(payload)
        if topic not in self.topics:
            self.rejects.add("market_data", "topic")
            return False
        try:
            candle = CANDLE_DECODER.decode(payload)  # also refuses NaN, inf, <= 0, high < low
        except msgspec.DecodeError:
            self.rejects.add("market_data", "decode")
            return False
        if candle_topic(candle.symbol, candle.timeframe) != topic:
            self.rejects.add("market_data", "topic_mismatch")
            return False
        if candle.open_time <= self.last_open_time.get(topic, -1):
            self.rejects.add("market_data", "open_time")  # a replayed or forged old candle
            return False
        self.last_open_time[topic] = candle.open_time
        last = self.last_seq.get(topic, 0)
        if last and candle.seq > last + 1:
            # Counted, not yet repaired: backfill from the broker's history is the next step.
            self.missed += candle.seq - last - 1
        self.last_seq[topic] = candle.seq
        self.runner.on_candle(candle)
        if candle.publish_ns:
            self.latency.add((time.time_ns() - candle.publish_ns) / 1e9)
        return True

    def _on_feed_heartbeat(self, payload: bytes) -> bool:
        try:
            beat = FEED_HEARTBEAT_DECODER.decode(payload)
        except msgspec.DecodeError:
            self.rejects.add("market_data", "decode")
            return False
        if beat.incarnation != self.incarnation:
            if self.incarnation:
                self.log.info(
                    "broker restarted (incarnation %s): streams start afresh", beat.incarnation
                )
            self.incarnation = beat.incarnation
            self.last_open_time.clear()
            self.last_seq.clear()
        return True

    def _drain_acks(self) -> None:
        assert self.runner is not None
        while True:
            try:
                frame = self.events.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = EVENTS_DOWN_DECODER.decode(frame)
            except msgspec.DecodeError:
                self.rejects.add("events", "decode")
                continue
            if isinstance(message, Ack) and message.strategy_id == self.sid:
                if message.seq > self.runner.outbox.acked_seq:
                    self.last_ack_progress = time.monotonic()
                self.runner.outbox.ack(message.seq)

    def _send_event(self, event: Event) -> None:
        try:
            send_payload(self.events, event, zmq.NOBLOCK)
        except zmq.Again:
            pass  # kept in the outbox; resent when acknowledgements stall

    def _report_stats(self, always: bool = False) -> None:
        assert self.runner is not None
        candles = self.runner.candles - self.candles_reported
        rejected = self.rejects.total - self.rejects_reported
        if not (candles or rejected or always or self.missed > self.missed_reported):
            return
        self.candles_reported += candles
        self.rejects_reported += rejected
        counts, total = self.latency.take()
        missed, self.missed_reported = self.missed - self.missed_reported, self.missed
        rss = self.process.memory_info().rss
        rejects = self.rejects.take_new()
        self.runner.emit(Stats(candles, rejected, rss, counts, total, missed, rejects))

    def _figures(self) -> ChildHeartbeat:
        assert self.runner is not None
        positions = self.runner.container.positions
        return ChildHeartbeat(
            self.sup.name,
            candles=self.candles_before + self.runner.candles,
            open_positions=positions.open_count,
            realized_pnl=positions.realized_pnl,
            state="" if self.runner.state == "running" else self.runner.state,
        )


if __name__ == "__main__":
    sys.exit(main())
