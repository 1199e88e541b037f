"""load_config: the demo loads, defaults merge, and every bad config names file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import ConfigError, ExecutionConfig, StrategyConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.toml"
DATA = ROOT / "examples" / "data" / "crypto"
ETH = DATA / "ETH-BTC-5m.csv"
LTC = DATA / "LTC-BTC-5m.csv"

BROKER = f"""
[broker]
speed = 0

[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{ETH}"
"""

STRATEGY = """
[[strategies]]
id = "a"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC"]
timeframe = "5m"
params = { fast = 5, slow = 20 }
"""


def _write(tmp_path: Path, text: str, name: str = "stratrun.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    message = str(error)
    assert "\n" not in message, "a config error is one line"
    assert message.startswith(f"{path.resolve()}: ")
    assert error.file == str(path.resolve())
    if error.key:
        assert message.startswith(f"{path.resolve()}: {error.key}: ")
    return error


# --------------------------------------------------------------------------- valid configs


def test_demo_config_loads() -> None:
    config = load_config(DEMO)
    assert config.source == str(DEMO.resolve())
    assert [s.id for s in config.strategies] == ["sma_fast", "sma_slow", "rsi_ltc", "trend_eth"]
    assert config.broker.speed == 6000
    assert [f.stream for f in config.broker.feeds] == ["ETH-BTC|5m", "LTC-BTC|5m"]


def test_demo_data_paths_are_absolute() -> None:
    config = load_config(DEMO)
    paths = [Path(f.path) for f in config.broker.feeds]
    assert all(p.is_absolute() for p in paths)
    assert paths == [ETH.resolve(), LTC.resolve()]
    assert all(p.is_file() for p in paths)


def test_demo_defaults_are_merged() -> None:
    by_id = {s.id: s for s in load_config(DEMO).strategies}
    # Inherited from [defaults] by every strategy.
    assert {s.timeframe for s in by_id.values()} == {"5m"}
    assert by_id["sma_fast"].execution == ExecutionConfig(fee_bps=10, slippage_bps=2, quantity=1.0)
    # rsi_ltc has its own execution table with only `quantity`: merged key by key.
    assert by_id["rsi_ltc"].execution == ExecutionConfig(fee_bps=10, slippage_bps=2, quantity=5.0)
    assert by_id["sma_slow"].params == {"fast": 20, "slow": 60, "allow_short": True}
    assert by_id["rsi_ltc"].streams == ["LTC-BTC|5m"]


def test_lists_replace_and_tables_merge(tmp_path: Path) -> None:
    text = f"""
[broker]
[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{ETH}"
[[broker.feeds]]
symbol = "LTC-BTC"
timeframe = "5m"
path = "{LTC}"

[defaults]
symbols = ["LTC-BTC", "ETH-BTC"]
timeframe = "5m"
execution = {{ fee_bps = 7, slippage_bps = 3 }}
params = {{ fast = 4, slow = 40 }}

[[strategies]]
id = "own_list"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC"]
execution = {{ slippage_bps = 1 }}
params = {{ slow = 30 }}

[[strategies]]
id = "inherits"
class = "workers.strategies.sma_cross:SmaCross"
"""
    config = load_config(_write(tmp_path, text))
    own, inherits = config.strategies
    assert own.symbols == ["ETH-BTC"]  # replaced, not ["LTC-BTC", "ETH-BTC", "ETH-BTC"]
    assert own.execution == ExecutionConfig(fee_bps=7, slippage_bps=1, quantity=1.0)
    assert own.params == {"fast": 4, "slow": 30}
    assert inherits.symbols == ["LTC-BTC", "ETH-BTC"]
    assert inherits.execution == ExecutionConfig(fee_bps=7, slippage_bps=3, quantity=1.0)
    assert inherits.params == {"fast": 4, "slow": 40}


def test_relative_data_path_is_resolved_against_the_config_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "eth.csv").write_bytes(ETH.read_bytes())
    sub = tmp_path / "conf"
    sub.mkdir()
    text = BROKER.replace(str(ETH), "../data/eth.csv") + STRATEGY
    config = load_config(_write(sub, text))
    assert config.broker.feeds[0].path == str((data / "eth.csv").resolve())


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, BROKER + STRATEGY))
    strategy = config.strategies[0]
    assert strategy == StrategyConfig(
        id="a",
        class_path="workers.strategies.sma_cross:SmaCross",
        symbols=["ETH-BTC"],
        timeframe="5m",
        params={"fast": 5, "slow": 20},
    )
    assert strategy.execution == ExecutionConfig()
    assert config.aggregator.metrics_port == 9464


def test_run_dir_is_resolved_against_the_config_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[runtime]\nrun_dir = "state/run"\n' + BROKER + STRATEGY))
    assert config.runtime.run_dir == str((tmp_path / "state" / "run").resolve())


# --------------------------------------------------------------------------- errors


def test_unknown_top_level_key(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, "bogus = 1\n" + BROKER + STRATEGY))
    assert error.key == "bogus"
    assert "unknown key" in str(error)


def test_unknown_key_in_broker(tmp_path: Path) -> None:
    text = BROKER.replace("speed = 0", "speed = 0\nspeeed = 2") + STRATEGY
    error = _error(_write(tmp_path, text))
    assert error.key == "broker.speeed"
    assert str(error).endswith("broker.speeed: unknown key")


def test_unknown_key_in_a_feed(tmp_path: Path) -> None:
    text = BROKER.replace('timeframe = "5m"', 'timeframe = "5m"\nexchange = "x"') + STRATEGY
    assert _error(_write(tmp_path, text)).key == "broker.feeds[0].exchange"


def test_unknown_key_in_a_strategy(tmp_path: Path) -> None:
    text = BROKER + STRATEGY + STRATEGY.replace('"a"', '"b"') + 'colour = "red"\n'
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[1].colour"
    assert "unknown key" in error.problem


def test_unknown_key_in_defaults(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, "[defaults]\nsymbol = 'ETH-BTC'\n" + BROKER + STRATEGY))
    assert error.key == "defaults.symbol"


def test_id_is_not_allowed_in_defaults(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, "[defaults]\nid = 'x'\n" + BROKER + STRATEGY))
    assert error.key == "defaults.id"


def test_unknown_execution_key_in_defaults_is_reported_where_it_is_written(
    tmp_path: Path,
) -> None:
    text = "[defaults]\nexecution = { fee_bp = 1 }\n" + BROKER + STRATEGY
    error = _error(_write(tmp_path, text))
    assert error.key == "defaults.execution.fee_bp"


def test_bad_value_in_defaults_is_reported_under_defaults(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, "[defaults]\ntimeframe = '5 min'\n" + BROKER + STRATEGY))
    assert error.key == "defaults.timeframe"


def test_wrong_type(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, BROKER.replace("speed = 0", 'speed = "fast"') + STRATEGY))
    assert error.key == "broker.speed"
    assert "Expected `float`, got `str`" in error.problem


def test_wrong_type_in_a_strategy(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, BROKER + STRATEGY.replace('["ETH-BTC"]', '"ETH-BTC"')))
    assert error.key == "strategies[0].symbols"
    assert "Expected `array`, got `str`" in error.problem


def test_negative_speed(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, BROKER.replace("speed = 0", "speed = -1") + STRATEGY))
    assert error.key == "broker.speed"


def test_bad_timeframe_in_strategy(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, BROKER + STRATEGY.replace('"5m"', '"5 minutes"')))
    assert error.key == "strategies[0].timeframe"


def test_missing_required_key(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, BROKER + STRATEGY.replace('id = "a"\n', "")))
    assert error.key == "strategies[0].id"
    assert "required key is missing" in error.problem


def test_missing_broker(tmp_path: Path) -> None:
    assert _error(_write(tmp_path, STRATEGY)).key == "broker"


def test_no_strategies(tmp_path: Path) -> None:
    assert _error(_write(tmp_path, BROKER)).key == "strategies"


def test_missing_data_file(tmp_path: Path) -> None:
    text = BROKER.replace(str(ETH), "no/such.csv") + STRATEGY
    error = _error(_write(tmp_path, text))
    assert error.key == "broker.feeds[0].path"
    assert str((tmp_path / "no" / "such.csv").resolve()) in error.problem


def test_duplicate_stream(tmp_path: Path) -> None:
    feed = BROKER[BROKER.index("[[broker.feeds]]") :]
    error = _error(_write(tmp_path, BROKER + feed + STRATEGY))
    assert error.key == "broker.feeds[1]"
    assert "broker.feeds[0]" in error.problem


def test_duplicate_strategy_id(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, BROKER + STRATEGY + STRATEGY))
    assert error.key == "strategies[1].id"
    assert "'a'" in error.problem
    assert "strategies[0]" in error.problem


def test_class_that_does_not_import(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace("workers.strategies.sma_cross", "no_such_pkg.module")
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].class"
    assert "no_such_pkg" in error.problem


def test_class_missing_from_module(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace(":SmaCross", ":SmaCrosss")
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].class"
    assert "SmaCrosss" in error.problem


def test_class_that_is_not_a_strategy(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace(":SmaCross", ":SmaCrossParams")
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].class"
    assert "not a subclass" in error.problem


def test_class_path_without_colon(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace("sma_cross:SmaCross", "sma_cross.SmaCross")
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].class"
    assert "package.module:Class" in error.problem


def test_params_with_unknown_key(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace("slow = 20", "slow = 20, slower = 50")
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].params.slower"
    assert error.problem == "unknown key"


def test_params_with_wrong_type(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace("fast = 5", 'fast = "5"')
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].params.fast"
    assert "Expected `int`, got `str`" in error.problem


def test_params_out_of_range(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace("fast = 5", "fast = 0")
    assert _error(_write(tmp_path, text)).key == "strategies[0].params.fast"


def test_params_failing_the_strategy_check(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace("fast = 5", "fast = 20")
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].params"
    assert "fast must be smaller than slow" in error.problem


def test_rsi_params_failing_the_strategy_check(tmp_path: Path) -> None:
    strategy = STRATEGY.replace("sma_cross:SmaCross", "rsi_reversion:RsiReversion").replace(
        "fast = 5, slow = 20", "oversold = 60, exit_above = 50"
    )
    error = _error(_write(tmp_path, BROKER + strategy))
    assert error.key == "strategies[0].params"
    assert "oversold must be below exit_above" in error.problem


def test_strategy_symbol_without_a_feed(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace('["ETH-BTC"]', '["ETH-BTC", "LTC-BTC"]')
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].symbols[1]"
    assert "LTC-BTC|5m" in error.problem


def test_strategy_timeframe_the_broker_cannot_build(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace('timeframe = "5m"', 'timeframe = "7m"')
    error = _error(_write(tmp_path, text))
    assert error.key == "strategies[0].symbols[0]"
    assert "ETH-BTC|7m" in error.problem and "cannot be resampled" in error.problem


def test_a_higher_strategy_timeframe_is_resampled_by_the_broker(tmp_path: Path) -> None:
    text = BROKER + STRATEGY.replace('timeframe = "5m"', 'timeframe = "1h"')
    config = load_config(_write(tmp_path, text))
    assert config.broker.feeds[0].resample_to == ["1h"]


def test_invalid_toml(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, BROKER + STRATEGY + "x = = 1\n"))
    assert error.key == ""
    assert "invalid TOML" in error.problem


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    error = _error(path)
    assert error.key == ""
    assert str(error) == f"{path.resolve()}: no such file"


def test_strategy_module_failing_with_a_multiline_message_still_gives_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "stratrun_broken_strategy_mod.py").write_text(
        'raise RuntimeError("first line\\nsecond line")\n', encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(module_dir))
    text = (
        '[runtime]\nplugin_paths = ["mods"]\n'
        + BROKER
        + STRATEGY.replace(
            "workers.strategies.sma_cross:SmaCross", "stratrun_broken_strategy_mod:Anything"
        )
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "strategies[0].class"
    assert "first line" in str(info.value)
    assert "\n" not in str(info.value), "ConfigError promises `file: key: problem` on one line"


# --------------------------------------------------------------------------- sub-accounts


def test_the_allocation_is_execution_cash_and_points_default_to_hourly(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, BROKER + STRATEGY))
    assert config.strategies[0].execution.cash == 10_000.0
    assert config.strategies[0].account_every_ms == 3_600_000
    own = STRATEGY + 'execution = { cash = 2.5 }\naccount_every = "30m"\n'
    config = load_config(_write(tmp_path, BROKER + own))
    assert config.strategies[0].execution.cash == 2.5
    assert config.strategies[0].account_every_ms == 30 * 60_000
    daily = STRATEGY.replace('timeframe = "5m"', 'timeframe = "1d"')
    config = load_config(_write(tmp_path, BROKER + daily))
    assert config.strategies[0].account_every_ms == 86_400_000  # every candle


@pytest.mark.parametrize("cash", ["0", "-5.0"])
def test_the_allocation_must_be_positive(tmp_path: Path, cash: str) -> None:
    error = _error(_write(tmp_path, BROKER + STRATEGY + f"execution = {{ cash = {cash} }}\n"))
    assert (error.key, error.problem) == ("strategies[0].execution.cash", "Expected `float` > 0.0")
    text = BROKER + f"[defaults]\nexecution = {{ cash = {cash} }}\n" + STRATEGY
    assert _error(_write(tmp_path, text)).key == "defaults.execution.cash"


@pytest.mark.parametrize("every", ["hourly", "1m", "7m"])
def test_account_every_is_a_multiple_of_the_timeframe(tmp_path: Path, every: str) -> None:
    error = _error(_write(tmp_path, BROKER + STRATEGY + f'account_every = "{every}"\n'))
    assert error.key == "strategies[0].account_every"
