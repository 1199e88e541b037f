"""The wire protocol: round trips through the shared encoder and the strict decoders."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from runtime.messages import (
    CANDLE_DECODER,
    CONTROL_REPLY_DECODER,
    CONTROL_REQUEST_DECODER,
    ENCODER,
    EVENT_BODY_JSON_DECODER,
    EVENT_BODY_JSON_ENCODER,
    EVENTS_DOWN_DECODER,
    EVENTS_UP_DECODER,
    FEED_HEARTBEAT_DECODER,
    HEARTBEAT_TOPIC,
    SUPERVISION_DOWN_DECODER,
    SUPERVISION_UP_DECODER,
    Ack,
    Candle,
    ChildHeartbeat,
    ChildReady,
    DownRequest,
    Error,
    ErrorReply,
    Event,
    EventBody,
    FeedHeartbeat,
    Heartbeat,
    Hello,
    Log,
    OkReply,
    OpenPosition,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    ProcessRow,
    PsReply,
    PsRequest,
    Signal,
    StartFeed,
    Stats,
    Welcome,
    candle_topic,
    parse_candle_topic,
)

# A valid candle as the raw array the wire carries (Candle is array_like).
_GOOD_CANDLE: list[Any] = [
    "ETH-BTC",
    "5m",
    1515560100000,
    0.0984,
    0.0995,
    0.0982,
    0.0994,
    1820.5,
    7,
]

BODIES: list[EventBody] = [
    Signal("ETH-BTC", "5m", "long", 0.5, "sma5 above sma20"),
    Signal("ETH-BTC", "5m", "flat"),
    OrderSubmitted("s-1", "ETH-BTC", "buy", 1.5, "cross"),
    OrderFilled("s-1", "ETH-BTC", "buy", 1.5, 0.0985, 0.000147, 1515560400000),
    OrderRejected("s-2", "ETH-BTC", "sell", 0.0, "quantity must be positive"),
    PositionOpened("ETH-BTC", "short", 2.0, 0.0985, 0.0002, 1515560400000),
    PositionClosed(
        "ETH-BTC", "long", 1.0, 0.0985, 0.1, 0.0004, 0.0011, 1515560400000, 1515561000000
    ),
    Log("warning", "something odd", "strategy.s"),
    Error("on_candle", "ZeroDivisionError: division by zero", "Traceback (most recent...)"),
    Stats(120, frames_rejected=2, rss_bytes=50_000_000),
    Heartbeat(4242, 12.5),
]


def _kind(body: EventBody) -> str:
    tag = type(body).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _raw_event(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "event",
        "strategy_id": "s",
        "seq": 1,
        "ts_ns": 10,
        "body": {"kind": "stats", "candles": 3},
    }
    raw.update(overrides)
    return raw


# --------------------------------------------------------------------------- round trips


def test_candle_round_trip() -> None:
    candle = Candle("ETH-BTC", "5m", 1515560100000, 0.0984, 0.0995, 0.0982, 0.0994, 1820.5, 7, 99)
    decoded = CANDLE_DECODER.decode(ENCODER.encode(candle))
    assert decoded == candle
    assert decoded.publish_ns == 99


def test_candle_publish_ns_defaults_to_zero_when_absent() -> None:
    decoded = CANDLE_DECODER.decode(msgspec.msgpack.encode(_GOOD_CANDLE))
    assert decoded.seq == 7
    assert decoded.publish_ns == 0


def test_candle_with_zero_volume_and_flat_prices_is_valid() -> None:
    raw = ["ETH-BTC", "5m", 1, 0.1, 0.1, 0.1, 0.1, 0.0, 1]
    decoded = CANDLE_DECODER.decode(msgspec.msgpack.encode(raw))
    assert decoded.volume == 0.0


@pytest.mark.parametrize("body", BODIES, ids=_kind)
def test_event_round_trip_for_every_body_kind(body: EventBody) -> None:
    event = Event("sma_fast", 12, 1_700_000_000_000_000_000, body)
    decoded = EVENTS_UP_DECODER.decode(ENCODER.encode(event))
    assert isinstance(decoded, Event)
    assert decoded == event
    assert type(decoded.body) is type(body)


def test_every_body_kind_is_covered() -> None:
    assert {_kind(b) for b in BODIES} == {
        "signal",
        "order_submitted",
        "order_filled",
        "order_rejected",
        "position_opened",
        "position_closed",
        "log",
        "error",
        "stats",
        "heartbeat",
    }


@pytest.mark.parametrize("body", BODIES, ids=_kind)
def test_event_body_json_round_trip(body: EventBody) -> None:
    text = EVENT_BODY_JSON_ENCODER.encode(body)
    assert msgspec.json.decode(text)["kind"] == _kind(body)
    assert EVENT_BODY_JSON_DECODER.decode(text) == body


def test_hello_round_trip() -> None:
    hello = Hello("rsi_ltc", 1234)
    assert EVENTS_UP_DECODER.decode(ENCODER.encode(hello)) == hello


def test_welcome_and_ack_round_trip() -> None:
    welcome = Welcome(
        "rsi_ltc",
        41,
        [OpenPosition("LTC-BTC", "long", 5.0, 0.0169, 0.0001, 1515560100000)],
        -0.25,
        900,
    )
    ack = Ack("rsi_ltc", 41)
    assert EVENTS_DOWN_DECODER.decode(ENCODER.encode(welcome)) == welcome
    assert EVENTS_DOWN_DECODER.decode(ENCODER.encode(ack)) == ack
    assert isinstance(EVENTS_DOWN_DECODER.decode(ENCODER.encode(ack)), Ack)


def test_feed_heartbeat_round_trip() -> None:
    hb = FeedHeartbeat("abc123", 5, {"ETH-BTC|5m": 10, "LTC-BTC|5m": 9}, True)
    assert FEED_HEARTBEAT_DECODER.decode(ENCODER.encode(hb)) == hb


def test_supervision_round_trips() -> None:
    ready = ChildReady("aggregator", "aggregator", 77, {"metrics": "http://127.0.0.1:9464/"})
    beat = ChildHeartbeat("sma_fast", candles=10, open_positions=1, realized_pnl=-0.5)
    for message in (ready, beat):
        assert SUPERVISION_UP_DECODER.decode(ENCODER.encode(message)) == message
    assert SUPERVISION_DOWN_DECODER.decode(ENCODER.encode(StartFeed())) == StartFeed()


def test_control_round_trips() -> None:
    for request in (PsRequest(3), DownRequest(4)):
        decoded = CONTROL_REQUEST_DECODER.decode(ENCODER.encode(request))
        assert decoded == request
        assert type(decoded) is type(request)
    row = ProcessRow("sma_fast", "worker", 55, "running", 3.5, 1, 100, 1, 0.25, {"k": "v"})
    for reply in (PsReply(3, [row]), OkReply(4, "stopping"), ErrorReply(0, "bad request")):
        decoded_reply = CONTROL_REPLY_DECODER.decode(ENCODER.encode(reply))
        assert decoded_reply == reply
        assert type(decoded_reply) is type(reply)


def test_heartbeat_tags_do_not_collide_across_unions() -> None:
    # ChildHeartbeat and the Heartbeat body share the tag "heartbeat" in different unions.
    frame = ENCODER.encode(ChildHeartbeat("w"))
    assert isinstance(SUPERVISION_UP_DECODER.decode(frame), ChildHeartbeat)
    with pytest.raises(msgspec.ValidationError):
        EVENTS_UP_DECODER.decode(frame)


# --------------------------------------------------------------------------- strict decoding


def test_event_with_unknown_field_is_rejected() -> None:
    frame = msgspec.msgpack.encode(_raw_event(extra=1))
    with pytest.raises(msgspec.ValidationError, match="unknown field `extra`"):
        EVENTS_UP_DECODER.decode(frame)


def test_event_body_with_unknown_field_is_rejected() -> None:
    frame = msgspec.msgpack.encode(_raw_event(body={"kind": "stats", "candles": 1, "candels": 2}))
    with pytest.raises(msgspec.ValidationError, match="candels"):
        EVENTS_UP_DECODER.decode(frame)


def test_raw_valid_event_decodes() -> None:
    # The control case for the rejections around it: the same dict without the fault decodes.
    decoded = EVENTS_UP_DECODER.decode(msgspec.msgpack.encode(_raw_event()))
    assert decoded == Event("s", 1, 10, Stats(3))


def test_event_with_wrong_type_is_rejected() -> None:
    frame = msgspec.msgpack.encode(_raw_event(seq="1"))
    with pytest.raises(msgspec.ValidationError, match=r"Expected `int`, got `str` - at `\$.seq`"):
        EVENTS_UP_DECODER.decode(frame)


def test_event_with_seq_zero_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="seq"):
        EVENTS_UP_DECODER.decode(msgspec.msgpack.encode(_raw_event(seq=0)))


def test_unknown_union_tag_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'bogus'"):
        EVENTS_UP_DECODER.decode(msgspec.msgpack.encode(_raw_event(type="bogus")))


def test_unknown_body_kind_is_rejected() -> None:
    frame = msgspec.msgpack.encode(_raw_event(body={"kind": "teleport", "candles": 1}))
    with pytest.raises(msgspec.ValidationError, match="teleport"):
        EVENTS_UP_DECODER.decode(frame)


def test_message_for_another_socket_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        EVENTS_UP_DECODER.decode(ENCODER.encode(Ack("s", 1)))
    with pytest.raises(msgspec.ValidationError):
        CONTROL_REQUEST_DECODER.decode(ENCODER.encode(OkReply(1)))


def test_invalid_literal_is_rejected() -> None:
    frame = msgspec.msgpack.encode(
        _raw_event(
            body={
                "kind": "order_submitted",
                "order_id": "x",
                "symbol": "ETH-BTC",
                "side": "hold",
                "quantity": 1.0,
            }
        )
    )
    with pytest.raises(msgspec.ValidationError, match="side"):
        EVENTS_UP_DECODER.decode(frame)


def test_order_with_zero_quantity_is_rejected() -> None:
    frame = msgspec.msgpack.encode(
        _raw_event(
            body={
                "kind": "order_submitted",
                "order_id": "x",
                "symbol": "ETH-BTC",
                "side": "buy",
                "quantity": 0.0,
            }
        )
    )
    with pytest.raises(msgspec.ValidationError, match="quantity"):
        EVENTS_UP_DECODER.decode(frame)


def test_garbage_bytes_are_rejected() -> None:
    with pytest.raises(msgspec.DecodeError):
        CANDLE_DECODER.decode(b"\xc1\x00garbage")


def _candle_frame(**changes: Any) -> bytes:
    names = ["symbol", "timeframe", "open_time", "open", "high", "low", "close", "volume", "seq"]
    raw = list(_GOOD_CANDLE)
    for name, value in changes.items():
        raw[names.index(name)] = value
    return msgspec.msgpack.encode(raw)


def test_good_candle_frame_decodes() -> None:
    assert CANDLE_DECODER.decode(_candle_frame()).close == 0.0994


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"high": 0.0990}, id="high-below-close"),
        pytest.param({"open": 0.0999, "high": 0.0995}, id="high-below-open"),
        pytest.param({"low": 0.0990}, id="low-above-open"),
        pytest.param({"open": 0.0994, "close": 0.0985, "low": 0.0986}, id="low-above-close"),
        pytest.param({"open": math.nan}, id="nan-open"),
        pytest.param({"close": math.nan}, id="nan-close"),
        pytest.param({"high": math.inf}, id="inf-high"),
        pytest.param({"volume": math.inf}, id="inf-volume"),
        pytest.param({"volume": math.nan}, id="nan-volume"),
        pytest.param({"low": -0.01}, id="negative-low"),
        pytest.param({"open": 0.0}, id="zero-open"),
        pytest.param({"volume": -1.0}, id="negative-volume"),
        pytest.param({"seq": 0}, id="seq-zero"),
        pytest.param({"seq": -3}, id="seq-negative"),
        pytest.param({"open_time": "2018-01-10"}, id="wrong-type"),
    ],
)
def test_invalid_candle_is_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        CANDLE_DECODER.decode(_candle_frame(**changes))


def test_candle_with_extra_field_is_rejected() -> None:
    frame = msgspec.msgpack.encode([*_GOOD_CANDLE, 0, "surplus"])
    with pytest.raises(msgspec.ValidationError, match="at most length 10"):
        CANDLE_DECODER.decode(frame)


def test_candle_with_missing_field_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        CANDLE_DECODER.decode(msgspec.msgpack.encode(_GOOD_CANDLE[:8]))


def test_candle_constructor_checks_high_low_and_finiteness() -> None:
    with pytest.raises(ValueError, match="high"):
        Candle("E", "5m", 1, 1.0, 1.0, 0.5, 1.5, 1.0, 1)
    with pytest.raises(ValueError, match="low"):
        Candle("E", "5m", 1, 1.0, 2.0, 1.2, 1.5, 1.0, 1)
    with pytest.raises(ValueError, match="non-finite"):
        Candle("E", "5m", 1, math.nan, 2.0, 0.5, 1.5, 1.0, 1)


_OHLCV = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 1.0}


def _candle_of(v: dict[str, float]) -> Candle:
    return Candle("E", "5m", 1, v["open"], v["high"], v["low"], v["close"], v["volume"], 1)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        *(
            pytest.param({name: value}, "non-finite", id=f"{name}={value}")
            for name in _OHLCV
            for value in (math.nan, math.inf, -math.inf)
        ),
        # infinite, yet in order: only finiteness refuses them
        pytest.param({"open": math.inf, "high": math.inf}, "non-finite", id="open-high-inf"),
        pytest.param({"low": -math.inf, "close": -math.inf}, "non-finite", id="low-close-inf"),
        pytest.param({"low": 1.2}, "low", id="low-above-open"),
        pytest.param({"low": 1.6, "open": 1.7}, "low", id="low-above-close"),
        pytest.param({"high": 1.2}, "high", id="high-below-close"),
        pytest.param({"high": 1.6, "open": 1.7}, "high", id="high-below-open"),
    ],
)
def test_candle_constructor_says_what_is_wrong(changes: dict[str, float], problem: str) -> None:
    """Built in code (no decoder constraints), a candle is checked all the same."""
    with pytest.raises(ValueError, match=problem):
        _candle_of({**_OHLCV, **changes})


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0}, id="flat"),
        pytest.param({"volume": 0.0}, id="no-volume"),
        pytest.param({"open": 0.5, "close": 2.0}, id="open-at-low-close-at-high"),
        pytest.param({"open": 2.0, "close": 0.5}, id="open-at-high-close-at-low"),
    ],
)
def test_candle_constructor_takes_candles_at_their_bounds(values: dict[str, float]) -> None:
    candle = _candle_of({**_OHLCV, **values})
    assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close)


# --------------------------------------------------------------------------- topics


@pytest.mark.parametrize(
    ("symbol", "timeframe"),
    [("ETH-BTC", "5m"), ("LTC-BTC", "1h"), ("BTC/USDT", "15m"), ("X", "1d")],
)
def test_candle_topic_round_trip(symbol: str, timeframe: str) -> None:
    topic = candle_topic(symbol, timeframe)
    assert topic == f"c|{symbol}|{timeframe}|".encode()
    assert parse_candle_topic(topic) == (symbol, timeframe)


@pytest.mark.parametrize(
    "topic",
    [
        b"",
        b"c",
        b"c|",
        b"c|ETH-BTC|5m",
        b"c||5m|",
        b"c|ETH-BTC||",
        b"x|ETH-BTC|5m|",
        b"C|ETH-BTC|5m|",
        b"c|ETH-BTC|5m|extra",
        b"c|ETH-BTC|5m||",
        b"c|\xff\xfe|5m|",
        HEARTBEAT_TOPIC,
    ],
)
def test_parse_candle_topic_rejects_malformed(topic: bytes) -> None:
    assert parse_candle_topic(topic) is None


def test_candle_topic_is_not_a_prefix_of_a_longer_stream() -> None:
    # ZeroMQ SUB filters are byte prefixes: a subscriber to one stream must not get another.
    assert not candle_topic("ETH", "5m0").startswith(candle_topic("ETH", "5m"))
    assert not candle_topic("ETH-BTC", "5m").startswith(candle_topic("ETH", "5m"))
    assert not candle_topic("ETH", "5m").startswith(HEARTBEAT_TOPIC)
    assert not HEARTBEAT_TOPIC.startswith(b"c|")
    # Sanity of the check itself: a topic is a prefix of itself.
    assert candle_topic("ETH", "5m").startswith(candle_topic("ETH", "5m"))
