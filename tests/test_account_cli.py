"""``stratrun account``: each strategy's last ledger point and their total, read from a
journal built in the test; ``--curve``; the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.cli import main
from runtime.events_query import summarize
from runtime.journal import Journal
from runtime.messages import EVENT_BODY_JSON_ENCODER, AccountUpdated, Event, Log

HOUR_MS = 3_600_000
A1 = AccountUpdated(10.0, 10.0, 0.0, 0.0, 0.0, 0.0, 10.0, 10.0, 0.0, 0, 0, "start")
A2 = AccountUpdated(10.0, 9.99, 1.05, 0.0, 0.04, 0.01, 10.04, 10.04, 0.0, 0, HOUR_MS, "fill")
A3 = AccountUpdated(10.0, 10.2, 0.0, 0.19, 0.0, 0.02, 10.2, 10.2, 0.03, 1, 2 * HOUR_MS, "fill")
B1 = AccountUpdated(5.0, 4.5, 2.0, -0.45, 0.125, 0.05, 4.625, 5.0, 0.5, 2, HOUR_MS, "mark")


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    journal = Journal(run_dir / "journal.sqlite")
    journal.append(
        [
            Event("alpha", 1, 1, A1),
            Event("beta", 1, 2, B1),
            Event("alpha", 2, 3, A2),
            Event("alpha", 3, 4, Log("info", "not an account")),
            Event("alpha", 4, 5, A3),
            Event("gamma", 1, 6, Log("info", "no account at all")),
        ]
    )
    journal.close()
    return run_dir


def account(run_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--run-dir", str(run_dir), "account", *args])
    return result.exit_code, result.output


def test_the_table_has_each_last_point_and_the_total(run_dir: Path) -> None:
    code, out = account(run_dir)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == [
        "STRATEGY",
        "CAPITAL",
        "CASH",
        "EXPOSURE",
        "REALIZED_PNL",
        "UNREALIZED_PNL",
        "FEES",
        "EQUITY",
        "MAX_DD",
        "TRADES",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert list(rows) == ["alpha", "beta", "TOTAL"]
    assert rows["alpha"] == ["10", "10.2", "0", "+0.19", "+0", "0.02", "10.2", "0.03", "1"]
    assert rows["beta"] == ["5", "4.5", "2", "-0.45", "+0.125", "0.05", "4.625", "0.5", "2"]
    assert rows["TOTAL"][:2] == ["15", "14.7"] and rows["TOTAL"][-1] == "3"


def test_json_and_one_strategy(run_dir: Path) -> None:
    code, out = account(run_dir, "beta", "--json")
    assert code == 0, out
    beta, total = (json.loads(line) for line in out.splitlines())
    assert beta["strategy_id"] == "beta" and beta["equity"] == 4.625 and beta["trades"] == 2
    assert total["strategy_id"] == "TOTAL" and total["equity"] == 4.625


def test_the_curve_of_one_strategy(run_dir: Path) -> None:
    code, out = account(run_dir, "alpha", "--curve")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["CANDLE_UTC", "REASON", "EQUITY", "CASH", "DRAWDOWN", "TRADES"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["-", "start"],
        ["1970-01-01", "01:00"],
        ["1970-01-01", "02:00"],
    ]
    code, out = account(run_dir, "alpha", "--curve", "--json")
    assert [json.loads(line)["equity"] for line in out.splitlines()] == [10.0, 10.04, 10.2]


def test_errors(run_dir: Path, tmp_path: Path) -> None:
    code, out = account(run_dir, "gamma")
    assert code == 1 and "no account for gamma" in out
    code, out = account(run_dir, "--curve")
    assert code == 2 and "exactly one" in out
    code, out = account(tmp_path / "nowhere")
    assert code == 1 and "no journal" in out


def test_events_summarise_account_points() -> None:
    text = summarize(EVENT_BODY_JSON_ENCODER.encode(B1).decode())
    assert text == "mark: equity 4.625 cash 4.5 realized -0.45 unrealized +0.125 fees 0.05 trades 2"
