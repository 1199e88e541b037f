"""RiskGate: the worker's side of the pre-trade check, without the socket.

The container asks it before an order that opens a position goes to execution; orders that
close or reduce one are never asked about. It estimates the order's value in quote currency
(units times the symbol's last close, or the equity fraction times the free cash for an
order sized at its fill) and hands the question to ``ask`` (the worker's risk client, which
answers "" to allow, else the reason, "risk service unavailable" when no answer came in time).
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.messages import Candle, Side

__all__ = ["Ask", "RiskGate"]

# (order_id, symbol, side, notional, price) -> "" (allowed) or why not
Ask = Callable[[str, str, Side, float, float], str]


class RiskGate:
    """Prices seen, and the question asked for each opening order."""

    def __init__(self, ask: Ask) -> None:
        self._ask = ask
        self.prices: dict[str, float] = {}
        self.asked = 0
        self.refused = 0

    def seen(self, candle: Candle) -> None:
        """A candle closed: its close is the symbol's price for what follows."""
        self.prices[candle.symbol] = candle.close

    def check(self, order_id: str, symbol: str, side: Side, quantity: float, cash: float) -> str:
        """ "" if the order may go out (it is reserved), else why not.

        ``cash`` > 0: the order is sized at its fill and will use about that much.
        """
        price = self.prices.get(symbol, 0.0)
        notional = cash if cash > 0.0 else quantity * price
        self.asked += 1
        if notional <= 0.0:
            self.refused += 1
            return f"risk: no price known for {symbol} yet"
        reason = self._ask(order_id, symbol, side, notional, price)
        if reason:
            self.refused += 1
        return reason
