"""Every control command is in ``<run_dir>/audit.log``: who, what, when, and what came of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import zmq

from runtime.audit import AuditLog
from runtime.log_handler import rotated_path
from runtime.messages import OkReply, PsRequest
from tests.harness import REPO, RunningSystem, eth_system, sma_strategy, wait_until, write_config


@pytest.fixture
def system(tmp_path: Path) -> Iterator[RunningSystem]:
    config = write_config(
        tmp_path / "audit.toml", eth_system(speed=300) + sma_strategy("s1", 5, 20)
    )
    running = RunningSystem(config, tmp_path / "run")
    try:
        yield running
    finally:
        leftovers = running.cleanup()
        assert not leftovers, f"processes left running: {leftovers}"


def _cli(system: RunningSystem, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(system.run_dir.root), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _audit(system: RunningSystem) -> list[dict[str, Any]]:
    text = system.run_dir.audit_log.read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_control_commands_are_audited_with_peer_time_and_result(system: RunningSystem) -> None:
    system.wait_all_running()
    assert _cli(system, "pause", "s1").returncode == 0
    assert _cli(system, "resume", "s1").returncode == 0
    refused = _cli(system, "stop", "nobody")
    assert refused.returncode == 1
    # A frame that is no command is counted as a reject, not audited as a command.
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(system.run_dir.endpoint("control"))
        sock.send(b"\x81\xa4type\xa4stop")
        assert sock.poll(5000), "a bad request is answered with an error"
    finally:
        ctx.destroy(linger=0)

    def complete() -> list[dict[str, Any]] | None:
        records = _audit(system)
        done = {(r["command"], r["event"]) for r in records}
        wanted = {(c, e) for c in ("pause", "resume", "stop") for e in ("request", "reply")}
        return records if wanted <= done else None

    records = wait_until(complete, 10, "the audit log to hold the three commands")
    assert system.run_dir.audit_log.stat().st_mode & 0o777 == 0o600
    by = {(r["command"], r["event"]): r for r in records}
    assert by[("pause", "request")]["name"] == "s1"
    assert by[("pause", "reply")]["result"] == "ok"
    assert by[("resume", "reply")]["result"] == "ok"
    assert by[("stop", "request")]["name"] == "nobody"
    assert by[("stop", "reply")]["result"] == "error"
    assert "no process named" in by[("stop", "reply")]["message"]
    for record in records:
        assert record["peer"]["transport"] == "ipc"
        assert record["peer"]["uid"] == os.getuid()
        assert record["peer"]["identity"]
        datetime.fromisoformat(record["ts"])
    request, reply = by[("pause", "request")], by[("pause", "reply")]
    assert request["req_id"] == reply["req_id"] and request["peer"] == reply["peer"]
    assert {r["command"] for r in records} <= {"ps", "pause", "resume", "stop"}


def test_the_audit_log_rotates_and_keeps_old_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, max_bytes=4096, backups=0)  # 0 backups still keeps one
    peer = {"transport": "ipc", "uid": 0}
    for n in range(200):
        audit.request(b"cli", peer, PsRequest(n))
        audit.reply(b"cli", OkReply(n, "ok"))
    audit.close()
    current = [json.loads(line) for line in path.read_text().splitlines()]
    older = [json.loads(line) for line in rotated_path(path, 1).read_text().splitlines()]
    assert path.stat().st_size <= 4096
    assert not rotated_path(path, 2).exists()
    assert current[-1]["req_id"] == 199 and current[-1]["event"] == "reply"
    ids = [r["req_id"] for r in older + current]
    assert ids == sorted(ids)  # the old file holds the records just before the current one
    assert older[-1]["req_id"] in (current[0]["req_id"], current[0]["req_id"] - 1)
