"""add, remove and reload touch only the strategies they name; a bad file changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.control_client import ControlClient
from runtime.messages import AddRequest, ErrorReply, OkReply, ReloadRequest, RemoveRequest
from tests.harness import RunningSystem, alive, eth_system, sma_strategy, write_config

HEAD = eth_system()


sma = sma_strategy


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    config = write_config(
        tmp_path / "live.toml",
        HEAD + sma("steady", 3, 8) + sma("changed", 4, 9) + sma("dropped", 5, 10),
    )
    running = RunningSystem(config, tmp_path / "run")
    try:
        yield running
    finally:
        leftovers = running.cleanup()
        assert not leftovers, f"processes left behind: {leftovers}"


def ask(system: RunningSystem, request: Any) -> Any:
    return ControlClient(system.run_dir.endpoint("control"), timeout_s=60).request(request)


def seqs_have_no_hole(system: RunningSystem, sid: str) -> bool:
    seqs = [
        s
        for (s,) in system.journal_rows(
            "SELECT seq FROM events WHERE strategy_id = ? ORDER BY seq", sid
        )
    ]
    return seqs == list(range(1, len(seqs) + 1))


def test_add_remove_and_reload(system: RunningSystem, tmp_path: Path) -> None:
    before = system.wait_all_running()
    pid = {name: row.pid for name, row in before.items()}

    # add: a file of [[strategies]] with the running [defaults] merged under them.
    extra = write_config(tmp_path / "extra.toml", sma("extra", 6, 12))
    reply = ask(system, AddRequest(ControlClient.next_id(), str(extra)))
    assert isinstance(reply, OkReply) and reply.message == "added extra", reply
    rows = system.ps()
    assert rows["extra"].state == "running"
    assert {n: rows[n].pid for n in pid} == pid

    # A bad file is refused with the file and key named, and changes nothing.
    again = write_config(tmp_path / "again.toml", sma("steady", 2, 3))
    reply = ask(system, AddRequest(ControlClient.next_id(), str(again)))
    assert isinstance(reply, ErrorReply)
    assert str(again) in reply.message and "strategies[0].id" in reply.message
    hourly = write_config(
        tmp_path / "hourly.toml", sma("hourly", 2, 3).replace("params", 'timeframe = "1h"\nparams')
    )
    reply = ask(system, AddRequest(ControlClient.next_id(), str(hourly)))
    assert isinstance(reply, ErrorReply) and "does not publish ETH-BTC|1h" in reply.message

    # remove: stopped and forgotten.
    extra_pid = rows["extra"].pid
    reply = ask(system, RemoveRequest(ControlClient.next_id(), "extra"))
    assert isinstance(reply, OkReply) and reply.message == "removed extra", reply
    assert "extra" not in system.ps() and not alive(extra_pid)

    # reload: a changed strategy restarts, a dropped one stops, a new one starts,
    # the unchanged one is not touched.
    system.config.write_text(
        HEAD + sma("steady", 3, 8) + sma("changed", 4, 20) + sma("fresh", 7, 14)
    )
    reply = ask(system, ReloadRequest(ControlClient.next_id()))
    assert isinstance(reply, OkReply), reply
    assert reply.message.startswith(
        "reload: started fresh; restarted changed; removed dropped; 1 unchanged"
    )
    rows = system.ps()
    assert set(rows) == {"aggregator", "broker", "steady", "changed", "fresh"}
    assert rows["steady"].pid == pid["steady"] and rows["steady"].restarts == 0
    assert rows["changed"].pid != pid["changed"] and rows["changed"].state == "running"
    assert rows["fresh"].state == "running"
    assert not alive(pid["dropped"])
    assert rows["broker"].pid == pid["broker"] and rows["aggregator"].pid == pid["aggregator"]
    assert seqs_have_no_hole(system, "steady") and seqs_have_no_hole(system, "changed")
    missed = system.journal_rows(
        "SELECT SUM(json_extract(body, '$.candles_missed')) FROM events "
        "WHERE strategy_id = 'steady' AND kind = 'stats'"
    )
    assert missed == [(0,)], "the untouched strategy lost no candle"

    # A config that no longer validates: the reload is refused and nothing moves.
    system.config.write_text(HEAD + sma("steady", 3, 8).replace("fast = 3", "fast = 30"))
    reply = ask(system, ReloadRequest(ControlClient.next_id()))
    assert isinstance(reply, ErrorReply)
    assert reply.message.startswith("config error, nothing changed:")
    assert "strategies[0].params" in reply.message
    assert {n: r.pid for n, r in system.ps().items()} == {n: r.pid for n, r in rows.items()}
