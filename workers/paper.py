"""Paper execution: market orders fill at the next candle's open, with fees and slippage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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

__all__ = ["PaperExecution", "Position"]

_EPSILON = 1e-12


@dataclass(slots=True)
class Position:
    """One net position on one symbol, owned by the execution model."""

    symbol: str
    side: PositionSide
    quantity: float
    entry_price: float
    entry_fee: float
    opened_at: int


@dataclass(slots=True)
class _PendingOrder:
    order_id: str
    symbol: str
    side: Side
    quantity: float


class PaperExecution:
    """Simulated fills for one strategy.

    An order submitted while candle *i* is in hand fills at candle *i+1*'s open of the same
    symbol, moved against the trader by ``slippage_bps``; the fee is ``fee_bps`` of the traded
    value. Positions are netted per symbol: an opposite fill closes (all or part) first and
    opens the remainder the other way.
    """

    def __init__(
        self,
        strategy_id: str,
        fee_bps: float,
        slippage_bps: float,
        emit: Callable[[EventBody], None],
        first_order_number: int = 1,
    ) -> None:
        self._strategy_id = strategy_id
        self._fee_rate = fee_bps / 10_000.0
        self._slippage_rate = slippage_bps / 10_000.0
        self._emit = emit
        self._next_order_number = first_order_number
        self._pending: list[_PendingOrder] = []
        self.positions: dict[str, Position] = {}
        self.realized_pnl = 0.0

    def restore(self, positions: list[OpenPosition], realized_pnl: float) -> None:
        """Take back the open positions and realized PnL that the journal holds."""
        self.realized_pnl = realized_pnl
        for p in positions:
            self.positions[p.symbol] = Position(
                p.symbol, p.side, p.quantity, p.entry_price, p.entry_fee, p.opened_at
            )

    def submit(self, symbol: str, side: Side, quantity: float, reason: str) -> str:
        """Queue a market order; returns its id ``<strategy_id>-<n>``."""
        order_id = f"{self._strategy_id}-{self._next_order_number}"
        self._next_order_number += 1
        self._pending.append(_PendingOrder(order_id, symbol, side, quantity))
        self._emit(OrderSubmitted(order_id, symbol, side, quantity, reason))
        return order_id

    def pending_quantity(self, symbol: str) -> float:
        """Signed quantity of orders on ``symbol`` not yet filled (buy positive)."""
        return sum(
            o.quantity if o.side == "buy" else -o.quantity
            for o in self._pending
            if o.symbol == symbol
        )

    def on_candle(self, candle: Candle) -> list[OrderFilled]:
        """Fill the orders pending on the candle's symbol at its open; returns the fills."""
        if not self._pending:
            return []
        fills: list[OrderFilled] = []
        still_pending: list[_PendingOrder] = []
        for order in self._pending:
            if order.symbol != candle.symbol:
                still_pending.append(order)
                continue
            fills.append(self._fill(order, candle))
        self._pending = still_pending
        return fills

    def _fill(self, order: _PendingOrder, candle: Candle) -> OrderFilled:
        sign = 1.0 if order.side == "buy" else -1.0
        price = candle.open * (1.0 + sign * self._slippage_rate)
        fee = order.quantity * price * self._fee_rate
        fill = OrderFilled(
            order.order_id, order.symbol, order.side, order.quantity, price, fee, candle.open_time
        )
        self._emit(fill)
        self._apply(order.symbol, order.side, order.quantity, price, fee, candle.open_time)
        return fill

    def _apply(
        self, symbol: str, side: Side, quantity: float, price: float, fee: float, when: int
    ) -> None:
        position_side: PositionSide = "long" if side == "buy" else "short"
        pos = self.positions.get(symbol)
        if pos is not None and pos.side != position_side:
            closed = min(quantity, pos.quantity)
            self._close(pos, closed, price, fee * closed / quantity, when)
            fee -= fee * closed / quantity
            quantity -= closed
            pos = self.positions.get(symbol)
        if quantity <= _EPSILON:
            return
        if pos is None:
            self.positions[symbol] = Position(symbol, position_side, quantity, price, fee, when)
        else:
            total = pos.quantity + quantity
            pos.entry_price = (pos.entry_price * pos.quantity + price * quantity) / total
            pos.quantity = total
            pos.entry_fee += fee
        self._emit(PositionOpened(symbol, position_side, quantity, price, fee, when))

    def _close(
        self, pos: Position, quantity: float, price: float, exit_fee: float, when: int
    ) -> None:
        share = quantity / pos.quantity
        entry_fee = pos.entry_fee * share
        direction = 1.0 if pos.side == "long" else -1.0
        gross = (price - pos.entry_price) * quantity * direction
        pnl = gross - entry_fee - exit_fee
        self.realized_pnl += pnl
        self._emit(
            PositionClosed(
                pos.symbol,
                pos.side,
                quantity,
                pos.entry_price,
                price,
                entry_fee + exit_fee,
                pnl,
                pos.opened_at,
                when,
            )
        )
        pos.quantity -= quantity
        pos.entry_fee -= entry_fee
        if pos.quantity <= _EPSILON:
            del self.positions[pos.symbol]
