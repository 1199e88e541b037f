"""The sub-account ledger: its arithmetic on hand-made fills, its points, and a restart from
the journal (events folded as the aggregator folds them) that ends on the very same floats."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pytest

from broker.csv_source import read_candles
from runtime.account_metrics import portfolio_sums
from runtime.config import StrategyConfig
from runtime.figures import Figures
from runtime.messages import (
    EVENT_BODY_JSON_DECODER,
    EVENT_BODY_JSON_ENCODER,
    AccountUpdated,
    Candle,
    Event,
    EventBody,
    OrderFilled,
    PositionSide,
    Side,
)
from workers.outbox import Outbox
from workers.runner import StrategyRunner
from workers.services.ledger import LedgerService
from workers.services.positions import PositionLifecycleService

ETH = Path(__file__).resolve().parents[1] / "examples" / "data" / "crypto" / "ETH-BTC-5m.csv"
HOUR = 3_600_000
_orders = itertools.count(1)
_ids = itertools.count(1)


class Book:
    """A position lifecycle and its ledger, driven by hand-made fills."""

    def __init__(self, capital: float = 1000.0, every_ms: int = HOUR) -> None:
        self.emitted: list[EventBody] = []
        self.positions = PositionLifecycleService(self.emitted.append, capital)
        self.ledger = LedgerService(self.positions, capital, every_ms)

    def open(self, symbol: str, side: PositionSide, qty: float, price: float, fee: float) -> None:
        order_id = f"t-{next(_orders)}"
        self.positions.entry_sent(symbol, side, qty, order_id)
        self._fill(order_id, symbol, "buy" if side == "long" else "sell", qty, price, fee)

    def close(self, symbol: str, price: float, fee: float) -> None:
        held = self.positions.active(symbol)
        assert held is not None
        order_id = f"t-{next(_orders)}"
        self.positions.exit_sent(symbol, order_id, "test")
        side: Side = "sell" if held.side == "long" else "buy"
        self._fill(order_id, symbol, side, held.quantity, price, fee)

    def mark(self, symbol: str, close: float) -> None:
        self.positions.mark(Candle(symbol, "5m", 0, close, close, close, close, 1.0, 1), symbol)

    def _fill(
        self, order_id: str, symbol: str, side: Side, qty: float, price: float, fee: float
    ) -> None:
        fill = OrderFilled(order_id, symbol, side, qty, price, fee, 0)
        self.ledger.on_fill(fill, self.positions.on_fill(fill))


def test_a_long_pays_fees_at_entry_and_exit() -> None:
    book = Book(1000.0)
    book.open("A", "long", 10, 100.0, 1.0)
    assert book.ledger.cash == 999.0  # the entry fee is paid at once
    book.mark("A", 110.0)
    p = book.ledger.point(0)
    assert (p.cash, p.exposure, p.equity) == (999.0, 1100.0, 1099.0)
    assert p.unrealized_pnl == 99.0  # net of the entry fee
    assert (p.realized_pnl, p.fees, p.trades, p.reason) == (0.0, 1.0, 0, "fill")
    book.close("A", 120.0, 1.25)
    p = book.ledger.point(0)
    assert p.cash == 999.0 + 200.0 - 1.25
    assert p.realized_pnl == 200.0 - 1.0 - 1.25
    assert (p.fees, p.trades, p.exposure, p.unrealized_pnl) == (2.25, 1, 0.0, 0.0)
    assert p.equity == p.cash == p.capital + p.realized_pnl


def test_a_short_gains_when_the_price_falls_and_loses_when_it_rises() -> None:
    book = Book(1000.0)
    book.open("A", "short", 5, 200.0, 0.5)
    book.mark("A", 190.0)
    p = book.ledger.point(0)
    assert (p.equity, p.unrealized_pnl, p.exposure) == (999.5 + 50.0, 49.5, 950.0)
    assert p.peak_equity == 1049.5
    book.close("A", 210.0, 0.5)
    p = book.ledger.point(0)
    assert p.realized_pnl == -50.0 - 0.5 - 0.5
    assert p.cash == p.equity == 1000.0 - 0.5 - 50.0 - 0.5
    assert p.max_drawdown == 1049.5 - 949.0  # from the peak of the previous point


def test_several_positions_add_up_and_drawdown_follows_the_points() -> None:
    book = Book(1000.0)
    book.open("A", "long", 2, 50.0, 0.25)
    book.open("B", "short", 1, 400.0, 0.5)
    book.mark("A", 60.0)  # +20
    book.mark("B", 380.0)  # +20
    p = book.ledger.point(0)
    assert p.cash == 1000.0 - 0.25 - 0.5
    assert p.equity == p.cash + 40.0
    assert p.exposure == 120.0 + 380.0
    assert p.unrealized_pnl == 40.0 - 0.75
    book.mark("A", 40.0)  # -20
    book.mark("B", 420.0)  # -20
    p = book.ledger.point(0)
    assert p.equity == p.cash - 40.0
    assert p.peak_equity == 1039.25 and p.max_drawdown == 80.0
    book.close("B", 420.0, 0.5)
    p = book.ledger.point(0)
    assert p.realized_pnl == -20.0 - 1.0
    assert (p.trades, p.fees) == (1, 1.25)
    assert p.equity == pytest.approx(p.capital + p.realized_pnl + p.unrealized_pnl)


def test_a_reversal_closes_then_opens_in_one_candle() -> None:
    book = Book(1000.0)
    book.open("A", "long", 1, 100.0, 0.1)
    # The close and the new entry fill at the same open, in the order they were sent.
    close_id, entry_id = f"t-{next(_orders)}", f"t-{next(_orders)}"
    book.positions.exit_sent("A", close_id, "reverse")
    book.positions.entry_sent("A", "short", 1, entry_id)
    for order_id, side in ((close_id, "sell"), (entry_id, "sell")):
        fill = OrderFilled(order_id, "A", side, 1, 90.0, 0.09, 0)  # type: ignore[arg-type]
        book.ledger.on_fill(fill, book.positions.on_fill(fill))
    p = book.ledger.point(0)
    assert (p.trades, p.fees) == (1, 0.1 + 0.09 + 0.09)
    assert p.realized_pnl == -10.0 - 0.1 - 0.09
    assert p.cash == 1000.0 - 0.1 - 10.0 - 0.09 - 0.09
    held = book.positions.held()
    assert [(h.symbol, h.side, h.entry_price) for h in held] == [("A", "short", 90.0)]


def test_points_are_due_after_fills_and_at_period_starts_while_held() -> None:
    book = Book(1000.0, every_ms=HOUR)
    ledger = book.ledger
    assert not ledger.due(0), "nothing held, nothing booked"
    book.open("A", "long", 1, 100.0, 0.1)
    assert ledger.due(5 * 60_000), "a fill makes a point on any candle"
    ledger.point(5 * 60_000)
    assert not ledger.due(10 * 60_000), "mid-period, nothing new"
    assert ledger.due(HOUR), "a period starts while a position is held"
    ledger.point(HOUR)
    assert not ledger.due(HOUR), "one point per candle time (several symbols share it)"
    book.close("A", 100.0, 0.1)
    ledger.point(HOUR + 5 * 60_000)
    assert not ledger.due(2 * HOUR), "flat: the equity cannot move"


def test_restore_takes_the_exact_figures_and_a_new_allocation() -> None:
    last = AccountUpdated(10.0, 9.7, 0.0, -0.2, 0.0, 0.1, 9.7, 10.3, 1.0, 3, HOUR)
    book = Book(10.0)
    assert book.ledger.restore(last) is None
    assert (book.ledger.cash, book.ledger.fees, book.ledger.trades) == (9.7, 0.1, 3)
    assert book.ledger.point(2 * HOUR).max_drawdown == 1.0  # kept: 10.3 - 9.7 is less
    more = Book(15.0)
    assert more.ledger.restore(last) == "capital"
    p = more.ledger.point(HOUR, "capital")
    assert (p.capital, p.cash, p.peak_equity) == (15.0, 14.7, 15.3)
    assert Book(10.0).ledger.restore(None) == "start"


def test_portfolio_sums_add_the_strategies_up() -> None:
    a = AccountUpdated(10.0, 9.5, 1.0, 0.5, -0.25, 0.1, 9.75, 10.0, 0.5, 2, 0)
    b = AccountUpdated(5.0, 5.5, 0.0, 0.5, 0.0, 0.2, 5.5, 5.5, 0.0, 1, 0)
    sums = portfolio_sums({"b": b, "a": a})
    assert sums == {
        "capital": 15.0,
        "cash": 15.0,
        "exposure": 1.0,
        "equity": 15.25,
        "realized_pnl": 1.0,
        "unrealized_pnl": -0.25,
        "fees": 0.1 + 0.2,
        "trades": 3.0,
    }


# --------------------------------------------------------------------------- restarts


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return [
        Candle("ETH-BTC", "5m", r.open_time, r.open, r.high, r.low, r.close, r.volume, i + 1)
        for i, r in enumerate(read_candles(ETH)[:3000])
    ]


def _config(**execution: Any) -> StrategyConfig:
    return msgspec.convert(
        {
            "id": f"ledger_{next(_ids)}",
            "class": "workers.strategies.sma_cross:SmaCross",
            "symbols": ["ETH-BTC"],
            "timeframe": "5m",
            "params": {"fast": 4, "slow": 11, "allow_short": True},
            "warmup_candles": 200,
            "execution": {"fee_bps": 10.0, "slippage_bps": 3.0, **execution},
        },
        StrategyConfig,
    )


def _replay(config: StrategyConfig, candles: list[Candle], kills: set[int]) -> list[AccountUpdated]:
    """Run ``candles`` through a worker's runner, journaling each candle's events as JSON
    and folding them like the aggregator; before each candle index in ``kills`` the runner is
    dropped and a new one restored from the folded figures (the Welcome), then warmed on
    the candles before it, as a restarted worker is. Returns every journaled account point."""
    figures = Figures()
    journal: list[Event] = []

    def start() -> StrategyRunner:
        fig = figures.get(config.id)
        runner = StrategyRunner(config, Outbox(config.id, fig.last_seq, lambda frame: None))
        runner.restore(
            list(fig.positions.values()),
            fig.realized_pnl,
            list(fig.pending_orders.values()),
            list(fig.last_closed.values()),
            fig.account,
        )
        runner.start()
        return runner

    def commit(runner: StrategyRunner) -> None:
        for event in runner.outbox._open:
            body = EVENT_BODY_JSON_DECODER.decode(EVENT_BODY_JSON_ENCODER.encode(event.body))
            stored = Event(event.strategy_id, event.seq, event.ts_ns, body)
            journal.append(stored)
            figures.apply(stored)
        runner.outbox._open.clear()

    runner = start()
    commit(runner)
    for i, candle in enumerate(candles):
        if i in kills:
            runner = start()  # the old one is gone with whatever it had not journaled
            for old in candles[max(0, i - config.warmup_candles) : i]:
                runner.warm(old)
            commit(runner)
        runner.on_candle(candle)
        commit(runner)
    return [e.body for e in journal if isinstance(e.body, AccountUpdated)]


@pytest.mark.parametrize(
    "execution",
    [
        {"quantity": 1.0, "cash": 10.0},
        {"sizing": "equity", "equity_fraction": 0.9, "whole_units": False, "cash": 3.0},
    ],
    ids=["fixed", "equity-sized"],
)
def test_a_restarted_ledger_ends_on_the_same_floats(
    candles: list[Candle], execution: dict[str, Any]
) -> None:
    config = _config(**execution)
    clean = _replay(config, candles, set())
    killed = _replay(config, candles, {137, 800, 801, 1999, 2500})
    last = clean[-1]
    assert last.trades > 20 and last.fees > 0.0, "it traded"
    assert any(p.reason == "mark" for p in clean), "held positions were marked"
    assert killed == clean  # every point, every float equal
    assert last.equity == pytest.approx(last.capital + last.realized_pnl + last.unrealized_pnl)
