"""The CLI says at once that no manager runs, instead of waiting for a timeout, when the run
directory only holds what a killed manager left behind."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from runtime.control_client import ControlClient, ControlError
from runtime.messages import PsRequest
from runtime.rundir import RunDir
from runtime.specs import Endpoints
from tests.harness import REPO


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _leftovers(tmp_path: Path, control: str) -> RunDir:
    run_dir = RunDir.at(tmp_path / "run")
    run_dir.create()
    ends = Endpoints(market_data=control, events=control, supervision=control, control=control)
    run_dir.endpoints_file.write_bytes(msgspec.json.encode(ends))
    run_dir.lock_file.write_text(str(_exited_pid()))
    return run_dir


def test_tcp_endpoints_of_a_dead_manager_fail_at_once(tmp_path: Path) -> None:
    run_dir = _leftovers(tmp_path, f"tcp://127.0.0.1:{_free_tcp_port()}")
    # Without the pid check this would end after 30 s with "did not answer".
    client = ControlClient.for_run_dir(run_dir, timeout_s=30)
    with pytest.raises(ControlError, match=r"no stratrun manager is running \(pid \d+ in "):
        client.request(PsRequest(ControlClient.next_id()))


def test_a_stale_ipc_socket_of_a_dead_manager_fails_at_once(tmp_path: Path) -> None:
    run_dir = _leftovers(tmp_path, "")
    run_dir.endpoints_file.unlink()
    run_dir.sock_dir.mkdir(exist_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(run_dir.sock_dir / "control"))  # the file stays; nobody listens
    stale.close()
    client = ControlClient.for_run_dir(run_dir, timeout_s=30)
    with pytest.raises(ControlError, match="has exited"):
        client.request(PsRequest(ControlClient.next_id()))


def test_the_cli_reports_it_and_fails(tmp_path: Path) -> None:
    run_dir = _leftovers(tmp_path, f"tcp://127.0.0.1:{_free_tcp_port()}")
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(run_dir.root), "ps"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "no stratrun manager is running" in done.stderr + done.stdout
