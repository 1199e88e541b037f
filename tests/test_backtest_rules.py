"""A declarative strategy (TOML rules) and the same rules written in Python: one journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runtime.backtest.run import Options, run_backtest
from runtime.config import load_config

ROOT = Path(__file__).resolve().parent.parent
ETH = ROOT / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"

_HEAD = (
    f"""
[runtime]
plugin_paths = ["{ROOT}"]
[broker]
speed = 0
[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{ETH}"

[[strategies]]
id = "ema_eth"
symbols = ["ETH-BTC"]
timeframe = "5m"
"""
    + "{own}"
    + """
[strategies.execution]
fee_bps = 10
slippage_bps = 2
sizing = "equity"
equity_fraction = 0.5
whole_units = false
cash = 1.0
"""
)

RULES = (
    _HEAD.format(own="")
    + """
[strategies.indicators]
ema_fast = { type = "ema", period = 12 }
ema_slow = { type = "ema", period = 26 }

[[strategies.analyzers]]
type = "cross"
fast = "ema_fast"
slow = "ema_slow"

[strategies.entry]
long_threshold = 0.5
short_threshold = -0.5

[strategies.exit]
stop_loss_pct = 1.5
take_profit_pct = 3.0
"""
)

PYTHON = _HEAD.format(
    own='class = "tests.backtest_strategies:EmaCrossByHand"\n'
    "params = { fast = 12, slow = 26, threshold = 0.5, stop_loss_pct = 1.5, "
    "take_profit_pct = 3.0 }\n"
)


def _rows(journal: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(journal) as db:
        return db.execute(
            "SELECT id, strategy_id, seq, ts_ns, kind, body FROM events ORDER BY id"
        ).fetchall()


def test_rules_from_toml_and_the_python_class_write_the_same_journal(tmp_path: Path) -> None:
    journals = []
    for name, text in (("rules", RULES), ("python", PYTHON)):
        config = tmp_path / f"{name}.toml"
        config.write_text(text, encoding="utf-8")
        journal = tmp_path / f"{name}.sqlite"
        outcome = run_backtest(load_config(config), Options(journal=journal))
        assert outcome.strategies[0].result.state == "stopped"
        journals.append(journal)
    rules, python = (_rows(j) for j in journals)
    kinds = [row[4] for row in rules]
    # Enough happened for the comparison to mean something: every exit rule fired.
    assert kinds.count("position_closed") > 50
    bodies = "\n".join(str(row[5]) for row in rules)
    for reason in ("stop_loss", "take_profit", "opposite_signal"):
        assert f'"reason":"{reason}"' in bodies
    assert rules == python
    assert journals[0].read_bytes() == journals[1].read_bytes()
