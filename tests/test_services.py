"""Unit tests of each per-strategy service: actions, indicators, analyzers, filters, the gate,
the entry and the exit orchestrators. Services are wired by hand, as the factory wires them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from broker.csv_source import Row
from runtime.figures import Figures
from runtime.messages import (
    Direction,
    Event,
    EventBody,
    OrderFilled,
    PositionSide,
    Side,
    Signal,
)
from workers.indicators import Bar, Indicator, IndicatorParams, IndicatorSpec
from workers.services.actions import Action, ActionQueueService, ClosePosition, OpenPosition
from workers.services.analyzers import (
    Analyzer,
    AnalyzerRegistry,
    AnalyzerSpec,
    make_analyzer,
)
from workers.services.entry import EntryConfig, EntryOrchestrator
from workers.services.exit import ExitConfig, ExitOrchestrator
from workers.services.filters import FilterConfig, FilterOrchestrator
from workers.services.gate import GateConfig, MultiTimeframeGate
from workers.services.indicator_registry import IndicatorRegistry
from workers.services.positions import ManagedPosition, PositionLifecycleService

FIVE_MIN = 5 * 60_000
HOUR = 60 * 60_000
T0 = int(datetime(2018, 1, 10, tzinfo=UTC).timestamp() * 1000)  # midnight UTC
ETH, LTC = "ETH-BTC", "LTC-BTC"


def _bar(close: float, t: int = T0, high: float | None = None, low: float | None = None) -> Row:
    high = close if high is None else high
    low = close if low is None else low
    return Row(t, close, max(high, close), min(low, close), close, 1.0)


def _specs(raw: Mapping[str, dict[str, Any]]) -> dict[str, IndicatorParams]:
    specs: dict[str, IndicatorParams] = msgspec.convert(dict(raw), dict[str, IndicatorSpec])
    return specs


def _analyzer_specs(raw: list[dict[str, Any]]) -> list[AnalyzerSpec]:
    specs: list[AnalyzerSpec] = msgspec.convert(raw, list[AnalyzerSpec])
    return specs


Values = dict[tuple[str, str | None], float | None]


class _Fixed(Indicator):
    """An indicator whose outputs are read from a dict set by hand (None = primary)."""

    def __init__(self, values: Values, name: str) -> None:  # no params: nothing to compute
        self._values = values
        self._name = name

    def output(self, name: str | None = None) -> float | None:
        return self._values.get((self._name, name))


class StubIndicators(IndicatorRegistry):
    """A registry whose values are set by hand: ``values[(name, output)]``, any symbol."""

    def __init__(self, values: Values | None = None) -> None:
        super().__init__({}, [], "5m")
        self.values: Values = dict(values or {})

    def get(self, symbol: str, name: str) -> Indicator:
        return _Fixed(self.values, name)


def _filled(
    positions: PositionLifecycleService,
    symbol: str,
    side: PositionSide,
    price: float,
    t: int = T0,
    quantity: float = 1.0,
    order_id: str | None = None,
) -> ManagedPosition:
    """An open position, entered through the lifecycle like a real fill."""
    order_id = order_id or f"{symbol}-in-{t}"
    positions.entry_sent(symbol, side, quantity, order_id)
    p = positions.on_fill(
        OrderFilled(order_id, symbol, "buy" if side == "long" else "sell", quantity, price, 0.0, t)
    )
    assert p is not None
    return p


def _close(positions: PositionLifecycleService, symbol: str, price: float, t: int) -> None:
    p = positions.active(symbol)
    assert p is not None
    order_id = f"{symbol}-out-{t}"
    positions.exit_sent(symbol, order_id, "test")
    side: Side = "sell" if p.side == "long" else "buy"
    positions.on_fill(OrderFilled(order_id, symbol, side, p.quantity, price, 0.0, t))


# --------------------------------------------------------------------------- actions


def _queue() -> tuple[PositionLifecycleService, ActionQueueService]:
    positions = PositionLifecycleService(lambda body: None)
    return positions, ActionQueueService(positions)


def test_a_repeated_open_is_queued_once() -> None:
    _, actions = _queue()
    assert actions.enqueue(OpenPosition(ETH, "long", 1.0, "first"))
    assert not actions.enqueue(OpenPosition(ETH, "long", 1.0, "again"))
    assert not actions.enqueue(OpenPosition(ETH, "short", 1.0, "other side, same candle"))
    assert actions.enqueue(OpenPosition(LTC, "long", 1.0, "other symbol"))
    assert actions.refused == 2
    assert actions.pending(ETH) == [OpenPosition(ETH, "long", 1.0, "first")]
    assert len(actions) == 2


@pytest.mark.parametrize("filled", [False, True])
def test_no_open_while_a_position_is_active(filled: bool) -> None:
    positions, actions = _queue()
    if filled:
        _filled(positions, ETH, "long", 100.0)
    else:
        positions.entry_sent(ETH, "long", 1.0, "o-1")  # pending counts as active
    assert not actions.enqueue(OpenPosition(ETH, "long", 1.0, "again"))
    assert not actions.enqueue(OpenPosition(ETH, "short", 1.0, "reverse without a close"))
    assert len(actions) == 0
    assert actions.refused == 2


def test_close_needs_an_open_position() -> None:
    positions, actions = _queue()
    assert not actions.enqueue(ClosePosition(ETH, "nothing to close"))
    positions.entry_sent(ETH, "long", 1.0, "o-1")
    assert not actions.enqueue(ClosePosition(ETH, "still pending"))
    positions.on_fill(OrderFilled("o-1", ETH, "buy", 1.0, 100.0, 0.0, T0))
    assert actions.enqueue(ClosePosition(ETH, "open now"))
    assert not actions.enqueue(ClosePosition(ETH, "twice"))
    assert not actions.enqueue(ClosePosition(LTC, "other symbol has none"))
    assert actions.pending() == [ClosePosition(ETH, "open now")]
    assert actions.refused == 4


def test_a_reversal_is_a_close_then_an_open() -> None:
    positions, actions = _queue()
    _filled(positions, ETH, "long", 100.0)
    assert actions.enqueue(ClosePosition(ETH, "flip"))
    assert actions.enqueue(OpenPosition(ETH, "short", 1.0, "flip"))
    assert not actions.enqueue(OpenPosition(ETH, "short", 1.0, "flip twice"))
    assert actions.pending(ETH) == [
        ClosePosition(ETH, "flip"),
        OpenPosition(ETH, "short", 1.0, "flip"),
    ]


def test_drain_hands_over_everything_oldest_first_and_empties() -> None:
    positions, actions = _queue()
    _filled(positions, LTC, "short", 10.0)
    queued: list[Action] = [
        OpenPosition(ETH, "long", 1.0, "a"),
        ClosePosition(LTC, "b"),
        OpenPosition("XMR-BTC", "short", 2.0, "c"),
        OpenPosition(LTC, "long", 1.0, "d"),
    ]
    for action in queued:
        assert actions.enqueue(action)
    assert actions.pending(LTC) == [queued[1], queued[3]]
    assert actions.drain() == queued
    assert len(actions) == 0
    assert actions.drain() == []
    # Drained is forgotten: the same open may be queued again.
    assert actions.enqueue(OpenPosition(ETH, "long", 1.0, "a"))


# --------------------------------------------------------------------------- indicator registry


def test_only_declared_indicators_are_built_per_symbol() -> None:
    registry = IndicatorRegistry(
        _specs({"fast": {"type": "sma", "period": 2}, "m": {"type": "macd"}}), [ETH, LTC], "5m"
    )
    assert len(registry) == 4
    assert registry.get(ETH, "fast") is not registry.get(LTC, "fast")
    assert type(registry.get(ETH, "m")).__name__ == "Macd"
    with pytest.raises(KeyError, match="no indicator 'rsi' on ETH-BTC"):
        registry.get(ETH, "rsi")
    with pytest.raises(KeyError, match="'fast' on XMR-BTC"):
        registry.value("XMR-BTC", "fast")
    assert registry.timeframes == {"5m"}


def test_each_symbol_has_its_own_values() -> None:
    registry = IndicatorRegistry(_specs({"fast": {"type": "sma", "period": 2}}), [ETH, LTC], "5m")
    registry.update(_bar(1.0), ETH, "5m")
    assert registry.value(ETH, "fast") is None
    assert not registry.ready(ETH)
    registry.update(_bar(3.0, T0 + FIVE_MIN), ETH, "5m")
    registry.update(_bar(10.0), LTC, "5m")
    assert registry.value(ETH, "fast") == 2.0
    assert registry.ready(ETH)
    assert registry.value(LTC, "fast") is None
    assert not registry.ready(LTC)
    registry.update(_bar(20.0, T0 + FIVE_MIN), LTC, "5m")
    assert registry.value(LTC, "fast") == 15.0
    assert registry.value(ETH, "fast") == 2.0


def test_an_indicator_with_a_timeframe_only_sees_that_timeframe() -> None:
    registry = IndicatorRegistry(
        _specs(
            {
                "short": {"type": "sma", "period": 2},
                "trend": {"type": "sma", "period": 2, "timeframe": "1h"},
            }
        ),
        [ETH],
        "5m",
    )
    assert registry.timeframes == {"5m", "1h"}
    for i, close in enumerate([1.0, 2.0, 3.0]):
        registry.update(_bar(close, T0 + i * FIVE_MIN), ETH, "5m")
    assert registry.value(ETH, "short") == 2.5
    assert registry.value(ETH, "trend") is None
    assert not registry.ready(ETH)
    registry.update(_bar(100.0, T0), ETH, "1h")
    registry.update(_bar(200.0, T0 + HOUR), ETH, "1h")
    assert registry.value(ETH, "trend") == 150.0
    assert registry.value(ETH, "short") == 2.5  # the 1h candles did not reach it
    assert registry.ready(ETH)
    registry.update(_bar(7.0, T0), ETH, "15m")  # nobody's timeframe: nobody is fed
    assert (registry.value(ETH, "short"), registry.value(ETH, "trend")) == (2.5, 150.0)


def test_value_reads_named_outputs_and_ready_needs_every_indicator() -> None:
    registry = IndicatorRegistry(
        _specs(
            {
                "bands": {"type": "bbands", "period": 3},
                "slow": {"type": "sma", "period": 5},
            }
        ),
        [ETH],
        "5m",
    )
    for i, close in enumerate([1.0, 2.0, 3.0]):
        registry.update(_bar(close, T0 + i * FIVE_MIN), ETH, "5m")
    assert registry.value(ETH, "bands", "middle") == pytest.approx(2.0)
    assert registry.value(ETH, "bands") == registry.value(ETH, "bands", "upper")
    upper, lower = registry.value(ETH, "bands", "upper"), registry.value(ETH, "bands", "lower")
    assert upper is not None and lower is not None
    assert upper - 2.0 == pytest.approx(2.0 - lower)
    assert upper > 2.0
    assert not registry.ready(ETH)  # slow is still warming up
    for i, close in enumerate([4.0, 5.0], start=3):
        registry.update(_bar(close, T0 + i * FIVE_MIN), ETH, "5m")
    assert registry.ready(ETH)
    assert registry.value(ETH, "slow") == 3.0


# --------------------------------------------------------------------------- analyzers


def _score(spec: dict[str, Any], values: Values, close: float
           = 100.0) -> float | None:  # fmt: skip
    (params,) = _analyzer_specs([spec])
    return make_analyzer(params).score(StubIndicators(values), ETH, _bar(close))


@pytest.mark.parametrize(
    ("fast", "slow", "scale_pct", "expected"),
    [
        (101.0, 100.0, 0.0, 1.0),
        (99.0, 100.0, 0.0, -1.0),
        (100.0, 100.0, 0.0, 0.0),
        (101.0, 100.0, 2.0, 0.5),
        (99.0, 100.0, 2.0, -0.5),
        (105.0, 100.0, 2.0, 1.0),  # clipped
        (90.0, 100.0, 2.0, -1.0),  # clipped
    ],
)
def test_cross_scores_the_side_and_gap_of_fast_over_slow(
    fast: float, slow: float, scale_pct: float, expected: float
) -> None:
    spec = {"type": "cross", "fast": "f", "slow": "s", "scale_pct": scale_pct}
    score = _score(spec, {("f", None): fast, ("s", None): slow})
    assert score == pytest.approx(expected, rel=1e-9)


def test_cross_has_no_score_without_both_averages() -> None:
    spec = {"type": "cross", "fast": "f", "slow": "s"}
    assert _score(spec, {("f", None): 1.0}) is None
    assert _score(spec, {("s", None): 1.0}) is None
    assert _score(spec, {("f", None): 1.0, ("s", None): 0.0}) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(30.0, 1.0), (10.0, 1.0), (40.0, 0.5), (50.0, 0.0), (60.0, -0.5), (70.0, -1.0), (95.0, -1.0)],
)
def test_oscillator_is_linear_between_its_bounds(value: float, expected: float) -> None:
    spec = {"type": "oscillator", "indicator": "rsi", "lower": 30, "upper": 70}
    assert _score(spec, {("rsi", None): value}) == pytest.approx(expected)


def test_oscillator_reads_its_output_and_waits_for_it() -> None:
    spec = {"type": "oscillator", "indicator": "st", "output": "d", "lower": 20, "upper": 80}
    assert _score(spec, {("st", "k"): 20.0}) is None
    assert _score(spec, {("st", "d"): 35.0, ("st", "k"): 99.0}) == pytest.approx(0.5)


@pytest.mark.parametrize(("hist", "expected"), [(0.003, 1.0), (-1e-9, -1.0), (0.0, 0.0)])
def test_macd_scores_the_sign_of_the_histogram(hist: float, expected: float) -> None:
    values: Values = {
        ("m", "hist"): hist,
        ("m", None): -hist,  # the MACD line itself must not be what is read
        ("m", "macd"): -hist,
    }
    assert _score({"type": "macd", "indicator": "m"}, values) == expected
    assert _score({"type": "macd", "indicator": "m"}, {("m", None): 1.0}) is None


@pytest.mark.parametrize(
    ("close", "expected"),
    [(90.0, 1.0), (95.0, 0.5), (100.0, 0.0), (105.0, -0.5), (110.0, -1.0), (130.0, -1.0)],
)
def test_bollinger_scores_the_close_inside_the_bands(close: float, expected: float) -> None:
    values: Values = {
        ("b", "upper"): 110.0,
        ("b", "middle"): 100.0,
        ("b", "lower"): 90.0,
    }
    assert _score({"type": "bollinger", "indicator": "b"}, values, close) == pytest.approx(expected)


def test_bollinger_without_width_or_values() -> None:
    flat: Values = {("b", "upper"): 5.0, ("b", "middle"): 5.0}
    assert _score({"type": "bollinger", "indicator": "b"}, flat, 4.0) == 0.0
    assert _score({"type": "bollinger", "indicator": "b"}, {("b", "upper"): 5.0}) is None


@pytest.mark.parametrize(("close", "expected"), [(101.0, 1.0), (99.0, -1.0), (100.0, 0.0)])
def test_price_vs_scores_the_close_against_the_level(close: float, expected: float) -> None:
    spec = {"type": "price_vs", "indicator": "ma"}
    assert _score(spec, {("ma", None): 100.0}, close) == expected
    assert _score(spec, {}, close) is None


@pytest.mark.parametrize(
    ("adx", "plus", "minus", "expected"),
    [
        (20.0, 30.0, 10.0, 0.0),  # too weak a trend for a view
        (25.0, 30.0, 10.0, 1.0),
        (40.0, 10.0, 30.0, -1.0),
        (40.0, 20.0, 20.0, 0.0),
    ],
)
def test_adx_scores_the_stronger_di_above_the_threshold(
    adx: float, plus: float, minus: float, expected: float
) -> None:
    values: Values = {
        ("a", "adx"): adx,
        ("a", "plus_di"): plus,
        ("a", "minus_di"): minus,
    }
    assert _score({"type": "adx", "indicator": "a", "threshold": 25}, values) == expected
    del values[("a", "minus_di")]
    assert _score({"type": "adx", "indicator": "a"}, values) is None


def _registry(
    specs: list[dict[str, Any]], values: Values
) -> tuple[AnalyzerRegistry, StubIndicators]:
    indicators = StubIndicators(values)
    return AnalyzerRegistry(_analyzer_specs(specs), indicators), indicators


def test_registry_score_is_the_weighted_mean() -> None:
    registry, indicators = _registry(
        [
            {"type": "price_vs", "indicator": "ma", "weight": 3.0},  # +1
            {"type": "oscillator", "indicator": "rsi", "weight": 1.0},  # -0.5
            {"type": "macd", "indicator": "m", "weight": 0.5},  # -1
        ],
        {("ma", None): 90.0, ("rsi", None): 60.0, ("m", "hist"): -2.0},
    )
    assert len(registry) == 3
    assert [a.weight for a in registry.analyzers] == [3.0, 1.0, 0.5]
    expected = (3.0 * 1.0 + 1.0 * -0.5 + 0.5 * -1.0) / 4.5
    assert registry.score(ETH, _bar(100.0)) == pytest.approx(expected, rel=1e-12)
    # The weights are the strategy's: the same analyzers weighed otherwise score otherwise.
    other, _ = _registry(
        [
            {"type": "price_vs", "indicator": "ma", "weight": 1.0},
            {"type": "oscillator", "indicator": "rsi", "weight": 1.0},
            {"type": "macd", "indicator": "m", "weight": 2.0},
        ],
        indicators.values,
    )
    assert other.score(ETH, _bar(100.0)) == pytest.approx((1.0 - 0.5 - 2.0) / 4.0, rel=1e-12)


def test_registry_has_no_score_until_every_analyzer_has_one() -> None:
    registry, indicators = _registry(
        [{"type": "price_vs", "indicator": "ma"}, {"type": "oscillator", "indicator": "rsi"}],
        {("ma", None): 90.0},
    )
    assert registry.score(ETH, _bar(100.0)) is None
    indicators.values[("rsi", None)] = math.nan
    assert registry.score(ETH, _bar(100.0)) is None
    indicators.values[("rsi", None)] = 30.0
    assert registry.score(ETH, _bar(100.0)) == 1.0


def test_registry_without_analyzers_or_weight_has_no_score() -> None:
    empty, _ = _registry([], {})
    assert empty.score(ETH, _bar(1.0)) is None
    spec = {"type": "price_vs", "indicator": "ma", "weight": 0}
    weightless, _ = _registry([spec], {("ma", None): 1.0})
    assert weightless.score(ETH, _bar(2.0)) is None


class _Wild(Analyzer):
    """An analyzer that overshoots, to see the registry clip."""

    def __init__(self, value: float) -> None:
        self.weight = 1.0
        self.value = value

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        return self.value


@pytest.mark.parametrize(("wild", "expected"), [(7.0, 1.0), (-9.0, -1.0), (0.4, 0.4)])
def test_registry_score_is_clipped_to_plus_minus_one(wild: float, expected: float) -> None:
    registry, _ = _registry([{"type": "price_vs", "indicator": "ma"}], {})  # total weight 1
    registry.analyzers = [_Wild(wild)]
    assert registry.score(ETH, _bar(1.0)) == pytest.approx(expected)


def test_analyzers_on_real_indicators_wait_for_warm_up() -> None:
    indicators = IndicatorRegistry(
        _specs({"fast": {"type": "sma", "period": 2}, "slow": {"type": "sma", "period": 4}}),
        [ETH],
        "5m",
    )
    analyzers = AnalyzerRegistry(
        _analyzer_specs(
            [
                {"type": "cross", "fast": "fast", "slow": "slow", "weight": 2},
                {"type": "price_vs", "indicator": "slow"},
            ]
        ),
        indicators,
    )
    scores: list[float | None] = []
    for i, close in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 1.0, 0.5, 0.5]):
        bar = _bar(close, T0 + i * FIVE_MIN)
        indicators.update(bar, ETH, "5m")
        scores.append(analyzers.score(ETH, bar))
    # slow is warm from the 4th bar on. Rising: both +1. Then the close falls under slow
    # (3.25) while fast (3.0) is still under slow too: both -1.
    assert scores[:3] == [None, None, None]
    assert scores[3:7] == [1.0, 1.0, -1.0, -1.0]
    assert scores[7] == -1.0


# --------------------------------------------------------------------------- filters


def _filters(
    config: dict[str, Any],
    indicators: IndicatorRegistry | None = None,
    positions: PositionLifecycleService | None = None,
) -> FilterOrchestrator:
    return FilterOrchestrator(
        msgspec.convert(config, FilterConfig),
        StubIndicators() if indicators is None else indicators,
        PositionLifecycleService(lambda body: None) if positions is None else positions,
        FIVE_MIN,
    )


def _at(hour: int, minute: int) -> int:
    return T0 + (hour * 60 + minute) * 60_000


def test_trading_hours_are_judged_on_the_candle_close() -> None:
    filters = _filters({"trading_hours_utc": [[9, 17]]})
    # A 5m candle opening 08:55 closes 09:00: inside. One opening 16:55 closes 17:00: outside.
    assert filters.veto(ETH, _bar(1.0, _at(8, 50))) is not None
    assert filters.veto(ETH, _bar(1.0, _at(8, 55))) is None
    assert filters.veto(ETH, _bar(1.0, _at(16, 50))) is None
    reason = filters.veto(ETH, _bar(1.0, _at(16, 55)))
    assert reason is not None and reason.startswith("trading_hours: 17:00 UTC")
    assert filters.vetoes == {"trading_hours": 2}


def test_trading_hours_with_several_windows_and_midnight() -> None:
    filters = _filters({"trading_hours_utc": [[0, 2], [22, 24]]})
    assert filters.veto(ETH, _bar(1.0, _at(23, 55))) is None  # closes 00:00 next day
    assert filters.veto(ETH, _bar(1.0, _at(21, 55))) is None  # closes 22:00
    assert filters.veto(ETH, _bar(1.0, _at(1, 50))) is None  # closes 01:55
    assert filters.veto(ETH, _bar(1.0, _at(21, 50))) is not None
    assert filters.veto(ETH, _bar(1.0, _at(1, 55))) is not None  # closes 02:00
    assert filters.vetoes == {"trading_hours": 2}


def test_empty_trading_hours_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="empty"):
        msgspec.convert({"trading_hours_utc": [[10, 10]]}, FilterConfig)


def test_volatility_floor_needs_the_indicator_warm_and_high_enough() -> None:
    indicators = StubIndicators()
    filters = _filters({"volatility_floor": {"indicator": "atr", "min_pct": 0.5}}, indicators)
    reason = filters.veto(ETH, _bar(100.0))
    assert reason is not None and "not warm" in reason
    indicators.values[("atr", None)] = 0.49  # 0.49% of the close
    reason = filters.veto(ETH, _bar(100.0))
    assert reason is not None and reason.startswith("volatility_floor: atr 0.49%")
    indicators.values[("atr", None)] = 0.5
    assert filters.veto(ETH, _bar(100.0)) is None
    assert filters.veto(ETH, _bar(101.0)) is not None  # the same ATR on a higher close
    assert filters.vetoes == {"volatility_floor": 3}


def test_max_open_positions_counts_every_symbol_and_closing_ones() -> None:
    positions = PositionLifecycleService(lambda body: None)
    filters = _filters({"max_open_positions": 2}, positions=positions)
    _filled(positions, ETH, "long", 100.0)
    assert filters.veto(LTC, _bar(1.0)) is None
    _filled(positions, LTC, "short", 1.0)
    reason = filters.veto("XMR-BTC", _bar(1.0))
    assert reason == "max_open_positions: 2 open or on their way"
    positions.exit_sent(ETH, "out-1", "x")  # closing still holds exposure
    assert filters.veto("XMR-BTC", _bar(1.0)) is not None
    positions.on_fill(OrderFilled("out-1", ETH, "sell", 1.0, 100.0, 0.0, T0))
    assert filters.veto("XMR-BTC", _bar(1.0)) is None
    assert filters.vetoes == {"max_open_positions": 2}


def test_max_open_positions_counts_entries_not_yet_filled() -> None:
    positions = PositionLifecycleService(lambda body: None)
    filters = _filters({"max_open_positions": 1}, positions=positions)
    positions.entry_sent(ETH, "long", 1.0, "in-1")  # decided on the ETH candle, fills later
    # The LTC candle of the same time: one position is already on its way.
    assert filters.veto(LTC, _bar(1.0)) is not None


def test_cooldown_after_a_loss_counts_decision_candles() -> None:
    positions = PositionLifecycleService(lambda body: None)
    filters = _filters({"cooldown_after_loss_candles": 3}, positions=positions)
    _filled(positions, ETH, "long", 100.0, t=T0)
    closed_at = T0 + 10 * FIVE_MIN
    _close(positions, ETH, 99.0, closed_at)  # a loss, filled at that candle's open
    vetoed = [filters.veto(ETH, _bar(1.0, closed_at + k * FIVE_MIN)) is not None for k in range(5)]
    # The candle of the exit fill and the next two are the three candles of cooldown.
    assert vetoed == [True, True, True, False, False]
    reason = filters.veto(ETH, _bar(1.0, closed_at + 2 * FIVE_MIN))
    assert reason == "cooldown: 3 of 3 candles after a loss"
    assert filters.veto(LTC, _bar(1.0, closed_at)) is None  # per symbol
    assert filters.vetoes == {"cooldown": 4}


def test_no_cooldown_after_a_win() -> None:
    positions = PositionLifecycleService(lambda body: None)
    filters = _filters({"cooldown_after_loss_candles": 3}, positions=positions)
    _filled(positions, ETH, "short", 100.0, t=T0)
    _close(positions, ETH, 99.0, T0 + FIVE_MIN)
    assert filters.veto(ETH, _bar(1.0, T0 + FIVE_MIN)) is None
    # The latest close decides: a loss after the win starts a cooldown.
    _filled(positions, ETH, "short", 100.0, t=T0 + 2 * FIVE_MIN)
    _close(positions, ETH, 101.0, T0 + 3 * FIVE_MIN)
    assert filters.veto(ETH, _bar(1.0, T0 + 3 * FIVE_MIN)) is not None


def test_cooldown_after_a_loss_holds_across_a_restart() -> None:
    # The closes a strategy emits reach the aggregator's figures; a restarted worker gets
    # the last one per symbol in its Welcome and restores it: the cooldown goes on.
    emitted: list[EventBody] = []
    before = PositionLifecycleService(emitted.append)
    _filled(before, ETH, "long", 100.0, t=T0)
    closed_at = T0 + 10 * FIVE_MIN
    _close(before, ETH, 99.0, closed_at)
    figures = Figures()
    for seq, body in enumerate(emitted, 1):
        figures.apply(Event("s", seq, 0, body))
    welcome = figures.get("s")
    after = PositionLifecycleService(lambda body: None)
    after.restore(
        list(welcome.positions.values()), welcome.realized_pnl, [*welcome.last_closed.values()]
    )
    filters = _filters({"cooldown_after_loss_candles": 3}, positions=after)
    vetoed = [filters.veto(ETH, _bar(1.0, closed_at + k * FIVE_MIN)) is not None for k in range(5)]
    assert vetoed == [True, True, True, False, False]
    assert after.open_count == 0 and after.realized_pnl == before.realized_pnl


def test_filters_report_the_first_that_refuses() -> None:
    indicators = StubIndicators({("atr", None): 0.0})
    filters = _filters(
        {"trading_hours_utc": [[9, 10]], "volatility_floor": {"indicator": "atr", "min_pct": 1}},
        indicators,
    )
    first = filters.veto(ETH, _bar(1.0, _at(3, 0)))
    assert first is not None and first.startswith("trading_hours")
    second = filters.veto(ETH, _bar(1.0, _at(9, 0)))
    assert second is not None and second.startswith("volatility_floor")
    assert filters.vetoes == {"trading_hours": 1, "volatility_floor": 1}
    assert _filters({}).veto(ETH, _bar(1.0)) is None


# --------------------------------------------------------------------------- gate


def _gate(symbols: Iterable[str] = (ETH,)) -> tuple[MultiTimeframeGate, IndicatorRegistry]:
    indicators = IndicatorRegistry(
        _specs({"trend": {"type": "sma", "period": 2, "timeframe": "1h"}}), symbols, "5m"
    )
    return MultiTimeframeGate(GateConfig(timeframe="1h", indicator="trend"), indicators), indicators


def _hour(gate: MultiTimeframeGate, indicators: IndicatorRegistry, close: float, i: int) -> None:
    bar = _bar(close, T0 + i * HOUR)
    indicators.update(bar, ETH, "1h")
    gate.observe(bar, ETH, "1h")


def test_gate_vetoes_until_warm_and_only_watches_its_timeframe() -> None:
    gate, indicators = _gate([ETH, LTC])
    reason = gate.veto(ETH, "long")
    assert reason == "gate: trend on 1h is not warm yet"
    for i in range(5):
        bar = _bar(50.0 + i, T0 + i * FIVE_MIN)
        indicators.update(bar, ETH, "5m")
        gate.observe(bar, ETH, "5m")
    assert gate.veto(ETH, "long") is not None  # 5m candles do not warm a 1h gate
    _hour(gate, indicators, 10.0, 0)
    _hour(gate, indicators, 12.0, 1)  # trend 11, close 12
    assert gate.veto(ETH, "long") is None
    assert gate.veto(LTC, "long") is not None  # per symbol
    assert gate.blocked == 3


def test_gate_long_only_above_short_only_below() -> None:
    gate, indicators = _gate()
    _hour(gate, indicators, 10.0, 0)
    _hour(gate, indicators, 12.0, 1)  # close 12 > trend 11
    assert gate.veto(ETH, "long") is None
    reason = gate.veto(ETH, "short")
    assert reason is not None and "disagrees with short" in reason
    _hour(gate, indicators, 8.0, 2)  # close 8 < trend 10
    assert gate.veto(ETH, "short") is None
    assert gate.veto(ETH, "long") is not None
    # A 5m close far above the trend does not count: the gate keeps the last 1h close.
    gate.observe(_bar(1000.0, T0 + 2 * HOUR + FIVE_MIN), ETH, "5m")
    assert gate.veto(ETH, "long") is not None
    _hour(gate, indicators, 8.0, 3)  # close 8 == trend 8: neither side
    assert gate.veto(ETH, "long") is not None
    assert gate.veto(ETH, "short") is not None
    assert gate.blocked == 5


# --------------------------------------------------------------------------- entry


class Entry:
    """An entry orchestrator with its collaborators and what it emitted."""

    def __init__(
        self,
        entry: dict[str, Any] | None = None,
        filters: dict[str, Any] | None = None,
        gate: bool = False,
    ) -> None:
        self.events: list[EventBody] = []
        self.positions = PositionLifecycleService(self.events.append)
        self.actions = ActionQueueService(self.positions)
        self.indicators = StubIndicators()
        self.filters = _filters(filters or {}, self.indicators, self.positions)
        self.gate = (
            MultiTimeframeGate(GateConfig(timeframe="1h", indicator="trend"), self.indicators)
            if gate
            else None
        )
        self.entry = EntryOrchestrator(
            msgspec.convert(entry or {}, EntryConfig),
            "5m",
            2.5,
            self.positions,
            self.actions,
            self.filters,
            self.gate,
            self.events.append,
        )

    def signals(self) -> list[Signal]:
        return [e for e in self.events if isinstance(e, Signal)]


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (None, "flat"),
        (0.5, "long"),
        (1.0, "long"),
        (0.49, "flat"),
        (0.0, "flat"),
        (-0.39, "flat"),
        (-0.4, "short"),
        (-1.0, "short"),
    ],
)
def test_direction_follows_the_thresholds(score: float | None, expected: Direction) -> None:
    e = Entry({"long_threshold": 0.5, "short_threshold": -0.4})
    assert e.entry.direction(score) == expected


def test_without_a_short_threshold_the_strategy_is_long_only() -> None:
    e = Entry({"long_threshold": 0.7})
    assert [e.entry.direction(s) for s in (-1.0, 0.69, 0.7)] == ["flat", "flat", "long"]


def test_signals_are_emitted_only_when_the_direction_changes() -> None:
    e = Entry({"long_threshold": 0.5, "short_threshold": -0.5})
    scores = [None, 0.2, 0.6, 0.8, 0.1, -0.6, -0.9, None, None]
    got = [e.entry.on_candle(ETH, _bar(1.0), s) for s in scores]
    assert got == ["flat", "flat", "long", "long", "flat", "short", "short", "flat", "flat"]
    signals = e.signals()
    assert [(s.direction, s.strength) for s in signals] == [
        ("long", 0.6),
        ("flat", 0.1),
        ("short", 0.6),
        ("flat", 0.0),
    ]
    assert {(s.symbol, s.timeframe) for s in signals} == {(ETH, "5m")}
    assert signals[0].reason == "score +0.600"
    assert signals[-1].reason == "no score"
    # Per symbol: LTC's first long is news even though ETH was long before.
    e.entry.on_candle(LTC, _bar(1.0), 0.9)
    assert e.signals()[-1].symbol == LTC


def test_an_entry_is_queued_with_the_configured_quantity_and_never_twice() -> None:
    e = Entry({"long_threshold": 0.5, "short_threshold": -0.5})
    e.entry.on_candle(ETH, _bar(1.0), 0.2)
    assert len(e.actions) == 0
    e.entry.on_candle(ETH, _bar(1.0), -0.75)
    assert e.actions.pending() == [OpenPosition(ETH, "short", 2.5, "short on score -0.750")]
    e.entry.on_candle(ETH, _bar(1.0), -0.8)  # queued already: not again
    assert len(e.actions) == 1
    e.actions.drain()
    _filled(e.positions, ETH, "short", 1.0)
    e.entry.on_candle(ETH, _bar(1.0), -0.9)  # a position is active: no entry
    e.entry.on_candle(ETH, _bar(1.0), 0.9)  # not even on the other side
    assert len(e.actions) == 0
    assert e.filters.vetoes == {}  # the filters were not even asked


def test_no_entry_while_an_entry_is_pending() -> None:
    e = Entry()
    e.positions.entry_sent(ETH, "long", 2.5, "in-1")
    e.entry.on_candle(ETH, _bar(1.0), 1.0)
    assert len(e.actions) == 0
    assert e.actions.refused == 0  # not even offered to the queue


def test_filters_veto_entries_before_the_gate_is_asked() -> None:
    e = Entry(filters={"trading_hours_utc": [[9, 17]]}, gate=True)
    assert e.gate is not None
    e.entry.on_candle(ETH, _bar(1.0, _at(3, 0)), 0.9)
    assert len(e.actions) == 0
    assert e.filters.vetoes == {"trading_hours": 1}
    assert e.gate.blocked == 0
    # Inside the hours the gate is asked, and it is not warm.
    e.entry.on_candle(ETH, _bar(1.0, _at(10, 0)), 0.9)
    assert len(e.actions) == 0
    assert e.gate.blocked == 1
    # The gate agrees: the entry goes through.
    e.indicators.values[("trend", None)] = 5.0
    e.gate.observe(_bar(6.0, _at(9, 0)), ETH, "1h")
    e.entry.on_candle(ETH, _bar(1.0, _at(10, 5)), 0.9)
    assert e.actions.pending() == [OpenPosition(ETH, "long", 2.5, "long on score +0.900")]
    # The signal was emitted once, vetoes or not.
    assert [s.direction for s in e.signals()] == ["long"]


def test_a_vetoed_short_is_the_gates_business_too() -> None:
    e = Entry({"short_threshold": -0.5}, gate=True)
    assert e.gate is not None
    e.indicators.values[("trend", None)] = 5.0
    e.gate.observe(_bar(6.0), ETH, "1h")  # higher timeframe above its trend: longs only
    e.entry.on_candle(ETH, _bar(1.0), -0.9)
    assert len(e.actions) == 0
    assert e.gate.blocked == 1


# --------------------------------------------------------------------------- exit


class Exit:
    def __init__(self, **config: Any) -> None:
        self.positions = PositionLifecycleService(lambda body: None)
        self.actions = ActionQueueService(self.positions)
        self.exit = ExitOrchestrator(
            msgspec.convert(config, ExitConfig), self.positions, self.actions
        )

    def open(self, side: PositionSide, price: float = 100.0) -> ManagedPosition:
        return _filled(self.positions, ETH, side, price)

    def judge(self, bar: Row, direction: Direction = "flat") -> str | None:
        """As the runner and RuleStrategy do: mark, then judge."""
        self.positions.mark(bar, ETH)
        return self.exit.on_candle(ETH, bar, direction)


@pytest.mark.parametrize(
    ("side", "high", "low", "expected"),
    [
        ("long", 100.5, 98.0, "stop_loss"),  # the low touched 98
        ("long", 100.5, 98.0001, None),
        ("short", 102.0, 99.5, "stop_loss"),  # the high touched 102
        ("short", 101.9999, 99.5, None),
    ],
)
def test_stop_loss_is_touched_by_the_low_or_high(
    side: PositionSide, high: float, low: float, expected: str | None
) -> None:
    x = Exit(stop_loss_pct=2.0, on_opposite_signal=False)
    x.open(side)
    assert x.judge(_bar(100.0, high=high, low=low)) == expected
    assert x.actions.pending() == ([ClosePosition(ETH, expected)] if expected else [])


@pytest.mark.parametrize(
    ("side", "high", "low", "expected"),
    [
        ("long", 103.0, 99.5, "take_profit"),
        ("long", 102.9999, 99.5, None),
        ("short", 100.5, 97.0, "take_profit"),
        ("short", 100.5, 97.0001, None),
    ],
)
def test_take_profit_is_touched_by_the_high_or_low(
    side: PositionSide, high: float, low: float, expected: str | None
) -> None:
    x = Exit(take_profit_pct=3.0)
    x.open(side)
    assert x.judge(_bar(100.0, high=high, low=low)) == expected


def test_trailing_stop_follows_the_best_price_and_is_judged_on_the_close() -> None:
    x = Exit(trailing_stop_pct=10.0)
    p = x.open("long")
    assert x.judge(_bar(115.0, high=120.0, low=100.0)) is None  # best 120, trail 108
    assert p.best_price == 120.0
    # The low goes under the trail, the close does not: not hit.
    assert x.judge(_bar(110.0, high=112.0, low=90.0)) is None
    assert x.judge(_bar(108.0, high=109.0, low=107.0)) == "trailing_stop"
    assert x.exit.fired == {"trailing_stop": 1}


def test_trailing_stop_of_a_short_follows_the_lows() -> None:
    x = Exit(trailing_stop_pct=10.0)
    x.open("short")
    assert x.judge(_bar(85.0, high=100.0, low=80.0)) is None  # best 80, trail 88
    assert x.judge(_bar(87.9, high=95.0, low=86.0)) is None
    assert x.judge(_bar(88.0, high=89.0, low=87.0)) == "trailing_stop"


def test_time_stop_counts_the_candles_held() -> None:
    x = Exit(time_stop_candles=3)
    x.open("long")
    rules = [x.judge(_bar(100.0, T0 + i * FIVE_MIN)) for i in range(3)]
    assert rules == [None, None, "time_stop"]


@pytest.mark.parametrize(
    ("side", "direction", "expected"),
    [
        ("long", "short", "opposite_signal"),
        ("long", "flat", None),
        ("long", "long", None),
        ("short", "long", "opposite_signal"),
        ("short", "flat", None),
    ],
)
def test_opposite_signal_closes(
    side: PositionSide, direction: Direction, expected: str | None
) -> None:
    x = Exit()
    x.open(side)
    assert x.judge(_bar(100.0), direction) == expected
    off = Exit(on_opposite_signal=False)
    off.open(side)
    assert off.judge(_bar(100.0), direction) is None


def test_rules_are_tried_in_priority_order() -> None:
    config = {
        "stop_loss_pct": 2.0,
        "take_profit_pct": 3.0,
        "trailing_stop_pct": 1.0,
        "time_stop_candles": 1,
    }
    # A candle that touches both the stop and the target: the stop wins.
    x = Exit(**config)
    x.open("long")
    assert x.judge(_bar(100.0, high=104.0, low=97.0), "short") == "stop_loss"
    x = Exit(**config)
    x.open("long")
    assert x.judge(_bar(98.5, high=104.0, low=98.5), "short") == "take_profit"
    x = Exit(**config)
    x.open("long")
    assert x.judge(_bar(98.5, high=101.0, low=98.5), "short") == "trailing_stop"
    x = Exit(**config)
    x.open("long")
    assert x.judge(_bar(100.0, high=100.5, low=99.5), "short") == "time_stop"
    x = Exit(**{**config, "time_stop_candles": 5})
    x.open("long")
    assert x.judge(_bar(100.0, high=100.5, low=99.5), "short") == "opposite_signal"


def test_a_close_is_queued_once() -> None:
    x = Exit(stop_loss_pct=2.0)
    x.open("long")
    bar = _bar(95.0, low=90.0)
    assert x.judge(bar) == "stop_loss"
    assert x.exit.on_candle(ETH, bar, "short") == "stop_loss"  # still true, not queued again
    assert x.actions.pending() == [ClosePosition(ETH, "stop_loss")]
    assert x.exit.fired == {"stop_loss": 1}


def test_no_exit_without_an_open_position() -> None:
    x = Exit(stop_loss_pct=2.0, time_stop_candles=1)
    assert x.judge(_bar(1.0, low=0.5), "short") is None
    x.positions.entry_sent(ETH, "long", 1.0, "in-1")  # pending: nothing to close yet
    assert x.judge(_bar(1.0, low=0.5), "short") is None
    assert len(x.actions) == 0
    assert x.exit.fired == {}
