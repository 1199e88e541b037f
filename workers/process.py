"""The worker process: one strategy, its market-data subscription and its event link.

Start-up order: send what an earlier worker of this strategy spilled, say Hello to the
aggregator (learn the last seq, open positions, pending orders and the cursor: the last candle
of each stream the strategy had processed), subscribe to the strategy's streams, wait for a
feed heartbeat (proof the subscriptions reached the broker; it tells each stream's last seq),
warm up from the broker's history (candles up to the cursor, replayed without acting), catch
up (candles after the cursor, acted on as if live), then report ready to the manager.

Live, every stream's seq is checked: repeats are dropped, a hole is backfilled from history
before the candle after it is used, so the strategy never decides on a stream with a hole.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import msgspec
import psutil
import zmq

from broker.resample import timeframe_ms
from runtime.child import StopFlag, SupervisionLink, child_security, name_process, setup_logging
from runtime.killswitch import KillSwitch
from runtime.messages import (
    CANDLE_BATCH_DECODER,
    CANDLE_DECODER,
    EVENTS_DOWN_DECODER,
    FEED_HEARTBEAT_DECODER,
    HEARTBEAT_TOPIC,
    Ack,
    Candle,
    ChildHeartbeat,
    FeedHeartbeat,
    FeedStatus,
    Halt,
    Heartbeat,
    Hello,
    Pause,
    Resume,
    ResumeTrading,
    Side,
    Stats,
    SupervisionDown,
    Welcome,
    candle_batch_topic,
    candle_topic,
)
from runtime.security import KeysError, Security
from runtime.specs import WorkerSpec, read_spec
from runtime.transport import close_all, send_payload
from workers.feed import FeedHealth, StreamSeqs
from workers.history_client import HistoryClient, HistoryUnavailable
from workers.latency import LatencyCounts
from workers.loader import add_plugin_paths
from workers.outbox import Outbox
from workers.risk_client import UNAVAILABLE, RiskClient
from workers.runner import StrategyRunner
from workers.services.risk_gate import RiskGate
from workers.spill import SpillFile

__all__ = ["main"]

_QUIET_HEARTBEAT_S = 5.0  # a Heartbeat event after this long without any other event
_RESEND_AFTER_S = 5.0  # resend unacknowledged events when no ack came for this long
_FLUSH_TIMEOUT_S = 3.0  # on stop, how long to wait for the last acknowledgement
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = zmq.EVENTS
_POLLIN = int(zmq.POLLIN)
_RETRY_HISTORY_S = 0.5  # a hole the broker could not fill is asked for again this often
_HOLE_RESEND_S = 1.0  # at most this often, resend at once on hearing of a journal hole
# Timed duties due within this long of each other are done in one wake-up: the Stats report
# and the supervision heartbeat (both every second by default) then go out together instead
# of waking the worker twice a second. A wake-up, not the work in it, is what costs (a
# hundred workers woken at once by a candle each pay ~0.3 ms, cold caches mostly).
_COALESCE_S = 0.05


class StartupError(Exception):
    """The worker could not get ready (aggregator or broker did not answer in time)."""


def main(argv: list[str] | None = None) -> int:
    """Run the worker described by the spec file named in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    spec = read_spec(args[0])
    if not isinstance(spec, WorkerSpec):
        raise SystemExit(f"{args[0]} is not a worker spec")
    log = setup_logging(f"worker.{spec.strategy.id}", spec.name, spec.log_level, spec.log)
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
        # What start-up built (the strategy's services) lives as long as the process: frozen
        # out of the collector (a splice of its lists: no object is touched, so pages shared
        # with the zygote stay shared), later collections only walk what candles create.
        gc.freeze()
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
        stop.close()


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
        self.sub = security.client(zmq.SUB, "market_data", rcvhwm=spec.market_data_hwm)
        sockets += [self.events, self.sub]
        history = (
            security.client(zmq.DEALER, "history", connect=spec.endpoints.history)
            if spec.endpoints.history
            else None
        )
        self.history = HistoryClient(history, self.rejects)
        if history is not None:
            sockets.append(history)
        self.sup = SupervisionLink(security, spec.endpoints.supervision, spec.name, "worker")
        sockets.append(self.sup.socket)
        self.risk: RiskGate | None = None
        if spec.risk_timeout_ms > 0 and spec.endpoints.risk:
            client = RiskClient(
                security, spec.endpoints.risk, self.sid, spec.risk_timeout_ms, self.rejects
            )
            sockets.append(client.socket)
            self.risk = RiskGate(client.ask)
        elif spec.risk_timeout_ms > 0:
            self.risk = RiskGate(_no_risk_service)  # limits but nowhere to ask: fail closed
        streams = spec.strategy.streams
        # topic frame -> (symbol, timeframe, stream key): checked against each candle's fields
        self.topics = {candle_topic(*s.split("|")): (*s.split("|"), s) for s in streams}
        # the same for frames of several candles in a row (taken by the same subscriptions)
        self.batch_topics = {candle_batch_topic(*s.split("|")): (*s.split("|"), s) for s in streams}
        # While a batch frame is used: 0, then the publish time of its first live candle
        # (its events go out as one EventBatch at the end of the frame); -1 otherwise.
        self.batch_publish_ns = -1
        self.seqs = StreamSeqs(streams)
        self.epoch = ""
        self.feed = FeedHealth(spec.feed_stale_after_s, time.monotonic())
        self.spill = (
            SpillFile(Path(spec.spill_dir) / f"{self.sid}.spill") if spec.spill_dir else None
        )
        self.process = psutil.Process()
        self.started_at = time.monotonic()
        self.reported = _Counts()
        self.counts = _Counts()
        self.last_ack_progress = time.monotonic()
        self.runner: StrategyRunner | None = None
        self.candles_before = 0
        self.latency = LatencyCounts()
        self.journal_latency = LatencyCounts()
        # (last event seq of a batch, publish time of the live candle that caused it)
        self.awaiting_ack: deque[tuple[int, int]] = deque(maxlen=10_000)
        self.lag_s = 0.0
        self.held: dict[str, list[Candle]] = {}  # per stream: candles after a hole not yet filled
        # Per stream: the journal's cursor where it is ahead of what a restarted broker had
        # published at warm-up; candles up to it were acted on by an earlier worker.
        self.acted_until: dict[str, int] = {}
        self.next_retry = 0.0
        self.last_open_time: dict[str, int] = {}  # per stream: time only moves forward
        self.next_hole_resend = 0.0
        self.next_stats = 0.0

    # -- start-up ------------------------------------------------------------------

    def start(self) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout_s
        self._send_spilled()
        send_payload(self.events, Hello(self.sid, os.getpid()))
        welcome = self._await_welcome(deadline)
        if self.spill is not None:
            self.spill.clear()  # what it held was sent before Hello: the journal has it now
        outbox = Outbox(
            self.sid,
            welcome.last_seq,
            self._send_frame,
            spill=self.spill,
            max_unacked=self.spec.max_unacked_events,
        )
        self.runner = StrategyRunner(self.spec.strategy, outbox)
        self.runner.container.risk = self.risk
        self.runner.restore(
            welcome.open_positions,
            welcome.realized_pnl,
            welcome.pending_orders,
            welcome.last_closed,
            welcome.account,
        )
        if self.spec.kill_switch_file:
            # Read before anything is acted on (catch-up included): a worker started while
            # the kill switch is on must not open a position, not even for a moment.
            switch = KillSwitch(Path(self.spec.kill_switch_file))
            if switch.on:
                self.runner.halt(switch.flatten, "kill switch on at start")
        self.runner.container.on_close.append(self._unsubscribe)
        self.candles_before = welcome.candles
        for topic in sorted(self.topics):
            self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        # Subscriptions travel on one pipe and are sent in topic order ("c|..." before "hb|"),
        # so a heartbeat received means the candle subscriptions reached the broker too.
        self.sub.connect(self.spec.endpoints.market_data)
        self.sub.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        beat, early = self._await_feed(deadline)
        self.runner.start()
        self.log.info(
            "strategy %s ready: streams %s, resuming after seq %d with %d open positions and "
            "%d pending orders",
            self.sid,
            ", ".join(self.spec.strategy.streams),
            welcome.last_seq,
            len(welcome.open_positions),
            len(welcome.pending_orders),
        )
        self.sup.ready()
        # Warm-up and catch-up run the strategy's own code: after ready, so a strategy that
        # crashes or hangs on them is handled like one that does so on live candles.
        resumed = welcome.cursor if welcome.epoch == beat.epoch else {}
        began = time.perf_counter()
        warmed, caught_up = self._warm_and_catch_up(beat, resumed)
        self.log.info(
            "warmed up on %d candles, caught up on %d, in %.1f ms",
            warmed,
            caught_up,
            (time.perf_counter() - began) * 1000,
        )
        self.feed_heard()
        for frames in early:
            self._on_market_data(frames)
        self._flush()

    def _send_spilled(self) -> None:
        """Events an earlier worker of this strategy spilled and never saw acknowledged."""
        if self.spill is None:
            return
        sent = 0
        for frame in self.spill.frames():
            self._send_frame(frame)
            sent += 1
        if sent:
            self.log.info("sent %d event batches left in %s", sent, self.spill.path)

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

    def _await_feed(self, deadline: float) -> tuple[FeedHeartbeat, list[list[bytes]]]:
        """The first feed heartbeat, and the candles that came before it (kept for later)."""
        early: list[list[bytes]] = []
        while not self.stop.set:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not self.sub.poll(int(remaining * 1000) + 1):
                continue
            frames = self.sub.recv_multipart()
            if frames[0] != HEARTBEAT_TOPIC:
                early.append(frames)
                continue
            beat = self._decode_heartbeat(frames)
            if beat is not None:
                self.feed.new_incarnation(beat.incarnation)
                self.feed.heard(time.monotonic())
                self.epoch = beat.epoch
                return beat, early
        raise StartupError("no feed heartbeat from the broker")

    def _warm_and_catch_up(self, beat: FeedHeartbeat, cursor: dict[str, int]) -> tuple[int, int]:
        """Replay history without acting up to the cursor (or, for a strategy new to this
        feed, up to the live edge), then act on what came after the cursor."""
        assert self.runner is not None
        order = list(beat.last_seq)
        warm: list[Candle] = []
        catch_up: list[Candle] = []
        for stream in self.spec.strategy.streams:
            live = beat.last_seq.get(stream, 0)
            until = min(cursor[stream], live) if stream in cursor else live
            want = self.spec.strategy.warmup_candles
            candles = self._fetch(stream, max(1, until - want + 1), live) if live else []
            warm += [c for c in candles if c.seq <= until]
            catch_up += [c for c in candles if c.seq > until]
            self.seqs.last[stream] = until
            if cursor.get(stream, 0) > live:
                self.acted_until[stream] = cursor[stream]
        key = _replay_order(order)
        for candle in sorted(warm, key=key):
            if self.risk is not None:
                self.risk.seen(candle)
            self.runner.warm(candle)
            self._beat()
        for candle in sorted(catch_up, key=key):
            self._use(candle, live=False)
            self.counts.backfilled += 1
        return len(warm), len(catch_up)

    def _fetch(self, stream: str, from_seq: int, to_seq: int) -> list[Candle]:
        try:
            return self.history.fetch(stream, from_seq, to_seq)
        except HistoryUnavailable as exc:
            self.log.warning("no history for %s: %s", stream, exc)
            return []

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        """The loop: sleep until a socket or the next timed duty wakes it.

        A wake-up by a candle does only what the candle needs (the strategy, then one flush);
        the timed duties (stats, heartbeats, stale feed, resends) are checked once their
        earliest deadline has come. Acknowledgements wake the worker only while a live
        candle's events wait for theirs (the publish -> journal latency is measured when
        they arrive); otherwise (a Stats report's) they are read at the next timed duty.
        """
        assert self.runner is not None
        outbox, sub, events, sup = self.runner.outbox, self.sub, self.events, self.sup.socket
        wakeup = self.stop.wakeup_fd()
        lean, full = zmq.Poller(), zmq.Poller()
        for poller in (lean, full):
            poller.register(sub, zmq.POLLIN)
            poller.register(sup, zmq.POLLIN)
            poller.register(wakeup, zmq.POLLIN)
        full.register(events, zmq.POLLIN)
        self.next_stats = time.monotonic() + self.spec.strategy.stats_interval_s
        next_duty = 0.0
        idle_ms = 0
        while not self.stop.set:
            ready = dict((full if self.awaiting_ack else lean).poll(idle_ms))
            if sub in ready:
                self._drain_market_data()
            if events in ready:
                self._drain_acks()
            if sup in ready:
                self._on_commands(self.sup.receive())
            if wakeup in ready:
                self.stop.drain()
            if self.held:
                self._retry_held()
            now = time.monotonic()
            if now + _COALESCE_S >= next_duty:
                self._timed_duties(now)
                next_duty = self._next_duty(now)
            else:
                outbox.flush(self.seqs.last, self.epoch)
                if self.held:
                    next_duty = min(next_duty, self.next_retry)
            idle_ms = max(0, int((next_duty - now) * 1000) + 1)

    def _timed_duties(self, now: float) -> None:
        """Stale feed, Stats, quiet heartbeat, resend, supervision heartbeat: whatever is
        due (the reports also when due within ``_COALESCE_S``)."""
        runner = self.runner
        assert runner is not None
        soon = now + _COALESCE_S
        if self.feed.check(now):
            silent = now - self.feed.last_heard
            self.log.warning("feed stale: nothing from the broker for %.1fs", silent)
            runner.emit(FeedStatus("stale", self.feed.incarnation, silent))
        if soon >= self.next_stats:
            self.next_stats = now + self.spec.strategy.stats_interval_s
            self._report_stats()
        outbox = runner.outbox
        if now - outbox.last_emit_monotonic >= _QUIET_HEARTBEAT_S:
            runner.emit(Heartbeat(os.getpid(), now - self.started_at))
        self._flush()
        self._drain_acks()
        if not outbox.all_acked and now - self.last_ack_progress >= _RESEND_AFTER_S:
            self.log.warning(
                "no acknowledgement for %.0fs; resending %d events",
                now - self.last_ack_progress,
                outbox.unacked_events,
            )
            outbox.resend()
            self.last_ack_progress = now
        if self.sup.heartbeat_due(soon):
            self.sup.heartbeat(now, self._figures())

    def _next_duty(self, now: float) -> float:
        """When the loop next has something to do unless a socket wakes it (monotonic);
        never later than the next supervision heartbeat, a second away at most."""
        due = min(self.next_stats, self.sup.next_heartbeat)
        if not self.feed.stale:
            due = min(due, self.feed.last_heard + self.feed.stale_after_s)
        if self.held:
            due = min(due, self.next_retry)
        outbox = self.runner.outbox if self.runner is not None else None
        if outbox is not None:
            due = min(due, outbox.last_emit_monotonic + _QUIET_HEARTBEAT_S)
            if not outbox.all_acked:
                due = min(due, self.last_ack_progress + _RESEND_AFTER_S)
        return max(due, now)

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
                case Halt():
                    self.runner.halt(command.flatten, command.reason)
                    self._flush()
                case ResumeTrading():
                    self.runner.resume_trading()
                    self._flush()
                case _:
                    continue
            halted = " (trading halted)" if self.runner.halted else ""
            self.log.info("strategy %s %s%s", self.sid, self.runner.state, halted)
            # An immediate heartbeat carries the new state: it is the manager's confirmation.
            self.sup.heartbeat(time.monotonic(), self._figures())

    def finish(self) -> None:
        """Graceful stop: let the strategy stop, report, wait briefly for the last ack."""
        assert self.runner is not None
        self.runner.stop()
        self._report_stats(always=True)
        self._flush()
        deadline = time.monotonic() + _FLUSH_TIMEOUT_S
        while not self.runner.outbox.all_acked and time.monotonic() < deadline:
            if self.events.poll(50):
                self._drain_acks()
        outbox = self.runner.outbox
        if not outbox.all_acked:
            spilled = outbox.spill_all()
            self.log.warning(
                "stopping with %d events not acknowledged; %d kept in %s for the next start",
                outbox.unacked_events,
                spilled,
                self.spill.path if self.spill is not None else "nowhere (no spill directory)",
            )
        self.log.info(
            "strategy %s stopped after %d candles; last event seq %d, %d unacknowledged",
            self.sid,
            self.runner.candles,
            outbox.last_seq,
            outbox.unacked_events,
        )

    # -- market data ---------------------------------------------------------------

    def _drain_market_data(self) -> None:
        sub = self.sub
        recv, get = sub.recv, cast(Callable[[int], int], sub.get)
        self.feed_heard()
        for _ in range(1000):
            # Frames rather than bytes: a Frame says whether more parts follow, where
            # get(RCVMORE) converts the option to an enum member in Python on every call
            # (~4 us a frame in pyzmq 27). After a message, get(EVENTS) says whether another
            # waits: ending on zmq.Again instead builds an exception (~40 us a wake-up with
            # cold caches), and most wake-ups bring one message.
            try:
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            frames = [frame.bytes]
            while frame.more:
                frame = recv(0, copy=False)
                frames.append(frame.bytes)
            self._on_market_data(frames)
            if not get(_EVENTS) & _POLLIN:
                return

    def _on_market_data(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.rejects.add("market_data", "frame_count")
            return
        topic, payload = frames
        if topic == HEARTBEAT_TOPIC:
            beat = self._decode_heartbeat(frames)
            if beat is not None:
                self._on_heartbeat(beat)
            return
        expected = self.topics.get(topic)
        if expected is None:
            batch = self.batch_topics.get(topic)
            if batch is None:
                self.rejects.add("market_data", "topic")
            else:
                self._on_candle_batch(batch, payload)
            return
        try:
            candle = CANDLE_DECODER.decode(payload)  # also refuses NaN, inf, <= 0, high < low
        except msgspec.DecodeError:
            self.rejects.add("market_data", "decode")
            return
        symbol, timeframe, stream = expected
        if candle.symbol != symbol or candle.timeframe != timeframe:
            self.rejects.add("market_data", "topic_mismatch")
            return
        self._arrived(stream, candle)

    def _on_candle_batch(self, expected: tuple[str, ...], payload: bytes) -> None:
        """Several candles of one stream in a row: each goes through the same checks and
        the strategy as a candle received alone; their events go out as one batch, with the
        cursor after the last (journaled all or none, as one candle's are)."""
        try:
            candles = CANDLE_BATCH_DECODER.decode(payload)  # each candle checked as alone
        except msgspec.DecodeError:
            self.rejects.add("market_data", "decode")
            return
        symbol, timeframe, stream = expected
        for candle in candles:
            if candle.symbol != symbol or candle.timeframe != timeframe:
                self.rejects.add("market_data", "topic_mismatch")
                return
        self.batch_publish_ns = 0
        try:
            self._use_in_order(stream, candles)
        finally:
            first_ns, self.batch_publish_ns = self.batch_publish_ns, -1
            outbox = self.runner.outbox if self.runner is not None else None
            if outbox is not None and outbox.flush(self.seqs.last, self.epoch) and first_ns:
                self.awaiting_ack.append((outbox.last_seq, first_ns))

    def _use_in_order(self, stream: str, candles: list[Candle]) -> None:
        """A batch frame's candles. One that simply follows the last (the usual case) goes
        straight to the strategy: :meth:`_arrived` then :meth:`_use` written out, per candle
        of a speed-0 replay. Any other (a repeat, a hole, a stream held for backfill, an older
        open time, a candle an earlier worker acted on) takes the general path."""
        runner = self.runner
        assert runner is not None
        last_seq, last_time, held = self.seqs.last, self.last_open_time, self.held
        on_candle, arrived = runner.on_candle, self._arrived
        seen = self.risk.seen if self.risk is not None else None
        acted = self.acted_until.get(stream, 0)
        time_ns = time.time_ns
        lags: list[float] = []
        # What the checks compare with, kept in locals (reread after the general path)
        expected, after = last_seq[stream] + 1, last_time.get(stream, -1)
        for candle in candles:
            seq, open_time = candle.seq, candle.open_time
            if seq != expected or seq <= acted or open_time <= after or held:
                arrived(stream, candle)
                expected, after = last_seq[stream] + 1, last_time.get(stream, -1)
                continue
            if seen is not None:
                seen(candle)
            on_candle(candle)
            last_seq[stream] = seq
            last_time[stream] = open_time
            expected, after = seq + 1, open_time
            publish_ns = candle.publish_ns
            if publish_ns:
                lags.append((time_ns() - publish_ns) / 1e9)
                if not self.batch_publish_ns:
                    self.batch_publish_ns = publish_ns
        if lags:
            self.latency.add_all(lags)
            self.lag_s = lags[-1]
        self._beat()

    def feed_heard(self) -> None:
        silent = self.feed.heard(time.monotonic())
        if silent and self.runner is not None:
            self.log.info("feed recovered after %.1fs", silent)
            self.runner.emit(FeedStatus("recovered", self.feed.incarnation, silent))

    def _decode_heartbeat(self, frames: list[bytes]) -> FeedHeartbeat | None:
        try:
            return FEED_HEARTBEAT_DECODER.decode(frames[1])
        except (msgspec.DecodeError, IndexError):
            self.rejects.add("market_data", "decode")
            return None

    def _on_heartbeat(self, beat: FeedHeartbeat) -> None:
        if self.feed.new_incarnation(beat.incarnation):
            self.log.warning(
                "broker restarted (incarnation %s, epoch %s)", beat.incarnation, beat.epoch
            )
        if beat.epoch != self.epoch:
            # A new replay: its seqs start again, nothing to compare with what came before.
            self.log.warning("feed epoch changed %s -> %s", self.epoch, beat.epoch)
            self.epoch = beat.epoch
            for stream in self.seqs.last:
                self.seqs.last[stream] = 0
            self.last_open_time.clear()
            self.held.clear()
            self.acted_until.clear()
            return
        # Continuity: a heartbeat follows the candles sent before it, so a last seq beyond
        # ours means candles lost on the way (even the last ones of a burst).
        for stream, last in self.seqs.last.items():
            published = beat.last_seq.get(stream, 0)
            if published > last and stream not in self.held:
                self.counts.gaps += 1
                self.held[stream] = []
                self._fill(stream, published)

    def _arrived(self, stream: str, candle: Candle) -> None:
        if self.held and stream in self.held:
            self.held[stream].append(candle)
            self._retry_held(stream)
            return
        seq, last = candle.seq, self.seqs.last[stream]
        if seq <= last:
            self.counts.duplicate += 1  # a resumed broker sending again what it had sent
        elif candle.open_time <= self.last_open_time.get(stream, -1):
            self.rejects.add("market_data", "open_time")  # a newer seq at an older time: forged
        elif seq == last + 1:
            self._use(candle, live=True, stream=stream)
        else:
            self.counts.gaps += 1
            self.held[stream] = [candle]
            self._fill(stream, seq - 1)

    def _fill(self, stream: str, until: int) -> None:
        """Backfill ``stream`` up to ``until`` from history, then use what was held."""
        last = self.seqs.last[stream]
        try:
            candles = self.history.fetch(stream, last + 1, until)
        except HistoryUnavailable:
            return  # held; tried again from the loop
        if candles and candles[0].seq > last + 1:
            lost = candles[0].seq - last - 1
            self.counts.missed += lost
            self.log.error(
                "%s: %d candles after seq %d are no longer in the broker's history",
                stream,
                lost,
                last,
            )
            self.seqs.last[stream] = candles[0].seq - 1
        for candle in candles:
            if candle.seq == self.seqs.last[stream] + 1:
                self._use(candle, live=False)
                self.counts.backfilled += 1
        if self.seqs.last[stream] < until:
            return  # not all there yet (a restarted broker catching up): still held
        held = self.held.pop(stream, [])
        for i, candle in enumerate(held):
            if stream in self.held:  # another hole among them, not filled yet: keep the rest
                self.held[stream].extend(held[i:])
                return
            self._arrived(stream, candle)  # the same checks as a candle just received

    def _retry_held(self, only: str | None = None) -> None:
        now = time.monotonic()
        if only is None:
            if now < self.next_retry:
                return
            self.next_retry = now + _RETRY_HISTORY_S
        for stream in [only] if only else list(self.held):
            held = self.held.get(stream)
            if held is None:
                continue
            if held:
                self._fill(stream, held[0].seq - 1)
            else:  # a tail gap seen in a heartbeat: fill up to what was published
                self.held.pop(stream)

    def _use(self, candle: Candle, live: bool, stream: str = "") -> None:
        """Run one candle through the strategy; its events go out with the new cursor."""
        runner = self.runner
        assert runner is not None
        stream = stream or f"{candle.symbol}|{candle.timeframe}"
        if candle.seq <= self.acted_until.get(stream, 0):
            # An earlier worker of this strategy acted on it (it is behind the journal's
            # cursor) but the broker, restarted, had not sent it again by warm-up: warm on
            # it now; acting again would repeat its orders.
            if self.risk is not None:
                self.risk.seen(candle)
            runner.warm(candle)
            self.seqs.last[stream] = candle.seq
            self.last_open_time[stream] = candle.open_time
            self._beat()
            return
        if self.risk is not None:
            self.risk.seen(candle)
        runner.on_candle(candle)
        self.seqs.last[stream] = candle.seq
        self.last_open_time[stream] = candle.open_time
        if live and candle.publish_ns:
            lag = (time.time_ns() - candle.publish_ns) / 1e9
            self.latency.add(lag)
            self.lag_s = lag
        if self.batch_publish_ns >= 0:  # in a batch frame: its events go out at its end
            if live and not self.batch_publish_ns:
                self.batch_publish_ns = candle.publish_ns
        elif live and candle.publish_ns:
            if runner.outbox.flush(self.seqs.last, self.epoch):
                self.awaiting_ack.append((runner.outbox.last_seq, candle.publish_ns))
        else:
            runner.outbox.flush(self.seqs.last, self.epoch)
        self._beat()

    def _beat(self) -> None:
        """Heartbeat the manager when due, also between the candles of a long run (a
        backlog, a backfill, warm-up): a slow strategy that makes progress is not stuck,
        and must not be killed by the watchdog while it catches up."""
        now = time.monotonic()
        if self.sup.heartbeat_due(now):
            self.sup.heartbeat(now, self._figures())

    def _flush(self) -> None:
        assert self.runner is not None
        self.runner.outbox.flush(self.seqs.last, self.epoch)

    # -- events --------------------------------------------------------------------

    def _drain_acks(self) -> None:
        assert self.runner is not None
        recv, get = self.events.recv, cast(Callable[[int], int], self.events.get)
        while get(_EVENTS) & _POLLIN:  # not recv until zmq.Again: see above
            frame = recv()
            try:
                message = EVENTS_DOWN_DECODER.decode(frame)
            except msgspec.DecodeError:
                self.rejects.add("events", "decode")
                continue
            if isinstance(message, Ack) and message.strategy_id == self.sid:
                now = time.monotonic()
                if message.seq > self.runner.outbox.acked_seq:
                    self.last_ack_progress = now
                self.runner.outbox.ack(message.seq)
                awaiting = self.awaiting_ack
                if awaiting and awaiting[0][0] <= message.seq:
                    now_ns = time.time_ns()
                    while awaiting and awaiting[0][0] <= message.seq:
                        self.journal_latency.add((now_ns - awaiting.popleft()[1]) / 1e9)
                if message.received > message.seq and now >= self.next_hole_resend:
                    # A batch after message.seq was lost on the way (an aggregator killed
                    # with it unread): send again now, not after the ack stall timeout.
                    self.next_hole_resend = now + _HOLE_RESEND_S
                    sent = self.runner.outbox.resend()
                    self.log.warning(
                        "journal hole after seq %d; resent %d event batches", message.seq, sent
                    )

    def _send_frame(self, frame: bytes) -> None:
        try:
            self.events.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            pass  # kept in the outbox; resent when acknowledgements stall

    def _report_stats(self, always: bool = False) -> None:
        assert self.runner is not None
        now = self.counts.with_totals(self.runner.candles, self.rejects.total)
        delta = now.minus(self.reported)
        if not (always or delta.any()):
            return
        self.reported = now
        candles = delta.candles
        counts, total = self.latency.take()
        journal_counts, journal_total = self.journal_latency.take()
        rss = self.process.memory_info().rss
        self.runner.emit(
            Stats(
                candles,
                delta.rejected,
                rss,
                counts,
                total,
                delta.missed,
                delta.backfilled,
                delta.duplicate,
                delta.gaps,
                self.lag_s,
                self.runner.container.positions.unrealized_pnl,
                journal_counts,
                journal_total,
                rejects=self.rejects.take_new(),
            )
        )

    def _figures(self) -> ChildHeartbeat:
        assert self.runner is not None
        positions = self.runner.container.positions
        return ChildHeartbeat(
            self.sup.name,
            candles=self.candles_before + self.runner.candles,
            open_positions=positions.open_count,
            realized_pnl=positions.realized_pnl,
            state="" if self.runner.state == "running" else self.runner.state,
            halted=self.runner.halted,
            capital=self.runner.container.ledger.capital,
            equity=self.runner.container.ledger.equity(),
        )


class _Counts:
    """Running totals a worker reports in Stats as differences."""

    def __init__(self) -> None:
        self.candles = 0
        self.rejected = 0
        self.missed = 0
        self.backfilled = 0
        self.duplicate = 0
        self.gaps = 0

    def with_totals(self, candles: int, rejected: int) -> _Counts:
        copy = _Counts()
        copy.__dict__.update(self.__dict__)
        copy.candles, copy.rejected = candles, rejected
        return copy

    def minus(self, other: _Counts) -> _Counts:
        diff = _Counts()
        for name in vars(diff):
            setattr(diff, name, getattr(self, name) - getattr(other, name))
        return diff

    def any(self) -> bool:
        return any(vars(self).values())


def _no_risk_service(order_id: str, symbol: str, side: Side, notional: float, price: float) -> str:
    return UNAVAILABLE


def _replay_order(streams: list[str]) -> Any:
    """Sort key of candles of several streams in the order the broker publishes them: by
    close time, a lower timeframe first, then in the broker's stream order."""
    rank = {s: i for i, s in enumerate(streams)}
    tf_ms: dict[str, int] = {}

    def key(candle: Candle) -> tuple[int, int, int]:
        span = tf_ms.get(candle.timeframe)
        if span is None:
            span = tf_ms[candle.timeframe] = timeframe_ms(candle.timeframe)
        stream = f"{candle.symbol}|{candle.timeframe}"
        return candle.open_time + span, span, rank.get(stream, len(rank))

    return key


if __name__ == "__main__":
    sys.exit(main())
