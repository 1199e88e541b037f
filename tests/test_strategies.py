"""The built-in strategies driven through StrategyRunner on real ETH-BTC candles."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from broker.csv_source import read_candles
from runtime.config import ExecutionConfig, StrategyConfig
from runtime.messages import (
    Candle,
    Error,
    Event,
    EventBody,
    Log,
    OpenPosition,
    OrderFilled,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    Signal,
)
from workers.outbox import Outbox
from workers.runner import StrategyRunner
from workers.strategies.sma_cross import SmaCross

ETH = Path(__file__).resolve().parents[1] / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"
FEE_BPS = 10.0
SLIPPAGE_BPS = 2.0

Floats = npt.NDArray[np.float64]
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return [
        Candle("ETH-BTC", "5m", r.open_time, r.open, r.high, r.low, r.close, r.volume, i + 1)
        for i, r in enumerate(read_candles(ETH))
    ]


def _config(class_path: str, params: dict[str, Any], quantity: float = 1.0) -> StrategyConfig:
    # Each runner adds a handler to the logger ``strategy.<id>``: a fresh id per runner keeps
    # one test's runner from hearing another's log records.
    return StrategyConfig(
        id=f"unit_{next(_ids)}",
        class_path=class_path,
        symbols=["ETH-BTC"],
        timeframe="5m",
        execution=ExecutionConfig(fee_bps=FEE_BPS, slippage_bps=SLIPPAGE_BPS, quantity=quantity),
        params=params,
    )


class Run:
    """A runner, everything it sent, and which events each candle produced."""

    def __init__(self, config: StrategyConfig, last_seq: int = 0) -> None:
        self.sent: list[Event] = []
        self.outbox = Outbox(config.id, last_seq, self.sent.append)
        self.runner = StrategyRunner(config, self.outbox)
        self.per_candle: list[list[EventBody]] = []

    def feed(self, candles: list[Candle]) -> None:
        for candle in candles:
            before = len(self.sent)
            self.runner.on_candle(candle)
            self.per_candle.append([e.body for e in self.sent[before:]])

    def at(self, kind: type[EventBody]) -> list[tuple[int, Any]]:
        """``(candle index, body)`` of every body of one kind, in order."""
        return [
            (i, body)
            for i, bodies in enumerate(self.per_candle)
            for body in bodies
            if isinstance(body, kind)
        ]


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


def _slipped(price: float, side: str) -> float:
    return price * (1 + SLIPPAGE_BPS / 1e4) if side == "buy" else price * (1 - SLIPPAGE_BPS / 1e4)


def _check_envelopes(run: Run, first_seq: int) -> None:
    assert run.sent, "the run emitted nothing"
    assert [e.seq for e in run.sent] == list(range(first_seq, first_seq + len(run.sent)))
    assert {e.strategy_id for e in run.sent} == {run.runner.strategy_id}


def _check_fills_at_next_open(run: Run, candles: list[Candle]) -> int:
    """Every order fills exactly once, at the open of the candle after the one it came on."""
    fills = {body.order_id: (i, body) for i, body in run.at(OrderFilled)}
    submitted = run.at(OrderSubmitted)
    assert len(fills) == len(run.at(OrderFilled)), "an order filled twice"
    for i, order in submitted:
        if i + 1 == len(candles):
            assert order.order_id not in fills  # nothing after the last candle
            continue
        j, fill = fills.pop(order.order_id)
        nxt = candles[i + 1]
        assert j == i + 1
        assert fill.price == pytest.approx(_slipped(nxt.open, order.side), rel=1e-12)
        assert fill.price != pytest.approx(candles[i].open, rel=1e-12)
        assert fill.fill_time == nxt.open_time
        assert (fill.side, fill.quantity, fill.symbol) == (order.side, order.quantity, "ETH-BTC")
        assert fill.fee == pytest.approx(FEE_BPS / 1e4 * fill.quantity * fill.price, rel=1e-12)
    assert fills == {}, "a fill without an order"
    return len(submitted)


def _check_pnl(run: Run) -> None:
    """Realized PnL equals the cash flow of all fills plus what the open position holds."""
    execution = run.runner.execution
    closed = [body.realized_pnl for _, body in run.at(PositionClosed)]
    assert execution.realized_pnl == pytest.approx(sum(closed), rel=1e-9, abs=1e-15)
    cash = sum(
        (-1 if f.side == "buy" else 1) * f.quantity * f.price - f.fee
        for _, f in run.at(OrderFilled)
    )
    held = sum(
        (p.quantity if p.side == "long" else -p.quantity) * p.entry_price + p.entry_fee
        for p in execution.positions.values()
    )
    assert execution.realized_pnl == pytest.approx(cash + held, rel=1e-9, abs=1e-15)


# --------------------------------------------------------------------------- SmaCross


@pytest.mark.parametrize(("fast", "slow"), [(5, 20), (20, 60)])
def test_sma_cross_with_shorts_trades_on_every_cross(
    candles: list[Candle], fast: int, slow: int
) -> None:
    run = Run(
        _config(
            "workers.strategies.sma_cross:SmaCross",
            {"fast": fast, "slow": slow, "allow_short": True},
        )
    )
    run.feed(candles)

    f, s = _sma(_closes(candles), fast), _sma(_closes(candles), slow)
    above = [None if a is None or b is None else a > b for a, b in zip(f, s, strict=True)]
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
    orders = run.at(OrderSubmitted)
    assert [i for i, _ in orders] == crosses
    assert [o.side for _, o in orders] == ["buy" if above[i] else "sell" for i in crosses]
    # From flat the first order is one unit; every later one reverses (two units).
    assert [o.quantity for _, o in orders] == [1.0] + [2.0] * (len(crosses) - 1)
    assert _check_fills_at_next_open(run, candles) == len(crosses)
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)

    # Every reversal closes the old side, then opens the new one, on the fill's candle.
    for i in crosses[1:]:
        kinds = [type(b) for b in run.per_candle[i + 1]]
        assert kinds[:3] == [OrderFilled, PositionClosed, PositionOpened]
    assert run.runner.candles == len(candles)
    assert run.runner.errors == 0


def test_sma_cross_long_only_goes_flat_instead_of_short(candles: list[Candle]) -> None:
    run = Run(_config("workers.strategies.sma_cross:SmaCross", {"fast": 10, "slow": 30}))
    run.feed(candles)

    f, s = _sma(_closes(candles), 10), _sma(_closes(candles), 30)
    held, expected = 0, []
    prev: bool | None = None
    for i, (a, b) in enumerate(zip(f, s, strict=True)):
        if a is None or b is None:
            continue
        now = a > b
        if prev is not None and now != prev:
            wanted = 1 if now else 0
            if wanted != held:
                expected.append((i, "buy" if wanted > held else "sell"))
                held = wanted
        prev = now
    assert len(expected) > 10

    assert [(i, o.side) for i, o in run.at(OrderSubmitted)] == expected
    assert {o.quantity for _, o in run.at(OrderSubmitted)} == {1.0}
    assert {sig.direction for _, sig in run.at(Signal)} == {"long", "flat"}
    assert all(p.side == "long" for _, p in run.at(PositionOpened))
    _check_fills_at_next_open(run, candles)
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)
    assert len(run.at(PositionClosed)) == sum(1 for _, side in expected if side == "sell")


def test_seq_and_order_ids_continue_after_a_restart(candles: list[Candle]) -> None:
    config = _config("workers.strategies.sma_cross:SmaCross", {"fast": 5, "slow": 20})
    run = Run(config, last_seq=100)
    run.runner.restore([OpenPosition("ETH-BTC", "long", 1.0, 0.09, 0.00009, 1)], 0.5)
    assert run.runner.position("ETH-BTC") is not None
    run.feed(candles[:600])
    _check_envelopes(run, first_seq=101)
    orders = run.at(OrderSubmitted)
    assert orders
    assert orders[0][1].order_id == f"{config.id}-101"
    # The restored long is held: the first cross down sells it (no buy comes first).
    assert orders[0][1].side == "sell"
    first_close = run.at(PositionClosed)[0][1]
    assert first_close.entry_price == 0.09
    assert first_close.opened_at == 1
    assert run.runner.execution.realized_pnl == pytest.approx(
        0.5 + sum(b.realized_pnl for _, b in run.at(PositionClosed)), rel=1e-9
    )


# --------------------------------------------------------------------------- RsiReversion


def test_rsi_reversion_enters_oversold_and_exits_on_recovery(candles: list[Candle]) -> None:
    period, oversold, exit_above, quantity = 14, 30.0, 55.0, 5.0
    run = Run(
        _config(
            "workers.strategies.rsi_reversion:RsiReversion",
            {"period": period, "oversold": oversold, "exit_above": exit_above},
            quantity=quantity,
        )
    )
    run.feed(candles)

    # A model of the rules: the position changes when the order fills, on the next candle.
    rsi = _rsi(_closes(candles), period)
    position = pending = 0.0
    signals: list[tuple[int, str]] = []
    orders: list[tuple[int, str, float]] = []
    for i, value in enumerate(rsi):
        position, pending = position + pending, 0.0
        if value is None:
            continue
        if position == 0 and value < oversold:
            signals.append((i, "long"))
            delta = quantity - position - pending
        elif position != 0 and value > exit_above:
            signals.append((i, "flat"))
            delta = -position - pending
        else:
            continue
        if delta:
            orders.append((i, "buy" if delta > 0 else "sell", abs(delta)))
            pending += delta
    assert len(orders) > 10

    assert [(i, s.direction) for i, s in run.at(Signal)] == signals
    assert [(i, o.side, o.quantity) for i, o in run.at(OrderSubmitted)] == orders
    assert _check_fills_at_next_open(run, candles) == len(orders)
    _check_envelopes(run, first_seq=1)
    _check_pnl(run)
    assert all(p.side == "long" for _, p in run.at(PositionOpened))
    for _, signal in run.at(Signal):
        assert signal.symbol == "ETH-BTC"
        assert signal.timeframe == "5m"
        assert signal.reason.startswith("rsi ")


# --------------------------------------------------------------------------- failures


class ExplodingSmaCross(SmaCross):
    """SmaCross that raises on every 500th candle, and on its first fill."""

    def on_candle(self, candle: Candle) -> None:
        if candle.seq % 500 == 0:
            raise ZeroDivisionError(f"boom at {candle.seq}")
        super().on_candle(candle)

    def on_fill(self, fill: OrderFilled) -> None:
        if fill.order_id.endswith("-1"):
            raise KeyError("first fill")


class LoudStrategy(SmaCross):
    """Logs a warning on its third candle, and an info line that must stay in the file."""

    def on_start(self) -> None:
        raise RuntimeError("cannot start")

    def on_candle(self, candle: Candle) -> None:
        if candle.seq == 3:
            self.ctx.log.info("quiet")
            self.ctx.log.warning("odd candle %d", candle.seq)
        super().on_candle(candle)


def test_exceptions_become_error_events_and_processing_goes_on(candles: list[Candle]) -> None:
    run = Run(_config(f"{__name__}:ExplodingSmaCross", {"fast": 5, "slow": 20}))
    run.feed(candles)

    errors = run.at(Error)
    on_candle = [(i, e) for i, e in errors if e.where == "on_candle"]
    assert [i + 1 for i, _ in on_candle] == list(range(500, len(candles) + 1, 500))
    for i, error in on_candle:
        assert error.message == f"ZeroDivisionError: boom at {i + 1}"
        assert error.traceback.startswith("Traceback (most recent call last)")
        assert "in on_candle" in error.traceback
        assert error.traceback.rstrip().endswith(f"ZeroDivisionError: boom at {i + 1}")
    on_fill = [e for _, e in errors if e.where == "on_fill"]
    assert len(on_fill) == 1
    assert on_fill[0].message == "KeyError: 'first fill'"
    assert run.runner.errors == len(errors) == len(on_candle) + 1

    # Later candles are still processed: the runner counts them and the strategy trades.
    assert run.runner.candles == len(candles)
    last_error = on_candle[-1][0]
    assert any(i > last_error for i, _ in run.at(OrderSubmitted))
    # The fill whose hook raised still took effect.
    assert run.at(PositionOpened)[0][0] == run.at(OrderFilled)[0][0]
    _check_fills_at_next_open(run, candles)
    _check_envelopes(run, first_seq=1)


def test_start_failure_and_warnings_are_events(candles: list[Candle]) -> None:
    run = Run(_config(f"{__name__}:LoudStrategy", {"fast": 5, "slow": 20}))
    run.runner.start()
    run.feed(candles[:5])
    run.runner.stop()  # the default on_stop does nothing and raises nothing

    bodies = [e.body for e in run.sent]
    assert isinstance(bodies[0], Error)
    assert bodies[0].where == "on_start"
    assert bodies[0].message == "RuntimeError: cannot start"
    logs = [b for b in bodies if isinstance(b, Log)]
    assert logs == [Log("warning", "odd candle 3", f"strategy.{run.runner.strategy_id}")]
    assert run.at(Log)[0][0] == 2  # emitted while the third candle was in hand
    assert run.runner.errors == 1
    _check_envelopes(run, first_seq=1)
