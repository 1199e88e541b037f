"""The process state machine: the table as documented, nothing outside it, no dead ends."""

from __future__ import annotations

import itertools

import pytest

from runtime.lifecycle import TRANSITIONS, ProcessState, TransitionError, Trigger, next_state

S = ProcessState
T = Trigger

# The table as the module documents it, written out again so that a change to one is noticed.
EXPECTED: dict[tuple[ProcessState, Trigger], ProcessState] = {
    (S.STOPPED, T.START): S.STARTING,
    (S.STOPPED, T.ADOPTED): S.RUNNING,
    (S.STARTING, T.READY): S.RUNNING,
    (S.STARTING, T.READY_TIMEOUT): S.STARTING,
    (S.STARTING, T.STOP): S.STOPPING,
    (S.STARTING, T.EXITED): S.BACKOFF,
    (S.STARTING, T.GAVE_UP): S.FAILED,
    (S.STARTING, T.FINISHED): S.STOPPED,
    (S.RUNNING, T.PAUSE): S.PAUSED,
    (S.RUNNING, T.STOP): S.STOPPING,
    (S.RUNNING, T.EXITED): S.BACKOFF,
    (S.RUNNING, T.GAVE_UP): S.FAILED,
    (S.RUNNING, T.FINISHED): S.STOPPED,
    (S.PAUSED, T.RESUME): S.RUNNING,
    (S.PAUSED, T.STOP): S.STOPPING,
    (S.PAUSED, T.EXITED): S.BACKOFF,
    (S.PAUSED, T.GAVE_UP): S.FAILED,
    (S.PAUSED, T.FINISHED): S.STOPPED,
    (S.STOPPING, T.STOPPED): S.STOPPED,
    (S.STOPPING, T.EXITED): S.STOPPED,
    (S.BACKOFF, T.RESTART_DUE): S.STARTING,
    (S.BACKOFF, T.START): S.STARTING,
    (S.BACKOFF, T.STOP): S.STOPPED,
    (S.FAILED, T.START): S.STARTING,
    (S.FAILED, T.STOP): S.STOPPED,
}

ALL_PAIRS = list(itertools.product(ProcessState, Trigger))
AT_REST = {S.STOPPED, S.FAILED}


def _id(value: object) -> str:
    """``running-stop`` for a pair, the value for a state."""
    if isinstance(value, tuple):
        return "-".join(str(part) for part in value)
    return str(value)


def _reachable(
    start: ProcessState, edges: dict[ProcessState, set[ProcessState]]
) -> set[ProcessState]:
    seen = {start}
    todo = [start]
    while todo:
        for target in edges.get(todo.pop(), set()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _edges(reverse: bool = False) -> dict[ProcessState, set[ProcessState]]:
    edges: dict[ProcessState, set[ProcessState]] = {}
    for (source, _), target in TRANSITIONS.items():
        a, b = (target, source) if reverse else (source, target)
        edges.setdefault(a, set()).add(b)
    return edges


def test_the_table_is_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("pair", "target"), list(EXPECTED.items()), ids=_id)
def test_every_allowed_pair_gives_its_state(
    pair: tuple[ProcessState, Trigger], target: ProcessState
) -> None:
    assert next_state(*pair) is target


@pytest.mark.parametrize("pair", [p for p in ALL_PAIRS if p not in EXPECTED], ids=_id)
def test_every_other_pair_raises(pair: tuple[ProcessState, Trigger]) -> None:
    state, trigger = pair
    with pytest.raises(TransitionError) as info:
        next_state(state, trigger)
    assert info.value.state is state
    assert info.value.trigger is trigger
    message = str(info.value)
    assert repr(state.value) in message
    assert repr(trigger.value) in message


def test_all_pairs_are_covered_one_way_or_the_other() -> None:
    allowed = sum(1 for p in ALL_PAIRS if p in TRANSITIONS)
    assert allowed == len(EXPECTED)
    assert len(ALL_PAIRS) == len(ProcessState) * len(Trigger)


def test_the_error_lists_what_is_allowed() -> None:
    with pytest.raises(TransitionError, match=r"allowed: resume, stop, exited, gave_up, finished"):
        next_state(S.PAUSED, T.PAUSE)


def test_every_state_has_a_way_out() -> None:
    sources = {source for source, _ in TRANSITIONS}
    assert sources == set(ProcessState)


def test_every_state_is_reachable_from_stopped() -> None:
    assert _reachable(S.STOPPED, _edges()) == set(ProcessState)


def test_every_state_can_come_to_rest() -> None:
    # No trap: from any state some path leads back to stopped.
    assert _reachable(S.STOPPED, _edges(reverse=True)) == set(ProcessState)


def test_only_start_or_adoption_leaves_a_state_at_rest_for_a_live_one() -> None:
    for (source, trigger), target in TRANSITIONS.items():
        if source in AT_REST and target not in AT_REST:
            if trigger is T.ADOPTED:
                assert (source, target) == (S.STOPPED, S.RUNNING)
                continue
            assert trigger is T.START
            assert target is S.STARTING


@pytest.mark.parametrize("state", [S.STARTING, S.RUNNING, S.PAUSED])
def test_a_live_process_can_always_be_stopped_or_reaped(state: ProcessState) -> None:
    assert next_state(state, T.STOP) is S.STOPPING
    assert next_state(state, T.EXITED) is S.BACKOFF
    assert next_state(state, T.GAVE_UP) is S.FAILED
    assert next_state(state, T.FINISHED) is S.STOPPED


def test_a_typical_run() -> None:
    steps = [
        (T.START, S.STARTING),
        (T.READY, S.RUNNING),
        (T.PAUSE, S.PAUSED),
        (T.RESUME, S.RUNNING),
        (T.EXITED, S.BACKOFF),
        (T.RESTART_DUE, S.STARTING),
        (T.READY, S.RUNNING),
        (T.STOP, S.STOPPING),
        (T.STOPPED, S.STOPPED),
    ]
    state = S.STOPPED
    for trigger, expected in steps:
        state = next_state(state, trigger)
        assert state is expected, trigger


def test_a_process_that_hangs_then_gives_up_and_is_started_again() -> None:
    state = S.STOPPED
    for trigger in (T.START, T.READY_TIMEOUT, T.GAVE_UP):
        state = next_state(state, trigger)
    assert state is S.FAILED
    assert next_state(state, T.START) is S.STARTING


def test_dying_while_being_stopped_ends_stopped() -> None:
    assert next_state(next_state(S.RUNNING, T.STOP), T.EXITED) is S.STOPPED


def test_states_and_triggers_are_their_strings() -> None:
    assert isinstance(S.BACKOFF, str)
    assert S.BACKOFF.value == "backoff"
    assert str(T.RESTART_DUE) == "restart_due"
    assert ProcessState("paused") is S.PAUSED
