"""When to restart a child that exited, and after how long: pure logic, time passed in.

A :class:`RestartPolicy` keeps the history of one process (its recent starts and how many quick
restarts came in a row) and turns each exit into a :class:`RestartDecision`. It never reads a
clock, sleeps or touches a process: the manager passes ``time.monotonic()`` values in and acts
on the decision.

The rules, in the order they are applied to an exit:

1. A run of at least ``reset_after_s`` was stable: the backoff sequence starts over.
2. The policy: ``never`` restarts nothing, ``on-failure`` restarts anything but a clean exit
   (status 0), ``always`` restarts everything. A process killed by a signal (negative status)
   has failed.
3. The start limit (systemd's ``StartLimitBurst``/``StartLimitIntervalSec``): if ``burst``
   starts were already recorded within the last ``start_limit_interval_s``, another start would
   exceed the burst, so the process has failed and stays down until an operator starts it.
4. Otherwise it is restarted after ``delay_s * multiplier**(n - 1)`` for the n-th quick restart
   in a row, capped at ``max_delay_s`` and jittered by a factor drawn from
   ``[1 - jitter, 1 + jitter]``.
"""

from __future__ import annotations

import random
import signal
from collections import deque
from typing import Annotated, Literal

import msgspec

__all__ = ["RestartDecision", "RestartPolicy", "RestartSettings"]


class RestartSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Per-process restart behaviour; the defaults follow systemd's and pm2's.

    Parameters
    ----------
    policy:
        ``"on-failure"`` restarts unless the process exited with status 0; ``"always"``
        restarts whatever the status; ``"never"`` restarts nothing.
    delay_s:
        Delay before the first restart of a sequence.
    max_delay_s:
        Cap of the delay before jitter; at least ``delay_s``.
    multiplier:
        Factor between the delays of consecutive quick restarts (1 keeps the delay constant).
    jitter:
        Each delay is multiplied by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]``,
        so that processes which died together do not all restart together.
    reset_after_s:
        A run at least this long counts as stable: the next restart waits ``delay_s`` again.
    start_limit_burst:
        How many starts are allowed within ``start_limit_interval_s`` (systemd's
        ``StartLimitBurst``); a process that would exceed it goes to ``failed``.
    start_limit_interval_s:
        The window of the start limit (systemd's ``StartLimitIntervalSec``).
    """

    policy: Literal["always", "on-failure", "never"] = "on-failure"
    delay_s: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    max_delay_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    reset_after_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    start_limit_burst: Annotated[int, msgspec.Meta(ge=1)] = 5
    start_limit_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0

    def __post_init__(self) -> None:
        # msgspec turns a ValueError raised here into a ValidationError during convert/decode.
        if self.max_delay_s < self.delay_s:
            raise ValueError(
                f"max_delay_s ({self.max_delay_s:g}) is less than delay_s ({self.delay_s:g})"
            )


class RestartDecision(msgspec.Struct, frozen=True):
    """What to do with a process that just exited.

    Parameters
    ----------
    restart:
        Whether to start it again.
    delay_s:
        How long to wait before starting it again; 0 when ``restart`` is False.
    reason:
        One line for the operator, e.g. ``"exited with status 1; restart 3 in 2.0s"``.
    failed:
        The process goes to state ``failed`` and stays down until an operator starts it: the
        start limit was hit, or it failed and the policy does not restart it. A process that is
        not restarted and not failed exited cleanly and goes to ``stopped``.
    """

    restart: bool
    delay_s: float
    reason: str
    failed: bool


class RestartPolicy:
    """The restart history of one process and the decisions it leads to.

    Parameters
    ----------
    settings:
        The process's restart settings.
    rng:
        Source of the jitter; pass a seeded :class:`random.Random` for repeatable delays.
    """

    def __init__(self, settings: RestartSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng if rng is not None else random.Random()
        self._starts: deque[float] = deque()
        self._quick_restarts = 0

    @property
    def consecutive_failures(self) -> int:
        """Restarts decided since the last stable run or :meth:`reset`: the n of the delays.

        Every restarted exit counts, a clean one under policy ``always`` included: a process
        that keeps exiting quickly is looping whatever its status.
        """
        return self._quick_restarts

    def record_start(self, now: float) -> None:
        """Note a spawn at ``now`` (the first start included), for the start limit."""
        self._starts.append(now)
        self._forget_starts_before(now - self.settings.start_limit_interval_s)

    def reset(self) -> None:
        """Forget every start and the backoff sequence (an operator's start or restart)."""
        self._starts.clear()
        self._quick_restarts = 0

    def on_exit(self, status: int, started_at: float, now: float) -> RestartDecision:
        """Decide what follows an exit.

        Parameters
        ----------
        status:
            The exit status as :mod:`subprocess` reports it; negative means killed by that
            signal, which counts as a failure.
        started_at:
            When the run that just ended started.
        now:
            When it exited.
        """
        settings = self.settings
        if now - started_at >= settings.reset_after_s:
            self._quick_restarts = 0
        failure = status != 0
        what = _describe(status)
        if settings.policy == "never":
            return RestartDecision(False, 0.0, f"{what}; not restarted (policy never)", failure)
        if settings.policy == "on-failure" and not failure:
            return RestartDecision(False, 0.0, f"{what}; not restarted (policy on-failure)", False)
        window = settings.start_limit_interval_s
        self._forget_starts_before(now - window)
        starts = len(self._starts)
        if starts >= settings.start_limit_burst:
            reason = (
                f"{what}; start limit: {starts} starts in {window:g}s "
                f"(burst {settings.start_limit_burst}); not restarted"
            )
            return RestartDecision(False, 0.0, reason, True)
        self._quick_restarts += 1
        delay = self._delay(self._quick_restarts)
        return RestartDecision(
            True, delay, f"{what}; restart {self._quick_restarts} in {delay:.1f}s", False
        )

    def _delay(self, n: int) -> float:
        """The jittered delay of the n-th quick restart in a row (n >= 1)."""
        settings = self.settings
        try:
            base = settings.delay_s * settings.multiplier ** (n - 1)
        except OverflowError:
            base = settings.max_delay_s
        base = min(base, settings.max_delay_s)
        if settings.jitter == 0:
            return base
        factor = self._rng.uniform(1 - settings.jitter, 1 + settings.jitter)
        # uniform() may round a hair past its bounds; keep the documented ones exactly.
        return min(max(base * factor, 0.0), settings.max_delay_s * (1 + settings.jitter))

    def _forget_starts_before(self, cutoff: float) -> None:
        """Drop the starts at or before ``cutoff``: they are out of the start-limit window."""
        while self._starts and self._starts[0] <= cutoff:
            self._starts.popleft()


def _describe(status: int) -> str:
    """``exited with status 1`` or ``killed by SIGKILL``."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"killed by {name}"
