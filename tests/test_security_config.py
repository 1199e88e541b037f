"""Safe defaults and hardened config: every bad config or data file stops ``stratrun up`` with
status 2 and one line naming the file and the key or row, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from runtime.config import load_config
from runtime.messages import Signal
from runtime.rundir import RunDir
from runtime.secrets import Secret, SecretRef, resolve
from runtime.specs import WorkerSpec, endpoints_for, write_spec
from tests.harness import DATA, REPO
from workers.outbox import Outbox
from workers.runner import StrategyRunner

HEADER = "timestamp,open,high,low,close,volume\n"
ROWS = [
    "2018-01-10T04:55:00Z,1.0,2.0,0.5,1.5,10",
    "2018-01-10T05:00:00Z,1.5,1.6,1.4,1.4,0",
    "2018-01-10T05:05:00Z,1.4,1.4,1.4,1.4,3.5",
    "2018-01-10T05:10:00Z,1.4,1.5,1.3,1.5,2",
]


def _config(data: str = f"{DATA}/crypto/ETH-BTC-5m.csv", runtime: str = "", extra: str = "") -> str:
    return f"""
[runtime]
{runtime}

[broker]
speed = 0
[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{data}"

[[strategies]]
id = "one"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC"]
timeframe = "5m"
{extra}
"""


def _rows(*lines: str) -> str:
    return HEADER + "".join(line + "\n" for line in lines)


# name: (csv text, the line the error names, words of the problem)
DATA_CASES = {
    "unsorted rows": (_rows(ROWS[0], ROWS[2], ROWS[1], ROWS[3]), 4, "time does not increase"),
    "duplicated row": (_rows(ROWS[0], ROWS[1], ROWS[1], ROWS[2]), 4, "duplicate timestamp"),
    "malformed number": (_rows(ROWS[0], ROWS[1].replace("1.6", "1.6x")), 3, "1.6x"),
    "missing field": (_rows(ROWS[0], "2018-01-10T05:00:00Z,1,1,1,1"), 3, "expected 6 fields"),
    "no time zone": (_rows(ROWS[0], ROWS[1].replace("Z,", ",")), 3, "time zone"),
    "NaN price": (_rows(ROWS[0], ROWS[1].replace("1.6", "nan")), 3, "not a finite number"),
    "infinite price": (_rows(ROWS[0], ROWS[1].replace("1.6", "inf")), 3, "not a finite number"),
    "negative price": (
        _rows(ROWS[0], "2018-01-10T05:00:00Z,-1.5,1.6,-2,1.4,0"),
        3,
        "prices must be above zero",
    ),
    "high below low": (
        _rows(ROWS[0], ROWS[1].replace("1.5,1.6,1.4", "1.5,1.3,1.6")),
        3,
        "low <= open, close <= high",
    ),
    "negative volume": (_rows(ROWS[0], ROWS[1].replace(",0", ",-3")), 3, "volume is negative"),
    "bad header": ("time,open,high,low,close,volume\n" + ROWS[0] + "\n", 1, "header must be"),
}

# name: (config text, the key the error names, words of the problem)
CONFIG_CASES = {
    "run directory too deep for ipc": (
        _config(runtime=f'run_dir = "{"d" * 120}"'),
        "runtime.run_dir",
        "too deep for ipc sockets",
    ),
    "run directory is a file": (
        _config(runtime='run_dir = "bad.toml"'),
        "runtime.run_dir",
        "is not a directory",
    ),
    "unknown transport": (
        _config(runtime='transport = "udp"'),
        "runtime.transport",
        "Invalid enum",
    ),
    "tcp keys missing": (
        _config(runtime='transport = "tcp"\nkeys_dir = "nokeys"'),
        "runtime.keys_dir",
        "no keys directory",
    ),
    "connect to an unknown link": (
        _config(runtime='connect = { gossip = "ipc:///tmp/x" }'),
        "runtime.connect.gossip",
        "unknown link",
    ),
    "connect with the wrong scheme": (
        _config(runtime='connect = { market_data = "tcp://10.0.0.1:1" }'),
        "runtime.connect.market_data",
        "must start ipc://",
    ),
    "tcp port out of range": (
        _config(runtime='transport = "tcp"\ntcp = { port_base = 70000 }'),
        "runtime.tcp.port_base",
        "<= 65500",
    ),
    "class outside the allowed packages": (
        _config().replace("workers.strategies.sma_cross:SmaCross", "runtime.manager:Manager"),
        "strategies[0].class",
        "neither in workers.strategies nor in a folder of runtime.plugin_paths",
    ),
    "class from the standard library": (
        _config().replace("workers.strategies.sma_cross:SmaCross", "json:JSONDecoder"),
        "strategies[0].class",
        "neither in workers.strategies",
    ),
    "secret from an unset variable": (
        _config(extra='secrets = { api_key = { env = "STRATRUN_TEST_UNSET_SECRET" } }'),
        "strategies[0].secrets.api_key",
        "STRATRUN_TEST_UNSET_SECRET is not set",
    ),
    "secret file readable by others": (
        _config(extra='secrets = { api_key = { file = "loose.secret" } }'),
        "strategies[0].secrets.api_key",
        "must be 0600",
    ),
    "secret file missing": (
        _config(extra='secrets = { api_key = { file = "nothing.secret" } }'),
        "strategies[0].secrets.api_key",
        "no such file",
    ),
    "secret with both sources": (
        _config(extra='secrets = { api_key = { env = "HOME", file = "x" } }'),
        "strategies[0].secrets.api_key",
        "exactly one",
    ),
    "secret with an unknown key": (
        _config(extra='secrets = { api_key = { environment = "HOME" } }'),
        "strategies[0].secrets.api_key.environment",
        "unknown key",
    ),
}


def _up(config: Path, run_dir: Path | None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STRATRUN_TEST_UNSET_SECRET", "STRATRUN_RUN_DIR")
    }
    where = ["--run-dir", str(run_dir)] if run_dir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "runtime", *where, "up", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _assert_refused(result: subprocess.CompletedProcess[str], file: Path, where: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(file) in lines[0]
    assert where in lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_file_exits_2_naming_file_key_and_row(case: str, tmp_path: Path) -> None:
    text, line, problem = DATA_CASES[case]
    data = tmp_path / "candles.csv"
    data.write_text(text)
    config = tmp_path / "bad.toml"
    config.write_text(_config(data=str(data)))
    run_dir = tmp_path / "run"
    message = _assert_refused(_up(config, run_dir), config, ": broker.feeds[0].path: ")
    assert f"{data}:{line}: " in message
    assert problem in message
    assert not run_dir.exists(), "nothing may start on a bad data file"


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_exits_2_naming_file_and_key(case: str, tmp_path: Path) -> None:
    text, key, problem = CONFIG_CASES[case]
    loose = tmp_path / "loose.secret"
    loose.write_text("s3cr3t\n")
    loose.chmod(0o644)
    config = tmp_path / "bad.toml"
    config.write_text(text)
    run_dir = tmp_path / "run"
    from_config = key == "runtime.run_dir"  # --run-dir would win over the config's
    result = _up(config, None if from_config else run_dir)
    message = _assert_refused(result, config, f": {key}: ")
    assert problem in message
    assert not run_dir.exists(), "nothing may start on a bad config"
    assert not (tmp_path / ("d" * 120)).exists(), "nor the run directory of the config"
    assert "s3cr3t" not in message


# --------------------------------------------------------------------------- safe defaults


def test_defaults_are_ipc_in_a_private_run_dir_and_local_metrics(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(_config())
    config = load_config(path)
    assert config.runtime.transport == "ipc"
    assert config.aggregator.metrics_host == "127.0.0.1"
    run_dir = RunDir.at(tmp_path / "run")
    old = os.umask(0o022)  # a permissive umask must not loosen the run directory
    try:
        run_dir.create()
    finally:
        os.umask(old)
    for folder in (run_dir.root, run_dir.sock_dir, run_dir.logs_dir, run_dir.specs_dir):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    ends = endpoints_for(config.runtime, run_dir, None)
    assert all(
        getattr(ends, link).startswith(f"ipc://{run_dir.sock_dir}/")
        for link in ("market_data", "events", "supervision", "control", "lifecycle")
    )
    assert ends.binds == {} and ends.keys_dir == ""


def test_run_dir_made_open_is_closed_again(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir(mode=0o755)
    (root / "sock").mkdir(mode=0o777)
    RunDir.at(root).create()
    assert root.stat().st_mode & 0o777 == 0o700
    assert (root / "sock").stat().st_mode & 0o777 == 0o700


def test_tcp_only_when_configured_with_bind_and_connect_addresses(tmp_path: Path) -> None:
    path = tmp_path / "tcp.toml"
    path.write_text(
        _config(
            runtime='transport = "tcp"\ntcp = { host = "0.0.0.0", port_base = 9100, '
            'connect_host = "broker.internal" }\nconnect = { events = "tcp://relay:7000" }'
        )
    )
    config = load_config(path)
    ends = endpoints_for(config.runtime, RunDir.at(tmp_path / "run"), tmp_path / "keys")
    assert ends.market_data == "tcp://broker.internal:9100"
    assert ends.bind("market_data") == "tcp://0.0.0.0:9100"
    assert ends.control == "tcp://broker.internal:9103"
    assert ends.events == "tcp://relay:7000" and ends.bind("events") == "tcp://0.0.0.0:9101"
    assert ends.keys_dir == str(tmp_path / "keys")


def test_specs_on_disk_are_private_and_hold_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRATRUN_TEST_API_KEY", "value-that-must-not-leak")
    secret_file = tmp_path / "key.secret"
    secret_file.write_text("file-secret-that-must-not-leak\n")
    secret_file.chmod(0o600)
    path = tmp_path / "ok.toml"
    path.write_text(
        _config(
            extra='secrets = { api_key = { env = "STRATRUN_TEST_API_KEY" }, '
            'api_secret = { file = "key.secret" } }'
        )
    )
    config = load_config(path)
    strategy = config.strategies[0]
    assert strategy.secrets["api_secret"] == SecretRef(file=str(secret_file))
    run_dir = RunDir.at(tmp_path / "run")
    run_dir.create()
    spec = WorkerSpec(
        name="one", endpoints=endpoints_for(config.runtime, run_dir, None), strategy=strategy
    )
    spec_path = run_dir.specs_dir / "one.json"
    write_spec(spec_path, spec)
    assert spec_path.stat().st_mode & 0o777 == 0o600
    text = spec_path.read_text()
    assert "STRATRUN_TEST_API_KEY" in text and "must-not-leak" not in text

    # The worker reads them when the strategy asks, and they do not print.
    sent: list[object] = []
    runner = StrategyRunner(strategy, Outbox("one", 0, sent.append))
    key = runner.container.secret("api_key")
    assert key.reveal() == "value-that-must-not-leak"
    assert runner.container.secret("api_secret").reveal() == "file-secret-that-must-not-leak"
    assert "must-not-leak" not in f"{key} {key!r} {[key]}"
    runner.container.log.warning("the key is %s", key)
    runner.emit(Signal("ETH-BTC", "5m", "long", reason=str(key)))
    assert "must-not-leak" not in msgspec.json.encode(sent).decode()


def test_a_secret_is_read_when_used() -> None:
    os.environ["STRATRUN_TEST_ROTATED"] = "first"
    try:
        ref = SecretRef(env="STRATRUN_TEST_ROTATED")
        assert resolve(ref).reveal() == "first"
        os.environ["STRATRUN_TEST_ROTATED"] = "second"
        assert resolve(ref).reveal() == "second"
    finally:
        del os.environ["STRATRUN_TEST_ROTATED"]
    assert repr(Secret("x")) == "Secret('***')"
