"""The backtest against backtesting.py: SMA(10)/SMA(20) crossover on GOOG daily, trade for trade.

The reference is computed here by backtesting.py itself (its documented SmaCross example with
``commission=.002, exclusive_orders=True``, cash 10,000: all-in whole shares, reversals), and
stratrun's built-in SmaCross runs through the worker's own code path with the same settings.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import SMA

from runtime.backtest.data import load
from runtime.backtest.engine import run_strategy
from runtime.backtest.stats import compute, trades_of
from runtime.config import load_config

ROOT = Path(__file__).resolve().parent.parent
GOOG = ROOT / "examples" / "data" / "GOOG-1d.csv"


class _SmaCross(Strategy):  # type: ignore[misc]
    n1 = 10
    n2 = 20

    def init(self) -> None:
        self.sma1 = self.I(SMA, self.data.Close, self.n1)
        self.sma2 = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.sma1, self.sma2):
            self.position.close()
            self.buy()
        elif crossover(self.sma2, self.sma1):
            self.position.close()
            self.sell()


def goog_config(tmp_path: Path) -> Path:
    config = tmp_path / "goog.toml"
    config.write_text(
        f"""
[broker]
speed = 0
[[broker.feeds]]
symbol = "GOOG"
timeframe = "1d"
path = "{GOOG}"

[[strategies]]
id = "sma_goog"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["GOOG"]
timeframe = "1d"
params = {{ fast = 10, slow = 20, allow_short = true }}
[strategies.execution]
fee_bps = 20
sizing = "equity"
equity_fraction = 1.0
whole_units = true
cash = 10000
""",
        encoding="utf-8",
    )
    return config


def reference() -> Any:
    candles = load(GOOG, "GOOG", "1d")
    frame = pd.DataFrame(
        {
            "Open": candles.open,
            "High": candles.high,
            "Low": candles.low,
            "Close": candles.close,
            "Volume": candles.volume,
        },
        index=pd.to_datetime(candles.time, unit="ms"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some trades remain open": the same here
        bt = Backtest(frame, _SmaCross, cash=10_000, commission=0.002, exclusive_orders=True)
        return bt.run()


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_sma_cross_on_goog_matches_backtesting_py_trade_for_trade(tmp_path: Path) -> None:
    ref = reference()
    config = load_config(goog_config(tmp_path)).strategies[0]
    result = run_strategy(config, [load(GOOG, "GOOG", "1d")])
    trades = trades_of(result.events)

    expected = [
        (
            int(row.Size),
            row.EntryTime.value // 1_000_000,
            row.ExitTime.value // 1_000_000,
            row.EntryPrice,
            row.ExitPrice,
        )
        for row in ref["_trades"].itertuples()
    ]
    got = [(t.size, t.entry_time, t.exit_time, t.entry_price, t.exit_price) for t in trades]
    assert len(expected) > 50
    assert got == expected  # sizes, times and prices exactly
    for row, trade in zip(ref["_trades"].itertuples(), trades, strict=True):
        assert same(row.PnL, trade.pnl)
        assert same(row.Commission, trade.commissions)
        assert same(row.ReturnPct, trade.return_pct)

    equity = np.frombuffer(result.equity, dtype=np.float64)
    np.testing.assert_allclose(equity, ref["_equity_curve"]["Equity"].to_numpy(), rtol=1e-12)

    stats = compute(
        np.frombuffer(result.time, dtype=np.int64),
        equity,
        np.frombuffer(result.close, dtype=np.float64),
        trades,
        result.warmup,
    )
    compared = 0
    for key, value in ref.items():
        if key.startswith("_"):
            continue
        assert key in stats, key
        ours = stats[key]
        if isinstance(value, pd.Timestamp):
            assert ours == value.isoformat() + "Z", key
        elif isinstance(value, pd.Timedelta):
            assert isinstance(ours, float) and same(value.total_seconds(), ours), key
        else:
            assert isinstance(ours, (int, float))
            assert same(float(value), float(ours)), (key, value, ours)
        compared += 1
    assert compared == len(stats) >= 30


@pytest.mark.parametrize("fraction", [0.5])
def test_a_fraction_of_equity_buys_that_share_of_the_free_cash(
    tmp_path: Path, fraction: float
) -> None:
    text = goog_config(tmp_path).read_text(encoding="utf-8")
    half = tmp_path / "half.toml"
    half.write_text(text.replace("equity_fraction = 1.0", f"equity_fraction = {fraction}"))
    config = load_config(half).strategies[0]
    trades = trades_of(run_strategy(config, [load(GOOG, "GOOG", "1d")]).events)
    first = trades[0]
    # The first entry: cash 10,000, nothing held; whole units of price plus commission.
    price = first.entry_price
    assert abs(first.size) == (10_000 * fraction) // (price + price * 0.002)
