"""Several streams in one strategy: fed in the order they close, as the broker publishes them."""

from __future__ import annotations

from pathlib import Path

from broker.resample import timeframe_ms
from runtime.backtest.run import Options, run_backtest
from runtime.config import load_config
from runtime.messages import Signal

ROOT = Path(__file__).resolve().parent.parent
CRYPTO = ROOT / "examples" / "data" / "crypto"

CONFIG = f"""
[runtime]
plugin_paths = ["{ROOT}"]
[broker]
speed = 0
[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{CRYPTO / "ETH-BTC-5m.csv"}"
[[broker.feeds]]
symbol = "ADA-BTC"
timeframe = "5m"
path = "{CRYPTO / "ADA-BTC-5m.csv"}"

[[strategies]]
id = "recorder"
class = "tests.backtest_strategies:Recorder"
symbols = ["ETH-BTC", "ADA-BTC"]
timeframe = "5m"
gate = {{ timeframe = "1h", indicator = "trend" }}
indicators = {{ trend = {{ type = "sma", period = 3, timeframe = "1h" }} }}
"""


def test_candles_of_every_stream_arrive_in_closing_order(tmp_path: Path) -> None:
    config = tmp_path / "streams.toml"
    config.write_text(CONFIG, encoding="utf-8")
    outcome = run_backtest(load_config(config), Options(), None)
    (strategy,) = outcome.strategies
    seen = []
    for event in strategy.result.events:
        if isinstance(event.body, Signal):
            symbol, tf, open_time, seq = event.body.reason.split()
            seen.append((symbol, tf, int(open_time), int(seq)))
    streams = {(s.symbol, s.timeframe): s for s in outcome.streams}
    assert set(streams) == {
        ("ETH-BTC", "5m"),
        ("ADA-BTC", "5m"),
        ("ETH-BTC", "1h"),
        ("ADA-BTC", "1h"),
    }
    # Every candle of every stream, once, with seq counting 1, 2, 3 ... per stream.
    assert len(seen) == sum(len(s) for s in streams.values()) == strategy.result.candles
    for key, stream in streams.items():
        mine = [(t, q) for s, tf, t, q in seen if (s, tf) == key]
        assert [t for t, _ in mine] == stream.time.tolist()
        assert [q for _, q in mine] == list(range(1, len(mine) + 1))
    # In closing order; at one closing time the 5m candle before the 1h one it completes,
    # and the config's symbol order (ETH-BTC first) within a timeframe.
    rank = {"ETH-BTC": 0, "ADA-BTC": 1}
    keys = [(t + timeframe_ms(tf), timeframe_ms(tf), rank[s]) for s, tf, t, _ in seen]
    assert keys == sorted(keys)
    # ADA-BTC has holes: its equity times are the union, and nothing was invented.
    assert streams[("ADA-BTC", "5m")].holes > 0
    assert len(strategy.time) == len(
        set(streams[("ETH-BTC", "5m")].time.tolist())
        | set(streams[("ADA-BTC", "5m")].time.tolist())
    )
