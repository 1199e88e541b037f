"""A bad config stops ``stratrun up`` with status 2 and one line, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.config import load_config
from tests.harness import DATA, REPO

GOOD = f"""
[broker]
speed = 0
[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{DATA}/crypto/ETH-BTC-5m.csv"

[[strategies]]
id = "one"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC"]
timeframe = "5m"
"""

CASES = {
    "unknown key": (
        GOOD.replace("speed = 0", "speed = 0\nsped = 1"),
        "broker.sped",
        "unknown key",
    ),
    "wrong type": (GOOD.replace("speed = 0", 'speed = "fast"'), "broker.speed", "Expected `float"),
    "missing data file": (
        GOOD.replace("ETH-BTC-5m.csv", "NOPE-5m.csv"),
        "broker.feeds[0].path",
        "data file not found",
    ),
    "duplicate strategy id": (
        GOOD + GOOD[GOOD.index("[[strategies]]") :],
        "strategies[1].id",
        "duplicate strategy id 'one'",
    ),
    "allocation not positive": (
        GOOD + "execution = { cash = 0 }\n",
        "strategies[0].execution.cash",
        "Expected `float` > 0",
    ),
    "class that does not import": (
        GOOD.replace("workers.strategies.sma_cross:SmaCross", "workers.strategies.nothing:No"),
        "strategies[0].class",
        "cannot import 'workers.strategies.nothing'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_exits_2_naming_file_and_key(case: str, tmp_path: Path) -> None:
    body, key, problem = CASES[case]
    config = tmp_path / "bad.toml"
    config.write_text(body)
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(run_dir), "up", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0]
    assert f": {key}: " in lines[0]
    assert problem in lines[0]
    assert not run_dir.exists(), "nothing may start (not even the run directory) on a bad config"
    assert result.stdout == ""


def test_the_unbroken_config_loads(tmp_path: Path) -> None:
    """Each case above breaks a valid config, so each one fails for its own reason."""
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    assert load_config(path).strategies[0].id == "one"
