"""load_config on the sections of the declarative strategies: indicators, analyzers, entry,
exit, filters and gate; their cross-checks, the [defaults] merge, and the higher timeframes
the broker is told to resample.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtime.config import RULE_STRATEGY, ConfigError, load_config
from workers.indicators import AtrParams, EmaParams, RsiParams, SmaParams
from workers.loader import load_strategy_class
from workers.services.analyzers import CrossParams, OscillatorParams
from workers.services.exit import ExitConfig
from workers.services.gate import GateConfig
from workers.strategy import Strategy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ETH = EXAMPLES / "data" / "crypto" / "ETH-BTC-5m.csv"
LTC = EXAMPLES / "data" / "crypto" / "LTC-BTC-5m.csv"

BROKER = f"""
[broker]
speed = 0

[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{ETH}"
"""

RULES = """
[[strategies]]
id = "rules"
symbols = ["ETH-BTC"]
timeframe = "5m"
"""

# The indicators table comes last: a test may append indicators to it.
EMA_AND_ANALYZER = """
[[strategies.analyzers]]
type = "price_vs"
indicator = "fast"

[strategies.indicators]
fast = { type = "ema", period = 5 }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stratrun.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> ConfigError:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.file == str(path.resolve())
    assert str(error) == f"{path.resolve()}: {error.key}: {error.problem}"
    assert "\n" not in str(error)
    return error


# --------------------------------------------------------------------------- indicators


def test_a_declarative_strategy_loads_with_its_sections(tmp_path: Path) -> None:
    text = (
        BROKER
        + RULES
        + (
            """
[strategies.indicators]
fast = { type = "ema", period = 5 }
slow = { type = "sma", period = 20 }
rsi = { type = "rsi" }

[[strategies.analyzers]]
type = "cross"
fast = "fast"
slow = "slow"
weight = 2.5

[[strategies.analyzers]]
type = "oscillator"
indicator = "rsi"

[strategies.exit]
stop_loss_pct = 1.5
on_opposite_signal = false
"""
        )
    )
    (strategy,) = load_config(_write(tmp_path, text)).strategies
    assert strategy.class_path == RULE_STRATEGY
    assert strategy.indicators == {
        "fast": EmaParams(period=5),
        "slow": SmaParams(period=20),
        "rsi": RsiParams(),
    }
    assert strategy.analyzers == [
        CrossParams(fast="fast", slow="slow", weight=2.5),
        OscillatorParams(indicator="rsi"),
    ]
    assert strategy.exit == ExitConfig(stop_loss_pct=1.5, on_opposite_signal=False)
    assert strategy.gate is None
    assert strategy.max_consecutive_errors == 5


def test_unknown_indicator_type(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER + 'other = { type = "supertrend", period = 3 }\n'
    error = _error(tmp_path, text)
    assert error.key.startswith("strategies[0].indicators")
    assert error.key.endswith(".type")
    assert "'supertrend'" in error.problem


def test_unknown_key_in_an_indicator(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER.replace("period = 5", "perod = 5")
    error = _error(tmp_path, text)
    assert error.key.startswith("strategies[0].indicators")
    assert error.key.endswith(".perod")
    assert error.problem == "unknown key"


def test_an_indicator_error_names_the_indicator(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER.replace("period = 5", "perod = 5")
    assert _error(tmp_path, text).key == "strategies[0].indicators.fast.perod"


def test_indicator_params_are_checked(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER.replace("period = 5", "period = 0")
    error = _error(tmp_path, text)
    assert error.key.endswith(".period")
    assert ">= 1" in error.problem


def test_indicator_timeframe_that_is_not_one(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER.replace("period = 5", 'timeframe = "hourly"')
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].indicators.fast.timeframe"
    assert error.problem == "not a timeframe"


# --------------------------------------------------------------------------- analyzers


def test_analyzer_referencing_an_undefined_indicator(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER + '\n[[strategies.analyzers]]\ntype = "macd"\n'
    text += 'indicator = "macd"\n'
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].analyzers[1].indicator"
    assert error.problem == "no indicator named 'macd' (defined: fast)"


@pytest.mark.parametrize("field", ["fast", "slow"])
def test_cross_analyzer_referencing_an_undefined_average(tmp_path: Path, field: str) -> None:
    analyzer = {"fast": "fast", "slow": "fast"}
    analyzer[field] = "missing"
    text = BROKER + RULES + EMA_AND_ANALYZER
    text += f'\n[[strategies.analyzers]]\ntype = "cross"\nfast = "{analyzer["fast"]}"\n'
    text += f'slow = "{analyzer["slow"]}"\n'
    error = _error(tmp_path, text)
    assert error.key == f"strategies[0].analyzers[1].{field}"
    assert "'missing'" in error.problem


def test_unknown_analyzer_type_and_bad_bounds(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER.replace('"price_vs"', '"vibes"')
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].analyzers[0].type"
    assert "'vibes'" in error.problem
    oscillator = EMA_AND_ANALYZER.replace('"price_vs"', '"oscillator"')
    text = BROKER + RULES + oscillator.replace('= "fast"\n', '= "fast"\nlower = 80\nupper = 20\n')
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].analyzers[0]"
    assert error.problem == "lower must be below upper"


def test_declarative_strategy_without_analyzers(tmp_path: Path) -> None:
    text = BROKER + RULES + '\n[strategies.indicators]\nfast = { type = "ema" }\n'
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].analyzers"
    assert "at least one analyzer" in error.problem


def test_a_python_strategy_needs_no_analyzers(tmp_path: Path) -> None:
    text = BROKER + RULES + 'class = "workers.strategies.sma_cross:SmaCross"\n'
    text += 'indicators = { atr = { type = "atr" } }\n'
    (strategy,) = load_config(_write(tmp_path, text)).strategies
    assert strategy.analyzers == []
    assert strategy.indicators == {"atr": AtrParams()}


# --------------------------------------------------------------------------- gate and filters


def test_gate_indicator_must_be_declared_on_the_gate_timeframe(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER
    text += '\n[strategies.gate]\ntimeframe = "1h"\nindicator = "fast"\n'
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].gate.indicator"
    assert "timeframe = '1h'" in error.problem
    # Declared on another higher timeframe is no better.
    other = text.replace(
        'fast = { type = "ema", period = 5 }', 'fast = { type = "ema", timeframe = "4h" }'
    )
    assert _error(tmp_path, other).key == "strategies[0].gate.indicator"


def test_gate_indicator_must_exist(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER
    text += '\n[strategies.gate]\ntimeframe = "1h"\nindicator = "trend"\n'
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].gate.indicator"
    assert error.problem == "no indicator named 'trend' (defined: fast)"


def test_a_valid_gate_loads_and_its_timeframe_is_resampled(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER
    text += 'trend = { type = "sma", period = 12, timeframe = "1h" }\n'
    text += '\n[strategies.gate]\ntimeframe = "1h"\nindicator = "trend"\n'
    config = load_config(_write(tmp_path, text))
    (strategy,) = config.strategies
    assert strategy.gate == GateConfig(timeframe="1h", indicator="trend")
    assert strategy.timeframes == ["5m", "1h"]
    assert strategy.streams == ["ETH-BTC|5m", "ETH-BTC|1h"]
    assert config.broker.feeds[0].resample_to == ["1h"]


def test_volatility_floor_indicator_must_exist(tmp_path: Path) -> None:
    text = BROKER + RULES + EMA_AND_ANALYZER
    text += '\n[strategies.filters]\nvolatility_floor = { indicator = "atr", min_pct = 0.2 }\n'
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].filters.volatility_floor.indicator"
    assert "'atr'" in error.problem
    fixed = text.replace("[strategies.filters]", 'atr = { type = "atr" }\n[strategies.filters]')
    (strategy,) = load_config(_write(tmp_path, fixed)).strategies
    assert strategy.filters.volatility_floor is not None
    assert strategy.filters.volatility_floor.min_pct == 0.2


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ("entry = { long_threshold = 1.5 }", "strategies[0].entry.long_threshold", "<= 1"),
        ("entry = { short_threshold = 0.2 }", "strategies[0].entry.short_threshold", "<"),
        ("exit = { stop_los_pct = 1 }", "strategies[0].exit.stop_los_pct", "unknown key"),
        ("exit = { time_stop_candles = 0 }", "strategies[0].exit.time_stop_candles", ">= 1"),
        ("filters = { trading_hours_utc = [[5, 3]] }", "strategies[0].filters", "are empty"),
        ("filters = { trading_hours_utc = [[5, 25]] }", "strategies[0].filters", "<= 24"),
        ("max_consecutive_errors = 0", "strategies[0].max_consecutive_errors", ">= 1"),
    ],
)
def test_rule_sections_are_validated(tmp_path: Path, section: str, key: str, problem: str) -> None:
    error = _error(tmp_path, BROKER + RULES + section + "\n" + EMA_AND_ANALYZER)
    assert error.key.startswith(key)
    assert problem in error.problem


# --------------------------------------------------------------------------- [defaults]


DEFAULTS = """
[defaults]
timeframe = "5m"
max_consecutive_errors = 3

[defaults.indicators]
fast = { type = "ema", period = 12 }
slow = { type = "ema", period = 26 }

[[defaults.analyzers]]
type = "cross"
fast = "fast"
slow = "slow"

[defaults.exit]
stop_loss_pct = 2.0
take_profit_pct = 4.0
"""


def test_defaults_are_merged_under_every_strategy(tmp_path: Path) -> None:
    text = (
        BROKER
        + DEFAULTS
        + """
[[strategies]]
id = "inherits"
symbols = ["ETH-BTC"]

[[strategies]]
id = "overrides"
symbols = ["ETH-BTC"]
max_consecutive_errors = 7

[strategies.indicators]
slow = { period = 50 }
rsi = { type = "rsi", period = 7 }

[[strategies.analyzers]]
type = "oscillator"
indicator = "rsi"

[strategies.exit]
take_profit_pct = 6.0
"""
    )
    inherits, overrides = load_config(_write(tmp_path, text)).strategies
    assert inherits.timeframe == overrides.timeframe == "5m"
    assert inherits.indicators == {"fast": EmaParams(period=12), "slow": EmaParams(period=26)}
    assert inherits.analyzers == [CrossParams(fast="fast", slow="slow")]
    assert inherits.exit == ExitConfig(stop_loss_pct=2.0, take_profit_pct=4.0)
    assert inherits.max_consecutive_errors == 3
    # Tables merge key by key: each indicator too (slow keeps its type, takes a new period).
    assert overrides.indicators == {
        "fast": EmaParams(period=12),
        "slow": EmaParams(period=50),
        "rsi": RsiParams(period=7),
    }
    # Lists replace: the strategy's analyzers are all it has.
    assert overrides.analyzers == [OscillatorParams(indicator="rsi")]
    assert overrides.exit == ExitConfig(stop_loss_pct=2.0, take_profit_pct=6.0)
    assert overrides.max_consecutive_errors == 7
    # Merging never shares the result between strategies.
    assert inherits.indicators is not overrides.indicators


def test_defaults_are_validated_on_their_own(tmp_path: Path) -> None:
    text = BROKER + DEFAULTS.replace('type = "ema", period = 12', 'type = "emma"') + RULES
    error = _error(tmp_path, text)
    assert error.key.startswith("defaults.indicators")
    assert "'emma'" in error.problem


def test_a_strategy_that_replaces_the_analyzers_is_checked_against_the_merge(
    tmp_path: Path,
) -> None:
    text = BROKER + DEFAULTS + RULES + '\n[[strategies.analyzers]]\ntype = "macd"\n'
    text += 'indicator = "macd"\n'
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].analyzers[0].indicator"
    assert error.problem == "no indicator named 'macd' (defined: fast, slow)"


# --------------------------------------------------------------------------- timeframes


def test_a_higher_strategy_timeframe_is_resampled_from_the_feed(tmp_path: Path) -> None:
    text = BROKER + RULES.replace('"5m"', '"1h"') + EMA_AND_ANALYZER
    config = load_config(_write(tmp_path, text))
    assert config.broker.feeds[0].resample_to == ["1h"]
    assert config.broker.feeds[0].streams == ["ETH-BTC|5m", "ETH-BTC|1h"]


def test_resampled_timeframes_are_collected_sorted_and_once(tmp_path: Path) -> None:
    text = (
        BROKER.replace('path = "', 'resample_to = ["1d"]\npath = "')
        + f"""
[[broker.feeds]]
symbol = "LTC-BTC"
timeframe = "5m"
path = "{LTC}"

[[strategies]]
id = "one"
symbols = ["ETH-BTC", "LTC-BTC"]
timeframe = "15m"
indicators = {{ fast = {{ type = "ema" }}, trend = {{ type = "sma", timeframe = "4h" }} }}
analyzers = [{{ type = "price_vs", indicator = "fast" }}]

[[strategies]]
id = "two"
symbols = ["ETH-BTC"]
timeframe = "1h"
indicators = {{ fast = {{ type = "ema" }}, trend = {{ type = "sma", timeframe = "4h" }} }}
analyzers = [{{ type = "price_vs", indicator = "fast" }}]
"""
    )
    config = load_config(_write(tmp_path, text))
    eth, ltc = config.broker.feeds
    assert eth.resample_to == ["15m", "1h", "4h", "1d"]
    assert ltc.resample_to == ["15m", "4h"]


def test_a_timeframe_the_feed_cannot_build_names_the_key(tmp_path: Path) -> None:
    text = BROKER + RULES.replace('"5m"', '"7m"') + EMA_AND_ANALYZER
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].symbols[0]"
    assert "ETH-BTC|7m" in error.problem
    assert "cannot be resampled to 7m" in error.problem
    text = BROKER + RULES + EMA_AND_ANALYZER.replace("period = 5", 'timeframe = "7m"')
    error = _error(tmp_path, text)
    assert error.key == "strategies[0].indicators.fast.timeframe"
    assert "ETH-BTC|7m" in error.problem


@pytest.mark.parametrize("where", ["strategy", "feed"])
def test_a_month_timeframe_on_a_minute_feed_is_a_config_error(tmp_path: Path, where: str) -> None:
    if where == "strategy":
        text = BROKER + RULES.replace('"5m"', '"1M"') + EMA_AND_ANALYZER
    else:
        text = BROKER.replace('path = "', 'resample_to = ["1M"]\npath = "') + RULES
        text += EMA_AND_ANALYZER
    error = _error(tmp_path, text)
    wanted = "strategies[0].timeframe" if where == "strategy" else "broker.feeds[0].resample_to[0]"
    assert error.key == wanted
    assert "regex" in error.problem


# --------------------------------------------------------------------------- the examples


def test_demo_config_loads_with_its_declarative_strategy() -> None:
    config = load_config(EXAMPLES / "demo.toml")
    by_id = {s.id: s for s in config.strategies}
    trend = by_id["trend_eth"]
    assert trend.class_path == RULE_STRATEGY
    assert trend.timeframe == "5m"  # from [defaults]
    assert set(trend.indicators) == {
        "ema_fast",
        "ema_slow",
        "macd",
        "rsi",
        "bands",
        "atr",
        "trend_1h",
    }
    assert [a.weight for a in trend.analyzers] == [2.0, 1.0, 0.5, 0.5]
    assert trend.gate == GateConfig(timeframe="1h", indicator="trend_1h")
    assert trend.timeframes == ["5m", "1h"]
    eth, ltc = config.broker.feeds
    assert (eth.symbol, eth.resample_to) == ("ETH-BTC", ["1h"])
    assert (ltc.symbol, ltc.resample_to) == ("LTC-BTC", [])
    assert by_id["sma_fast"].indicators == {} and by_id["sma_fast"].analyzers == []


def test_breakout_example_loads_and_its_class_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_config adds the plugin folder
    monkeypatch.delitem(sys.modules, "breakout", raising=False)
    config = load_config(EXAMPLES / "breakout.toml")
    assert config.runtime.plugin_paths == [str((EXAMPLES / "strategies").resolve())]
    assert sys.path[0] == config.runtime.plugin_paths[0]
    (strategy,) = config.strategies
    assert strategy.class_path == "breakout:Breakout"
    assert strategy.indicators == {"atr": AtrParams(period=14)}
    cls = load_strategy_class(strategy.class_path)
    assert issubclass(cls, Strategy) and cls.__name__ == "Breakout"
    assert Path(sys.modules["breakout"].__file__ or "") == EXAMPLES / "strategies" / "breakout.py"
    monkeypatch.delitem(sys.modules, "breakout", raising=False)


def test_a_plugin_path_that_does_not_exist(tmp_path: Path) -> None:
    text = '[runtime]\nplugin_paths = ["nowhere"]\n' + BROKER + RULES + EMA_AND_ANALYZER
    error = _error(tmp_path, text)
    assert error.key == "runtime.plugin_paths[0]"
    assert str(tmp_path / "nowhere") in error.problem
