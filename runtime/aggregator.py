"""The aggregator process: journal every event once, acknowledge it, serve the metrics."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq
from prometheus_client import CollectorRegistry, start_http_server

from runtime.child import StopFlag, SupervisionLink, child_security, name_process, setup_logging
from runtime.figures import Figures, ProcessTable
from runtime.journal import Journal
from runtime.messages import (
    EVENTS_UP_DECODER,
    Ack,
    ChildHeartbeat,
    Event,
    EventBatch,
    Hello,
    ProcessFigures,
    Welcome,
)
from runtime.metrics import AggregatorCollector, AggregatorCounters
from runtime.risk_metrics import RiskCollector
from runtime.risk_service import RiskService
from runtime.security import KeysError, Security
from runtime.seq_order import SeqOrder
from runtime.specs import AggregatorSpec, read_spec
from runtime.transport import close_all, send_to_peer

__all__ = ["main"]

# At most this many messages, and about this many events, read before one commit: a flood
# (frames of many candles' events, from many workers) cannot starve acknowledgements or the
# heartbeat, even with the aggregator getting a small share of a busy machine.
_BATCH = 2000
_IDLE_POLL_MS = 200
# A commit costs ~150 us of CPU (the WAL write and its fsync) plus ~10 us per event: under
# a flood, committing each time the socket runs dry made batches of ~10 events and spent
# more on commits than on events. No commit starts sooner than this after the last one: a
# lone event (a quiet market) is committed at once, a flood in batches of what this lets
# in, for a few ms more until the acknowledgement.
_COMMIT_GAP_S = 0.004


def main(argv: list[str] | None = None) -> int:
    """Run the aggregator described by the spec file named in ``argv``."""
    args = sys.argv[1:] if argv is None else argv
    spec = read_spec(args[0])
    if not isinstance(spec, AggregatorSpec):
        raise SystemExit(f"{args[0]} is not an aggregator spec")
    log = setup_logging("aggregator", spec.name, spec.log_level, spec.log)
    name_process("aggregator", spec.name, args[0])
    stop = StopFlag()
    journal = Journal(spec.journal)
    figures = Figures()
    folds = _Folds(figures)
    order = SeqOrder(journal, folds, log)
    counters = AggregatorCounters()
    processes = ProcessTable()
    registry = CollectorRegistry()
    registry.register(AggregatorCollector(figures, counters, processes))
    cfg = spec.aggregator
    try:
        server, thread = start_http_server(
            cfg.metrics_port, addr=cfg.metrics_host, registry=registry
        )
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", cfg.metrics_host, cfg.metrics_port, exc)
        journal.close()
        return 1
    metrics_url = f"http://{cfg.metrics_host}:{server.server_port}/metrics"
    ctx: zmq.Context[Any] = zmq.Context()
    router = sup = None
    security: Security | None = None
    risk: RiskService | None = None
    try:
        try:
            security = child_security(ctx, spec, log, server=True)
        except KeysError as exc:
            log.error("%s", exc)
            return 1
        security.rejects = counters.rejects  # one counter: frames and refused handshakes
        router = security.server(
            zmq.ROUTER, "events", bind=spec.endpoints.bind("events"), rcvhwm=100_000
        )
        if spec.risk is not None:
            risk = _risk_service(spec, security, log)
            folds.risk = risk
            registry.register(RiskCollector(risk.counters))
        order.rebuild()  # the journal's events, in seq order: figures and the risk book
        if risk is not None:
            risk.start()
        sup = SupervisionLink(security, spec.endpoints.supervision, spec.name, "aggregator")
        log.info("journal %s; metrics on %s", spec.journal, metrics_url)
        sup.ready(metrics_url=metrics_url)
        _serve(
            router,
            sup,
            _Intake(router, journal, figures, order, counters, log, processes, risk),
            counters,
            stop,
        )
        log.info("aggregator stopping after %d events journaled", counters.journaled)
        return 0
    finally:
        if risk is not None:
            risk.close()
        close_all(router, sup.socket if sup else None)
        if security is not None:
            security.close()
        ctx.term()
        server.shutdown()
        thread.join(timeout=2)
        journal.close()


class _Intake:
    """Events received and not yet committed, and the acknowledgements they will earn."""

    def __init__(
        self,
        router: zmq.Socket[Any],
        journal: Journal,
        figures: Figures,
        order: SeqOrder,
        counters: AggregatorCounters,
        log: logging.Logger,
        processes: ProcessTable,
        risk: RiskService | None = None,
    ) -> None:
        self._risk = risk
        self._router = router
        self._order = order
        self._processes = processes
        self._journal = journal
        self._figures = figures
        self._counters = counters
        self._log = log
        self._pending: list[Event] = []
        self._batches: list[EventBatch] = []
        self._acks: dict[tuple[bytes, str], int] = {}

    def receive(self, frames: list[bytes]) -> None:
        """Take one ``[identity, payload]`` message off the ROUTER; bad frames are counted."""
        if len(frames) != 2:
            self._counters.rejects.add("events", "frame_count")
            return
        identity, payload = frames
        try:
            message = EVENTS_UP_DECODER.decode(payload)
        except msgspec.DecodeError:
            self._counters.rejects.add("events", "decode")
            return
        match message:
            case Event():
                self._pending.append(message)
                key = (identity, message.strategy_id)
                self._acks[key] = max(self._acks.get(key, 0), message.seq)
            case EventBatch():
                # One frame, one commit: a candle's events are journaled all or none.
                self._pending.extend(message.events)
                self._batches.append(message)
                if message.events:
                    key = (identity, message.strategy_id)
                    last = message.events[-1].seq
                    self._acks[key] = max(self._acks.get(key, 0), last)
            case Hello():
                self.commit()  # so the reply reflects everything received before it
                self._order.settle(message.strategy_id)
                if self._risk is not None:
                    pending = self._figures.get(message.strategy_id).pending_orders
                    self._risk.settle(message.strategy_id, set(pending))
                self._welcome(identity, message)
            case ProcessFigures():
                self._processes.update(message.rows, message.rejects)

    @property
    def pending(self) -> int:
        """Events received and not yet committed."""
        return len(self._pending)

    @property
    def waiting(self) -> bool:
        """Something received waits for a commit (events, or a cursor alone)."""
        return bool(self._pending or self._batches)

    def commit(self) -> None:
        """Journal the batch in one transaction, then acknowledge it (duplicates included)."""
        began = time.perf_counter()
        queued = len(self._pending)
        inserted = self._journal.append(self._pending, self._batches)
        if queued:
            self._counters.commit(time.perf_counter() - began, queued)
        self._order.journaled(inserted)
        self._counters.journaled += len(inserted)
        self._counters.duplicates += len(self._pending) - len(inserted)
        for (identity, sid), seq in self._acks.items():
            # Up to the first hole, never past it: what is missing stays with the worker,
            # which resends it at once on seeing it received something after the hole.
            _reply(self._router, identity, Ack(sid, self._order.upto(sid), seq))
        self._pending.clear()
        self._batches.clear()
        self._acks.clear()

    def _welcome(self, identity: bytes, hello: Hello) -> None:
        fig = self._figures.get(hello.strategy_id)
        self._log.info(
            "worker %s (pid %d) resumes after seq %d with %d open positions",
            hello.strategy_id,
            hello.pid,
            fig.last_seq,
            len(fig.positions),
        )
        positions = list(fig.positions.values())
        epoch, cursor = self._journal.cursor(hello.strategy_id)
        welcome = Welcome(
            hello.strategy_id,
            fig.last_seq,
            positions,
            fig.realized_pnl,
            fig.candles,
            cursor,
            list(fig.pending_orders.values()),
            epoch,
            list(fig.last_closed.values()),
            fig.account,
        )
        _reply(self._router, identity, welcome)


class _Folds:
    """Where journaled events are folded in, in seq order: the figures, and the risk book
    when there is a risk gate."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures
        self.risk: RiskService | None = None

    def apply(self, event: Event) -> None:
        self.figures.apply(event)
        if self.risk is not None:
            self.risk.apply(event)


def _risk_service(spec: AggregatorSpec, security: Security, log: logging.Logger) -> RiskService:
    assert spec.risk is not None
    halt_file = Path(spec.kill_switch_file or Path(spec.journal).with_name("halt.json"))
    return RiskService(
        spec.risk,
        security,
        bind=spec.endpoints.bind("risk"),
        control=spec.endpoints.control,
        halt_file=halt_file,
        state_file=halt_file.with_name("risk.json"),
        log=log,
    )


def _serve(
    router: zmq.Socket[Any],
    sup: SupervisionLink,
    intake: _Intake,
    counters: AggregatorCounters,
    stop: StopFlag,
) -> None:
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(sup.socket, zmq.POLLIN)
    last_commit = 0.0
    timeout_ms = _IDLE_POLL_MS
    while not stop.set:
        ready = dict(poller.poll(timeout_ms))
        if sup.socket in ready:
            sup.receive()  # the aggregator takes no commands yet; drain (bad frames counted)
        if router in ready:
            for _ in range(_BATCH):
                try:
                    intake.receive(router.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if intake.pending >= _BATCH:
                    break
        now = time.monotonic()
        timeout_ms = _IDLE_POLL_MS
        if intake.waiting:
            due = last_commit + _COMMIT_GAP_S
            if now >= due or intake.pending >= _BATCH:
                intake.commit()
                now = last_commit = time.monotonic()
            else:
                timeout_ms = int((due - now) * 1000) + 1
        if sup.heartbeat_due(now):
            sup.heartbeat(now, ChildHeartbeat(sup.name, candles=counters.journaled))
    intake.commit()


def _reply(router: zmq.Socket[Any], identity: bytes, message: msgspec.Struct) -> None:
    try:
        send_to_peer(router, identity, message)
    except zmq.Again:
        pass  # the worker resends whatever stays unacknowledged


if __name__ == "__main__":
    sys.exit(main())
