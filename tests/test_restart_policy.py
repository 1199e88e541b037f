"""RestartPolicy: backoff delays, jitter bounds, stable-run reset, policies, start limit."""

from __future__ import annotations

import random
import signal
from typing import Any

import msgspec
import pytest

from runtime.restart_policy import RestartDecision, RestartPolicy, RestartSettings

# No jitter and no start limit to speak of, so that delays can be compared exactly.
EXACT = RestartSettings(jitter=0.0, start_limit_burst=1000)


def _crash(
    policy: RestartPolicy, at: float, run_s: float = 0.1, status: int = 1
) -> RestartDecision:
    """Start the process at ``at``, let it exit with ``status`` after ``run_s``."""
    policy.record_start(at)
    return policy.on_exit(status, at, at + run_s)


def _crash_loop(policy: RestartPolicy, count: int, run_s: float = 0.1) -> list[RestartDecision]:
    """``count`` quick failures in a row, each restart honouring the previous delay."""
    now = 0.0
    decisions = []
    for _ in range(count):
        decision = _crash(policy, now, run_s)
        decisions.append(decision)
        now += run_s + decision.delay_s
    return decisions


# --------------------------------------------------------------------------- settings


def test_defaults_are_the_documented_ones() -> None:
    settings = RestartSettings()
    assert settings == msgspec.convert({}, RestartSettings)
    assert settings.policy == "on-failure"
    assert (settings.delay_s, settings.max_delay_s, settings.multiplier) == (0.5, 30.0, 2.0)
    assert settings.jitter == 0.1
    assert settings.reset_after_s == 30.0
    assert (settings.start_limit_burst, settings.start_limit_interval_s) == (5, 60.0)


def test_settings_convert_from_a_table() -> None:
    raw = {"policy": "always", "delay_s": 1, "max_delay_s": 8, "start_limit_burst": 3}
    settings = msgspec.convert(raw, RestartSettings)
    assert settings.policy == "always"
    assert settings.delay_s == 1.0
    assert settings.max_delay_s == 8.0
    assert settings.start_limit_burst == 3


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"policy": "sometimes"}, "$.policy"),
        ({"delay_s": -0.1}, "$.delay_s"),
        ({"max_delay_s": -1.0, "delay_s": 0.0}, "$.max_delay_s"),
        ({"multiplier": 0.5}, "$.multiplier"),
        ({"jitter": -0.1}, "$.jitter"),
        ({"jitter": 1.5}, "$.jitter"),
        ({"reset_after_s": 0}, "$.reset_after_s"),
        ({"start_limit_burst": 0}, "$.start_limit_burst"),
        ({"start_limit_burst": 2.5}, "$.start_limit_burst"),
        ({"start_limit_interval_s": 0}, "$.start_limit_interval_s"),
        ({"delay_s": "soon"}, "$.delay_s"),
        ({"delay": 1.0}, "unknown field `delay`"),
        ({"delay_s": 5.0, "max_delay_s": 1.0}, "max_delay_s (1) is less than delay_s (5)"),
    ],
)
def test_settings_reject_bad_values_and_unknown_keys(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert(raw, RestartSettings)
    assert fragment in str(info.value)


def test_settings_accept_the_edges() -> None:
    raw = {"delay_s": 0, "max_delay_s": 0, "multiplier": 1, "jitter": 1}
    settings = msgspec.convert(raw, RestartSettings)
    assert (settings.delay_s, settings.max_delay_s, settings.multiplier) == (0.0, 0.0, 1.0)
    assert settings.jitter == 1.0


# --------------------------------------------------------------------------- delays


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    policy = RestartPolicy(EXACT)
    decisions = _crash_loop(policy, 9)
    assert [d.delay_s for d in decisions] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert all(d.restart and not d.failed for d in decisions)
    assert policy.consecutive_failures == 9


def test_delays_follow_the_multiplier_and_cap() -> None:
    settings = RestartSettings(
        delay_s=1.0, multiplier=3.0, max_delay_s=20.0, jitter=0.0, start_limit_burst=100
    )
    delays = [d.delay_s for d in _crash_loop(RestartPolicy(settings), 5)]
    assert delays == [1.0, 3.0, 9.0, 20.0, 20.0]


def test_multiplier_one_keeps_the_delay_constant() -> None:
    settings = RestartSettings(multiplier=1.0, jitter=0.0, start_limit_burst=100)
    assert {d.delay_s for d in _crash_loop(RestartPolicy(settings), 10)} == {0.5}


def test_zero_delay_restarts_at_once_whatever_the_jitter() -> None:
    settings = RestartSettings(delay_s=0.0, jitter=1.0, start_limit_burst=100)
    assert {d.delay_s for d in _crash_loop(RestartPolicy(settings), 10)} == {0.0}


def test_a_long_crash_loop_stays_at_the_cap() -> None:
    # multiplier ** n overflows a float long before this; the delay must not.
    settings = RestartSettings(multiplier=10.0, jitter=0.0, start_limit_burst=10_000)
    policy = RestartPolicy(settings)
    decisions = _crash_loop(policy, 500)
    assert decisions[-1].delay_s == 30.0
    assert policy.consecutive_failures == 500


@pytest.mark.parametrize("jitter", [0.1, 0.5, 1.0])
def test_jitter_stays_within_its_bounds(jitter: float) -> None:
    settings = RestartSettings(jitter=jitter, start_limit_burst=100_000)
    policy = RestartPolicy(settings, random.Random(1234))
    cap = settings.max_delay_s * (1 + jitter)
    for n in range(1, 12):
        base = min(settings.delay_s * settings.multiplier ** (n - 1), settings.max_delay_s)
        draws = []
        for _ in range(300):
            policy.reset()
            policy.record_start(0.0)
            for _ in range(n - 1):
                policy.on_exit(1, 0.0, 0.1)
            decision = policy.on_exit(1, 0.0, 0.1)
            assert decision.restart
            draws.append(decision.delay_s)
        assert all(base * (1 - jitter) <= d <= base * (1 + jitter) for d in draws), n
        assert all(0.0 <= d <= cap for d in draws)
        # Really jittered, on both sides of the base.
        assert min(draws) < base < max(draws)


def test_jitter_is_repeatable_with_a_seeded_rng() -> None:
    def delays(seed: int) -> list[float]:
        policy = RestartPolicy(RestartSettings(start_limit_burst=100), random.Random(seed))
        return [d.delay_s for d in _crash_loop(policy, 10)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


def test_the_reason_names_status_attempt_and_delay() -> None:
    policy = RestartPolicy(EXACT)
    decisions = _crash_loop(policy, 3)
    assert decisions[0].reason == "exited with status 1; restart 1 in 0.5s"
    assert decisions[2].reason == "exited with status 1; restart 3 in 2.0s"


# --------------------------------------------------------------------------- stable runs


def test_a_stable_run_starts_the_sequence_over() -> None:
    policy = RestartPolicy(EXACT)
    assert [d.delay_s for d in _crash_loop(policy, 4)] == [0.5, 1.0, 2.0, 4.0]
    stable = _crash(policy, 100.0, run_s=EXACT.reset_after_s)
    assert stable.delay_s == 0.5
    assert policy.consecutive_failures == 1
    assert _crash(policy, 200.0).delay_s == 1.0


def test_a_run_just_short_of_stable_keeps_backing_off() -> None:
    policy = RestartPolicy(EXACT)
    _crash_loop(policy, 3)
    almost = _crash(policy, 100.0, run_s=EXACT.reset_after_s - 0.01)
    assert almost.delay_s == 4.0
    assert policy.consecutive_failures == 4


# --------------------------------------------------------------------------- policies


def test_on_failure_does_not_restart_a_clean_exit() -> None:
    policy = RestartPolicy(RestartSettings(policy="on-failure"))
    decision = _crash(policy, 0.0, status=0)
    assert decision == RestartDecision(
        False, 0.0, "exited with status 0; not restarted (policy on-failure)", False
    )
    assert policy.consecutive_failures == 0


def test_on_failure_restarts_a_failure() -> None:
    decision = _crash(RestartPolicy(RestartSettings(policy="on-failure", jitter=0)), 0.0)
    assert decision.restart
    assert decision.delay_s == 0.5


def test_always_restarts_a_clean_exit_with_backoff() -> None:
    policy = RestartPolicy(RestartSettings(policy="always", jitter=0.0, start_limit_burst=100))
    decisions = [_crash(policy, float(i), status=0) for i in range(3)]
    assert all(d.restart and not d.failed for d in decisions)
    assert [d.delay_s for d in decisions] == [0.5, 1.0, 2.0]
    assert decisions[0].reason == "exited with status 0; restart 1 in 0.5s"


def test_always_restarts_a_failure() -> None:
    decision = _crash(RestartPolicy(RestartSettings(policy="always")), 0.0, status=3)
    assert decision.restart
    assert not decision.failed


@pytest.mark.parametrize(("status", "failed"), [(0, False), (1, True), (-signal.SIGKILL, True)])
def test_never_restarts_nothing(status: int, failed: bool) -> None:
    policy = RestartPolicy(RestartSettings(policy="never"))
    decision = _crash(policy, 0.0, status=status)
    assert not decision.restart
    assert decision.delay_s == 0.0
    assert decision.failed is failed
    assert decision.reason.endswith("; not restarted (policy never)")
    assert policy.consecutive_failures == 0


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_killed_by_a_signal_is_a_failure(signum: signal.Signals) -> None:
    policy = RestartPolicy(RestartSettings(policy="on-failure", jitter=0.0))
    decision = _crash(policy, 0.0, status=-signum)
    assert decision.restart
    assert decision.reason == f"killed by {signum.name}; restart 1 in 0.5s"
    assert policy.consecutive_failures == 1


def test_an_unknown_signal_is_still_named() -> None:
    decision = _crash(RestartPolicy(RestartSettings()), 0.0, status=-200)
    assert decision.restart
    assert decision.reason.startswith("killed by signal 200;")


# --------------------------------------------------------------------------- start limit


def test_burst_starts_within_the_interval_fail() -> None:
    settings = RestartSettings(jitter=0.0)  # burst 5 in 60 s
    policy = RestartPolicy(settings)
    decisions = [_crash(policy, float(i)) for i in range(5)]
    assert all(d.restart for d in decisions[:4])
    last = decisions[4]
    assert not last.restart
    assert last.failed
    assert last.delay_s == 0.0
    assert last.reason == (
        "exited with status 1; start limit: 5 starts in 60s (burst 5); not restarted"
    )


def test_the_start_limit_counts_clean_exits_under_always() -> None:
    policy = RestartPolicy(RestartSettings(policy="always", start_limit_burst=2))
    assert _crash(policy, 0.0, status=0).restart
    last = _crash(policy, 1.0, status=0)
    assert not last.restart
    assert last.failed


@pytest.mark.parametrize(("spacing_s", "trips"), [(5.0, False), (4.0, True)])
def test_starts_spread_beyond_the_interval_do_not_trip_the_limit(
    spacing_s: float, trips: bool
) -> None:
    settings = RestartSettings(start_limit_burst=3, start_limit_interval_s=10.0)
    policy = RestartPolicy(settings)
    # Every 5 s, three starts span 10 s: the oldest has left the window when the third one exits.
    # Every 4 s, three fit in the window and the limit trips at the third exit.
    decisions = [_crash(policy, spacing_s * i) for i in range(20)]
    if trips:
        assert [d.failed for d in decisions[:3]] == [False, False, True]
    else:
        assert all(d.restart and not d.failed for d in decisions)


def test_a_start_exactly_one_interval_ago_is_out_of_the_window() -> None:
    settings = RestartSettings(start_limit_burst=2, start_limit_interval_s=10.0)
    policy = RestartPolicy(settings)
    policy.record_start(0.0)
    policy.record_start(5.0)
    assert policy.on_exit(1, 5.0, 10.0).restart
    policy.record_start(10.0)
    assert not policy.on_exit(1, 10.0, 10.5).restart


def test_a_stable_run_does_not_lift_the_start_limit() -> None:
    settings = RestartSettings(start_limit_burst=2, start_limit_interval_s=100.0)
    policy = RestartPolicy(settings)
    assert _crash(policy, 0.0).restart
    last = _crash(policy, 1.0, run_s=settings.reset_after_s)
    assert last.failed


# --------------------------------------------------------------------------- reset


def test_reset_forgets_the_start_limit_and_the_backoff() -> None:
    policy = RestartPolicy(RestartSettings(jitter=0.0, start_limit_burst=3))
    decisions = [_crash(policy, float(i)) for i in range(3)]
    assert [d.delay_s for d in decisions[:2]] == [0.5, 1.0]
    assert decisions[2].failed
    assert policy.consecutive_failures == 2
    policy.reset()
    assert policy.consecutive_failures == 0
    again = _crash(policy, 3.0)
    assert again.restart
    assert again.delay_s == 0.5
    assert policy.consecutive_failures == 1
