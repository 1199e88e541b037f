"""The manager: starts the aggregator, the broker and one worker per strategy, in that order,
each after the previous one said ready; restarts what exits; answers the CLI; stops all.

Signal handlers only set a flag; the loop does the work. Children are reaped with a
non-blocking poll every tick.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import msgspec
import zmq

from runtime.child_process import ChildProcess
from runtime.config import Config
from runtime.console import TradeTail
from runtime.messages import (
    CONTROL_REQUEST_DECODER,
    SUPERVISION_UP_DECODER,
    ChildHeartbeat,
    ChildReady,
    ControlRequest,
    DownRequest,
    ErrorReply,
    OkReply,
    ProcessRow,
    PsReply,
    PsRequest,
    StartFeed,
)
from runtime.rundir import RunDir
from runtime.specs import AggregatorSpec, BrokerSpec, ChildSpec, Endpoints, WorkerSpec, write_spec
from runtime.transport import RejectCounter, close_all, open_socket, send_to_peer

__all__ = ["AlreadyRunning", "Manager", "StartupFailed"]

_TICK_MS = 50


class AlreadyRunning(Exception):
    """Another manager holds the run directory."""


class StartupFailed(Exception):
    """The aggregator or the broker did not come up; nothing is left running."""


class Manager:
    """Supervises every process of one system; :meth:`run` returns when all are stopped."""

    def __init__(
        self, config: Config, run_dir: RunDir, out: TextIO, *, show_trades: bool = True
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.out = out
        self.endpoints = Endpoints(
            market_data=run_dir.endpoint("market_data"),
            events=run_dir.endpoint("events"),
            supervision=run_dir.endpoint("supervision"),
            control=run_dir.endpoint("control"),
        )
        self.children: dict[str, ChildProcess] = {}
        self.start_order: list[str] = []
        self.rejects = RejectCounter()
        self.stopping = False
        self.feed_started = False
        self._lock_handle: TextIO | None = None
        self._trades = TradeTail(run_dir.journal, out) if show_trades else None
        self._handlers: dict[type[Any], Callable[[Any], msgspec.Struct]] = {
            PsRequest: self._on_ps,
            DownRequest: self._on_down,
        }

    # -- the whole life ------------------------------------------------------------

    def run(self) -> None:
        """Start everything, supervise until asked to stop, then stop everything."""
        self._take_lock()
        ctx: zmq.Context[Any] = zmq.Context()
        self.sup = open_socket(ctx, zmq.ROUTER, bind=self.endpoints.supervision)
        self.control = open_socket(ctx, zmq.ROUTER, bind=self.endpoints.control)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._declare_children()
            self._say(f"stratrun: run directory {self.run_dir.root}")
            self._supervise()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            close_all(self.sup, self.control)
            if self._trades is not None:
                self._trades.close()
            ctx.term()
            self._write_state()
            self._release_lock()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _declare_children(self) -> None:
        log_level = "info"
        specs: list[ChildSpec] = [
            AggregatorSpec(
                name="aggregator",
                endpoints=self.endpoints,
                log_level=log_level,
                aggregator=self.config.aggregator,
                journal=str(self.run_dir.journal),
            ),
            BrokerSpec(
                name="broker",
                endpoints=self.endpoints,
                log_level=log_level,
                broker=self.config.broker,
            ),
        ]
        for strategy in self.config.strategies:
            specs.append(
                WorkerSpec(
                    name=strategy.id,
                    endpoints=self.endpoints,
                    log_level=log_level,
                    strategy=strategy,
                    ready_timeout_s=self.config.runtime.ready_timeout_s,
                    plugin_paths=self.config.runtime.plugin_paths,
                )
            )
        for spec in specs:
            role = {"AggregatorSpec": "aggregator", "BrokerSpec": "broker", "WorkerSpec": "worker"}[
                type(spec).__name__
            ]
            path = self.run_dir.specs_dir / f"{spec.name}.json"
            write_spec(path, spec)
            child = ChildProcess(spec.name, role, path, self.run_dir.log_file(spec.name))  # type: ignore[arg-type]
            self.children[spec.name] = child
            self.start_order.append(spec.name)

    # -- supervision loop ----------------------------------------------------------

    def _supervise(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sup, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        queue = list(self.start_order)  # children still to start, in order
        while not self.stopping:
            now = time.monotonic()
            if queue and not self._starting():
                self._spawn(self.children[queue.pop(0)])
            ready = dict(poller.poll(_TICK_MS))
            if self.sup in ready:
                self._drain_supervision()
            if self.control in ready:
                self._drain_control()
            now = time.monotonic()
            self._check_ready_timeouts(now)
            self._reap(now)
            self._restart_due(now)
            if not queue and not self.feed_started and self._all_running():
                self._start_feed()
            if self._trades is not None and self.feed_started:
                self._trades.poll(now)

    def _starting(self) -> bool:
        return any(c.state == "starting" for c in self.children.values())

    def _all_running(self) -> bool:
        return all(c.state == "running" for c in self.children.values())

    def _spawn(self, child: ChildProcess) -> None:
        child.spawn()
        self._say(f"  started {child.role:<10} {child.name:<16} pid {child.pid}")
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
            if child is None or child.popen is None:
                self.rejects.add("supervision", "unknown_peer")
                continue
            match message:
                case ChildReady():
                    if message.pid != child.pid or child.state != "starting":
                        continue  # a late word from an earlier incarnation
                    child.state = "running"
                    child.ready_at = time.monotonic()
                    child.detail = dict(message.detail)
                    extra = "".join(f"  {k} {v}" for k, v in sorted(message.detail.items()))
                    took = child.ready_at - child.started_at
                    self._say(f"  ready   {child.role:<10} {child.name:<16} in {took:.2f}s{extra}")
                    if child.role == "broker" and self.feed_started:
                        send_to_peer(self.sup, b"broker", StartFeed())
                case ChildHeartbeat():
                    if child.state == "running":
                        child.figures = message

    def _check_ready_timeouts(self, now: float) -> None:
        limit = self.config.runtime.ready_timeout_s
        for child in self.children.values():
            if child.state == "starting" and now - child.started_at > limit:
                self._say(f"  {child.name} not ready after {limit:g}s; killing it")
                if child.role != "worker" and not self.feed_started:
                    raise StartupFailed(
                        f"{child.role} did not become ready in {limit:g}s; see {child.log_path}"
                    )
                child.kill()

    def _reap(self, now: float) -> None:
        for child in self.children.values():
            if child.state not in ("starting", "running"):
                continue
            code = child.poll_exit()
            if code is None:
                continue
            if child.role != "worker" and not self.feed_started and child.state == "starting":
                raise StartupFailed(
                    f"{child.role} exited with status {code} while starting: "
                    f"{_last_error_line(child.log_path)} (log: {child.log_path})"
                )
            runtime = self.config.runtime
            stable = child.state == "running" and now - child.started_at > 30.0
            if stable or child.restart_delay_s == 0:
                child.restart_delay_s = runtime.restart_delay_s
            else:
                child.restart_delay_s = min(child.restart_delay_s * 2, runtime.restart_delay_max_s)
            child.state = "backoff"
            child.restart_at = now + child.restart_delay_s
            self._say(
                f"  exited  {child.role:<10} {child.name:<16} status {code}; "
                f"restarting in {child.restart_delay_s:.1f}s"
            )
            self._write_state()

    def _restart_due(self, now: float) -> None:
        for child in self.children.values():
            if child.state == "backoff" and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    # -- control -------------------------------------------------------------------

    def _drain_control(self) -> None:
        while True:
            try:
                frames = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.rejects.add("control", "frame_count")
                continue
            identity, payload = frames
            try:
                request: ControlRequest = CONTROL_REQUEST_DECODER.decode(payload)
            except msgspec.DecodeError as exc:
                self.rejects.add("control", "decode")
                send_to_peer(self.control, identity, ErrorReply(0, f"bad request: {exc}"))
                continue
            send_to_peer(self.control, identity, self._handlers[type(request)](request))

    def _on_ps(self, request: PsRequest) -> PsReply:
        return PsReply(request.req_id, self.rows())

    def _on_down(self, request: DownRequest) -> OkReply:
        self.stopping = True
        return OkReply(request.req_id, "stopping")

    def rows(self) -> list[ProcessRow]:
        """One row per process, for ``ps``."""
        now = time.monotonic()
        rows = []
        for name in self.start_order:
            c = self.children[name]
            f = c.figures or ChildHeartbeat(name)
            # A running worker may report a state of its own (errored: up but not trading).
            state = f.state if c.state == "running" and f.state else c.state
            rows.append(
                ProcessRow(
                    name,
                    c.role,
                    c.pid,
                    state,
                    round(c.uptime_s(now), 3),
                    c.restarts,
                    f.candles,
                    f.open_positions,
                    f.realized_pnl,
                    dict(c.detail),
                )
            )
        return rows

    # -- stop ----------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Workers first (they flush their events), then the broker, then the aggregator."""
        for role in ("worker", "broker", "aggregator"):
            group = [c for c in self.children.values() if c.role == role and c.popen is not None]
            try:
                self._stop_group(group)
            except BaseException:
                # Whatever went wrong (a second Ctrl-C included), no child may outlive us.
                for child in self.children.values():
                    child.kill()
                raise

    def _stop_group(self, group: list[ChildProcess]) -> None:
        live = [c for c in group if c.poll_exit() is None]
        for child in live:
            child.terminate()
        deadline = time.monotonic() + self.config.runtime.stop_timeout_s
        while live and time.monotonic() < deadline:
            live = [c for c in live if c.poll_exit() is None]
            if live:
                time.sleep(0.02)  # waiting for exits we just asked for; nothing else to serve
        for child in live:
            grace = self.config.runtime.stop_timeout_s
            self._say(f"  {child.name} ignored SIGTERM for {grace:g}s; killing it")
            child.kill()
            assert child.popen is not None
            child.popen.wait()
        for child in group:
            child.state = "stopped"
            self._say(f"  stopped {child.role:<10} {child.name:<16} status {child.last_exit}")

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

    def _write_state(self) -> None:
        """Record every child's pid, so that any tool can find (and clean up) the system."""
        state = {
            "manager_pid": os.getpid(),
            "config": self.config.source,
            "children": {
                c.name: {"role": c.role, "pid": c.pid, "state": c.state, "restarts": c.restarts}
                for c in self.children.values()
            },
        }
        path: Path = self.run_dir.state_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def _say(self, line: str) -> None:
        try:
            print(line, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):
            pass  # whoever read our output went away; supervision goes on regardless


def _last_error_line(log_path: Path) -> str:
    """The last line a failed child wrote, to quote it rather than send the user digging."""
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"
