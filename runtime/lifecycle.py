"""The states of a supervised process and the one table of moves between them.

Nothing changes a process's state but :func:`next_state`, which looks the pair (state, trigger)
up in :data:`TRANSITIONS` and raises :class:`TransitionError` for any pair not there. In prose:

- ``stopped`` (at rest, never started or cleanly finished): ``start`` spawns it -> ``starting``;
  ``adopted`` (a new manager found it alive, started by an earlier manager) -> ``running``.
- ``starting`` (spawned, has not said ready): ``ready`` -> ``running``; ``stop`` ->
  ``stopping``; ``ready_timeout`` keeps it ``starting`` (see below); and like any live process
  it can be reaped: ``exited`` -> ``backoff``, ``gave_up`` -> ``failed``, ``finished`` ->
  ``stopped``.
- ``running`` (said ready): ``pause`` -> ``paused``; ``stop`` -> ``stopping``; reaped as above.
- ``paused`` (alive, told to hold still): ``resume`` -> ``running``; ``stop`` -> ``stopping``;
  reaped as above.
- ``stopping`` (asked to stop, not reaped yet): ``stopped`` -> ``stopped``, and ``exited`` ->
  ``stopped`` too: it died on its own while we were stopping it, and is not restarted.
- ``backoff`` (exited, waiting to be restarted): ``restart_due`` -> ``starting``; an operator's
  ``start`` cuts the wait short -> ``starting``; ``stop`` -> ``stopped`` (nothing to kill).
- ``failed`` (gave up, down until an operator acts): ``start`` -> ``starting``; ``stop`` ->
  ``stopped`` (acknowledged).

Which of ``exited``, ``gave_up`` and ``finished`` follows a reap is the restart policy's call
(:mod:`runtime.restart_policy`): restarted -> ``exited``; not restarted after a failure or on
hitting the start limit -> ``gave_up``; not restarted after a clean exit -> ``finished``.

``ready_timeout`` leaves the process in ``starting`` on purpose: the manager kills it, and the
reap that follows goes through the restart policy like any failed start (status -SIGKILL), as
systemd treats a start timeout as a failure. Sending it to ``stopping`` instead would end in
``stopped`` and never restart a process that only hung once.

Repeated requests (``stop`` while ``stopping``, ``pause`` while ``paused``) are not in the
table: the caller decides whether to answer them as no-ops or errors.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["TRANSITIONS", "ProcessState", "TransitionError", "Trigger", "next_state"]


class ProcessState(StrEnum):
    """Where a supervised process is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"


class Trigger(StrEnum):
    """What happened to a process (or what was asked of it)."""

    START = "start"  # spawned (the first start, or an operator's start/restart)
    READY = "ready"  # it said it is ready
    EXITED = "exited"  # reaped; it will be restarted after a delay
    GAVE_UP = "gave_up"  # reaped after a failure; not restarted (policy or start limit)
    FINISHED = "finished"  # reaped after a clean exit; not restarted
    STOP = "stop"  # asked to stop
    STOPPED = "stopped"  # reaped after being asked to stop
    PAUSE = "pause"
    RESUME = "resume"
    RESTART_DUE = "restart_due"  # the backoff delay elapsed; spawned again
    READY_TIMEOUT = "ready_timeout"  # killed for not saying ready in time; its reap follows
    ADOPTED = "adopted"  # found alive after a manager restart (pid and start time verified)


# Short names, so that each row of the table reads as one line.
_S = ProcessState
_T = Trigger

TRANSITIONS: Final[dict[tuple[ProcessState, Trigger], ProcessState]] = {
    (_S.STOPPED, _T.START): _S.STARTING,
    (_S.STOPPED, _T.ADOPTED): _S.RUNNING,
    (_S.STARTING, _T.READY): _S.RUNNING,
    (_S.STARTING, _T.READY_TIMEOUT): _S.STARTING,
    (_S.STARTING, _T.STOP): _S.STOPPING,
    (_S.STARTING, _T.EXITED): _S.BACKOFF,
    (_S.STARTING, _T.GAVE_UP): _S.FAILED,
    (_S.STARTING, _T.FINISHED): _S.STOPPED,
    (_S.RUNNING, _T.PAUSE): _S.PAUSED,
    (_S.RUNNING, _T.STOP): _S.STOPPING,
    (_S.RUNNING, _T.EXITED): _S.BACKOFF,
    (_S.RUNNING, _T.GAVE_UP): _S.FAILED,
    (_S.RUNNING, _T.FINISHED): _S.STOPPED,
    (_S.PAUSED, _T.RESUME): _S.RUNNING,
    (_S.PAUSED, _T.STOP): _S.STOPPING,
    (_S.PAUSED, _T.EXITED): _S.BACKOFF,
    (_S.PAUSED, _T.GAVE_UP): _S.FAILED,
    (_S.PAUSED, _T.FINISHED): _S.STOPPED,
    (_S.STOPPING, _T.STOPPED): _S.STOPPED,
    (_S.STOPPING, _T.EXITED): _S.STOPPED,
    (_S.BACKOFF, _T.RESTART_DUE): _S.STARTING,
    (_S.BACKOFF, _T.START): _S.STARTING,
    (_S.BACKOFF, _T.STOP): _S.STOPPED,
    (_S.FAILED, _T.START): _S.STARTING,
    (_S.FAILED, _T.STOP): _S.STOPPED,
}


class TransitionError(Exception):
    """A trigger that the table does not allow in the process's current state."""

    def __init__(self, state: ProcessState, trigger: Trigger) -> None:
        self.state = state
        self.trigger = trigger
        allowed = ", ".join(t.value for (s, t) in TRANSITIONS if s is state) or "none"
        super().__init__(
            f"no transition from state {state.value!r} on trigger {trigger.value!r} "
            f"(allowed: {allowed})"
        )


def next_state(state: ProcessState, trigger: Trigger) -> ProcessState:
    """The state that ``trigger`` leads to from ``state``; :class:`TransitionError` if none."""
    try:
        return TRANSITIONS[state, trigger]
    except KeyError:
        raise TransitionError(state, trigger) from None
