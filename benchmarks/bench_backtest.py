"""Backtest speed against backtesting.py: the same SMA crossover on the same million candles.

The bundled GOOG daily candles (2,148 rows) are repeated to ``--candles`` candles, stamped
one hour apart (a million days would pass year 2262, the end of nanosecond time), and
written to one CSV file. Both backtesters run the
SMA(10)/SMA(20) crossover with reversals (close, then buy or sell), commission 0.002, one
share per trade (a fixed size: all-in sizing compounds past float range over a million
candles), in this one process, interleaved, each the best of ``--rounds`` runs:

- backtesting.py: ``Backtest(frame, SmaCross, cash=10_000, commission=.002,
  exclusive_orders=True).run()`` on a DataFrame built beforehand (not timed): ``run()``
  computes the indicators, runs the strategy bar by bar and computes the statistics;
- stratrun: the engine alone (the worker's StrategyRunner over candles already in memory,
  with the equity curve), the engine then the statistics (what ``run()`` does: the like
  for like figure, the one the 5x target is checked on), and the whole ``run_backtest``
  (CSV read and checked, run, result encoded and decoded, statistics).

Both must close the same number of trades. Then a profile of stratrun's engine on a slice
says where its time goes.

    .venv/bin/python benchmarks/bench_backtest.py [--candles N] [--rounds R] [--record]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _results import record
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import SMA

from runtime.backtest.data import Candles, load
from runtime.backtest.engine import run_strategy
from runtime.backtest.run import Options, run_backtest
from runtime.backtest.stats import compute, trades_of
from runtime.config import load_config

REPO = Path(__file__).resolve().parent.parent
GOOG = REPO / "examples" / "data" / "GOOG-1d.csv"
HOUR_MS = 3_600_000

CONFIG = """
[broker]
speed = 0
[[broker.feeds]]
symbol = "GOOG"
timeframe = "1h"
path = "{path}"

[[strategies]]
id = "sma"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["GOOG"]
timeframe = "1h"
params = {{ fast = 10, slow = 20, allow_short = true }}
execution = {{ fee_bps = 20, sizing = "fixed", quantity = 1, cash = 10000 }}
"""


class SmaCross(Strategy):  # type: ignore[misc]
    n1 = 10
    n2 = 20

    def init(self) -> None:
        self.sma1 = self.I(SMA, self.data.Close, self.n1)
        self.sma2 = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.sma1, self.sma2):
            self.position.close()
            self.buy(size=1)
        elif crossover(self.sma2, self.sma1):
            self.position.close()
            self.sell(size=1)


def replicate(n: int) -> Candles:
    c = load(GOOG, "GOOG", "1d")
    copies = -(-n // len(c))
    # Hourly stamps: a million days would run past year 2262, where ns times overflow.
    time_ = int(c.time[0]) + HOUR_MS * np.arange(n, dtype=np.int64)

    def tile(a: Any) -> Any:
        return np.tile(a, copies)[:n]

    return Candles(
        "GOOG",
        "1h",
        "replicated",
        time_,
        tile(c.open),
        tile(c.high),
        tile(c.low),
        tile(c.close),
        tile(c.volume),
    )


def write_csv(c: Candles, path: Path) -> None:
    stamps = np.datetime_as_string(c.time.astype("datetime64[ms]"), unit="s")
    with open(path, "w", encoding="utf-8") as out:
        out.write("timestamp,open,high,low,close,volume\n")
        for row in zip(
            stamps.tolist(),
            c.open.tolist(),
            c.high.tolist(),
            c.low.tolist(),
            c.close.tolist(),
            c.volume.tolist(),
            strict=True,
        ):
            out.write("{}Z,{!r},{!r},{!r},{!r},{!r}\n".format(*row))


def run_reference(c: Candles) -> tuple[float, int]:
    frame = pd.DataFrame(
        {"Open": c.open, "High": c.high, "Low": c.low, "Close": c.close, "Volume": c.volume},
        index=pd.to_datetime(c.time, unit="ms"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(frame, SmaCross, cash=10_000, commission=0.002, exclusive_orders=True)
        began = time.perf_counter()
        stats = bt.run()
        return time.perf_counter() - began, int(stats["# Trades"])


def measure(n: int, rounds: int) -> dict[str, Any]:
    """Seconds of each backtester on ``n`` candles, best of ``rounds`` interleaved runs
    (the machine is shared: the best run is the one least disturbed by others)."""
    candles = replicate(n)
    with tempfile.TemporaryDirectory() as folder:
        csv = Path(folder) / "GOOG-1h.csv"
        write_csv(candles, csv)
        config_path = Path(folder) / "bench.toml"
        config_path.write_text(CONFIG.format(path=csv), encoding="utf-8")
        config = load_config(config_path)

        load_s = engine_s = stats_s = whole_s = ref_s = float("inf")
        for _ in range(rounds):
            began = time.perf_counter()
            loaded = load(csv, "GOOG", "1h")
            load_s = min(load_s, time.perf_counter() - began)
            assert len(loaded) == n

            began = time.perf_counter()
            result = run_strategy(config.strategies[0], [loaded])
            ran = time.perf_counter()
            stats = compute(
                np.frombuffer(result.time, dtype=np.int64),
                np.frombuffer(result.equity, dtype=np.float64),
                np.frombuffer(result.close, dtype=np.float64),
                trades_of(result.events),
                result.warmup,
            )
            engine_s = min(engine_s, ran - began)
            stats_s = min(stats_s, time.perf_counter() - began)
            assert result.candles == n and stats["# Trades"] == len(trades_of(result.events))
            del result

            began = time.perf_counter()
            outcome = run_backtest(config, Options())
            whole_s = min(whole_s, time.perf_counter() - began)
            ours_trades = int(outcome.strategies[0].stats["# Trades"])
            del outcome

            seconds, ref_trades = run_reference(candles)
            ref_s = min(ref_s, seconds)
            assert ours_trades == ref_trades, (ours_trades, ref_trades)
    return {
        "candles": n,
        "rounds": rounds,
        "trades": ref_trades,
        "reference_s": ref_s,
        "engine_and_stats_s": stats_s,
        "engine_s": engine_s,
        "run_backtest_s": whole_s,
        "load_s": load_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs each")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    n = args.candles

    load_before = os.getloadavg()[0]
    m = measure(n, args.rounds)
    ref_trades = m["trades"]
    ref_s, stats_s, engine_s = m["reference_s"], m["engine_and_stats_s"], m["engine_s"]
    whole_s, load_s = m["run_backtest_s"], m["load_s"]

    profiler = cProfile.Profile()
    part = min(n, 200_000)
    with tempfile.TemporaryDirectory() as folder:
        csv = Path(folder) / "GOOG-1h.csv"
        write_csv(replicate(part), csv)
        config_path = Path(folder) / "bench.toml"
        config_path.write_text(CONFIG.format(path=csv), encoding="utf-8")
        config = load_config(config_path)
        sliced = load(csv, "GOOG", "1h")
    profiler.enable()
    run_strategy(config.strategies[0], [sliced])
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(10)
    rows = [
        line.strip().replace(f"{REPO}/", "")
        for line in text.getvalue().splitlines()
        if line.strip() and line.strip()[0].isdigit() and "/" in line
    ]

    ref_cps, engine_cps, whole_cps = n / ref_s, n / engine_s, n / whole_s
    like_cps = n / stats_s
    table = (
        "| backtester | seconds | candles/s | vs backtesting.py |\n|---|---|---|---|\n"
        f"| backtesting.py `Backtest.run()` (run + stats) | {ref_s:.2f} | {ref_cps:,.0f} | "
        "1.00x |\n"
        f"| stratrun engine + statistics (candles in memory) | {stats_s:.2f} | "
        f"{like_cps:,.0f} | {like_cps / ref_cps:.2f}x |\n"
        f"| (stratrun engine alone) | {engine_s:.2f} | {engine_cps:,.0f} | "
        f"{engine_cps / ref_cps:.2f}x |\n"
        f"| stratrun `run_backtest` (CSV read + checked, run, encoded, stats) | {whole_s:.2f} | "
        f"{whole_cps:,.0f} | {whole_cps / ref_cps:.2f}x |\n"
        f"| (stratrun CSV read and check alone) | {load_s:.2f} | {n / load_s:,.0f} | |\n"
    )
    verdict = (
        "Target (5x, engine + statistics against `Backtest.run()`) met."
        if like_cps >= 5 * ref_cps
        else f"Target (5x) missed: engine + statistics are {like_cps / ref_cps:.2f}x, "
        f"{5 * ref_cps / like_cps:.2f}x short of it."
    )
    profile = "\n".join(f"    {row}" for row in rows)
    body = (
        f"{table}\nBest of {args.rounds} interleaved rounds each. Both closed {ref_trades:,} "
        f"trades. {verdict} Load average (1 min) {load_before:.1f} before the runs, "
        f"{os.getloadavg()[0]:.1f} after: on a shared machine the figures move with it.\n\n"
        f"Where stratrun's engine spends its time (cProfile, {part:,} candles, tottime "
        "first; profiling slows every call, so read the shares, not the seconds):\n\n"
        f"    ncalls tottime percall cumtime percall function\n{profile}\n"
    )
    print(body)
    if args.record:
        record(
            "Backtest speed against backtesting.py",
            f"SMA(10)/SMA(20) crossover with reversals, commission 0.002, one share per trade, "
            f"on GOOG daily candles repeated to {n:,} candles (stamped hourly); both in one "
            "process, interleaved, best of --rounds runs each.",
            body,
        )


if __name__ == "__main__":
    main()
