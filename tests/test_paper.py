"""Paper fills (workers.services.execution) and the position lifecycle they drive.

PaperExecution only turns orders into fills: at the next candle's open of the same symbol,
slipped against the trader, with a fee on the traded value. PositionLifecycleService turns
those fills into positions: pending -> open -> closing -> closed, with PnL net of both fees,
marks (unrealized PnL, age, MAE/MFE from highs and lows) and nothing else allowed.
"""

from __future__ import annotations

import pytest

from runtime.messages import (
    Candle,
    EventBody,
    OpenPosition,
    OrderFilled,
    OrderSubmitted,
    PositionClosed,
    PositionOpened,
    PositionSide,
    Side,
)
from workers.services.execution import PaperExecution
from workers.services.positions import (
    LifecycleError,
    ManagedPosition,
    PositionLifecycleService,
    PositionState,
)

FEE_BPS = 10.0
RATE = FEE_BPS / 10_000.0
T0 = 1_515_560_100_000  # 2018-01-10T05:35:00Z
FIVE_MIN = 5 * 60_000


def _candle(
    open_: float,
    seq: int,
    symbol: str = "ETH-BTC",
    high: float | None = None,
    low: float | None = None,
    close: float | None = None,
) -> Candle:
    """A 5m candle whose open is ``open_`` and whose other prices differ from it unless given."""
    close = open_ * 1.2 if close is None else close
    high = max(open_, close) * 1.1 if high is None else high
    low = min(open_, close) * 0.9 if low is None else low
    return Candle(symbol, "5m", T0 + seq * FIVE_MIN, open_, high, low, close, 10.0, seq)


def _state(p: ManagedPosition) -> PositionState:
    """The state, read through a call (mypy would narrow ``p.state`` across transitions)."""
    return p.state


def _paper(
    fee_bps: float = FEE_BPS, slippage_bps: float = 0.0, first: int = 1
) -> tuple[PaperExecution, list[EventBody]]:
    emitted: list[EventBody] = []
    paper = PaperExecution("strat", fee_bps, slippage_bps, emitted.append, first_order_number=first)
    return paper, emitted


# --------------------------------------------------------------------------- execution


def test_submit_emits_order_submitted_with_sequential_ids() -> None:
    paper, emitted = _paper()
    first = paper.submit("ETH-BTC", "buy", 1.0, "why")
    second = paper.submit("LTC-BTC", "sell", 2.0, "why not")
    assert (first, second) == ("strat-1", "strat-2")
    assert emitted == [
        OrderSubmitted("strat-1", "ETH-BTC", "buy", 1.0, "why"),
        OrderSubmitted("strat-2", "LTC-BTC", "sell", 2.0, "why not"),
    ]
    assert paper.pending_count == 2


def test_order_numbers_start_at_first_order_number() -> None:
    paper, _ = _paper(first=42)
    assert paper.submit("ETH-BTC", "buy", 1.0, "") == "strat-42"
    assert paper.submit("ETH-BTC", "buy", 1.0, "") == "strat-43"


def test_order_fills_at_the_next_open_of_its_own_symbol_only() -> None:
    paper, emitted = _paper()
    assert list(paper.on_candle(_candle(100.0, 1))) == []  # nothing pending, nothing filled
    paper.submit("ETH-BTC", "buy", 2.0, "")
    emitted.clear()

    assert list(paper.on_candle(_candle(50.0, 2, symbol="LTC-BTC"))) == []
    assert emitted == []
    assert paper.pending_count == 1

    nxt = _candle(110.0, 2)
    fills = list(paper.on_candle(nxt))
    expected = OrderFilled(
        "strat-1", "ETH-BTC", "buy", 2.0, 110.0, 2.0 * 110.0 * RATE, nxt.open_time
    )
    assert fills == [expected]
    assert emitted == [expected]
    assert fills[0].price != nxt.close and fills[0].price != nxt.high
    assert paper.pending_count == 0
    # Filled once: a later candle fills nothing.
    assert list(paper.on_candle(_candle(120.0, 3))) == []
    assert emitted == [expected]


def test_waiting_always_shows_the_orders_not_filled_yet() -> None:
    # The runner only asks for fills while ``waiting`` is not empty: it must follow every
    # submit, fill, partial fill (other symbols wait) and cancel.
    paper, _ = _paper()
    waiting = paper.waiting
    first = paper.submit("ETH-BTC", "buy", 1.0, "")
    paper.submit("LTC-BTC", "buy", 1.0, "")
    assert [o.order_id for o in waiting] == [first, "strat-2"]
    assert len(list(paper.on_candle(_candle(100.0, 1)))) == 1
    assert [o.order_id for o in waiting] == ["strat-2"]
    assert paper.cancel("strat-2")
    assert not waiting
    paper.submit("ETH-BTC", "sell", 1.0, "")
    assert [o.order_id for o in waiting] == ["strat-3"]
    assert paper.waiting is waiting


@pytest.mark.parametrize(("side", "sign"), [("buy", 1.0), ("sell", -1.0)])
def test_slippage_moves_the_price_against_the_trader_and_the_fee_is_on_it(
    side: Side, sign: float
) -> None:
    paper, _ = _paper(fee_bps=25.0, slippage_bps=20.0)
    paper.submit("ETH-BTC", side, 3.0, "")
    (fill,) = list(paper.on_candle(_candle(200.0, 2)))
    price = 200.0 * (1.0 + sign * 20.0 / 10_000.0)
    assert fill.price == pytest.approx(price, rel=1e-15)
    assert (fill.price > 200.0) == (side == "buy")
    assert fill.fee == pytest.approx(25.0 / 10_000.0 * 3.0 * price, rel=1e-15)
    assert (fill.side, fill.quantity) == (side, 3.0)


def test_zero_fee_and_slippage_fill_at_the_open_exactly() -> None:
    paper, _ = _paper(fee_bps=0.0)
    paper.submit("ETH-BTC", "sell", 1.5, "")
    (fill,) = list(paper.on_candle(_candle(0.0987, 2)))
    assert (fill.price, fill.fee) == (0.0987, 0.0)


def test_orders_fill_in_the_order_they_were_sent() -> None:
    paper, emitted = _paper()
    paper.submit("ETH-BTC", "buy", 1.0, "")
    paper.submit("LTC-BTC", "sell", 2.0, "")
    paper.submit("ETH-BTC", "sell", 3.0, "")
    paper.submit("ETH-BTC", "buy", 4.0, "")
    emitted.clear()

    eth = list(paper.on_candle(_candle(10.0, 2)))
    assert [(f.order_id, f.side, f.quantity) for f in eth] == [
        ("strat-1", "buy", 1.0),
        ("strat-3", "sell", 3.0),
        ("strat-4", "buy", 4.0),
    ]
    assert emitted == eth
    assert paper.pending_count == 1
    ltc = list(paper.on_candle(_candle(5.0, 2, symbol="LTC-BTC")))
    assert [(f.order_id, f.price) for f in ltc] == [("strat-2", 5.0)]
    assert paper.pending_count == 0


# --------------------------------------------------------------------------- lifecycle


class Book:
    """A strategy's execution and positions wired as the container wires them."""

    def __init__(self, fee_bps: float = FEE_BPS, slippage_bps: float = 0.0) -> None:
        self.events: list[EventBody] = []
        self.paper = PaperExecution("strat", fee_bps, slippage_bps, self.events.append)
        self.positions = PositionLifecycleService(self.events.append)

    def enter(self, symbol: str, side: PositionSide, quantity: float) -> str:
        order_side: Side = "buy" if side == "long" else "sell"
        order_id = self.paper.submit(symbol, order_side, quantity, "enter")
        self.positions.entry_sent(symbol, side, quantity, order_id)
        return order_id

    def leave(self, symbol: str, reason: str = "exit") -> ManagedPosition:
        p = self.positions.active(symbol)
        assert p is not None
        order_side: Side = "sell" if p.side == "long" else "buy"
        order_id = self.paper.submit(symbol, order_side, p.quantity, reason)
        return self.positions.exit_sent(symbol, order_id, reason)

    def candle(self, candle: Candle) -> None:
        """What the runner does on a decision candle: fill at its open, then mark."""
        for fill in self.paper.on_candle(candle):
            self.positions.on_fill(fill)
        self.positions.mark(candle, candle.symbol)

    def of(self, kind: type[EventBody]) -> list[EventBody]:
        return [e for e in self.events if isinstance(e, kind)]


def test_entry_goes_pending_then_open_on_its_fill() -> None:
    book = Book()
    order_id = book.enter("ETH-BTC", "long", 2.0)
    p = book.positions.active("ETH-BTC")
    assert p is not None
    assert (_state(p), p.entry_order_id, p.side, p.quantity) == (
        PositionState.PENDING,
        order_id,
        "long",
        2.0,
    )
    assert book.positions.open_positions() == []
    assert book.positions.open_count == 0
    assert p.unrealized_pnl == 0.0

    book.positions.mark(_candle(100.0, 1), "ETH-BTC")  # a pending position is not marked
    assert p.candles_held == 0

    nxt = _candle(100.0, 2, high=101.0, low=99.0, close=100.5)
    book.candle(nxt)
    assert _state(p) is PositionState.OPEN
    fee = 2.0 * 100.0 * RATE
    assert (p.entry_price, p.entry_fee, p.opened_at) == (100.0, fee, nxt.open_time)
    assert book.of(PositionOpened) == [
        PositionOpened("ETH-BTC", "long", 2.0, 100.0, fee, nxt.open_time)
    ]
    assert book.positions.open_positions() == [p]
    assert book.positions.open_count == 1
    assert p.candles_held == 1  # the fill candle itself counts


@pytest.mark.parametrize(
    ("side", "exit_open", "gross"),
    [("long", 110.0, 20.0), ("long", 95.0, -10.0), ("short", 110.0, -20.0), ("short", 95.0, 10.0)],
)
def test_exit_closes_with_pnl_net_of_entry_and_exit_fees(
    side: PositionSide, exit_open: float, gross: float
) -> None:
    book = Book()
    book.enter("ETH-BTC", side, 2.0)
    book.candle(_candle(100.0, 2))
    p = book.leave("ETH-BTC", "because")
    assert _state(p) is PositionState.CLOSING
    assert book.positions.active("ETH-BTC") is None
    assert book.positions.open_count == 1  # exposure is held until the exit fills
    assert book.positions.last_closed("ETH-BTC") is None

    exit_candle = _candle(exit_open, 3)
    book.candle(exit_candle)
    entry_fee, exit_fee = 2.0 * 100.0 * RATE, 2.0 * exit_open * RATE
    assert _state(p) is PositionState.CLOSED
    assert p.realized_pnl == pytest.approx(gross - entry_fee - exit_fee, rel=1e-12)
    assert book.positions.realized_pnl == p.realized_pnl
    assert book.positions.open_count == 0
    assert book.positions.unrealized_pnl == 0.0
    assert p.unrealized_pnl == 0.0
    assert book.positions.last_closed("ETH-BTC") is p
    assert book.positions.last_closed_by_symbol == {"ETH-BTC": p}
    (closed,) = book.of(PositionClosed)
    assert isinstance(closed, PositionClosed)
    assert (closed.side, closed.quantity, closed.entry_price, closed.exit_price) == (
        side,
        2.0,
        100.0,
        exit_open,
    )
    assert closed.fees == pytest.approx(entry_fee + exit_fee, rel=1e-12)
    assert closed.realized_pnl == p.realized_pnl
    assert closed.closed_at == exit_candle.open_time
    assert closed.reason == "because"
    # The realized PnL is the cash flow of the two fills.
    cash = sum(
        (-1.0 if f.side == "buy" else 1.0) * f.quantity * f.price - f.fee
        for f in book.of(OrderFilled)
        if isinstance(f, OrderFilled)
    )
    assert p.realized_pnl == pytest.approx(cash, rel=1e-12)


def test_slippage_and_fees_count_against_a_round_trip() -> None:
    book = Book(fee_bps=10.0, slippage_bps=50.0)
    book.enter("ETH-BTC", "long", 1.0)
    book.candle(_candle(100.0, 2))
    book.leave("ETH-BTC")
    book.candle(_candle(100.0, 3))
    p = book.positions.last_closed("ETH-BTC")
    assert p is not None
    assert p.entry_price == pytest.approx(100.5)
    assert p.exit_price == pytest.approx(99.5)
    assert p.realized_pnl == pytest.approx(-1.0 - (100.5 + 99.5) * RATE, rel=1e-12)


def test_mark_updates_unrealized_pnl_and_age_of_its_own_symbol_only() -> None:
    book = Book()
    book.enter("ETH-BTC", "short", 3.0)
    book.candle(_candle(50.0, 2, high=51.0, low=49.0, close=49.0))
    (p,) = book.positions.open_positions()
    fee = 3.0 * 50.0 * RATE
    assert p.unrealized_pnl == pytest.approx(3.0 - fee, rel=1e-12)
    book.positions.mark(_candle(10.0, 3, symbol="LTC-BTC"), "LTC-BTC")
    assert (p.candles_held, p.last_price) == (1, 49.0)
    book.candle(_candle(49.0, 3, high=53.0, low=48.0, close=52.0))
    assert p.candles_held == 2
    assert p.last_price == 52.0
    assert p.unrealized_pnl == pytest.approx(-6.0 - fee, rel=1e-12)
    assert book.positions.unrealized_pnl == p.unrealized_pnl
    # Still marked while closing: the exposure is there until the exit fills.
    book.leave("ETH-BTC")
    book.positions.mark(_candle(52.0, 4, high=52.0, low=47.0, close=48.0), "ETH-BTC")
    assert p.candles_held == 3
    assert book.positions.unrealized_pnl == pytest.approx(6.0 - fee, rel=1e-12)


@pytest.mark.parametrize(
    ("side", "mae", "mfe"),
    [("long", -5.0 * 2, 8.0 * 2), ("short", -8.0 * 2, 5.0 * 2)],
)
def test_mae_and_mfe_come_from_highs_and_lows(side: PositionSide, mae: float, mfe: float) -> None:
    book = Book(fee_bps=0.0)
    book.enter("ETH-BTC", side, 2.0)
    # Entry at 100; over the position's life the highs reach 108 and the lows 95, while the
    # closes stay within 98..102 (excursions must not be judged on closes).
    book.candle(_candle(100.0, 2, high=105.0, low=97.0, close=101.0))
    book.candle(_candle(101.0, 3, high=103.0, low=95.0, close=98.0))
    book.candle(_candle(98.0, 4, high=108.0, low=97.5, close=102.0))
    (p,) = book.positions.open_positions()
    assert p.mae == pytest.approx(mae)
    assert p.mfe == pytest.approx(mfe)
    assert p.best_price == (108.0 if side == "long" else 95.0)
    assert p.worst_price == (95.0 if side == "long" else 108.0)
    book.leave("ETH-BTC")
    book.candle(_candle(101.0, 5, high=200.0, low=1.0, close=100.0))  # after the exit filled
    (closed,) = book.of(PositionClosed)
    assert isinstance(closed, PositionClosed)
    assert closed.mae == pytest.approx(mae)
    assert closed.mfe == pytest.approx(mfe)
    assert p.candles_held == 3


def test_excursions_start_at_the_fill_price() -> None:
    book = Book(fee_bps=0.0)
    book.enter("ETH-BTC", "long", 1.0)
    for fill in book.paper.on_candle(_candle(100.0, 2)):
        book.positions.on_fill(fill)
    # Filled but not yet marked: no excursion either way.
    (p,) = book.positions.open_positions()
    assert (p.mae, p.mfe, p.unrealized_pnl) == (0.0, 0.0, 0.0)


def test_illegal_transitions_raise() -> None:
    book = Book()
    with pytest.raises(LifecycleError, match="no position to close"):
        book.positions.exit_sent("ETH-BTC", "x-1", "nothing there")
    book.enter("ETH-BTC", "long", 1.0)
    with pytest.raises(LifecycleError):
        book.positions.entry_sent("ETH-BTC", "short", 1.0, "x-2")  # one active per symbol
    with pytest.raises(LifecycleError, match="pending -> closing"):
        book.positions.exit_sent("ETH-BTC", "x-3", "too early")
    p = book.positions.active("ETH-BTC")
    assert p is not None and _state(p) is PositionState.PENDING  # the refusal changed nothing
    assert p.exit_order_id == "" and p.exit_reason == ""
    book.candle(_candle(100.0, 2))
    assert _state(p) is PositionState.OPEN
    for state in (PositionState.PENDING, PositionState.OPEN, PositionState.CLOSED):
        with pytest.raises(LifecycleError):
            p.move(state)
    assert _state(p) is PositionState.OPEN
    book.leave("ETH-BTC")
    book.candle(_candle(100.0, 3))
    assert _state(p) is PositionState.CLOSED
    for state in PositionState:
        with pytest.raises(LifecycleError):
            p.move(state)


def test_fills_of_unknown_orders_are_ignored() -> None:
    book = Book()
    fill = OrderFilled("other-1", "ETH-BTC", "buy", 1.0, 100.0, 0.1, T0)
    assert book.positions.on_fill(fill) is None
    assert book.events == []
    assert book.positions.active("ETH-BTC") is None


def test_a_new_position_may_open_while_the_old_one_is_closing() -> None:
    """A reversal: exit and entry sent on the same candle, filled in that order."""
    book = Book(fee_bps=0.0)
    book.enter("ETH-BTC", "long", 1.0)
    book.candle(_candle(100.0, 2))
    old = book.leave("ETH-BTC")
    book.enter("ETH-BTC", "short", 1.0)
    book.candle(_candle(104.0, 3))
    new = book.positions.active("ETH-BTC")
    assert new is not None and new is not old
    assert (old.state, new.state, new.side, new.entry_price) == (
        PositionState.CLOSED,
        PositionState.OPEN,
        "short",
        104.0,
    )
    # Each fill is applied before the next order fills (a sized entry sees the freed cash).
    kinds = [type(e) for e in book.events if not isinstance(e, OrderSubmitted)]
    assert kinds == [
        OrderFilled,
        PositionOpened,
        OrderFilled,
        PositionClosed,
        OrderFilled,
        PositionOpened,
    ]
    assert old.realized_pnl == pytest.approx(4.0)


def test_restore_takes_back_open_positions_and_realized_pnl() -> None:
    book = Book()
    book.positions.restore(
        [
            OpenPosition("ETH-BTC", "long", 2.0, 0.09, 0.00018, 1_000),
            OpenPosition("LTC-BTC", "short", 5.0, 0.02, 0.0001, 2_000),
        ],
        realized_pnl=0.5,
    )
    assert book.positions.realized_pnl == 0.5
    assert book.positions.open_count == 2
    eth = book.positions.active("ETH-BTC")
    assert eth is not None
    assert (eth.state, eth.side, eth.quantity, eth.entry_price, eth.entry_fee, eth.opened_at) == (
        PositionState.OPEN,
        "long",
        2.0,
        0.09,
        0.00018,
        1_000,
    )
    assert book.events == []  # restoring is not news
    book.leave("ETH-BTC")
    book.candle(_candle(0.1, 2))
    (closed,) = book.of(PositionClosed)
    assert isinstance(closed, PositionClosed)
    pnl = (0.1 - 0.09) * 2.0 - 0.00018 - 2.0 * 0.1 * RATE
    assert closed.realized_pnl == pytest.approx(pnl, rel=1e-12)
    assert (closed.entry_price, closed.opened_at) == (0.09, 1_000)
    assert book.positions.realized_pnl == pytest.approx(0.5 + pnl, rel=1e-12)
    assert [p.symbol for p in book.positions.open_positions()] == ["LTC-BTC"]


def test_last_closed_is_the_latest_of_that_symbol() -> None:
    """Only that one is kept: a worker trading for months must not hold every position it
    ever closed."""
    book = Book()
    assert book.positions.last_closed("ETH-BTC") is None
    seq = 1
    closed = []
    for symbol in ("ETH-BTC", "LTC-BTC", "ETH-BTC"):
        book.enter(symbol, "long", 1.0)
        seq += 1
        book.candle(_candle(100.0 + seq, seq, symbol=symbol))
        closed.append(book.leave(symbol))
        seq += 1
        book.candle(_candle(100.0 + seq, seq, symbol=symbol))
    first_eth, ltc, second_eth = closed
    assert book.positions.last_closed_by_symbol == {"ETH-BTC": second_eth, "LTC-BTC": ltc}
    assert book.positions.last_closed("ETH-BTC") is second_eth
    assert first_eth is not second_eth
    assert book.positions.last_closed("LTC-BTC") is ltc
    assert book.positions.last_closed("XMR-BTC") is None
    assert book.positions.realized_pnl == pytest.approx(
        sum(p.realized_pnl for p in closed), rel=1e-12
    )
