"""Paper execution: market orders fill at the next candle's open, with fees and slippage.

It only turns orders into fills; positions are the lifecycle service's business. Live paper
trading and the backtest use this same model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol

from runtime.messages import Candle, EventBody, OrderFilled, OrderRejected, OrderSubmitted, Side
from runtime.order_ids import client_order_id

__all__ = ["Account", "PaperExecution"]


class Account(Protocol):
    """What sizing at the fill needs to know about the strategy's money."""

    def free_cash(self) -> float:
        """Equity not tied up in open positions (their value at the last close)."""
        ...

    def entry_rejected(self, order_id: str) -> None:
        """An entry order could not be filled: forget its pending position."""
        ...


class _Order(NamedTuple):  # a NamedTuple: built faster than a frozen dataclass
    order_id: str
    symbol: str
    side: Side
    quantity: float
    fraction: float = 0.0  # > 0: sized at the fill, this fraction of the free cash


class PaperExecution:
    """Simulated fills for one strategy.

    An order sent while candle *i* is in hand fills at candle *i+1*'s open of the same symbol
    and timeframe, moved against the trader by ``slippage_bps``; the fee is ``fee_bps`` of the
    traded value. Orders fill in the order they were sent, each one applied (by whoever
    iterates :meth:`on_candle`) before the next is sized: a reversal's close frees the cash
    its entry then uses.

    An order sent with a ``fraction`` is sized at its fill: that fraction of the account's
    free cash, divided by the fill price plus the fee per unit, rounded down to whole units
    when ``whole_units``. When not even one unit (or nothing) can be bought it is rejected.
    """

    def __init__(
        self,
        strategy_id: str,
        fee_bps: float,
        slippage_bps: float,
        emit: Callable[[EventBody], None],
        first_order_number: int = 1,
        account: Account | None = None,
        whole_units: bool = True,
    ) -> None:
        self._strategy_id = strategy_id
        self._fee_rate = fee_bps / 10_000.0
        self._slippage_rate = slippage_bps / 10_000.0
        self._emit = emit
        self._next_order_number = first_order_number
        # Orders waiting for a candle, oldest first: always this one list, changed in place;
        # ``waiting`` is the same list, read-only, for the runner to skip on_candle() calls.
        self._pending: list[_Order] = []
        self.waiting: Sequence[_Order] = self._pending
        self._account = account
        self._whole_units = whole_units

    def submit(
        self, symbol: str, side: Side, quantity: float, reason: str, fraction: float = 0.0
    ) -> str:
        """Queue a market order; returns its id ``<strategy_id>-<n>``.

        With ``fraction`` > 0 (an account is needed) ``quantity`` is ignored: the order is
        sized at its fill.
        """
        order_id = client_order_id(self._strategy_id, self._next_order_number)
        self._next_order_number += 1
        if fraction > 0.0:
            if self._account is None:
                raise ValueError("an order sized by equity needs an account")
            self._pending.append(_Order(order_id, symbol, side, 0.0, fraction))
            self._emit(OrderSubmitted(order_id, symbol, side, fraction, reason, "equity"))
        else:
            self._pending.append(_Order(order_id, symbol, side, quantity))
            self._emit(OrderSubmitted(order_id, symbol, side, quantity, reason))
        return order_id

    @property
    def next_order_id(self) -> str:
        """The id the next order will carry (a pre-trade check is asked about it first)."""
        return client_order_id(self._strategy_id, self._next_order_number)

    def refuse(self, symbol: str, side: Side, quantity: float, reason: str) -> str:
        """An order refused before it was sent (the risk gate): it takes the next id and is
        reported as rejected; returns that id."""
        order_id = self.next_order_id
        self._next_order_number += 1
        self._emit(OrderRejected(order_id, symbol, side, quantity, reason))
        return order_id

    def cancel(self, order_id: str) -> bool:
        """Withdraw a pending order (the kill switch); True if it was pending."""
        kept = [o for o in self._pending if o.order_id != order_id]
        found = len(kept) != len(self._pending)
        self._pending[:] = kept
        return found

    def restore(
        self, order_id: str, symbol: str, side: Side, quantity: float, fraction: float = 0.0
    ) -> None:
        """Take back an order the journal saw submitted and not filled (after a restart);
        ``fraction`` > 0: it is sized at its fill, as :meth:`submit` says."""
        self._pending.append(_Order(order_id, symbol, side, quantity, fraction))

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def on_candle(self, candle: Candle) -> Iterable[OrderFilled]:
        """Fill the orders pending on the candle's symbol at its open, one by one.

        Apply each fill before taking the next one from the iterator: an order sized at its
        fill is sized on what the fills before it left.
        """
        if not self._pending:
            return ()
        return self._fill(candle)

    def _fill(self, candle: Candle) -> Iterator[OrderFilled]:
        orders = self._pending[:]
        self._pending.clear()
        waiting: list[_Order] = []
        symbol, open_, at = candle.symbol, candle.open, candle.open_time
        slippage = self._slippage_rate
        for order in orders:
            order_id, order_symbol, side, quantity, fraction = order
            if order_symbol != symbol:
                waiting.append(order)
                continue
            if slippage:
                price = open_ * (1.0 + (slippage if side == "buy" else -slippage))
            else:
                price = open_  # what open * (1.0 + 0.0) is, to the last bit
            if fraction:
                quantity = self._size(order, price)
                if quantity <= 0.0:
                    continue
            fee = quantity * price * self._fee_rate
            fill = OrderFilled(order_id, symbol, side, quantity, price, fee, at)
            self._emit(fill)
            yield fill
        self._pending[:0] = waiting  # orders sent meanwhile come after

    def _size(self, order: _Order, price: float) -> float:
        """Units an equity-sized order buys at ``price``; 0 (and rejected) if none."""
        account = self._account
        assert account is not None
        per_unit = price + price * self._fee_rate
        budget = account.free_cash() * order.fraction
        quantity = float(budget // per_unit) if self._whole_units else budget / per_unit
        if quantity <= 0.0:
            self._emit(
                OrderRejected(
                    order.order_id,
                    order.symbol,
                    order.side,
                    0.0,
                    f"insufficient cash: {budget:.2f} buys no unit at {price:.8g}",
                )
            )
            account.entry_rejected(order.order_id)
            return 0.0
        return quantity
