"""A system on TCP with CURVE: a client with a wrong key, or none, gets nothing and changes
nothing; refusals are counted; every control command is in the audit log."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from runtime.control_client import ControlClient
from runtime.messages import (
    ENCODER,
    Event,
    Hello,
    PsReply,
    PsRequest,
    Stats,
    StopRequest,
    candle_topic,
)
from runtime.security import CurveKeys
from runtime.specs import LINKS
from tests.harness import REPO, RunningSystem, eth_system, fetch, sma_strategy, wait_until

NOTHING_WITHIN_MS = 1500  # how long an unauthorised client listens for a reply that must not come


def _free_port_base(count: int = max(LINKS.values()) + 1) -> int:
    """A base port with ``count`` free ports after it (checked by binding each); by default
    as many as the links use."""
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20_000, 60_000)
        probes = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AssertionError("no free range of ports")


class TcpSystem(RunningSystem):
    """A running system reached over TCP: ``ps`` goes through CURVE with the client keys."""

    def ps(self) -> dict[str, Any]:
        reply = ControlClient.for_run_dir(self.run_dir, timeout_s=5).request(
            PsRequest(ControlClient.next_id())
        )
        assert isinstance(reply, PsReply)
        rows = {row.name: row for row in reply.rows}
        self.seen_pids.update(row.pid for row in reply.rows if row.pid)
        return rows


def tcp_runtime(tmp_path: Path) -> tuple[str, Path, int]:
    """A ``[runtime]`` body for TCP with CURVE keys made by ``stratrun keys generate`` in
    ``tmp_path/keys`` and a free port base; also the keys folder and the base."""
    keys = tmp_path / "keys"
    made = subprocess.run(
        [sys.executable, "-m", "runtime", "keys", "generate", "--dir", str(keys)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    base = _free_port_base()
    return f'transport = "tcp"\nkeys_dir = "{keys}"\ntcp = {{ port_base = {base} }}', keys, base


@pytest.fixture
def tcp_system(tmp_path: Path) -> Iterator[tuple[TcpSystem, Path, int]]:
    runtime, keys, base = tcp_runtime(tmp_path)
    config = tmp_path / "tcp.toml"
    config.write_text(eth_system(speed=300, runtime=runtime) + sma_strategy("s1", 5, 20))
    system = TcpSystem(config, tmp_path / "run")
    try:
        yield system, keys, base
    finally:
        leftovers = system.cleanup()
        assert not leftovers, f"processes left running: {leftovers}"


def test_keys_generate_makes_private_files(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    subprocess.run(
        [sys.executable, "-m", "runtime", "keys", "generate", "--dir", str(keys)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=30,
    )
    assert keys.stat().st_mode & 0o777 == 0o700
    for name in ("server.key_secret", "client.key_secret"):
        assert (keys / name).stat().st_mode & 0o777 == 0o600
    loaded = CurveKeys.load(keys)
    assert loaded.authorized == {loaded.client_public}
    again = subprocess.run(
        [sys.executable, "-m", "runtime", "keys", "generate", "--dir", str(keys)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 1 and "already holds keys" in again.stderr


def _intruder(ctx: zmq.Context[Any], kind: int, keys: Path, how: str) -> zmq.Socket[Any]:
    """A client socket that is not authorised: a key pair of its own, or no CURVE at all."""
    sock: zmq.Socket[Any] = ctx.socket(kind)
    sock.linger = 0
    if how == "wrong key":
        public, secret = zmq.curve_keypair()
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = CurveKeys.load(keys).server_public
    return sock


def _rejects(url: str) -> dict[tuple[str, str, str], int]:
    found: dict[tuple[str, str, str], int] = {}
    for labels, value in re.findall(
        r"^stratrun_frames_rejected_total\{(.*)\} (\S+)$", fetch(url), re.M
    ):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found[(label["process"], label["socket"], label["reason"])] = int(float(value))
    return found


@pytest.mark.parametrize("how", ["wrong key", "no key"])
def test_unauthorised_tcp_client_gets_nothing_and_changes_nothing(
    tcp_system: tuple[TcpSystem, Path, int], how: str
) -> None:
    system, keys, base = tcp_system
    rows = system.wait_all_running()
    assert rows["aggregator"].detail["metrics_url"].startswith("http://127.0.0.1:")
    url = rows["aggregator"].detail["metrics_url"]
    s1_pid = rows["s1"].pid
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        # Control: a stop from a stranger gets no reply and stops nothing.
        control = _intruder(ctx, zmq.DEALER, keys, how)
        control.connect(f"tcp://127.0.0.1:{base + 3}")
        control.send(ENCODER.encode(StopRequest(77, "s1")))
        assert not control.poll(NOTHING_WITHIN_MS), "an unauthorised client got a reply"
        # Market data: a stranger's subscription gets no candle (an authorised one does).
        sub = _intruder(ctx, zmq.SUB, keys, how)
        sub.setsockopt(zmq.SUBSCRIBE, candle_topic("ETH-BTC", "5m"))
        sub.connect(f"tcp://127.0.0.1:{base}")
        friend = ctx.socket(zmq.SUB)
        friend.linger = 0
        good = CurveKeys.load(keys, server=False)
        friend.curve_publickey, friend.curve_secretkey = good.client_public, good.client_secret
        friend.curve_serverkey = good.server_public
        friend.setsockopt(zmq.SUBSCRIBE, candle_topic("ETH-BTC", "5m"))
        friend.connect(f"tcp://127.0.0.1:{base}")
        assert friend.poll(10_000), "an authorised subscriber gets candles"
        assert not sub.poll(NOTHING_WITHIN_MS), "an unauthorised subscriber got market data"
        # Events: a stranger's Hello gets no Welcome, its event never reaches the journal.
        events = _intruder(ctx, zmq.DEALER, keys, how)
        events.connect(f"tcp://127.0.0.1:{base + 1}")
        events.send(ENCODER.encode(Hello("intruder", 1)))
        events.send(ENCODER.encode(Event("intruder", 1, 1, Stats(1_000_000))))
        events.send(ENCODER.encode(Event("s1", 10_000, 1, Stats(1_000_000))))
        assert not events.poll(NOTHING_WITHIN_MS), "an unauthorised events client got a reply"
        # Supervision: a stranger cannot pose as a child either.
        sup = _intruder(ctx, zmq.DEALER, keys, how)
        sup.connect(f"tcp://127.0.0.1:{base + 2}")

        reason = "unauthorised" if how == "wrong key" else "handshake"
        wanted = [
            ("manager", "control", reason),
            ("manager", "supervision", reason),
            ("aggregator", "events", reason),
            ("broker", "market_data", reason),
        ]

        def refusals_counted() -> dict[tuple[str, str, str], int] | None:
            found = _rejects(url)
            return found if all(found.get(k, 0) > 0 for k in wanted) else None

        counted = wait_until(refusals_counted, 15, f"refusals ({reason}) counted on every socket")
        print(f"\nrefused ({how}):", {"/".join(k): counted[k] for k in wanted})
        for name, link in (("aggregator", "events"), ("broker", "market_data")):
            log = system.run_dir.log_file(name).read_text()
            assert f"refused a connection on {link}: {reason}" in log, "refusals are logged"
    finally:
        ctx.destroy(linger=0)

    rows = system.ps()
    assert rows["s1"].state == "running" and rows["s1"].pid == s1_pid, "s1 was not stopped"
    intruded = system.journal_rows(
        "SELECT COUNT(*) FROM events WHERE strategy_id = 'intruder' OR seq >= 10000"
    )
    assert intruded == [(0,)], "the journal took events from an unauthorised client"
    audit = [json.loads(line) for line in system.run_dir.audit_log.read_text().splitlines()]
    assert audit, "the authorised ps requests are audited"
    assert all(r["command"] == "ps" for r in audit), "nothing else reached the manager"
    client_key = CurveKeys.load(keys).client_public.decode()
    assert {r["peer"]["user_id"] for r in audit} == {client_key}
    assert {r["event"] for r in audit} == {"request", "reply"}
