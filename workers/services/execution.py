"""Paper execution: market orders fill at the next candle's open, with fees and slippage.

It only turns orders into fills; positions are the lifecycle service's business.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from runtime.messages import Candle, EventBody, OrderFilled, OrderSubmitted, Side

__all__ = ["PaperExecution"]


class _Order(NamedTuple):  # a NamedTuple: built faster than a frozen dataclass
    order_id: str
    symbol: str
    side: Side
    quantity: float


class PaperExecution:
    """Simulated fills for one strategy.

    An order sent while candle *i* is in hand fills at candle *i+1*'s open of the same symbol
    and timeframe, moved against the trader by ``slippage_bps``; the fee is ``fee_bps`` of the
    traded value. Orders fill in the order they were sent.
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
        self._pending: list[_Order] = []

    def submit(self, symbol: str, side: Side, quantity: float, reason: str) -> str:
        """Queue a market order; returns its id ``<strategy_id>-<n>``."""
        order_id = f"{self._strategy_id}-{self._next_order_number}"
        self._next_order_number += 1
        self._pending.append(_Order(order_id, symbol, side, quantity))
        self._emit(OrderSubmitted(order_id, symbol, side, quantity, reason))
        return order_id

    def restore(self, order_id: str, symbol: str, side: Side, quantity: float) -> None:
        """Take back an order the journal saw submitted and not filled (after a restart)."""
        self._pending.append(_Order(order_id, symbol, side, quantity))

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def on_candle(self, candle: Candle) -> list[OrderFilled]:
        """Fill the orders pending on the candle's symbol at its open; returns the fills."""
        if not self._pending:
            return []
        fills: list[OrderFilled] = []
        waiting: list[_Order] = []
        for order in self._pending:
            if order.symbol != candle.symbol:
                waiting.append(order)
                continue
            sign = 1.0 if order.side == "buy" else -1.0
            price = candle.open * (1.0 + sign * self._slippage_rate)
            fee = order.quantity * price * self._fee_rate
            fill = OrderFilled(
                order.order_id,
                order.symbol,
                order.side,
                order.quantity,
                price,
                fee,
                candle.open_time,
            )
            self._emit(fill)
            fills.append(fill)
        self._pending = waiting
        return fills
