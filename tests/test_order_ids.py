"""Client order ids name their strategy, fit exchanges' 36-character limit, and parse back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.order_ids import MAX_CLIENT_ORDER_ID, MAX_STRATEGY_ID, client_order_id, owner_of
from tests.harness import REPO, eth_system, sma_strategy, write_config


def test_an_id_names_its_strategy_and_counter_and_parses_back() -> None:
    for sid in ("s1", "sma.fast-2", "a_b-c.d", "x" * MAX_STRATEGY_ID):
        for n in (1, 42, 10**11 - 1):
            order_id = client_order_id(sid, n)
            assert owner_of(order_id) == (sid, n)
            assert len(order_id) <= MAX_CLIENT_ORDER_ID


@pytest.mark.parametrize("text", ["", "s1", "s1-", "-3", "s1-x", "s1-1.5"])
def test_what_is_not_ours_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a stratrun client order id"):
        owner_of(text)


def test_a_strategy_id_too_long_for_client_ids_is_a_config_error(tmp_path: Path) -> None:
    long_id = "s" * (MAX_STRATEGY_ID + 1)
    config = write_config(
        tmp_path / "long.toml",
        eth_system() + sma_strategy("ok", 3, 8) + sma_strategy(long_id, 3, 8),
    )
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(tmp_path / "run"), "up", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "strategies[1].id" in done.stderr and str(config) in done.stderr
    assert not (tmp_path / "run").exists()  # nothing started
