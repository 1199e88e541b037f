"""The broker's publisher: what frames a replay turns into (no sockets: a recording stand-in)."""

from __future__ import annotations

from typing import Any, cast

import msgspec

from broker.csv_source import read_candles
from broker.process import _Publisher
from broker.replay import Replay, Stream
from runtime.child import StopFlag
from runtime.config import BrokerConfig, FeedConfig
from runtime.messages import Candle, candle_batch_topic, candle_topic
from runtime.specs import BrokerSpec, Endpoints
from tests.harness import DATA


class _Recorder:
    """Takes frames like a PUB socket that never blocks; pairs them into messages."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self._topic: bytes | None = None

    def send(self, data: bytes, flags: int = 0) -> None:
        if self._topic is None:
            self._topic = data
        else:
            self.messages.append((self._topic, data))
            self._topic = None


def _publish_all(feeds: list[FeedConfig], speed: float = 0) -> _Recorder:
    spec = BrokerSpec(
        name="broker",
        endpoints=Endpoints(
            market_data="ipc://md", events="ipc://ev", supervision="ipc://sup", control="ipc://c"
        ),
        broker=BrokerConfig(feeds=feeds, speed=speed),
    )
    streams = [Stream(f.symbol, f.timeframe, read_candles(f.path)[:500]) for f in feeds]
    pub = _Recorder()
    publisher = _Publisher(cast(Any, pub), Replay(streams, speed), spec)
    stop = StopFlag()
    while publisher.publish_due(0.0, stop):
        pass
    assert publisher.replay.finished
    return pub


def _decode(topic: bytes, payload: bytes) -> list[Candle]:
    if topic.endswith(b"*"):
        return msgspec.msgpack.decode(payload, type=list[Candle])
    return [msgspec.msgpack.decode(payload, type=Candle)]


def test_at_speed_zero_a_stream_goes_out_in_batch_frames_without_holes() -> None:
    eth = FeedConfig(symbol="ETH-BTC", timeframe="5m", path=str(DATA / "crypto/ETH-BTC-5m.csv"))
    messages = _publish_all([eth]).messages
    assert {t for t, _ in messages} == {candle_batch_topic("ETH-BTC", "5m")}
    runs = [_decode(t, p) for t, p in messages]
    assert max(len(r) for r in runs) > 1
    assert [c.seq for r in runs for c in r] == list(range(1, 501))


def test_a_resampled_stream_goes_one_candle_at_a_time_each_bar_after_its_last_candle() -> None:
    base = FeedConfig(
        symbol="UNITTEST-BTC",
        timeframe="1m",
        path=str(DATA / "crypto/UNITTEST-BTC-1m.csv"),
        resample_to=["5m"],
    )
    messages = _publish_all([base]).messages
    single_1m, single_5m = candle_topic("UNITTEST-BTC", "1m"), candle_topic("UNITTEST-BTC", "5m")
    assert {t for t, _ in messages} == {single_1m, single_5m}
    candles = [c for t, p in messages for c in _decode(t, p)]
    for stream in ("1m", "5m"):
        mine = [c.seq for c in candles if c.timeframe == stream]
        assert mine == list(range(1, len(mine) + 1))
    # Each 5m bar goes out right after the 1m candle that closed it (its last, or the first
    # one past its span when the source skipped the end): no 1m candle after that one went
    # out before the bar.
    for i, bar in enumerate(candles):
        if bar.timeframe != "5m":
            continue
        end = bar.open_time + 300_000
        base_before = [c for c in candles[:i] if c.timeframe == "1m"]
        closer = base_before[-1]
        assert closer.open_time + 60_000 >= end
        assert all(c.open_time < end for c in base_before[:-1])
