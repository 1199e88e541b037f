"""Client order ids: which strategy owns an order, readable by people and exchanges alike.

Format: ``<strategy_id>-<n>``, ``n`` the strategy's order counter in decimal, from the
journal's last event seq + 1 at each start (so it only grows, across restarts too).
Strategy ids are at most 24 characters of ``[A-Za-z0-9_.-]``, so an id stays within 36
characters (Binance's and Bybit's client-order-id limit) up to 10^11 orders per strategy.
"""

from __future__ import annotations

__all__ = ["MAX_CLIENT_ORDER_ID", "MAX_STRATEGY_ID", "client_order_id", "owner_of"]

MAX_STRATEGY_ID = 24
MAX_CLIENT_ORDER_ID = 36


def client_order_id(strategy_id: str, n: int) -> str:
    """The client id of the strategy's ``n``-th order."""
    return f"{strategy_id}-{n}"


def owner_of(order_id: str) -> tuple[str, int]:
    """``(strategy_id, n)`` of a client order id; ValueError if it is not one of ours."""
    strategy_id, sep, number = order_id.rpartition("-")
    if not sep or not strategy_id or not number.isdigit():
        raise ValueError(f"{order_id!r} is not a stratrun client order id")
    return strategy_id, int(number)
