"""The manager with real processes: crash loops, hangs, leaks, and one-process commands."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.control_client import ControlClient
from runtime.messages import (
    ErrorReply,
    OkReply,
    PauseRequest,
    RestartRequest,
    ResumeRequest,
    StartRequest,
    StopRequest,
)
from tests.harness import (
    REPO,
    LifecycleListener,
    RunningSystem,
    alive,
    eth_system,
    fetch,
    sma_strategy,
    wait_until,
    write_config,
)

# tests.sample_strategies is outside workers.strategies: its folder must be a plugin path.
RUNTIME = "stop_timeout_s = 5\nRUNTIME_EXTRA"
HEAD = eth_system(speed=6000, runtime=RUNTIME) + sma_strategy("steady", 3, 8)


def strategy(sid: str, cls: str, params: str = "{}") -> str:
    return f'\n[[strategies]]\nid = "{sid}"\nclass = "tests.sample_strategies:{cls}"\n' + (
        f"params = {params}\n"
    )


Make = Callable[[str, str], RunningSystem]


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[Make]:
    made: list[RunningSystem] = []

    def make(runtime_extra: str, strategies: str) -> RunningSystem:
        body = HEAD.replace("RUNTIME_EXTRA", runtime_extra) + strategies
        config = write_config(tmp_path / "supervision.toml", body)
        system = RunningSystem(config, tmp_path / "run")
        made.append(system)
        return system

    try:
        yield make
    finally:
        for system in made:
            leftovers = system.cleanup()
            assert not leftovers, f"processes left behind: {leftovers}"


def ask(system: RunningSystem, request: Any, timeout: float = 30) -> Any:
    return ControlClient(system.run_dir.endpoint("control"), timeout_s=timeout).request(request)


def kills_metric(system: RunningSystem, process: str, cause: str) -> float:
    """The aggregator's count of the manager's kills of ``process`` for ``cause``."""
    text = fetch(system.ps()["aggregator"].detail["metrics_url"])
    series = f'stratrun_process_kills_total{{cause="{cause}",process="{process}",role="worker"}} '
    for line in text.splitlines():
        if line.startswith(series):
            return float(line.split()[-1])
    return 0.0


def _delay(detail: str) -> float:
    found = re.search(r"restarting in ([0-9.]+)s", detail)
    assert found, detail
    return float(found.group(1))


def test_crash_loop_backs_off_then_fails_and_start_brings_it_back(make_system: Make) -> None:
    system = make_system(
        "restart = { delay_s = 0.2, multiplier = 2.0, jitter = 0.0, start_limit_burst = 4, "
        "start_limit_interval_s = 60 }",
        strategy("crasher", "Crash", "{ after = 2 }"),
    )
    rows = system.wait_all_running()
    steady_pid = rows["steady"].pid
    events = LifecycleListener(system.run_dir, "crasher")
    try:
        seen = events.wait_for("failed", 60)
    finally:
        events.close()
    exits = [e for e in seen if e.event == "exit"]
    assert [_delay(e.detail) for e in exits] == [0.2, 0.4, 0.8][: len(exits)]
    assert len(exits) >= 2, [(e.event, e.detail) for e in seen]
    assert all("status 3" in e.detail for e in exits)
    failed = next(e for e in seen if e.event == "failed")
    assert "start limit" in failed.detail
    rows = system.ps()
    assert rows["crasher"].state == "failed" and rows["crasher"].pid == 0
    assert rows["steady"].pid == steady_pid and rows["steady"].restarts == 0

    # Not restarted until asked; asked, it starts with a clean slate.
    reply = ask(system, StartRequest(ControlClient.next_id(), "crasher"))
    assert isinstance(reply, OkReply), reply
    assert "running" in reply.message or "failed" in reply.message


def test_a_hung_strategy_is_killed_by_the_watchdog_and_restarted(make_system: Make) -> None:
    system = make_system(
        "watchdog_timeout_s = 1.5\nrestart = { delay_s = 0.1, jitter = 0.0 }",
        strategy("stuck", "Hang", "{ after = 5 }"),
    )
    rows = system.wait_all_running()
    events = LifecycleListener(system.run_dir, "stuck")
    try:
        seen = events.wait_for("spawn", 30)
    finally:
        events.close()
    killed = [e for e in seen if e.event == "killed"]
    assert killed and killed[0].detail.startswith("watchdog: no heartbeat for")
    exit_event = next(e for e in seen if e.event == "exit")
    assert "watchdog" in exit_event.detail and "restarting in" in exit_event.detail
    new_pid = next(e for e in seen if e.event == "spawn").pid
    assert new_pid != rows["stuck"].pid
    assert system.ps()["steady"].pid == rows["steady"].pid
    wait_until(
        lambda: kills_metric(system, "stuck", "watchdog") >= 1, 10, "the kill in the metrics"
    )


def test_a_leaking_worker_is_restarted_at_its_memory_cap(make_system: Make) -> None:
    system = make_system(
        "max_rss_mb = 80\nrestart = { delay_s = 0.1, jitter = 0.0 }",
        strategy("leaky", "Leak", "{ mb_per_candle = 4 }"),
    )
    rows = system.wait_all_running()
    events = LifecycleListener(system.run_dir, "leaky")
    try:
        seen = events.wait_for("exit", 30)
    finally:
        events.close()
    killed = next(e for e in seen if e.event == "killed")
    assert killed.detail.startswith("memory cap: RSS") and "> 80 MiB" in killed.detail
    exit_event = next(e for e in seen if e.event == "exit")
    assert "memory cap" in exit_event.detail
    assert system.ps()["steady"].pid == rows["steady"].pid
    wait_until(lambda: kills_metric(system, "leaky", "memory") >= 1, 10, "the kill in the metrics")


def test_commands_touch_only_the_named_strategy(make_system: Make) -> None:
    system = make_system(
        "",
        strategy("flip", "Flip") + strategy("other", "Flip"),
    )
    rows = system.wait_all_running()
    untouched = {name: rows[name].pid for name in ("steady", "broker", "aggregator")}

    # Pause: the worker stays, with its pid, and stops deciding; resume: it decides again.
    reply = ask(system, PauseRequest(ControlClient.next_id(), "flip"))
    assert isinstance(reply, OkReply) and reply.message == "flip paused"
    assert system.ps()["flip"].state == "paused"
    paused_at = time.time_ns()

    def orders_since(ts_ns: int, sid: str) -> int:
        rows_ = system.journal_rows(
            "SELECT COUNT(*) FROM events WHERE strategy_id = ? AND kind = 'order_submitted' "
            "AND ts_ns > ?",
            sid,
            ts_ns,
        )
        return int(rows_[0][0]) if rows_ else 0

    # "other" keeps trading meanwhile; "flip" submits nothing after its pause took effect.
    wait_until(lambda: orders_since(paused_at, "other") >= 5, 20, "the other strategy to trade")
    assert orders_since(paused_at, "flip") == 0
    reply = ask(system, ResumeRequest(ControlClient.next_id(), "flip"))
    assert isinstance(reply, OkReply) and reply.message == "flip resumed"
    resumed_at = time.time_ns()
    wait_until(lambda: orders_since(resumed_at, "flip") >= 1, 20, "flip to trade again")
    assert system.ps()["flip"].pid == rows["flip"].pid

    # Stop and start one strategy: a clean exit, then a new process; nobody else moves.
    reply = ask(system, StopRequest(ControlClient.next_id(), "flip"))
    assert isinstance(reply, OkReply) and "status 0" in reply.message, reply
    assert not alive(rows["flip"].pid)
    assert system.ps()["flip"].state == "stopped"
    log = system.run_dir.log_file("flip").read_text()
    stopped = re.search(r"last event seq (\d+), (\d+) unacknowledged", log)
    assert stopped, log[-2000:]
    emitted, unacked = int(stopped.group(1)), int(stopped.group(2))
    journaled = system.journal_rows(
        "SELECT COUNT(*), MAX(seq) FROM events WHERE strategy_id = 'flip'"
    )[0]
    assert unacked == 0 and journaled == (emitted, emitted), "a graceful stop loses no event"
    reply = ask(system, StartRequest(ControlClient.next_id(), "flip"))
    assert isinstance(reply, OkReply) and reply.message.startswith("flip running, pid")

    # Restart: a new pid once it is ready again.
    before = system.ps()["other"].pid
    reply = ask(system, RestartRequest(ControlClient.next_id(), "other"))
    assert isinstance(reply, OkReply), reply
    after = system.ps()
    assert after["other"].pid != before and after["other"].state == "running"
    assert {name: after[name].pid for name in untouched} == untouched
    assert all(after[name].restarts == 0 for name in untouched)

    # Every strategy's journal has its seqs without holes, restarts included.
    for sid in ("steady", "flip", "other"):
        seqs = [
            s
            for (s,) in system.journal_rows(
                "SELECT seq FROM events WHERE strategy_id = ? ORDER BY seq", sid
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1)), sid


def test_bad_commands_get_clear_answers(make_system: Make) -> None:
    system = make_system("", strategy("slow", "SlowStop"))
    system.wait_all_running()
    reply = ask(system, PauseRequest(ControlClient.next_id(), "nobody"))
    assert isinstance(reply, ErrorReply) and reply.message == "no process named 'nobody'"
    reply = ask(system, PauseRequest(ControlClient.next_id(), "broker"))
    assert isinstance(reply, ErrorReply) and "not a strategy" in reply.message
    # A command on a process that is busy with another gets "busy", not a hang (SlowStop
    # takes two seconds to stop, so its restart is in progress for at least that long).
    client = ControlClient(system.run_dir.endpoint("control"), timeout_s=30)

    results: list[Any] = []
    slow = threading.Thread(
        target=lambda: results.append(
            client.request(RestartRequest(ControlClient.next_id(), "slow"))
        )
    )
    slow.start()
    wait_until(lambda: system.ps()["slow"].state == "stopping", 10, "the restart to begin")

    def busy() -> bool:
        reply = ask(system, PauseRequest(ControlClient.next_id(), "slow"))
        return isinstance(reply, ErrorReply) and reply.message.startswith("busy: a restart")

    wait_until(busy, 10, "a busy answer while the restart runs")
    # ... while a command on another process is answered at once.
    reply = ask(system, PauseRequest(ControlClient.next_id(), "steady"), timeout=2)
    assert isinstance(reply, OkReply) and reply.message == "steady paused"
    slow.join(timeout=30)
    assert results and isinstance(results[0], OkReply)

    # The CLI says the same in one line and a non-zero status.
    cli = subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(system.run_dir.root), "stop", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1 and cli.stderr.strip() == "stratrun: no process named 'x'"


def test_a_strategy_that_keeps_failing_stops_itself_and_shows_errored(make_system: Make) -> None:
    system = make_system("", strategy("broken", "Broken") + "max_consecutive_errors = 3\n")
    rows = system.wait_all_running()

    def errored() -> bool:
        return bool(system.ps()["broken"].state == "errored")

    wait_until(errored, 20, "ps to show the strategy errored")
    errors = system.journal_rows(
        "SELECT json_extract(body, '$.where'), json_extract(body, '$.message') FROM events "
        "WHERE strategy_id = 'broken' AND kind = 'error' ORDER BY seq"
    )
    assert [where for where, _ in errors] == ["on_candle"] * 3 + ["strategy"]
    assert "ValueError: cannot handle candle" in errors[0][1]
    assert "stopped after 3 consecutive errors" in errors[-1][1]
    assert "strategy broken unsubscribed" in system.run_dir.log_file("broken").read_text()
    after = system.ps()
    assert after["broken"].pid == rows["broken"].pid and alive(rows["broken"].pid)
    assert after["broken"].restarts == 0
    moved = after["steady"].candles
    wait_until(lambda: system.ps()["steady"].candles > moved, 10, "steady to keep going")
    assert system.ps()["steady"].pid == rows["steady"].pid
