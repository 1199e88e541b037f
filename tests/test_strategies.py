"""Strategies driven through StrategyRunner on real ETH-BTC candles, with a real Outbox.

SmaCross, RsiReversion and the declarative RuleStrategy are checked against independent
models of their rules; failing hooks against the runner's error handling and error limit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from broker.csv_source import Row, read_candles
from broker.resample import Resampler
from runtime.config import RULE_STRATEGY, StrategyConfig, load_config
from runtime.messages import (
    Candle,
    Direction,
    Error,
    Event,
    EventBody,
    Log,
    OrderFilled,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    PositionSide,
    Signal,
)
from runtime.messages import OpenPosition as JournalPosition
from workers.container import ContainerClosed
from workers.outbox import Outbox
from workers.runner import StrategyRunner
from workers.strategies.rules import RuleStrategy
from workers.strategy import Strategy, StrategyContext

ROOT = Path(__file__).resolve().parents[1]
ETH = ROOT / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"
FEE_BPS = 10.0
SLIPPAGE_BPS = 2.0
FIVE_MIN = 5 * 60_000

Floats = npt.NDArray[np.float64]
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return [
        Candle("ETH-BTC", "5m", r.open_time, r.open, r.high, r.low, r.close, r.volume, i + 1)
        for i, r in enumerate(read_candles(ETH))
    ]


def _config(class_path: str | None = None, **fields: Any) -> StrategyConfig:
    """A strategy section as TOML would give it. Each gets a fresh id: a runner adds a handler
    to the logger ``strategy.<id>``, and one test's runner must not hear another's records."""
    raw: dict[str, Any] = {
        "id": f"unit_{next(_ids)}",
        "symbols": ["ETH-BTC"],
        "timeframe": "5m",
        "execution": {"fee_bps": FEE_BPS, "slippage_bps": SLIPPAGE_BPS, "quantity": 1.0},
        **fields,
    }
    if class_path is not None:
        raw["class"] = class_path
    return msgspec.convert(raw, StrategyConfig)


class Run:
    """A runner, everything its outbox sent, and which events each candle produced."""

    def __init__(self, config: StrategyConfig, last_seq: int = 0) -> None:
        self.sent: list[Event] = []
        self.outbox = Outbox(config.id, last_seq, _discard, tap=self.sent.append)
        self.runner = StrategyRunner(config, self.outbox)
        self.per_candle: list[list[EventBody]] = []
        self.fed: list[Candle] = []

    def feed(self, candles: list[Candle]) -> None:
        for candle in candles:
            before = len(self.sent)
            self.runner.on_candle(candle)
            self.per_candle.append([e.body for e in self.sent[before:]])
            self.fed.append(candle)

    def at(self, kind: type[EventBody]) -> list[tuple[int, Any]]:
        """``(candle index, body)`` of every body of one kind, in order."""
        return [
            (i, body)
            for i, bodies in enumerate(self.per_candle)
            for body in bodies
            if isinstance(body, kind)
        ]


# --------------------------------------------------------------------------- references


def _closes(candles: list[Candle]) -> Floats:
    return np.array([c.close for c in candles], dtype=np.float64)


def _sma(x: Floats, period: int) -> list[float | None]:
    means = np.lib.stride_tricks.sliding_window_view(x, period).mean(axis=1)
    return [None] * (period - 1) + [float(m) for m in means]


def _rsi(x: Floats, period: int) -> list[float | None]:
    out: list[float | None] = [None] * len(x)
    moves = np.diff(x)
    gains, losses = np.maximum(moves, 0.0), np.maximum(-moves, 0.0)
    g, lo = float(gains[:period].mean()), float(losses[:period].mean())
    for k in range(period, len(moves) + 1):
        if k > period:
            g = (g * (period - 1) + float(gains[k - 1])) / period
            lo = (lo * (period - 1) + float(losses[k - 1])) / period
        out[k] = 100.0 - 100.0 / (1.0 + g / lo) if lo else (100.0 if g else 50.0)
    return out


def _cross_side(candles: list[Candle], fast: int, slow: int) -> list[bool | None]:
    """Whether SMA(fast) is above SMA(slow) at each candle (None while warming up)."""
    f, s = _sma(_closes(candles), fast), _sma(_closes(candles), slow)
    return [None if a is None or b is None else a > b for a, b in zip(f, s, strict=True)]


def _slipped(price: float, side: str) -> float:
    rate = SLIPPAGE_BPS / 10_000.0
    return price * (1.0 + rate) if side == "buy" else price * (1.0 - rate)


# --------------------------------------------------------------------------- checks


def _check_envelopes(run: Run, first_seq: int) -> None:
    assert run.sent, "the run emitted nothing"
    assert [e.seq for e in run.sent] == list(range(first_seq, first_seq + len(run.sent)))
    assert {e.strategy_id for e in run.sent} == {run.runner.config.id}


def _check_fills_at_next_open(run: Run) -> int:
    """Every order fills exactly once, at the open of the next candle of its timeframe."""
    candles = run.fed
    decision = [i for i, c in enumerate(candles) if c.timeframe == run.runner.config.timeframe]
    following = dict(itertools.pairwise(decision))
    fills = {body.order_id: (i, body) for i, body in run.at(OrderFilled)}
    assert len(fills) == len(run.at(OrderFilled)), "an order filled twice"
    submitted = run.at(OrderSubmitted)
    for i, order in submitted:
        if i not in following:
            assert order.order_id not in fills  # nothing after the last candle
            continue
        j, fill = fills.pop(order.order_id)
        nxt = candles[following[i]]
        assert j == following[i]
        assert fill.price == pytest.approx(_slipped(nxt.open, order.side), rel=1e-12)
        assert fill.fill_time == nxt.open_time
        assert (fill.side, fill.quantity, fill.symbol) == (order.side, order.quantity, "ETH-BTC")
        assert fill.fee == pytest.approx(FEE_BPS / 1e4 * fill.quantity * fill.price, rel=1e-12)
    assert fills == {}, "a fill without an order"
    # Order ids are ``<strategy id>-<n>`` with n counting up by one.
    assert all(o.order_id.startswith(f"{run.runner.config.id}-") for _, o in submitted)
    numbers = [_number(o.order_id) for _, o in submitted]
    if numbers:
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    return len(submitted)


def _number(order_id: str) -> int:
    return int(order_id.rsplit("-", 1)[1])


def _check_pnl(run: Run) -> None:
    """Realized PnL equals the cash flow of all fills plus what the open position cost."""
    positions = run.runner.container.positions
    closed = [body for _, body in run.at(PositionClosed)]
    opened = [body for _, body in run.at(PositionOpened)]
    assert positions.realized_pnl == pytest.approx(
        sum(b.realized_pnl for b in closed), rel=1e-9, abs=1e-15
    )
    cash = sum(
        (-1 if f.side == "buy" else 1) * f.quantity * f.price - f.fee
        for _, f in run.at(OrderFilled)
    )
    assert len(opened) - len(closed) in (0, 1)
    held = sum(
        (p.quantity if p.side == "long" else -p.quantity) * p.entry_price + p.entry_fee
        for p in opened[len(closed) :]
    )
    assert positions.realized_pnl == pytest.approx(cash + held, rel=1e-9, abs=1e-15)
    assert positions.realized_pnl != 0.0


# --------------------------------------------------------------------------- SmaCross


@pytest.mark.parametrize(("fast", "slow"), [(5, 20), (20, 60)])
def test_sma_cross_with_shorts_reverses_on_every_cross(
    candles: list[Candle], fast: int, slow: int
) -> None:
    run = Run(
        _config(
            "workers.strategies.sma_cross:SmaCross",
            params={"fast": fast, "slow": slow, "allow_short": True},
        )
    )
    run.feed(candles)

    above = _cross_side(candles, fast, slow)
    crosses = [
        i
        for i in range(1, len(candles))
        if above[i - 1] is not None and above[i] is not None and above[i] != above[i - 1]
    ]
    assert len(crosses) > 10

    signals = run.at(Signal)
    assert [i for i, _ in signals] == crosses
    assert [sig.direction for _, sig in signals] == [
        "long" if above[i] else "short" for i in crosses
    ]
    # From flat, one order; on every later cross the reversal is a close then an open, each
    # of the configured quantity, both on the same side of the market.
    orders = run.at(OrderSubmitted)
    expected = [(crosses[0], "buy" if above[crosses[0]] else "sell")]
    for i in crosses[1:]:
        side = "buy" if above[i] else "sell"
        expected += [(i, side), (i, side)]
    assert [(i, o.side) for i, o in orders] == expected
    assert {o.quantity for _, o in orders} == {1.0}
    assert _check_fills_at_next_open(run) == len(expected)

    signal_at = dict(signals)
    for i in crosses[1:]:
        if i + 1 == len(candles):
            continue
        kinds = [type(b) for b in run.per_candle[i + 1]]
        assert kinds[:4] == [OrderFilled, PositionClosed, OrderFilled, PositionOpened]
        closed, opened = run.per_candle[i + 1][1], run.per_candle[i + 1][3]
        assert isinstance(closed, PositionClosed) and isinstance(opened, PositionOpened)
        assert closed.side != opened.side
        assert opened.side == ("long" if above[i] else "short")
        assert closed.closed_at == opened.opened_at == candles[i + 1].open_time
        assert closed.reason == signal_at[i].reason
    sides = [p.side for _, p in run.at(PositionOpened)]
    assert all(a != b for a, b in itertools.pairwise(sides))
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)
    assert run.runner.candles == len(candles)
    assert run.runner.errors == 0


def test_sma_cross_long_only_goes_flat_instead_of_short(candles: list[Candle]) -> None:
    run = Run(_config("workers.strategies.sma_cross:SmaCross", params={"fast": 10, "slow": 30}))
    run.feed(candles)

    above = _cross_side(candles, 10, 30)
    expected: list[tuple[int, str]] = []
    held = False
    for i in range(1, len(candles)):
        if above[i - 1] is None or above[i] is None or above[i] == above[i - 1]:
            continue
        if above[i] != held:
            expected.append((i, "buy" if above[i] else "sell"))
            held = bool(above[i])
    assert len(expected) > 10

    assert [(i, o.side) for i, o in run.at(OrderSubmitted)] == expected
    assert {sig.direction for _, sig in run.at(Signal)} == {"long", "flat"}
    assert all(p.side == "long" for _, p in run.at(PositionOpened))
    assert _check_fills_at_next_open(run) == len(expected)
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)
    assert len(run.at(PositionClosed)) == sum(1 for _, side in expected if side == "sell")


def test_seq_and_order_ids_continue_after_a_restart(candles: list[Candle]) -> None:
    config = _config("workers.strategies.sma_cross:SmaCross", params={"fast": 5, "slow": 20})
    run = Run(config, last_seq=100)
    run.runner.restore([JournalPosition("ETH-BTC", "long", 1.0, 0.09, 0.00009, 1)], 0.5)
    assert run.runner.container.position("ETH-BTC") is not None
    run.feed(candles[:600])
    _check_envelopes(run, first_seq=101)
    orders = run.at(OrderSubmitted)
    assert orders[0][1].order_id == f"{config.id}-101"
    # The restored long is held: the first cross down sells it (no buy comes first).
    assert orders[0][1].side == "sell"
    first_close = run.at(PositionClosed)[0][1]
    assert (first_close.entry_price, first_close.opened_at) == (0.09, 1)
    assert run.runner.container.positions.realized_pnl == pytest.approx(
        0.5 + sum(b.realized_pnl for _, b in run.at(PositionClosed)), rel=1e-9
    )


# --------------------------------------------------------------------------- RsiReversion


def test_rsi_reversion_enters_oversold_and_exits_on_recovery(candles: list[Candle]) -> None:
    period, oversold, exit_above, quantity = 14, 30.0, 55.0, 5.0
    config = _config(
        "workers.strategies.rsi_reversion:RsiReversion",
        params={"period": period, "oversold": oversold, "exit_above": exit_above},
        execution={"fee_bps": FEE_BPS, "slippage_bps": SLIPPAGE_BPS, "quantity": quantity},
    )
    run = Run(config)
    run.feed(candles)

    # The model: an order changes what is held when it fills, on the next candle.
    held, pending = False, None
    signals: list[tuple[int, str]] = []
    orders: list[tuple[int, str]] = []
    for i, value in enumerate(_rsi(_closes(candles), period)):
        if pending is not None:
            held, pending = pending, None
        if value is None:
            continue
        if not held and value < oversold:
            signals.append((i, "long"))
            orders.append((i, "buy"))
            pending = True
        elif held and value > exit_above:
            signals.append((i, "flat"))
            orders.append((i, "sell"))
            pending = False
    assert len(orders) > 10

    assert [(i, s.direction) for i, s in run.at(Signal)] == signals
    assert [(i, o.side) for i, o in run.at(OrderSubmitted)] == orders
    assert {o.quantity for _, o in run.at(OrderSubmitted)} == {quantity}
    assert _check_fills_at_next_open(run) == len(orders)
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)
    assert all(p.side == "long" for _, p in run.at(PositionOpened))
    for _, signal in run.at(Signal):
        assert (signal.symbol, signal.timeframe) == ("ETH-BTC", "5m")
        assert signal.reason.startswith("rsi ")


# --------------------------------------------------------------------------- RuleStrategy


@dataclass
class _Held:
    side: PositionSide
    entry: float
    best: float
    candles: int = 0


def _exit_rule(held: _Held, c: Candle, direction: Direction, exit: dict[str, float]) -> str | None:
    """The exit rules, in their order, written out from their documentation."""
    long = held.side == "long"
    sl, tp, trail, time_stop = (exit.get(k) for k in ("sl", "tp", "trail", "time"))
    if sl is not None:
        if long and c.low <= held.entry * (1 - sl / 100):
            return "stop_loss"
        if not long and c.high >= held.entry * (1 + sl / 100):
            return "stop_loss"
    if tp is not None:
        if long and c.high >= held.entry * (1 + tp / 100):
            return "take_profit"
        if not long and c.low <= held.entry * (1 - tp / 100):
            return "take_profit"
    if trail is not None:
        if long and c.close <= held.best * (1 - trail / 100):
            return "trailing_stop"
        if not long and c.close >= held.best * (1 + trail / 100):
            return "trailing_stop"
    if time_stop is not None and held.candles >= time_stop:
        return "time_stop"
    if direction not in ("flat", held.side):
        return "opposite_signal"
    return None


def _rule_model(
    candles: list[Candle],
    directions: list[Direction],
    exit: dict[str, float],
    cooldown: int = 0,
) -> list[tuple[int, str, str]]:
    """``(candle index, order side, reason)`` of the orders a RuleStrategy should send."""
    orders: list[tuple[int, str, str]] = []
    held: _Held | None = None
    opening: PositionSide | None = None
    closing: str | None = None
    last_loss_at: int | None = None
    fee = FEE_BPS / 10_000.0
    for i, c in enumerate(candles):
        if closing is not None:
            assert held is not None
            side = "sell" if held.side == "long" else "buy"
            price = _slipped(c.open, side)
            d = 1.0 if held.side == "long" else -1.0
            pnl = (price - held.entry) * d - fee * held.entry - fee * price
            last_loss_at = c.open_time if pnl < 0 else None
            held, closing = None, None
        if opening is not None:
            price = _slipped(c.open, "buy" if opening == "long" else "sell")
            held, opening = _Held(opening, price, price), None
        if held is not None:
            held.candles += 1
            held.best = max(held.best, c.high) if held.side == "long" else min(held.best, c.low)
        direction = directions[i]
        if held is not None:
            rule = _exit_rule(held, c, direction, exit)
            if rule is not None:
                orders.append((i, "sell" if held.side == "long" else "buy", rule))
                closing = rule
        elif direction != "flat":
            if last_loss_at is not None and (c.open_time - last_loss_at) // FIVE_MIN < cooldown:
                continue
            orders.append((i, "buy" if direction == "long" else "sell", direction))
            opening = direction
    return orders


def _cross_directions(candles: list[Candle], fast: int, slow: int) -> list[Direction]:
    return [
        "flat" if a is None else "long" if a else "short" for a in _cross_side(candles, fast, slow)
    ]


def _rule_config(exit: dict[str, Any], **more: Any) -> StrategyConfig:
    fields: dict[str, Any] = {
        "indicators": {"fast": {"type": "sma", "period": 8}, "slow": {"type": "sma", "period": 21}},
        "analyzers": [{"type": "cross", "fast": "fast", "slow": "slow"}],
        "entry": {"long_threshold": 0.5, "short_threshold": -0.5},
        "exit": exit,
    }
    return _config(**{**fields, **more})


def test_rule_strategy_is_the_default_class() -> None:
    config = _rule_config({})
    assert config.class_path == RULE_STRATEGY
    run = Run(config)
    assert isinstance(run.runner.strategy, RuleStrategy)


def test_rule_strategy_enters_on_the_score_and_leaves_on_the_opposite_signal(
    candles: list[Candle],
) -> None:
    run = Run(_rule_config({}))
    some = candles[:2500]
    run.feed(some)

    directions = _cross_directions(some, 8, 21)
    changes = [
        (i, d) for i, d in enumerate(directions) if d != (directions[i - 1] if i else "flat")
    ]
    assert [(i, s.direction) for i, s in run.at(Signal)] == changes
    assert all(s.strength == 1.0 for _, s in run.at(Signal))

    expected = _rule_model(some, directions, {})
    assert len(expected) > 20
    got = [(i, o.side, o.reason.split(" ")[0]) for i, o in run.at(OrderSubmitted)]
    assert got == expected
    # The close comes on the signal, the entry of the new side one candle later, once the
    # close has filled (a position was still active when the signal came).
    assert {r for _, _, r in expected} == {"long", "short", "opposite_signal"}
    assert _check_fills_at_next_open(run) == len(expected)
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)
    assert {p.reason for _, p in run.at(PositionClosed)} == {"opposite_signal"}


def test_rule_strategy_exit_rules_and_cooldown_match_a_model(candles: list[Candle]) -> None:
    exit = {"sl": 0.6, "tp": 1.2, "trail": 0.5, "time": 30}
    config = _rule_config(
        {
            "stop_loss_pct": exit["sl"],
            "take_profit_pct": exit["tp"],
            "trailing_stop_pct": exit["trail"],
            "time_stop_candles": exit["time"],
        },
        filters={"cooldown_after_loss_candles": 4},
    )
    run = Run(config)
    run.feed(candles)

    expected = _rule_model(candles, _cross_directions(candles, 8, 21), exit, cooldown=4)
    reasons = {r for _, _, r in expected}
    assert {"stop_loss", "take_profit", "trailing_stop", "time_stop"} <= reasons
    got = [(i, o.side, o.reason.split(" ")[0]) for i, o in run.at(OrderSubmitted)]
    assert got == expected
    fired = run.runner.container.exit.fired
    assert sum(fired.values()) == sum(1 for _, _, r in expected if r not in ("long", "short"))
    assert run.runner.container.filters.vetoes["cooldown"] > 0
    _check_fills_at_next_open(run)
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)
    for _, closed in run.at(PositionClosed):
        assert closed.mae <= 0.0 <= closed.mfe
        assert closed.fees > 0


def _with_hours(candles: list[Candle]) -> list[Candle]:
    """The 5m stream with the 1h stream the broker would resample from it, interleaved."""
    out: list[Candle] = []
    resampler = Resampler("5m", "1h")
    seq = itertools.count(1)
    for c in candles:
        out.append(c)
        row = Row(c.open_time, c.open, c.high, c.low, c.close, c.volume)
        for hour in resampler.update(row):
            out.append(Candle(c.symbol, "1h", *hour, next(seq)))
    return out


def test_rule_strategy_enters_only_where_the_hourly_gate_agrees(candles: list[Candle]) -> None:
    config = _rule_config(
        {},
        indicators={
            "fast": {"type": "sma", "period": 8},
            "slow": {"type": "sma", "period": 21},
            "trend": {"type": "sma", "period": 6, "timeframe": "1h"},
        },
        gate={"timeframe": "1h", "indicator": "trend"},
    )
    assert config.timeframes == ["5m", "1h"]
    stream = _with_hours(candles[:3000])
    run = Run(config)
    run.feed(stream)
    assert run.runner.candles == len(stream)

    hours = [c for c in stream if c.timeframe == "1h"]
    trend = _sma(_closes(hours), 6)
    entries = [(i, o) for i, o in run.at(OrderSubmitted) if o.reason != "opposite_signal"]
    assert len(entries) > 5
    sides = set()
    for i, order in entries:
        assert stream[i].timeframe == "5m"
        # The gate judges by the last hourly candle the strategy was fed before this one.
        k = sum(1 for c in stream[:i] if c.timeframe == "1h") - 1
        level = trend[k]
        assert level is not None
        assert (hours[k].close > level) if order.side == "buy" else (hours[k].close < level)
        sides.add(order.side)
    assert sides == {"buy", "sell"}
    gate = run.runner.container.gate
    assert gate is not None and gate.blocked > 0
    # Fills happen on 5m candles only, at the next 5m open.
    _check_fills_at_next_open(run)
    _check_envelopes(run, first_seq=1)


def test_the_demo_declarative_strategy_trades(candles: list[Candle]) -> None:
    demo = load_config(ROOT / "examples" / "demo.toml")
    (trend,) = [s for s in demo.strategies if s.id == "trend_eth"]
    config = msgspec.structs.replace(trend, id=f"unit_{next(_ids)}")
    stream = _with_hours(candles)
    run = Run(config)
    run.feed(stream)
    assert run.runner.errors == 0
    closed = [p for _, p in run.at(PositionClosed)]
    assert len(closed) > 3
    assert {p.reason for p in closed} <= {
        "stop_loss",
        "take_profit",
        "trailing_stop",
        "time_stop",
        "opposite_signal",
    }
    _check_fills_at_next_open(run)
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)


# --------------------------------------------------------------------------- failures


class FlakyParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fail_on: list[int] = []  # candle seqs on which on_candle raises (after deciding)
    fail_fills: list[int] = []  # order numbers whose on_fill raises
    warn_on: int = 0  # candle seq on which to log a warning, an info line and an error


class Flaky(Strategy):
    """Flips between long and flat on every candle; raises where told to."""

    Params = FlakyParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, FlakyParams)
        self.p = params
        self.seen: list[int] = []

    def on_candle(self, candle: Candle) -> None:
        self.seen.append(candle.seq)
        if candle.seq == self.p.warn_on:
            self.ctx.log.info("quiet")
            self.ctx.log.warning("odd candle %d", candle.seq)
            self.ctx.log.error("bad candle")
        held = self.ctx.position(candle.symbol) is not None
        self.ctx.target(candle.symbol, "flat" if held else "long", "flip")
        if candle.seq in self.p.fail_on:
            raise ZeroDivisionError(f"boom at {candle.seq}")

    def on_fill(self, fill: OrderFilled) -> None:
        if _number(fill.order_id) in self.p.fail_fills:
            raise KeyError(f"fill {fill.order_id}")


FLAKY = f"{__name__}:Flaky"


def _flaky(limit: int = 5, **params: Any) -> Run:
    return Run(_config(FLAKY, params=params, max_consecutive_errors=limit))


def test_a_failing_candle_is_an_error_event_and_its_decisions_are_dropped(
    candles: list[Candle],
) -> None:
    fail_on = [7, 20, 21, 33]
    run = _flaky(fail_on=fail_on)
    run.feed(candles[:50])

    errors = run.at(Error)
    assert [candles[i].seq for i, _ in errors] == fail_on
    for i, error in errors:
        assert error.where == "on_candle"
        assert error.message == f"ZeroDivisionError: boom at {candles[i].seq}"
        assert error.traceback.startswith("Traceback (most recent call last)")
        assert "in on_candle" in error.traceback
        assert error.traceback.rstrip().endswith(error.message)
    # Every other candle flips the position (one order each); a failing one sends nothing.
    ordered = [candles[i].seq for i, _ in run.at(OrderSubmitted)]
    assert ordered == [c.seq for c in candles[:50] if c.seq not in fail_on]
    assert run.runner.errors == len(fail_on)
    assert run.runner.state == "running"
    assert run.runner.candles == 50
    _check_fills_at_next_open(run)
    _check_envelopes(run, first_seq=1)


def test_consecutive_failures_stop_the_strategy(candles: list[Candle]) -> None:
    run = _flaky(limit=3, fail_on=[10, 11, 12, 20])
    run.feed(candles[:30])

    assert run.runner.state == "errored"
    assert run.runner.candles == 12  # later candles were not even counted
    strategy = run.runner.strategy
    assert isinstance(strategy, Flaky)
    assert strategy.seen == list(range(1, 13))
    bodies = [e.body for e in run.sent]
    last = bodies[-1]
    assert isinstance(last, Error)
    assert last.where == "strategy"
    assert "3 consecutive errors" in last.message
    assert [(b.where, b.message) for b in bodies[-4:-1] if isinstance(b, Error)] == [
        ("on_candle", f"ZeroDivisionError: boom at {seq}") for seq in (10, 11, 12)
    ]
    assert [i for i, _ in run.at(Error)] == [9, 10, 11, 11]
    assert run.runner.container.closed
    assert run.per_candle[12:] == [[]] * 18
    with pytest.raises(ContainerClosed):
        run.runner.container.open_position("ETH-BTC", "long", "after the end")
    # The open position stays as it was (nothing closes it behind the strategy's back).
    assert run.runner.container.positions.open_count == 1
    run.runner.stop()  # stopping an errored strategy does not call it again
    assert run.sent[-1].body == last
    _check_envelopes(run, first_seq=1)


def test_one_success_between_failures_resets_the_count(candles: list[Candle]) -> None:
    run = _flaky(limit=3, fail_on=[10, 11, 13, 14, 16, 17])
    run.feed(candles[:30])
    assert run.runner.state == "running"
    assert run.runner.errors == 6
    assert run.runner.consecutive_errors == 0
    assert not any(e.where == "strategy" for _, e in run.at(Error))
    assert run.runner.candles == 30
    assert any(candles[i].seq > 17 for i, _ in run.at(OrderSubmitted))


def test_a_failing_fill_hook_counts_but_the_fill_stands(candles: list[Candle]) -> None:
    run = _flaky(limit=2, fail_fills=[1, 3])
    run.feed(candles[:10])
    errors = run.at(Error)
    assert [(e.where, e.message) for _, e in errors] == [
        ("on_fill", f"KeyError: 'fill {run.runner.config.id}-1'"),
        ("on_fill", f"KeyError: 'fill {run.runner.config.id}-3'"),
    ]
    assert run.runner.state == "running"  # the candles in between succeeded
    # The fills whose hooks raised still opened their positions.
    opened = run.at(PositionOpened)
    assert [i for i, _ in opened][:2] == [errors[0][0], errors[1][0]]


def test_giving_up_in_on_fill_ends_the_candle_too(candles: list[Candle]) -> None:
    run = _flaky(limit=1, fail_fills=[1])
    run.feed(candles[:5])
    assert run.runner.state == "errored"
    errors = [e for _, e in run.at(Error)]
    assert [e.where for e in errors] == ["on_fill", "strategy"]
    strategy = run.runner.strategy
    assert isinstance(strategy, Flaky)
    assert strategy.seen == [1]  # the fill came on candle 2, which the strategy never saw


def test_warnings_and_errors_logged_by_the_strategy_become_log_events(
    candles: list[Candle],
) -> None:
    run = _flaky(warn_on=3)
    run.feed(candles[:5])
    logger = f"strategy.{run.runner.config.id}"
    assert run.at(Log) == [
        (2, Log("warning", "odd candle 3", logger)),
        (2, Log("error", "bad candle", logger)),
    ]
    # Once its services are closed the strategy's records stay in its own file only.
    run.runner.stop()
    before = len(run.sent)
    logging_logger = run.runner.log
    logging_logger.warning("after the end")
    assert len(run.sent) == before


def test_a_failing_start_is_an_error_event(candles: list[Candle]) -> None:
    class_path = f"{__name__}:BadStart"
    run = Run(_config(class_path, params={}))
    run.runner.start()
    (error,) = [e.body for e in run.sent]
    assert isinstance(error, Error)
    assert (error.where, error.message) == ("on_start", "RuntimeError: cannot start")
    run.feed(candles[:3])
    assert run.runner.consecutive_errors == 0
    assert run.runner.errors == 1


class BadStart(Strategy):
    def on_start(self) -> None:
        raise RuntimeError("cannot start")


def test_every_event_of_a_runner_is_its_own(candles: list[Candle]) -> None:
    """Two runners fed the same candles stamp their own id and seqs, never each other's."""
    a = _flaky(fail_on=[4])
    b = Run(_config("workers.strategies.sma_cross:SmaCross", params={"fast": 3, "slow": 8}), 40)
    for c in candles[:300]:
        a.feed([c])
        b.feed([c])
    _check_envelopes(a, first_seq=1)
    _check_envelopes(b, first_seq=41)
    assert a.runner.config.id != b.runner.config.id
    assert _check_fills_at_next_open(a) > 100
    assert _check_fills_at_next_open(b) > 5
    # b's orders count from its restored seq, a's from 1: neither took a number from the other.
    assert _number(b.at(OrderSubmitted)[0][1].order_id) == 41
    assert _number(a.at(OrderSubmitted)[0][1].order_id) == 1


def _discard(frame: bytes) -> None:
    """The wire of a runner tested without a worker: frames go nowhere."""
