"""The kill switch: `stratrun halt [--flatten]` reaches every worker, nothing opens after it
(also in a worker restarted while it is on), and `stratrun resume-trading` lifts it."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.harness import RunningSystem, eth_system, stratrun, wait_until, write_config

FLIPS = ("flip_a", "flip_b")


def _strategy(sid: str, cls: str) -> str:
    return f'\n[[strategies]]\nid = "{sid}"\nclass = "tests.sample_strategies:{cls}"\n'


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    body = eth_system(speed=1500, runtime="stop_timeout_s = 5")
    body += "".join(_strategy(sid, "Flip") for sid in FLIPS) + _strategy("holder", "Hold")
    running = RunningSystem(write_config(tmp_path / "halt.toml", body), tmp_path / "run")
    try:
        yield running
    finally:
        leftovers = running.cleanup()
        assert not leftovers, f"processes left behind: {leftovers}"


def _count(system: RunningSystem, sid: str, kind: str, after_seq: int = 0) -> int:
    rows = system.journal_rows(
        "SELECT COUNT(*) FROM events WHERE strategy_id = ? AND kind = ? AND seq > ?",
        sid,
        kind,
        after_seq,
    )
    return int(rows[0][0]) if rows else 0


def _halt_seq(system: RunningSystem, sid: str) -> int:
    """Seq of the strategy's last 'trading halted' log event (0 if none yet)."""
    rows = system.journal_rows(
        "SELECT MAX(seq) FROM events WHERE strategy_id = ? AND kind = 'log' "
        "AND json_extract(body, '$.message') LIKE 'trading halted%'",
        sid,
    )
    return int(rows[0][0] or 0) if rows else 0


def _wait_seq(probe: Callable[[], int], what: str) -> int:
    return wait_until(probe, 30, what)


def _candles_go_on(system: RunningSystem, sid: str, more: int) -> None:
    start = system.ps()[sid].candles
    wait_until(lambda: system.ps()[sid].candles >= start + more, 30, f"{sid} to go on")


def test_halt_reaches_every_worker_nothing_opens_until_resumed(system: RunningSystem) -> None:
    system.wait_all_running()
    for sid in FLIPS:
        _wait_seq(partial(_count, system, sid, "position_opened"), f"{sid} trading")

    done = stratrun(system, "halt")
    assert done.returncode == 0, done.stderr
    assert "trading halted" in done.stdout
    rows = system.ps()
    assert all(rows[sid].halted for sid in (*FLIPS, "holder"))
    halted_at = {sid: _wait_seq(partial(_halt_seq, system, sid), "the halt log") for sid in FLIPS}

    # A worker killed while the switch is on comes back halted.
    old_pid = rows["flip_a"].pid
    os.kill(old_pid, signal.SIGKILL)
    wait_until(
        lambda: (r := system.ps()["flip_a"]).pid not in (0, old_pid) and r.state == "running",
        30,
        "flip_a restarted",
    )
    wait_until(lambda: system.ps()["flip_a"].halted, 10, "the restarted flip_a halted")
    for sid in FLIPS:
        _candles_go_on(system, sid, 30)
        # Flip wants in on every other candle: each time it is refused, nothing is sent.
        assert _count(system, sid, "position_opened", halted_at[sid]) == 0, sid
        assert _count(system, sid, "order_submitted", halted_at[sid]) == 0, sid

    done = stratrun(system, "resume-trading")
    assert done.returncode == 0, done.stderr
    assert not any(r.halted for r in system.ps().values())
    for sid in FLIPS:
        _wait_seq(partial(_count, system, sid, "position_opened", halted_at[sid]), "trading")


def test_halt_with_flatten_closes_what_is_open(system: RunningSystem) -> None:
    system.wait_all_running()
    wait_until(lambda: system.ps()["holder"].open_positions == 1, 30, "holder to hold")
    done = stratrun(system, "halt", "--flatten")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: system.ps()["holder"].open_positions == 0, 30, "holder flattened")
    closed = system.journal_rows(
        "SELECT COUNT(*) FROM events WHERE strategy_id = 'holder' AND kind = 'position_closed' "
        "AND json_extract(body, '$.reason') = 'halt'"
    )
    assert closed[0][0] == 1
    _candles_go_on(system, "holder", 20)
    assert system.ps()["holder"].open_positions == 0  # it wants long; the switch says no
    assert (system.run_dir.root / "halt.json").exists()  # kept for whatever restarts next
