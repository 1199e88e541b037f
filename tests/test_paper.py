"""PaperExecution: next-open fills, fees, slippage, netting and realized PnL."""

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
)
from workers.paper import PaperExecution, Position

FEE_BPS = 10.0
RATE = FEE_BPS / 10_000.0
_MINUTE = 60_000


def _candle(open_: float, seq: int, symbol: str = "ETH-BTC") -> Candle:
    """A candle whose open is ``open_`` and whose other prices are clearly different."""
    return Candle(
        symbol,
        "5m",
        1_515_560_100_000 + seq * 5 * _MINUTE,
        open_,
        open_ * 1.5,
        open_ * 0.5,
        open_ * 1.2,
        10.0,
        seq,
    )


def _paper(
    fee_bps: float = FEE_BPS, slippage_bps: float = 0.0
) -> tuple[PaperExecution, list[EventBody]]:
    emitted: list[EventBody] = []
    return PaperExecution("strat", fee_bps, slippage_bps, emitted.append), emitted


def _only(bodies: list[EventBody], kind: type[EventBody]) -> list[EventBody]:
    return [b for b in bodies if isinstance(b, kind)]


def test_submit_emits_order_submitted_with_sequential_ids() -> None:
    paper, emitted = _paper()
    first = paper.submit("ETH-BTC", "buy", 1.0, "why")
    second = paper.submit("ETH-BTC", "sell", 2.0, "why not")
    assert (first, second) == ("strat-1", "strat-2")
    assert emitted == [
        OrderSubmitted("strat-1", "ETH-BTC", "buy", 1.0, "why"),
        OrderSubmitted("strat-2", "ETH-BTC", "sell", 2.0, "why not"),
    ]


def test_order_numbers_start_at_first_order_number() -> None:
    emitted: list[EventBody] = []
    paper = PaperExecution("strat", 0, 0, emitted.append, first_order_number=42)
    assert paper.submit("ETH-BTC", "buy", 1.0, "") == "strat-42"


def test_order_fills_at_next_candle_open_of_the_same_symbol() -> None:
    paper, emitted = _paper()
    in_hand = _candle(100.0, 1)
    assert paper.on_candle(in_hand) == []
    paper.submit("ETH-BTC", "buy", 2.0, "")
    emitted.clear()

    other = _candle(50.0, 2, symbol="LTC-BTC")
    assert paper.on_candle(other) == []
    assert emitted == []
    assert paper.pending_quantity("ETH-BTC") == 2.0
    assert paper.positions == {}

    nxt = _candle(110.0, 2)
    fills = paper.on_candle(nxt)
    assert len(fills) == 1
    fill = fills[0]
    assert fill.price == 110.0  # the next candle's open, not its close/high/low
    assert fill.fill_time == nxt.open_time
    assert fill.quantity == 2.0
    assert fill.order_id == "strat-1"
    assert emitted[0] == fill
    assert paper.pending_quantity("ETH-BTC") == 0.0
    assert paper.positions["ETH-BTC"] == Position(
        "ETH-BTC", "long", 2.0, 110.0, 2.0 * 110.0 * RATE, nxt.open_time
    )
    # Filled once only.
    assert paper.on_candle(_candle(120.0, 3)) == []


def test_orders_on_two_symbols_fill_on_their_own_candles() -> None:
    paper, _ = _paper()
    paper.submit("ETH-BTC", "buy", 1.0, "")
    paper.submit("LTC-BTC", "sell", 3.0, "")
    ltc_fills = paper.on_candle(_candle(0.5, 1, symbol="LTC-BTC"))
    assert [(f.symbol, f.price) for f in ltc_fills] == [("LTC-BTC", 0.5)]
    assert paper.pending_quantity("ETH-BTC") == 1.0
    assert paper.pending_quantity("LTC-BTC") == 0.0
    eth_fills = paper.on_candle(_candle(100.0, 1))
    assert [(f.symbol, f.price) for f in eth_fills] == [("ETH-BTC", 100.0)]
    assert paper.positions["LTC-BTC"].side == "short"
    assert paper.positions["ETH-BTC"].side == "long"


def test_pending_quantity_is_signed_and_per_symbol() -> None:
    paper, _ = _paper()
    paper.submit("ETH-BTC", "buy", 2.0, "")
    paper.submit("ETH-BTC", "sell", 0.5, "")
    paper.submit("LTC-BTC", "sell", 4.0, "")
    assert paper.pending_quantity("ETH-BTC") == pytest.approx(1.5)
    assert paper.pending_quantity("LTC-BTC") == pytest.approx(-4.0)
    assert paper.pending_quantity("XMR-BTC") == 0.0


def test_fee_is_bps_of_traded_value() -> None:
    paper, _ = _paper(fee_bps=25.0)
    paper.submit("ETH-BTC", "buy", 3.0, "")
    (fill,) = paper.on_candle(_candle(0.0984, 1))
    assert fill.fee == pytest.approx(25.0 / 1e4 * 3.0 * 0.0984, rel=1e-12)


def test_zero_fee() -> None:
    paper, _ = _paper(fee_bps=0.0)
    paper.submit("ETH-BTC", "buy", 3.0, "")
    (fill,) = paper.on_candle(_candle(0.0984, 1))
    assert fill.fee == 0.0


def test_slippage_moves_buy_up_and_sell_down() -> None:
    paper, _ = _paper(slippage_bps=50.0)
    paper.submit("ETH-BTC", "buy", 1.0, "")
    (buy,) = paper.on_candle(_candle(100.0, 1))
    paper.submit("ETH-BTC", "sell", 1.0, "")
    (sell,) = paper.on_candle(_candle(100.0, 2))
    assert buy.price == pytest.approx(100.0 * 1.005, rel=1e-12)
    assert sell.price == pytest.approx(100.0 * 0.995, rel=1e-12)
    # The fee is charged on the slipped price.
    assert buy.fee == pytest.approx(RATE * 100.5, rel=1e-12)
    assert sell.fee == pytest.approx(RATE * 99.5, rel=1e-12)


def test_long_round_trip_pnl_is_net_of_both_fees() -> None:
    paper, emitted = _paper()
    paper.submit("ETH-BTC", "buy", 1.0, "")
    opened_candle = _candle(100.0, 1)
    paper.on_candle(opened_candle)
    paper.submit("ETH-BTC", "sell", 1.0, "")
    closed_candle = _candle(110.0, 2)
    paper.on_candle(closed_candle)

    entry_fee, exit_fee = 100.0 * RATE, 110.0 * RATE
    opened = _only(emitted, PositionOpened)
    assert opened == [
        PositionOpened("ETH-BTC", "long", 1.0, 100.0, entry_fee, opened_candle.open_time)
    ]
    (closed,) = _only(emitted, PositionClosed)
    assert isinstance(closed, PositionClosed)
    assert closed.side == "long"
    assert closed.quantity == 1.0
    assert closed.entry_price == 100.0
    assert closed.exit_price == 110.0
    assert closed.fees == pytest.approx(entry_fee + exit_fee, rel=1e-12)
    assert closed.realized_pnl == pytest.approx(10.0 - entry_fee - exit_fee, rel=1e-12)
    assert closed.opened_at == opened_candle.open_time
    assert closed.closed_at == closed_candle.open_time
    assert paper.realized_pnl == pytest.approx(10.0 - 0.21, rel=1e-12)
    assert paper.positions == {}


def test_short_round_trip_pnl_is_net_of_both_fees() -> None:
    paper, emitted = _paper()
    paper.submit("ETH-BTC", "sell", 2.0, "")
    paper.on_candle(_candle(100.0, 1))
    assert paper.positions["ETH-BTC"].side == "short"
    paper.submit("ETH-BTC", "buy", 2.0, "")
    paper.on_candle(_candle(90.0, 2))

    (closed,) = _only(emitted, PositionClosed)
    assert isinstance(closed, PositionClosed)
    assert closed.side == "short"
    fees = 2.0 * 100.0 * RATE + 2.0 * 90.0 * RATE
    assert closed.realized_pnl == pytest.approx(2.0 * 10.0 - fees, rel=1e-12)
    assert paper.realized_pnl == pytest.approx(20.0 - 0.38, rel=1e-12)
    assert paper.positions == {}


def test_losing_long_has_negative_pnl() -> None:
    paper, _ = _paper()
    paper.submit("ETH-BTC", "buy", 1.0, "")
    paper.on_candle(_candle(100.0, 1))
    paper.submit("ETH-BTC", "sell", 1.0, "")
    paper.on_candle(_candle(95.0, 2))
    assert paper.realized_pnl == pytest.approx(-5.0 - 100.0 * RATE - 95.0 * RATE, rel=1e-12)


def test_reversal_closes_then_opens_the_other_way() -> None:
    paper, emitted = _paper()
    paper.submit("ETH-BTC", "buy", 1.0, "")
    first = _candle(100.0, 1)
    paper.on_candle(first)
    emitted.clear()

    paper.submit("ETH-BTC", "sell", 2.0, "reverse")
    second = _candle(110.0, 2)
    paper.on_candle(second)

    kinds = [type(b) for b in emitted]
    assert kinds == [OrderSubmitted, OrderFilled, PositionClosed, PositionOpened]
    fill, closed, opened = emitted[1], emitted[2], emitted[3]
    assert isinstance(fill, OrderFilled)
    assert isinstance(closed, PositionClosed)
    assert isinstance(opened, PositionOpened)
    assert fill.fee == pytest.approx(2.0 * 110.0 * RATE, rel=1e-12)
    # The fill's fee is split between the closing half and the opening half.
    assert closed.side == "long"
    assert closed.quantity == 1.0
    assert closed.fees == pytest.approx(100.0 * RATE + 110.0 * RATE, rel=1e-12)
    assert closed.realized_pnl == pytest.approx(10.0 - 100.0 * RATE - 110.0 * RATE, rel=1e-12)
    assert (opened.symbol, opened.side, opened.quantity, opened.entry_price) == (
        "ETH-BTC",
        "short",
        1.0,
        110.0,
    )
    assert opened.entry_fee == pytest.approx(110.0 * RATE, rel=1e-12)
    assert opened.opened_at == second.open_time
    assert paper.positions["ETH-BTC"].side == "short"
    assert paper.positions["ETH-BTC"].quantity == 1.0
    assert paper.positions["ETH-BTC"].entry_price == 110.0
    assert paper.positions["ETH-BTC"].entry_fee == pytest.approx(110.0 * RATE, rel=1e-12)


def test_partial_close_keeps_the_rest_with_its_share_of_the_entry_fee() -> None:
    paper, emitted = _paper()
    paper.submit("ETH-BTC", "buy", 2.0, "")
    paper.on_candle(_candle(100.0, 1))
    paper.submit("ETH-BTC", "sell", 0.5, "")
    paper.on_candle(_candle(120.0, 2))

    (closed,) = _only(emitted, PositionClosed)
    assert isinstance(closed, PositionClosed)
    entry_fee_total = 2.0 * 100.0 * RATE
    assert closed.quantity == 0.5
    assert closed.fees == pytest.approx(entry_fee_total / 4 + 0.5 * 120.0 * RATE, rel=1e-12)
    assert closed.realized_pnl == pytest.approx(0.5 * 20.0 - closed.fees, rel=1e-12)
    assert not _only(emitted, PositionOpened)[1:], "a partial close opens nothing"
    left = paper.positions["ETH-BTC"]
    assert left.side == "long"
    assert left.quantity == pytest.approx(1.5)
    assert left.entry_price == 100.0
    assert left.entry_fee == pytest.approx(entry_fee_total * 0.75, rel=1e-12)

    # Closing the rest realizes the rest of the entry fee, no more and no less.
    paper.submit("ETH-BTC", "sell", 1.5, "")
    paper.on_candle(_candle(90.0, 3))
    total = 0.5 * 20.0 + 1.5 * -10.0 - entry_fee_total - 0.5 * 120.0 * RATE - 1.5 * 90.0 * RATE
    assert paper.realized_pnl == pytest.approx(total, rel=1e-12)
    assert paper.positions == {}


def test_adding_to_a_position_averages_the_entry_price() -> None:
    paper, emitted = _paper()
    paper.submit("ETH-BTC", "buy", 1.0, "")
    paper.on_candle(_candle(100.0, 1))
    paper.submit("ETH-BTC", "buy", 3.0, "")
    paper.on_candle(_candle(120.0, 2))
    position = paper.positions["ETH-BTC"]
    assert position.quantity == 4.0
    assert position.entry_price == pytest.approx((100.0 + 3 * 120.0) / 4, rel=1e-12)
    assert position.entry_fee == pytest.approx(100.0 * RATE + 360.0 * RATE, rel=1e-12)
    assert position.opened_at == _candle(100.0, 1).open_time
    opened = _only(emitted, PositionOpened)
    assert [(b.quantity, b.entry_price) for b in opened if isinstance(b, PositionOpened)] == [
        (1.0, 100.0),
        (3.0, 120.0),
    ]


def test_restore_takes_back_positions_and_pnl() -> None:
    paper, emitted = _paper()
    paper.restore(
        [
            OpenPosition("ETH-BTC", "long", 2.0, 100.0, 0.2, 1_000),
            OpenPosition("LTC-BTC", "short", 5.0, 0.02, 0.0001, 2_000),
        ],
        realized_pnl=3.5,
    )
    assert emitted == []
    assert paper.realized_pnl == 3.5
    assert paper.positions["ETH-BTC"] == Position("ETH-BTC", "long", 2.0, 100.0, 0.2, 1_000)
    assert paper.positions["LTC-BTC"] == Position("LTC-BTC", "short", 5.0, 0.02, 0.0001, 2_000)

    paper.submit("ETH-BTC", "sell", 2.0, "")
    paper.on_candle(_candle(110.0, 1))
    (closed,) = _only(emitted, PositionClosed)
    assert isinstance(closed, PositionClosed)
    assert closed.opened_at == 1_000
    assert closed.entry_price == 100.0
    assert closed.realized_pnl == pytest.approx(20.0 - 0.2 - 2.0 * 110.0 * RATE, rel=1e-12)
    assert paper.realized_pnl == pytest.approx(3.5 + closed.realized_pnl, rel=1e-12)
    assert "ETH-BTC" not in paper.positions
    assert "LTC-BTC" in paper.positions
