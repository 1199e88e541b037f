"""The backtest's equity curve is the positions service's own equity after every candle.

The one-stream engine reads ``equity()`` only at the end and adds up what was held between
the candles that emitted events; these tests drive the worker's StrategyRunner candle by
candle, read the service after each one, and want the same numbers to the last bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.backtest.data import load
from runtime.backtest.engine import _ClockOutbox, run_strategy
from runtime.config import StrategyConfig, load_config
from runtime.messages import Candle, Error, Event
from workers.runner import StrategyRunner

ROOT = Path(__file__).resolve().parent.parent
GOOG = ROOT / "examples" / "data" / "GOOG-1d.csv"

CONFIG = """
[runtime]
plugin_paths = ["{root}"]
[broker]
speed = 0
[[broker.feeds]]
symbol = "GOOG"
timeframe = "1d"
path = "{goog}"

[[strategies]]
id = "s"
class = "{cls}"
symbols = ["GOOG"]
timeframe = "1d"
params = {params}
{extra}
"""

FIXED = "execution = { fee_bps = 20, slippage_bps = 5, quantity = 3, cash = 10000 }"
EQUITY = (
    'execution = { fee_bps = 10, sizing = "equity", equity_fraction = 0.7, '
    "whole_units = false, cash = 10000 }"
)
CASES = {
    "sma reversals": ("workers.strategies.sma_cross:SmaCross", "{ allow_short = true }", FIXED),
    "sma long only, equity": ("workers.strategies.sma_cross:SmaCross", "{ fast = 5 }", EQUITY),
    "churn": ("tests.backtest_strategies:Churn", "{ every = 3 }", FIXED),
    "churn, equity": ("tests.backtest_strategies:Churn", "{ every = 2 }", EQUITY),
    "gives up in on_fill": (
        "tests.backtest_strategies:Churn",
        "{ every = 4, fail_on_fill = 300 }",
        FIXED + "\nmax_consecutive_errors = 1",
    ),
    "gives up in on_candle": (
        "tests.backtest_strategies:Churn",
        "{ every = 5, fail_on_candle = 700 }",
        EQUITY + "\nmax_consecutive_errors = 3",
    ),
    "fails from the start": (
        "tests.backtest_strategies:Churn",
        "{ fail_on_candle = 1 }",
        FIXED + "\nmax_consecutive_errors = 1",
    ),
}


def _config(tmp_path: Path, cls: str, params: str, extra: str) -> StrategyConfig:
    path = tmp_path / "equity.toml"
    text = CONFIG.format(root=ROOT, goog=GOOG, cls=cls, params=params, extra=extra)
    path.write_text(text, encoding="utf-8")
    return load_config(path).strategies[0]


def _by_hand(config: StrategyConfig) -> tuple[list[float], list[Event]]:
    """Equity after each candle, read from the positions service there, and the events."""
    candles = load(GOOG, "GOOG", "1d")
    outbox = _ClockOutbox(config.id)
    outbox.length_ns = 86_400_000 * 1_000_000
    runner = StrategyRunner(config, outbox, account_points=False)  # as the engine
    runner.start()
    equity = []
    rows = zip(
        *(getattr(candles, f).tolist() for f in ("time", "open", "high", "low", "close", "volume")),
        strict=True,
    )
    for seq, (t, o, h, low, c, v) in enumerate(rows, start=1):
        outbox.now_ms = t
        runner.on_candle(Candle("GOOG", "1d", t, o, h, low, c, v, seq))
        equity.append(runner.container.positions.equity())
    return equity, list(outbox.kept)


@pytest.mark.parametrize("case", CASES)
def test_the_equity_curve_is_the_services_after_every_candle(tmp_path: Path, case: str) -> None:
    config = _config(tmp_path, *CASES[case])
    want, events = _by_hand(config)
    result = run_strategy(config, [load(GOOG, "GOOG", "1d")])
    got = np.frombuffer(result.equity, dtype=np.float64)
    assert len(got) == len(want) == 2148
    assert got.tobytes() == np.array(want, dtype=np.float64).tobytes()
    assert result.events[: len(events)] == events  # the engine added only on_stop's
    # What each case is about did happen: trades (the curve moves), and the give-ups.
    assert len(set(want)) > 100 or case == "fails from the start"
    gave_up = result.state == "errored"
    assert gave_up == (case.startswith("gives up") or case == "fails from the start")
    if gave_up:
        assert any(isinstance(e.body, Error) for e in events)
        assert want[-1] == want[-2]  # nothing moves once it gave up
