"""The manager: starts the aggregator, the broker and one worker per strategy, in that order,
each after the previous one said ready; restarts what exits under its restart policy; kills
what stops heartbeating or outgrows its memory cap; answers the CLI; stops all.

Signal handlers only set a flag; the loop does the work. Children are reaped with a
non-blocking poll every tick. Control commands on one process run one at a time (a second
gets "busy"); commands on other processes are never held up by it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import msgspec
import psutil
import setproctitle
import zmq

from runtime.audit import AuditLog, peer_of
from runtime.child_process import ChildProcess
from runtime.config import Config, ConfigError, StrategyConfig, load_config, load_strategies
from runtime.console import TradeTail
from runtime.killswitch import KillSwitch
from runtime.lifecycle import ProcessState, Trigger, next_state
from runtime.logfmt import parse_line
from runtime.messages import (
    CONTROL_REQUEST_DECODER,
    SUPERVISION_UP_DECODER,
    AddRequest,
    ChildHeartbeat,
    ChildReady,
    ControlRequest,
    DownRequest,
    ErrorReply,
    Halt,
    HaltRequest,
    LifecycleEvent,
    NamedRequest,
    OkReply,
    Pause,
    PauseRequest,
    ProcessFigures,
    ProcessRow,
    PsReply,
    PsRequest,
    ReloadRequest,
    RemoveRequest,
    RestartRequest,
    Resume,
    ResumeRequest,
    ResumeTrading,
    ResumeTradingRequest,
    Role,
    StartFeed,
    StartRequest,
    StopRequest,
    lifecycle_topic,
)
from runtime.priority import Spawner
from runtime.restart_policy import RestartPolicy
from runtime.rundir import RunDir
from runtime.security import CurveKeys, Security
from runtime.specs import (
    AggregatorSpec,
    BrokerSpec,
    ChildSpec,
    LogSettings,
    WorkerSpec,
    endpoints_for,
    keys_dir,
    write_spec,
)
from runtime.transport import (
    RejectCounter,
    close_all,
    send_payload,
    send_to_peer,
    send_topic,
)
from runtime.zygote_client import ZygoteClient, become_subreaper

__all__ = ["AlreadyRunning", "Manager", "StartupFailed", "uss_due"]

_TICK_MS = 50
_SAMPLE_EVERY_S = 1.0
# Each process is sampled once per _SAMPLE_EVERY_S, a tenth of them every tenth of it: with
# a hundred workers, sampling all at once took ~50 ms of CPU in one go, which delayed the
# workers whenever it fell on a candle.
_SAMPLE_SLICES = 10
# Samples between two USS readings of one process. USS walks the page tables (~1 ms of the
# manager's CPU per worker): every 5 s it was ~40% of the manager's CPU with a hundred
# workers, on the two cores they share. Memory changes slowly; RSS (the cap) every second.
_USS_EVERY = 30
_LIVE = (ProcessState.STARTING, ProcessState.RUNNING, ProcessState.PAUSED)


def uss_due(index: int, rounds: int) -> bool:
    """Whether the process at ``index`` has its USS read in sampling round ``rounds``: a
    ``_USS_EVERY``-th of the processes each round, in turn, so each is read every
    ``_USS_EVERY`` rounds without a burst of page-table walks that would delay the workers."""
    return (index + rounds) % _USS_EVERY == 0


class AlreadyRunning(Exception):
    """Another manager holds the run directory."""


class StartupFailed(Exception):
    """The aggregator or the broker did not come up; nothing is left running."""


@dataclass(slots=True)
class _GroupOp:
    """An add, remove or reload: several processes to stop, forget, (re)start, then one reply."""

    identity: bytes
    req_id: int
    deadline: float
    summary: str
    to_stop: set[str]
    forget: set[str]
    restart: set[str]
    to_ready: set[str]
    problems: list[str]

    @property
    def names(self) -> set[str]:
        return self.to_stop | self.to_ready


@dataclass(slots=True)
class _Pending:
    """A control command waiting for its process to get where it asked."""

    identity: bytes
    request: NamedRequest
    deadline: float
    phase: str  # "stopping", "starting", "pausing", "resuming"


class Manager:
    """Supervises every process of one system; :meth:`run` returns when all are stopped."""

    def __init__(
        self, config: Config, run_dir: RunDir, out: TextIO, *, show_trades: bool = True
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.out = out
        self.endpoints = endpoints_for(config.runtime, run_dir, keys_dir(config, run_dir))
        self.epoch = _surviving_epoch(run_dir) or uuid.uuid4().hex[:12]
        self.children: dict[str, ChildProcess] = {}
        self.start_order: list[str] = []
        self.rejects = RejectCounter()
        self.stopping = False
        self._samples = 0
        self.feed_started = False
        self.pending: dict[str, _Pending] = {}
        self.group_ops: list[_GroupOp] = []
        self._next_sample = 0.0
        self._lock_handle: TextIO | None = None
        self._trades = TradeTail(run_dir.journal, out) if show_trades else None
        self._zygote: ZygoteClient | None = None
        self._spawner = Spawner(0)  # the real one is made in run(), which lowers priority
        self._handlers: dict[type[Any], Callable[[bytes, Any], msgspec.Struct | None]] = {
            PsRequest: self._on_ps,
            DownRequest: self._on_down,
            StartRequest: self._on_start,
            StopRequest: self._on_stop,
            RestartRequest: self._on_restart,
            PauseRequest: self._on_pause,
            ResumeRequest: self._on_resume,
            AddRequest: self._on_add,
            RemoveRequest: self._on_remove,
            ReloadRequest: self._on_reload,
            HaltRequest: self._on_halt,
            ResumeTradingRequest: self._on_resume_trading,
        }
        self.kill_switch = KillSwitch(run_dir.root / "halt.json")  # workers read it at start

    # -- the whole life ------------------------------------------------------------

    def run(self) -> None:
        """Start everything, supervise until asked to stop, then stop everything."""
        self._take_lock()
        setproctitle.setproctitle(f"stratrun manager {self.run_dir.root}")
        # Before the context: its I/O thread, made by this thread, inherits the lower priority.
        self._spawner = Spawner(self.config.runtime.background_nice)
        ctx: zmq.Context[Any] = zmq.Context()
        keys = CurveKeys.load(self.endpoints.keys_dir) if self.endpoints.keys_dir else None
        self.security = Security(ctx, keys, self.rejects, logging.getLogger("manager"))
        rt = self.config.runtime
        self.audit = AuditLog(self.run_dir.audit_log, rt.log_max_bytes, rt.log_backups)
        ends = self.endpoints
        self.sup = self.security.server(zmq.ROUTER, "supervision", bind=ends.bind("supervision"))
        self.control = self.security.server(zmq.ROUTER, "control", bind=ends.bind("control"))
        self.lifecycle = self.security.server(zmq.PUB, "lifecycle", bind=ends.bind("lifecycle"))
        self.figures_out = self.security.client(zmq.DEALER, "events", connect=ends.events, sndhwm=4)
        self._write_endpoints()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if self.config.runtime.zygote and become_subreaper():
            self._zygote = ZygoteClient(
                self.run_dir.root, self.run_dir.log_file("zygote"), spawner=self._spawner
            )
            self._zygote.start()
        try:
            self._declare_children()
            self._say(f"stratrun: run directory {self.run_dir.root}")
            self._adopt_survivors()
            self._write_state()
            self._supervise()
        finally:
            self._stop_all()
            self._answer_all_pending("the system is stopping")
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._zygote is not None:
                self._zygote.close()
            self._spawner.close()
            close_all(self.sup, self.control, self.lifecycle, self.figures_out)
            self.security.close()
            self.audit.close()
            ctx.term()
            if self._trades is not None:
                self._trades.close()
            self._write_state()
            self._release_lock()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _declare_children(self) -> None:
        specs: list[tuple[Role, ChildSpec]] = [
            (
                "aggregator",
                AggregatorSpec(
                    name="aggregator",
                    endpoints=self.endpoints,
                    aggregator=self.config.aggregator,
                    journal=str(self.run_dir.journal),
                    risk=self.config.risk,
                    kill_switch_file=str(self.run_dir.root / "halt.json"),
                ),
            ),
            (
                "broker",
                self._broker_spec(self.config),
            ),
        ]
        specs += [("worker", self._worker_spec(s)) for s in self.config.strategies]
        for role, spec in specs:
            self._declare(role, spec)

    def _broker_spec(self, config: Config) -> BrokerSpec:
        return BrokerSpec(
            name="broker",
            endpoints=self.endpoints,
            broker=config.broker,
            cursor_file=str(self.run_dir.root / "replay_cursor.json"),
            epoch=self.epoch,
        )

    def _worker_spec(self, strategy: StrategyConfig) -> WorkerSpec:
        return WorkerSpec(
            name=strategy.id,
            endpoints=self.endpoints,
            strategy=strategy,
            ready_timeout_s=self.config.runtime.ready_timeout_s,
            plugin_paths=self.config.runtime.plugin_paths,
            market_data_hwm=self.config.broker.receive_hwm,
            spill_dir=str(self.run_dir.root / "spill"),
            feed_stale_after_s=self.config.broker.stale_after_s,
            max_unacked_events=strategy.max_unacked_events,
            kill_switch_file=str(self.run_dir.root / "halt.json"),
            risk_timeout_ms=self.config.risk.timeout_ms if self.config.risk else 0.0,
        )

    def _declare(self, role: Role, spec: ChildSpec) -> ChildProcess:
        path = self.run_dir.specs_dir / f"{spec.name}.json"
        digest = self._write_spec(path, spec)
        policy = RestartPolicy(self.config.runtime.restart)
        child = ChildProcess(spec.name, role, path, self.run_dir.log_file(spec.name), policy)
        child.spec_digest = digest
        self.children[spec.name] = child
        self.start_order.append(spec.name)
        return child

    def _write_spec(self, path: Path, spec: ChildSpec) -> str:
        """Write ``spec`` with the config's log settings (the child's own log file)."""
        rt = self.config.runtime
        log = LogSettings(
            file=str(self.run_dir.log_file(spec.name)),
            max_bytes=rt.log_max_bytes,
            backups=rt.log_backups,
        )
        return write_spec(path, msgspec.structs.replace(spec, log_level=rt.log_level, log=log))

    def _adopt_survivors(self) -> None:
        """Take over the processes an earlier manager of this run directory left running.

        One whose pid and start time match the state file and whose spec is unchanged is
        adopted as it is (same pid, no restart); one that is no longer wanted, or whose spec
        changed, is stopped; anything else is started as usual.
        """
        try:
            state = json.loads(self.run_dir.state_file.read_text())
            records: dict[str, Any] = dict(state.get("children", {}))
        except (OSError, ValueError, AttributeError):
            return
        for name, record in records.items():
            pid, create_time = int(record.get("pid") or 0), float(record.get("create_time") or 0)
            if not pid or not create_time:
                continue
            child = self.children.get(name)
            same = child is not None and record.get("digest") == child.spec_digest
            if child is not None and same and child.adopt(pid, create_time):
                self._say(f"  adopted {child.role:<10} {child.name:<16} pid {pid}")
                self._publish(child, "adopted", "found running after a manager restart")
                if child.role == "broker":
                    self.feed_started = True  # it went on publishing; do not start it again
                continue
            stale = ChildProcess(
                name, "worker", Path(), Path(), RestartPolicy(self.config.runtime.restart)
            )
            if stale.adopt(pid, create_time):  # verified to be the process we started
                why = "no longer in the config" if child is None else "its config changed"
                self._say(f"  stopping {name} (pid {pid}) left by the previous manager: {why}")
                stale.kill(why)
                self._wait_gone(stale, 10.0)

    # -- supervision loop ----------------------------------------------------------

    def _supervise(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sup, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        # Children still to start, in order (adopted ones already run).
        queue = [n for n in self.start_order if self.children[n].state is ProcessState.STOPPED]
        while not self.stopping:
            if queue and not self._starting():
                self._spawn(self.children[queue.pop(0)], Trigger.START)
            ready = dict(poller.poll(_TICK_MS))
            if self.sup in ready:
                self._drain_supervision()
            if self.control in ready:
                self._drain_control()
            now = time.monotonic()
            self._check_ready_timeouts(now)
            self._check_watchdog(now)
            self._reap(now)
            self._kill_overdue_stops(now)
            self._restart_due(now)
            self._progress_pending(now)
            self._progress_groups(now)
            if now >= self._next_sample:
                self._next_sample = now + _SAMPLE_EVERY_S / _SAMPLE_SLICES
                if self._sample_resources():
                    self._send_figures()
            if not queue and not self.feed_started and self._all_running():
                self._start_feed()
            if self._trades is not None and self.feed_started:
                self._trades.poll(now)

    def _starting(self) -> bool:
        return any(c.state is ProcessState.STARTING for c in self.children.values())

    def _all_running(self) -> bool:
        # Paused counts: a worker paused before the feed started is up and subscribed (a pause
        # that arrived in the same tick as the last ready used to hold the feed back forever).
        up = (ProcessState.RUNNING, ProcessState.PAUSED)
        return all(c.state in up for c in self.children.values())

    def _spawn(self, child: ChildProcess, trigger: Trigger) -> None:
        zygote = self._zygote if self._zygote and self._zygote.alive else None
        child.spawn(trigger, zygote, self._spawner)
        self._say(f"  started {child.role:<10} {child.name:<16} pid {child.pid}")
        self._publish(child, "spawn", "")
        self._write_state()

    def _start_feed(self) -> None:
        self.feed_started = True
        send_to_peer(self.sup, b"broker", StartFeed())
        self._say("stratrun: all processes ready; market data flowing (Ctrl-C to stop)")

    def _drain_supervision(self) -> None:
        while True:
            try:
                frames = self.sup.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.rejects.add("supervision", "frame_count")
                continue
            identity, payload = frames
            try:
                message = SUPERVISION_UP_DECODER.decode(payload)
            except msgspec.DecodeError:
                self.rejects.add("supervision", "decode")
                continue
            child = self.children.get(identity.decode(errors="replace"))
            if child is None or not child.alive:
                self.rejects.add("supervision", "unknown_peer")
                continue
            match message:
                case ChildReady():
                    if message.pid == child.pid and child.state is ProcessState.STARTING:
                        self._on_ready(child, message)
                case ChildHeartbeat():
                    child.last_heartbeat = time.monotonic()
                    if child.state in (ProcessState.RUNNING, ProcessState.PAUSED):
                        child.figures = message

    def _on_ready(self, child: ChildProcess, message: ChildReady) -> None:
        child.move(Trigger.READY)
        child.ready_at = child.last_heartbeat = time.monotonic()
        child.detail = dict(message.detail)
        extra = "".join(f"  {k} {v}" for k, v in sorted(message.detail.items()))
        took = child.ready_at - child.started_at
        self._say(f"  ready   {child.role:<10} {child.name:<16} in {took:.2f}s{extra}")
        self._publish(child, "ready", f"in {took:.3f}s")
        if child.role == "broker" and self.feed_started:
            send_to_peer(self.sup, b"broker", StartFeed())
        if child.role == "worker" and self.kill_switch.on:
            # A worker (re)started under the kill switch is halted before it acts.
            command = Halt(self.kill_switch.flatten, "kill switch on at start")
            send_to_peer(self.sup, child.name.encode(), command)

    def _check_ready_timeouts(self, now: float) -> None:
        limit = self.config.runtime.ready_timeout_s
        for child in self.children.values():
            if child.state is not ProcessState.STARTING or now - child.started_at <= limit:
                continue
            if child.role != "worker" and not self.feed_started:
                raise StartupFailed(
                    f"{child.role} did not become ready in {limit:g}s; see {child.log_path}"
                )
            if not child.kill_reason:
                self._say(f"  {child.name} not ready after {limit:g}s; killing it")
                child.kill(f"not ready after {limit:g}s")

    def _check_watchdog(self, now: float) -> None:
        """A worker that stopped heartbeating is stuck (a loop, a deadlock): kill it."""
        limit = self.config.runtime.watchdog_timeout_s
        for child in self.children.values():
            watched = child.state in (ProcessState.RUNNING, ProcessState.PAUSED)
            if not watched or child.kill_reason or now - child.last_heartbeat <= limit:
                continue
            reason = f"watchdog: no heartbeat for {now - child.last_heartbeat:.1f}s"
            self._say(f"  killing {child.name}: {reason}")
            child.kill(reason)
            child.kills["watchdog"] = child.kills.get("watchdog", 0) + 1
            self._publish(child, "killed", reason)

    def _sample_resources(self) -> bool:
        """Sample the next slice of the processes; True once every slice has had its turn."""
        cap = self.config.runtime.max_rss_mb
        part, rounds = self._samples % _SAMPLE_SLICES, self._samples // _SAMPLE_SLICES
        self._samples += 1
        for i, child in enumerate(self.children.values()):
            if i % _SAMPLE_SLICES != part or not child.alive:
                continue
            with_uss = not child.resources.uss_bytes or uss_due(i, rounds)
            used = child.sample(with_uss)
            over = cap is not None and child.role == "worker" and used.rss_bytes > cap * 2**20
            if over and not child.kill_reason and child.state is not ProcessState.STOPPING:
                reason = f"memory cap: RSS {used.rss_bytes / 2**20:.0f} MiB > {cap:g} MiB"
                self._say(f"  killing {child.name}: {reason}")
                child.kill(reason)
                child.kills["memory"] = child.kills.get("memory", 0) + 1
                self._publish(child, "killed", reason)
        return self._samples % _SAMPLE_SLICES == 0

    def _send_figures(self) -> None:
        """The aggregator serves the metrics; it gets every process's figures from us."""
        try:
            figures = ProcessFigures(self.rows(), self.rejects.totals())
            send_payload(self.figures_out, figures, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the aggregator is away; the next second's figures will do

    def _reap(self, now: float) -> None:
        for child in self.children.values():
            code = child.poll_exit()
            if code is None:
                continue
            why = child.kill_reason or child.last_exit
            if child.state is ProcessState.STOPPING:
                child.move(Trigger.STOPPED)
                self._say(f"  stopped {child.role:<10} {child.name:<16} {child.last_exit}")
                self._publish(child, "stopped", child.last_exit)
                self._write_state()
                continue
            if child.role != "worker" and not self.feed_started:
                raise StartupFailed(
                    f"{child.role} exited ({child.last_exit}) while starting: "
                    f"{_last_error_line(child.log_path)} (log: {child.log_path})"
                )
            decision = child.policy.on_exit(code, child.started_at, now)
            if decision.restart:
                child.move(Trigger.EXITED)
                child.restart_at = now + decision.delay_s
                text = f"{why}; restarting in {decision.delay_s:.1f}s"
                self._say(f"  exited  {child.role:<10} {child.name:<16} {text}")
                self._publish(child, "exit", text)
            elif decision.failed:
                child.move(Trigger.GAVE_UP)
                self._say(f"  failed  {child.role:<10} {child.name:<16} {why}; {decision.reason}")
                self._publish(child, "failed", f"{why}; {decision.reason}")
            else:
                child.move(Trigger.FINISHED)
                self._say(f"  exited  {child.role:<10} {child.name:<16} {why}; {decision.reason}")
                self._publish(child, "exit", f"{why}; {decision.reason}")
            self._write_state()

    def _kill_overdue_stops(self, now: float) -> None:
        for child in self.children.values():
            overdue = child.state is ProcessState.STOPPING and now > child.stop_deadline
            if overdue and not child.kill_reason:
                grace = self.config.runtime.stop_timeout_s
                self._say(f"  {child.name} ignored SIGTERM for {grace:g}s; killing it")
                child.kill(f"ignored SIGTERM for {grace:g}s")

    def _restart_due(self, now: float) -> None:
        for child in self.children.values():
            if child.state is ProcessState.BACKOFF and now >= child.restart_at:
                child.restarts += 1
                self._publish(child, "restart", f"restart {child.restarts}")
                self._spawn(child, Trigger.RESTART_DUE)

    # -- control -------------------------------------------------------------------

    def _drain_control(self) -> None:
        while True:
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.rejects.add("control", "frame_count")
                continue
            identity, payload = frames[0].bytes, frames[1].bytes
            try:
                request: ControlRequest = CONTROL_REQUEST_DECODER.decode(payload)
            except msgspec.DecodeError as exc:
                self.rejects.add("control", "decode")
                _reply_quietly(self.control, identity, ErrorReply(0, f"bad request: {exc}"))
                continue
            self.audit.request(identity, peer_of(frames[1], self.security.enabled), request)
            reply = self._handlers[type(request)](identity, request)
            if reply is not None:
                self._answer(identity, reply)

    def _answer(self, identity: bytes, reply: msgspec.Struct) -> None:
        """Send a control reply and write the command's result to the audit log."""
        self.audit.reply(identity, reply)
        _reply_quietly(self.control, identity, reply)

    def _on_halt(self, identity: bytes, request: HaltRequest) -> OkReply:
        """The kill switch: saved first (it must outlive any crash), then told to every
        running worker; ``stratrun halt`` waits for their confirmations in ``ps``."""
        reason = request.reason or "stratrun halt"
        self.kill_switch.engage(request.flatten, reason)
        told = self._tell_workers(Halt(request.flatten, reason))
        flatten = " (flatten)" if request.flatten else ""
        self._say(f"  trading halted{flatten} ({reason}): {told} workers told")
        return OkReply(request.req_id, f"halt sent to {told} workers")

    def _on_resume_trading(self, identity: bytes, request: ResumeTradingRequest) -> OkReply:
        self.kill_switch.lift()
        told = self._tell_workers(ResumeTrading())
        self._say(f"  trading resumed: {told} workers told")
        return OkReply(request.req_id, f"resume sent to {told} workers")

    def _tell_workers(self, command: Halt | ResumeTrading) -> int:
        told = 0
        for child in self.children.values():
            if child.role == "worker" and child.state in (
                ProcessState.RUNNING,
                ProcessState.PAUSED,
            ):
                send_to_peer(self.sup, child.name.encode(), command)
                told += 1
        return told

    def _on_ps(self, identity: bytes, request: PsRequest) -> PsReply:
        return PsReply(request.req_id, self.rows())

    def _on_down(self, identity: bytes, request: DownRequest) -> OkReply:
        self.stopping = True
        return OkReply(request.req_id, "stopping")

    def _target(
        self, identity: bytes, request: NamedRequest, workers_only: bool = False
    ) -> ChildProcess | ErrorReply:
        child = self.children.get(request.name)
        if child is None:
            return ErrorReply(request.req_id, f"no process named {request.name!r}")
        if workers_only and child.role != "worker":
            return ErrorReply(request.req_id, f"{request.name} is the {child.role}, not a strategy")
        return self._busy(request.req_id, request.name) or child

    def _busy(self, req_id: int, name: str) -> ErrorReply | None:
        """A refusal if a command on ``name`` is in progress."""
        if (busy := self.pending.get(name)) is not None:
            kind = type(busy.request).__name__.removesuffix("Request").lower()
            return ErrorReply(req_id, f"busy: a {kind} of {name} is in progress")
        if any(name in op.names for op in self.group_ops):
            return ErrorReply(req_id, f"busy: {name} is being added, removed or reloaded")
        return None

    # -- add, remove, reload ---------------------------------------------------------

    def _group(self, identity: bytes, req_id: int, summary: str) -> _GroupOp:
        runtime = self.config.runtime
        timeout = runtime.stop_timeout_s + runtime.ready_timeout_s + 10
        op = _GroupOp(
            identity, req_id, time.monotonic() + timeout, summary, set(), set(), set(), set(), []
        )
        self.group_ops.append(op)
        return op

    def _on_add(self, identity: bytes, request: AddRequest) -> msgspec.Struct | None:
        try:
            added = load_strategies(request.path, self.config)
        except ConfigError as exc:
            return ErrorReply(request.req_id, f"config error: {exc}")
        names = ", ".join(s.id for s in added)
        op = self._group(identity, request.req_id, f"added {names}")
        self.config = msgspec.structs.replace(
            self.config, strategies=[*self.config.strategies, *added]
        )
        for strategy in added:
            child = self._declare("worker", self._worker_spec(strategy))
            self._spawn(child, Trigger.START)
            op.to_ready.add(child.name)
        return None

    def _on_remove(self, identity: bytes, request: RemoveRequest) -> msgspec.Struct | None:
        child = self.children.get(request.name)
        if child is None or child.role != "worker":
            return ErrorReply(request.req_id, f"no strategy named {request.name!r}")
        if (busy := self._busy(request.req_id, request.name)) is not None:
            return busy
        op = self._group(identity, request.req_id, f"removed {request.name}")
        self._stop_one(child)
        op.to_stop.add(child.name)
        op.forget.add(child.name)
        self.config = msgspec.structs.replace(
            self.config, strategies=[s for s in self.config.strategies if s.id != child.name]
        )
        return None

    def _on_reload(self, identity: bytes, request: ReloadRequest) -> msgspec.Struct | None:
        try:
            new = load_config(self.config.source)
        except ConfigError as exc:
            return ErrorReply(request.req_id, f"config error, nothing changed: {exc}")
        wanted = {s.id: s for s in new.strategies}
        running = {n: c for n, c in self.children.items() if c.role == "worker"}
        for name in (*wanted, *running):
            if (busy := self._busy(request.req_id, name)) is not None:
                return busy
        old_runtime = self.config.runtime
        self.config = new
        started, restarted, removed, same = [], [], [], 0
        op = self._group(identity, request.req_id, "")
        for name, child in running.items():
            if name not in wanted:
                self._stop_one(child)
                op.to_stop.add(name)
                op.forget.add(name)
                removed.append(name)
        for name, strategy in wanted.items():
            spec = self._worker_spec(strategy)
            if name not in self.children:
                child = self._declare("worker", spec)
                self._spawn(child, Trigger.START)
                op.to_ready.add(name)
                started.append(name)
                continue
            child = self.children[name]
            digest = self._write_spec(child.spec_path, spec)
            if digest == child.spec_digest:
                same += 1
                continue
            child.spec_digest = digest
            self._stop_one(child)
            op.to_stop.add(name)
            op.restart.add(name)
            restarted.append(name)
        notes = self._note_service_changes(new)
        if new.runtime != old_runtime:
            notes.append("runtime settings apply to processes started from now on")
        parts = [
            f"started {', '.join(started) or 'none'}",
            f"restarted {', '.join(restarted) or 'none'}",
            f"removed {', '.join(removed) or 'none'}",
            f"{same} unchanged",
            *notes,
        ]
        op.summary = "reload: " + "; ".join(parts)
        return None

    def _note_service_changes(self, new: Config) -> list[str]:
        """Write the broker's and aggregator's new specs; they apply at their next start."""
        notes = []
        for child, spec in (
            (
                self.children["broker"],
                self._broker_spec(new),
            ),
            (
                self.children["aggregator"],
                AggregatorSpec(
                    name="aggregator",
                    endpoints=self.endpoints,
                    aggregator=new.aggregator,
                    journal=str(self.run_dir.journal),
                ),
            ),
        ):
            digest = self._write_spec(child.spec_path, spec)
            if digest != child.spec_digest:
                child.spec_digest = digest
                notes.append(f"{child.name} changed: stratrun restart {child.name} to apply it")
        return notes

    def _stop_one(self, child: ChildProcess) -> None:
        """Stop a child whatever its state (live: SIGTERM; waiting or failed: at once)."""
        if child.state in _LIVE:
            child.terminate(self.config.runtime.stop_timeout_s)
        elif child.state in (ProcessState.BACKOFF, ProcessState.FAILED):
            child.move(Trigger.STOP)

    def _progress_groups(self, now: float) -> None:
        for op in list(self.group_ops):
            for name in list(op.to_stop):
                child = self.children[name]
                if child.state not in (ProcessState.STOPPED, ProcessState.FAILED):
                    continue
                op.to_stop.discard(name)
                if name in op.forget:
                    del self.children[name]
                    self.start_order.remove(name)
                    child.spec_path.unlink(missing_ok=True)
                    self._publish(child, "removed", "")
                elif name in op.restart:
                    child.policy.reset()
                    self._spawn(child, Trigger.START)
                    op.to_ready.add(name)
            for name in list(op.to_ready):
                child = self.children[name]
                if child.state is ProcessState.RUNNING:
                    op.to_ready.discard(name)
                elif child.state is ProcessState.FAILED:
                    op.to_ready.discard(name)
                    op.problems.append(f"{name} failed to start ({child.last_exit})")
            reply: msgspec.Struct | None = None
            if not op.names:
                if op.problems:
                    reply = ErrorReply(op.req_id, f"{op.summary}; " + "; ".join(op.problems))
                else:
                    reply = OkReply(op.req_id, op.summary)
            elif now > op.deadline:
                waiting = ", ".join(sorted(op.names))
                reply = ErrorReply(op.req_id, f"{op.summary}; still waiting for {waiting}")
            if reply is not None:
                self.group_ops.remove(op)
                self._write_state()
                self._answer(op.identity, reply)

    def _await(self, identity: bytes, request: NamedRequest, phase: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.pending[request.name] = _Pending(identity, request, deadline, phase)

    def _on_start(self, identity: bytes, request: StartRequest) -> msgspec.Struct | None:
        child = self._target(identity, request)
        if isinstance(child, ErrorReply):
            return child
        if child.state in _LIVE:
            return OkReply(request.req_id, f"{child.name} is already {child.state.value}")
        if child.state is ProcessState.STOPPING:
            return ErrorReply(request.req_id, f"{child.name} is stopping; start it once stopped")
        child.policy.reset()
        trigger = Trigger.RESTART_DUE if child.state is ProcessState.BACKOFF else Trigger.START
        self._spawn(child, trigger)
        self._await(identity, request, "starting", self.config.runtime.ready_timeout_s + 1)
        return None

    def _on_stop(self, identity: bytes, request: StopRequest) -> msgspec.Struct | None:
        child = self._target(identity, request)
        if isinstance(child, ErrorReply):
            return child
        if child.state in (ProcessState.STOPPED, ProcessState.FAILED):
            return OkReply(request.req_id, f"{child.name} is already {child.state.value}")
        if child.state is ProcessState.BACKOFF:
            child.move(Trigger.STOP)
            self._publish(child, "stopped", "stopped while waiting to restart")
            return OkReply(request.req_id, f"{child.name} stopped")
        if child.state is not ProcessState.STOPPING:
            child.terminate(self.config.runtime.stop_timeout_s)
        self._await(identity, request, "stopping", self.config.runtime.stop_timeout_s + 5)
        return None

    def _on_restart(self, identity: bytes, request: RestartRequest) -> msgspec.Struct | None:
        child = self._target(identity, request)
        if isinstance(child, ErrorReply):
            return child
        child.policy.reset()
        timeout = self.config.runtime.stop_timeout_s + self.config.runtime.ready_timeout_s + 5
        if child.state in _LIVE:
            child.terminate(self.config.runtime.stop_timeout_s)
        elif child.state is ProcessState.BACKOFF:
            child.move(Trigger.STOP)
        self._await(identity, request, "stopping", timeout)
        return None

    def _on_pause(self, identity: bytes, request: PauseRequest) -> msgspec.Struct | None:
        return self._switch(identity, request, ProcessState.RUNNING, Trigger.PAUSE, Pause())

    def _on_resume(self, identity: bytes, request: ResumeRequest) -> msgspec.Struct | None:
        return self._switch(identity, request, ProcessState.PAUSED, Trigger.RESUME, Resume())

    def _switch(
        self,
        identity: bytes,
        request: PauseRequest | ResumeRequest,
        source: ProcessState,
        trigger: Trigger,
        command: Pause | Resume,
    ) -> msgspec.Struct | None:
        """Pause or resume a worker: move its state, tell it, answer once it confirmed."""
        child = self._target(identity, request, workers_only=True)
        if isinstance(child, ErrorReply):
            return child
        target = next_state(source, trigger)
        if child.state is target:
            return OkReply(request.req_id, f"{child.name} is already {target.value}")
        if child.state is not source:
            return ErrorReply(
                request.req_id, f"{child.name} is {child.state.value}, not {source.value}"
            )
        child.move(trigger)
        send_to_peer(self.sup, child.name.encode(), command)
        self._await(identity, request, "pausing" if trigger is Trigger.PAUSE else "resuming", 5.0)
        return None

    def _progress_pending(self, now: float) -> None:
        """Answer the commands whose process got where they asked (or ran out of time)."""
        for name, op in list(self.pending.items()):
            child = self.children[name]
            reported = child.figures.state if child.figures is not None else ""
            reply: msgspec.Struct | None = None
            if op.phase == "stopping" and child.state in (
                ProcessState.STOPPED,
                ProcessState.FAILED,
            ):
                if isinstance(op.request, RestartRequest):
                    self._spawn(child, Trigger.START)
                    op.phase = "starting"
                else:
                    reply = OkReply(op.request.req_id, f"{name} stopped ({child.last_exit})")
            elif op.phase == "starting" and child.state is ProcessState.RUNNING:
                reply = OkReply(op.request.req_id, f"{name} running, pid {child.pid}")
            elif op.phase == "starting" and child.state is ProcessState.FAILED:
                reply = ErrorReply(op.request.req_id, f"{name} failed to start: {child.last_exit}")
            elif op.phase == "pausing" and reported == "paused":
                self._publish(child, "paused", "")
                reply = OkReply(op.request.req_id, f"{name} paused")
            elif op.phase == "resuming" and reported == "" and child.figures is not None:
                self._publish(child, "resumed", "")
                reply = OkReply(op.request.req_id, f"{name} resumed")
            elif child.state not in _LIVE and op.phase in ("pausing", "resuming"):
                reply = ErrorReply(op.request.req_id, f"{name} is {child.state.value}")
            if reply is None and now > op.deadline:
                reply = ErrorReply(op.request.req_id, f"{name}: no confirmation ({op.phase})")
            if reply is not None:
                del self.pending[name]
                self._answer(op.identity, reply)

    def _answer_all_pending(self, message: str) -> None:
        for op in self.pending.values():
            self._answer(op.identity, ErrorReply(op.request.req_id, message))
        for group in self.group_ops:
            self._answer(group.identity, ErrorReply(group.req_id, message))
        self.pending.clear()
        self.group_ops.clear()

    def rows(self) -> list[ProcessRow]:
        """One row per process, for ``ps``."""
        now = time.monotonic()
        rows = []
        for name in self.start_order:
            c = self.children[name]
            f = c.figures or ChildHeartbeat(name)
            # A running worker may report a state of its own (errored: up but not trading).
            state = f.state if c.state is ProcessState.RUNNING and f.state else c.state.value
            r = c.resources
            rows.append(
                ProcessRow(
                    name,
                    c.role,
                    c.pid if c.alive else 0,
                    state,
                    round(c.uptime_s(now), 3),
                    c.restarts,
                    f.candles,
                    f.open_positions,
                    f.realized_pnl,
                    dict(c.detail),
                    r.rss_bytes,
                    r.uss_bytes,
                    r.cpu_percent,
                    c.kill_reason or c.last_exit,
                    dict(c.kills),
                    heartbeat_age_s=(
                        round(now - c.last_heartbeat, 3) if c.alive and c.last_heartbeat else 0.0
                    ),
                    lag_s=f.lag_s,
                    rejects=list(f.rejects),
                    halted=f.halted,
                    capital=f.capital,
                    equity=f.equity,
                )
            )
        return rows

    def _publish(self, child: ChildProcess, event: str, detail: str) -> None:
        message = LifecycleEvent(child.name, child.role, child.pid, event, detail, time.time_ns())
        send_topic(self.lifecycle, lifecycle_topic(child.name, event), message, zmq.NOBLOCK)

    # -- stop ----------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Workers first (they flush their events), then the broker, then the aggregator."""
        for role in ("worker", "broker", "aggregator"):
            group = [c for c in self.children.values() if c.role == role]
            try:
                self._stop_group(group)
            except BaseException:
                # Whatever went wrong (a second Ctrl-C included), no child may outlive us.
                for child in self.children.values():
                    child.kill("manager stopping after an error")
                raise

    def _stop_group(self, group: list[ChildProcess]) -> None:
        grace = self.config.runtime.stop_timeout_s
        for child in group:
            if child.state is ProcessState.BACKOFF:
                child.move(Trigger.STOP)
            elif child.alive and child.state is not ProcessState.STOPPING:
                child.terminate(grace)
        deadline = time.monotonic() + grace
        live = [c for c in group if c.alive]
        while live and time.monotonic() < deadline:
            for child in live:
                child.poll_exit()
            live = [c for c in live if c.alive]
            if live:
                time.sleep(0.02)  # waiting for exits we just asked for; nothing else to serve
        for child in live:
            self._say(f"  {child.name} ignored SIGTERM for {grace:g}s; killing it")
            child.kill(f"ignored SIGTERM for {grace:g}s")
        end = time.monotonic() + 10
        while live and time.monotonic() < end:
            for child in live:
                child.poll_exit()
            live = [c for c in live if c.alive]
            if live:
                time.sleep(0.01)  # SIGKILL was sent; the kernel only needs a moment
        for child in group:
            if child.state is ProcessState.STOPPING:
                child.move(Trigger.STOPPED)
                self._say(f"  stopped {child.role:<10} {child.name:<16} {child.last_exit}")

    # -- run directory -------------------------------------------------------------

    def _take_lock(self) -> None:
        self.run_dir.create()
        handle = open(self.run_dir.lock_file, "a+")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise AlreadyRunning(
                f"a stratrun manager (pid {holder}) already runs in {self.run_dir.root}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_handle = handle

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _write_endpoints(self) -> None:
        """Tell the CLI where the control socket is (the address only; never a key)."""
        path = self.run_dir.endpoints_file
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(self.endpoints))
        tmp.replace(path)

    def _write_state(self) -> None:
        """Record every child's pid, so that any tool can find (and clean up) the system."""
        state = {
            "manager_pid": os.getpid(),
            "config": self.config.source,
            "epoch": self.epoch,
            "children": {
                c.name: {
                    "role": c.role,
                    "pid": c.pid if c.alive else 0,
                    "create_time": c.create_time if c.alive else 0,
                    "digest": c.spec_digest,
                    "state": c.state.value,
                    "restarts": c.restarts,
                }
                for c in self.children.values()
            },
        }
        path: Path = self.run_dir.state_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    @staticmethod
    def _wait_gone(child: ChildProcess, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while child.alive and time.monotonic() < end:
            if child.poll_exit() is None:
                time.sleep(0.01)  # SIGKILL was sent; the kernel only needs a moment

    def _say(self, line: str) -> None:
        try:
            print(line, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):
            pass  # whoever read our output went away; supervision goes on regardless


def _reply_quietly(router: zmq.Socket[Any], identity: bytes, reply: msgspec.Struct) -> None:
    try:
        send_to_peer(router, identity, reply)
    except zmq.Again:
        pass  # a client that does not read its replies loses them, nothing else


def _last_error_line(log_path: Path) -> str:
    """The last line a failed child wrote, to quote it rather than send the user digging."""
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    if not lines:
        return "no output"
    line, is_json = parse_line(lines[-1], log_path.stem)
    return line.msg if is_json else lines[-1]


def _surviving_epoch(run_dir: RunDir) -> str:
    """The feed epoch of a broker an earlier manager left running (it will be adopted and
    goes on with its replay), or "" when there is none: a new ``up`` starts a new replay."""
    try:
        state = json.loads(run_dir.state_file.read_text())
        record = state["children"]["broker"]
        pid, create_time = int(record["pid"]), float(record["create_time"])
        epoch = str(state["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    try:
        if pid and abs(psutil.Process(pid).create_time() - create_time) < 0.01:
            return epoch
    except psutil.Error:
        pass
    return ""
