"""The risk service: the pre-trade check every worker asks before an opening order.

It lives in the aggregator, because the aggregator already sees every journaled event: the
fills, rejections and closes that convert or release reservations reach the book in journal
order, and a restarted aggregator rebuilds the book from the journal it replays anyway. It
runs in a thread of its own, with its own ROUTER (the ``risk`` link), so that answers do not
wait for a journal commit in the main loop (SQLite releases the GIL while it writes). Every
check and every journaled event takes the same lock, and checks are handled one at a time:
a reservation is atomic across strategies.

When the day's loss reaches ``max_daily_loss`` the service asks the manager for the kill
switch (a ``halt`` request on the control socket, reason ``daily loss limit``, resent until
the manager confirms it), then refuses every opening order until the switch is lifted
(``stratrun resume-trading``). The day it tripped is kept in ``<run_dir>/risk.json``: it
trips once per day, also across a restart of the aggregator.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from pathlib import Path

import msgspec
import zmq

from runtime.messages import CONTROL_REPLY_DECODER, Event, HaltRequest, OkReply
from runtime.risk_book import Refusal, RiskBook
from runtime.risk_config import RiskConfig
from runtime.risk_messages import RISK_REQUEST_DECODER, RiskVerdict
from runtime.risk_metrics import RiskCounters
from runtime.security import Security
from runtime.transport import close_all, send_payload, send_to_peer

__all__ = ["RiskService"]

_POLL_MS = 100
_HALT_FILE_EVERY_S = 0.2  # how often the kill switch's file is looked at
_HALT_RESEND_S = 1.0  # the halt request is sent again until the manager confirms it
# The main thread folds events in Python between commits: a waiting check gets the GIL
# after at most this long (Python's default is 5 ms, five times the check's target p99).
_SWITCH_INTERVAL_S = 0.00005
# After a start on a journal that has events, opening orders are refused this long: events
# the previous aggregator never journaled (an allowed order, its fill) are still with the
# workers, which send them again within 5 s of no acknowledgement (workers/process.py).
_RESTART_GRACE_S = 6.0


_STARTING = Refusal("starting", "risk: starting: events sent before the restart not all in yet")


class _TripState(msgspec.Struct, frozen=True):
    tripped_day: int


class RiskService:
    """The book, the lock around it, and the thread that answers checks."""

    def __init__(
        self,
        config: RiskConfig,
        security: Security,
        bind: str,
        control: str,
        halt_file: Path,
        state_file: Path,
        log: logging.Logger,
    ) -> None:
        self.book = RiskBook(config)
        self.counters = RiskCounters()
        self.lock = threading.Lock()
        self._log = log
        self._halt_file = halt_file
        self._state_file = state_file
        self._rejects = security.rejects
        self.router = security.server(zmq.ROUTER, "risk", bind=bind)
        self.control = security.client(zmq.DEALER, "control_reply", connect=control)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="risk", daemon=True)
        self._halt_ids = itertools.count(1)
        self._halt_req = 0
        self._next_halt_send = 0.0
        self._grace_until = 0.0
        self.book.tripped_day = self._read_state()
        self.book.halted = halt_file.exists()

    # -- main thread -------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """One journaled event, in the order the figures fold them."""
        with self.lock:
            tripped = self.book.apply(event)
        if tripped:
            self._tripped()

    def settle(self, strategy_id: str, pending: set[str]) -> None:
        """A new worker of the strategy started: drop what its predecessor never sent."""
        with self.lock:
            dropped = self.book.settle(strategy_id, pending)
        if dropped:
            self._log.info("risk: released %d reservations of %s", dropped, strategy_id)

    def start(self) -> None:
        """The journal is replayed: go live and answer checks."""
        with self.lock:
            tripped = self.book.go_live()
        if tripped:
            self._tripped()
        if self.book.replayed:
            self._grace_until = time.monotonic() + _RESTART_GRACE_S
            self._log.info(
                "risk: book rebuilt from %d journaled events; opening orders refused for %gs "
                "while workers resend what was not journaled",
                self.book.replayed,
                _RESTART_GRACE_S,
            )
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        close_all(self.router, self.control)

    def _tripped(self) -> None:
        book = self.book
        self._log.error(
            "risk: daily loss limit reached (PnL %.8g, limit %.8g): engaging the kill switch",
            book.daily_pnl(),
            book.config.max_daily_loss or 0.0,
        )
        self.counters.halts += 1
        try:
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_bytes(msgspec.json.encode(_TripState(book.tripped_day)))
            tmp.replace(self._state_file)
        except OSError as exc:
            self._log.error("risk: cannot save %s: %s", self._state_file, exc)

    def _read_state(self) -> int:
        try:
            return msgspec.json.decode(self._state_file.read_bytes(), type=_TripState).tripped_day
        except FileNotFoundError:
            return -1
        except (OSError, msgspec.DecodeError) as exc:
            self._log.error("risk: ignoring unreadable %s: %s", self._state_file, exc)
            return -1

    # -- the risk thread ---------------------------------------------------------------

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        next_file_look = 0.0
        while not self._stop.is_set():
            ready = dict(poller.poll(_POLL_MS))
            if self.router in ready:
                self._answer_all()
            if self.control in ready:
                self._control_replies()
            now = time.monotonic()
            if now >= next_file_look:
                next_file_look = now + _HALT_FILE_EVERY_S
                halted = self._halt_file.exists()
                with self.lock:
                    self.book.halted = halted
            if self.book.trip_pending and now >= self._next_halt_send:
                self._send_halt(now)

    def _answer_all(self) -> None:
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            began = time.perf_counter()
            if len(frames) != 2:
                self._rejects.add("risk", "frame_count")
                continue
            identity, payload = frames
            try:
                request = RISK_REQUEST_DECODER.decode(payload)
            except msgspec.DecodeError:
                self._rejects.add("risk", "decode")
                continue
            if self._grace_until and time.monotonic() < self._grace_until:
                refusal: Refusal | None = _STARTING
                outstanding = len(self.book.reserved)
            else:
                self._grace_until = 0.0
                with self.lock:
                    refusal = self.book.check(request)
                    outstanding = len(self.book.reserved)
            verdict = (
                RiskVerdict(request.req_id, True)
                if refusal is None
                else RiskVerdict(request.req_id, False, refusal.reason)
            )
            # Counted before the reply leaves: whoever has the answer sees it counted.
            self.counters.checked(
                refusal.code if refusal else "", time.perf_counter() - began, outstanding
            )
            try:
                send_to_peer(self.router, identity, verdict)
            except zmq.Again:
                pass  # the worker has given up on it: it rejects the order itself

    def _control_replies(self) -> None:
        while True:
            try:
                frame = self.control.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = CONTROL_REPLY_DECODER.decode(frame)
            except msgspec.DecodeError:
                self._rejects.add("control", "decode")
                continue
            if isinstance(reply, OkReply) and reply.req_id == self._halt_req:
                self._log.warning("risk: kill switch on (%s)", reply.message)
                with self.lock:
                    self.book.confirmed()
                    self.book.halted = True

    def _send_halt(self, now: float) -> None:
        self._next_halt_send = now + _HALT_RESEND_S
        self._halt_req = next(self._halt_ids)
        try:
            request = HaltRequest(self._halt_req, False, "daily loss limit")
            send_payload(self.control, request, zmq.NOBLOCK)
        except zmq.Again:
            pass  # no manager to talk to right now: tried again in a second
