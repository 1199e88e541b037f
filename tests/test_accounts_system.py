"""Sub-accounts in a running system: the same replay run clean and with two workers
SIGKILLed mid-run (restarted by the manager) leaves every strategy's ledger on the same
floats; the metrics show each strategy's account and totals that are their sum; ``ps`` and
``stratrun account`` show them too."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DATA, RunningSystem, fetch, stratrun, wait_until, write_config

CANDLES = 900  # 5m candles; at speed 45000 the replay lasts 6 s
STRATEGIES = ("sma_fixed", "sma_equity", "rsi_eth")
KILLED = ("sma_equity", "sma_fixed")


def config(tmp_path: Path) -> str:
    lines = (DATA / "crypto" / "ETH-BTC-5m.csv").read_text().splitlines(keepends=True)
    data = tmp_path / "ETH-BTC-5m.csv"
    data.write_text("".join(lines[: CANDLES + 1]))
    return f"""
[runtime]
restart = {{ delay_s = 0.1, multiplier = 1.0, jitter = 0.0 }}

[broker]
speed = 45000
heartbeat_interval_s = 0.2

[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{data}"

[aggregator]
metrics_port = 0

[defaults]
timeframe = "5m"
symbols = ["ETH-BTC"]
stats_interval_s = 0.2
execution = {{ fee_bps = 10, slippage_bps = 2 }}

[[strategies]]
id = "sma_fixed"
class = "workers.strategies.sma_cross:SmaCross"
params = {{ fast = 3, slow = 8 }}
execution = {{ quantity = 2.0, cash = 4.0 }}

[[strategies]]
id = "sma_equity"
class = "workers.strategies.sma_cross:SmaCross"
params = {{ fast = 4, slow = 11, allow_short = true }}
execution = {{ sizing = "equity", equity_fraction = 0.9, whole_units = false, cash = 2.5 }}
account_every = "30m"

[[strategies]]
id = "rsi_eth"
class = "workers.strategies.rsi_reversion:RsiReversion"
params = {{ period = 6, oversold = 40, exit_above = 55 }}
"""


def points(system: RunningSystem, sid: str) -> list[dict[str, Any]]:
    rows = system.journal_rows(
        "SELECT body FROM events WHERE strategy_id = ? AND kind = 'account' ORDER BY seq", sid
    )
    return [json.loads(body) for (body,) in rows]


def finished(system: RunningSystem) -> bool:
    rows = system.journal_rows("SELECT strategy_id, seq FROM cursors")
    at = dict(rows)
    return all(at.get(sid) == CANDLES for sid in STRATEGIES)


def metric(text: str, name: str, sid: str | None = None) -> float:
    labels = f'{{strategy_id="{sid}"}}' if sid is not None else ""
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} not exposed"
    return float(found.group(1))


def run(tmp_path: Path, kill: bool) -> tuple[dict[str, list[dict[str, Any]]], str, str]:
    """One replay to its end; returns each strategy's account points, the metrics text and
    the output of ``stratrun account --json``."""
    tmp_path.mkdir()
    system = RunningSystem(
        write_config(tmp_path / "accounts.toml", config(tmp_path)), tmp_path / "run"
    )
    try:
        system.wait_all_running()
        if kill:
            for sid in KILLED:
                # Mid-run, with a few fills behind it.
                def trading(sid: str = sid) -> bool:
                    return len(points(system, sid)) >= 6

                wait_until(trading, 60, f"{sid} trading")
                assert not finished(system), "the kill comes before the replay's end"
                pid = system.ps()[sid].pid
                os.kill(pid, signal.SIGKILL)

                def restarted(sid: str = sid, old: int = pid) -> bool:
                    row = (system.try_ps() or {}).get(sid)
                    return row is not None and row.state == "running" and row.pid != old

                wait_until(restarted, 30, f"{sid} restarted")
        wait_until(lambda: finished(system), 90, "every strategy at the end of the replay")
        rows = system.ps()
        for sid in STRATEGIES:
            assert rows[sid].capital > 0.0 and rows[sid].equity > 0.0, rows[sid]
        if kill:
            assert all(rows[sid].restarts == 1 for sid in KILLED), rows
        text = fetch(rows["aggregator"].detail["metrics_url"])
        shown = stratrun(system, "account", "--json")
        assert shown.returncode == 0, shown.stderr
        return {sid: points(system, sid) for sid in STRATEGIES}, text, shown.stdout
    finally:
        leftovers = system.cleanup()
        assert not leftovers, f"processes left behind: {leftovers}"


@pytest.mark.timeout(240)
def test_killed_workers_keep_their_sub_accounts_to_the_last_float(tmp_path: Path) -> None:
    clean, _, _ = run(tmp_path / "clean", kill=False)
    killed, text, shown = run(tmp_path / "killed", kill=True)
    for sid in STRATEGIES:
        assert clean[sid][0]["reason"] == "start"
        assert clean[sid][-1]["trades"] > 3, f"{sid} traded"
        # The whole curve, every float: cash, PnL, fees, equity, drawdown, trades.
        assert killed[sid] == clean[sid], sid
    assert any(p["reason"] == "mark" for p in clean["sma_equity"])
    # The metrics: each strategy's last point, and totals that are their sum.
    last = {sid: killed[sid][-1] for sid in STRATEGIES}
    for field in ("capital", "cash", "equity", "realized_pnl", "unrealized_pnl", "exposure"):
        total = 0.0
        for sid in sorted(STRATEGIES):
            assert metric(text, f"stratrun_account_{field}", sid) == last[sid][field]
            total += last[sid][field]
        assert metric(text, f"stratrun_portfolio_{field}") == total, field
    fees = sum(last[sid]["fees"] for sid in sorted(STRATEGIES))
    assert metric(text, "stratrun_portfolio_fees_total") == fees
    trades = sum(last[sid]["trades"] for sid in STRATEGIES)
    assert metric(text, "stratrun_portfolio_trades_total") == trades
    assert metric(text, "stratrun_account_capital", "rsi_eth") == 10_000.0  # the default
    # stratrun account: the same figures from the journal.
    table = [json.loads(line) for line in shown.splitlines()]
    assert [row["strategy_id"] for row in table] == [*sorted(STRATEGIES), "TOTAL"]
    for row in table[:-1]:
        assert {k: row[k] for k in last[row["strategy_id"]]} == last[row["strategy_id"]]
    assert table[-1]["equity"] == metric(text, "stratrun_portfolio_equity")
