"""PositionLifecycleService: every position of one strategy, pending to closed.

States: ``pending`` (entry order sent) -> ``open`` (entry filled) -> ``closing`` (exit order
sent) -> ``closed`` (exit filled). Any other transition raises. Fills drive the transitions;
marks (every candle of the position's symbol) drive unrealized PnL and MAE/MFE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from runtime.messages import (
    EventBody,
    OpenPosition,
    OrderFilled,
    PositionClosed,
    PositionOpened,
    PositionSide,
)
from workers.indicators import Bar

__all__ = ["LifecycleError", "ManagedPosition", "PositionLifecycleService", "PositionState"]


class PositionState(Enum):
    PENDING = "pending"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# The members as module constants: ``PositionState.OPEN`` is a lookup through the enum's
# metaclass (~0.2 us on Python 3.11), and states are compared on every candle.
_PENDING = PositionState.PENDING
_OPEN = PositionState.OPEN
_CLOSING = PositionState.CLOSING
_CLOSED = PositionState.CLOSED

# A tuple, not a set: membership then compares the members by identity instead of hashing
# them (an enum member's hash is a Python-level call).
_ALLOWED = (
    (_PENDING, _OPEN),
    (_OPEN, _CLOSING),
    (_CLOSING, _CLOSED),
)


class LifecycleError(Exception):
    """A transition the lifecycle does not allow (a bug in whoever asked for it)."""


@dataclass(slots=True)
class ManagedPosition:
    """One position and everything known about it so far."""

    symbol: str
    side: PositionSide
    quantity: float
    state: PositionState = PositionState.PENDING
    entry_order_id: str = ""
    exit_order_id: str = ""
    entry_price: float = 0.0
    entry_fee: float = 0.0
    opened_at: int = 0
    exit_price: float = 0.0
    exit_fee: float = 0.0
    closed_at: int = 0
    exit_reason: str = ""
    candles_held: int = 0
    last_price: float = 0.0
    best_price: float = 0.0  # most favourable price seen while open
    worst_price: float = 0.0  # most adverse price seen while open
    realized_pnl: float = 0.0

    @property
    def direction(self) -> float:
        return 1.0 if self.side == "long" else -1.0

    @property
    def unrealized_pnl(self) -> float:
        """Mark-to-market PnL of an open position, net of the entry fee already paid."""
        if self.state is not _OPEN and self.state is not _CLOSING:
            return 0.0
        gross = (self.last_price - self.entry_price) * self.quantity * self.direction
        return gross - self.entry_fee

    @property
    def mae(self) -> float:
        """Maximum adverse excursion in quote currency (zero or negative)."""
        if not self.entry_price:
            return 0.0
        return min(0.0, (self.worst_price - self.entry_price) * self.quantity * self.direction)

    @property
    def mfe(self) -> float:
        """Maximum favourable excursion in quote currency (zero or positive)."""
        if not self.entry_price:
            return 0.0
        return max(0.0, (self.best_price - self.entry_price) * self.quantity * self.direction)

    def move(self, state: PositionState) -> None:
        if (self.state, state) not in _ALLOWED:
            raise LifecycleError(f"{self.symbol}: {self.state.value} -> {state.value}")
        self.state = state


class PositionLifecycleService:
    """Positions of one strategy, at most one active (pending or open) per symbol."""

    def __init__(self, emit: Callable[[EventBody], None], cash: float = 0.0) -> None:
        self._emit = emit
        self.initial_cash = cash
        self.cash = cash  # less entry fees when opened, plus gross PnL less exit fees when closed
        # Bumped whenever the cash or what is held (open or closing) changes: whoever follows
        # the equity candle by candle only looks again when it moved.
        self.changes = 0
        self._active: dict[str, ManagedPosition] = {}  # pending or open, by symbol
        self._closing: dict[str, ManagedPosition] = {}  # by exit order id
        self._pending: dict[str, ManagedPosition] = {}  # by entry order id
        # Only the last closed position of each symbol is kept: what rules look back at. A
        # list of every one would grow for as long as the worker trades.
        self.last_closed_by_symbol: dict[str, ManagedPosition] = {}
        self.realized_pnl = 0.0

    # -- queries -------------------------------------------------------------------

    def active(self, symbol: str) -> ManagedPosition | None:
        """The pending or open position on ``symbol``."""
        return self._active.get(symbol)

    def last_closed(self, symbol: str) -> ManagedPosition | None:
        """The most recently closed position on ``symbol``."""
        return self.last_closed_by_symbol.get(symbol)

    def open_positions(self) -> list[ManagedPosition]:
        return [p for p in self._active.values() if p.state is _OPEN]

    def held(self) -> list[ManagedPosition]:
        """Positions holding exposure (open, and closing), by symbol then opening time: an
        order that does not depend on how they came back after a restart."""
        held = [*self.open_positions(), *self._closing.values()]
        if len(held) > 1:
            held.sort(key=lambda p: (p.symbol, p.opened_at))
        return held

    @property
    def open_count(self) -> int:
        """Positions holding exposure: open ones and those still closing."""
        return len(self.open_positions()) + len(self._closing)

    @property
    def exposure_count(self) -> int:
        """Positions that hold or will hold exposure: pending entries, open, still closing."""
        return len(self._active) + len(self._closing)

    def held_in_equity_order(self) -> list[ManagedPosition]:
        """Positions holding exposure, in the order :meth:`equity` adds them (the open ones,
        then those still closing): a sum over them repeats its floats exactly."""
        held = [p for p in self._active.values() if p.state is _OPEN]  # open_positions()
        if self._closing:
            held.extend(self._closing.values())
        return held

    @property
    def unrealized_pnl(self) -> float:
        return sum(p.unrealized_pnl for p in self.held_in_equity_order())

    def equity(self) -> float:
        """Cash plus the open positions marked at their last price."""
        equity = self.cash
        if self._active:
            for p in self._active.values():
                if p.state is _OPEN:
                    gross = (p.last_price - p.entry_price) * p.quantity
                    equity += gross if p.side == "long" else -gross
        if self._closing:
            for p in self._closing.values():
                equity += (p.last_price - p.entry_price) * p.quantity * p.direction
        return equity

    def free_cash(self) -> float:
        """Equity less the value of the open positions at their last price (never below 0)."""
        free = self.equity()
        for p in self._active.values():
            if p.state is _OPEN:
                free -= p.quantity * p.last_price
        for p in self._closing.values():
            free -= p.quantity * p.last_price
        return max(0.0, free)

    # -- transitions ---------------------------------------------------------------

    def entry_sent(self, symbol: str, side: PositionSide, quantity: float, order_id: str) -> None:
        """An entry order went out: a pending position exists from now on."""
        if symbol in self._active:
            raise LifecycleError(f"{symbol}: a position is already {self._active[symbol].state}")
        position = ManagedPosition(symbol, side, quantity, entry_order_id=order_id)
        self._active[symbol] = position
        self._pending[order_id] = position

    def exit_sent(self, symbol: str, order_id: str, reason: str) -> ManagedPosition:
        """An exit order went out for the open position on ``symbol``."""
        position = self._active.get(symbol)
        if position is None:
            raise LifecycleError(f"{symbol}: no position to close")
        if position.state is not _OPEN:
            position.move(_CLOSING)  # raises: only an open position closes
        position.state = _CLOSING
        self.changes += 1  # it moves from the open positions to the closing ones
        position.exit_order_id = order_id
        position.exit_reason = reason
        del self._active[symbol]
        self._closing[order_id] = position
        return position

    def entry_rejected(self, order_id: str) -> None:
        """The entry order ``order_id`` was rejected: its pending position never opens."""
        position = self._pending.pop(order_id, None)
        if position is not None and self._active.get(position.symbol) is position:
            del self._active[position.symbol]

    def on_fill(self, fill: OrderFilled) -> ManagedPosition | None:
        """Apply a fill of one of our orders; returns the position it moved."""
        if (position := self._pending.pop(fill.order_id, None)) is not None:
            if position.state is not _PENDING:
                position.move(_OPEN)  # raises
            position.state = _OPEN
            self.changes += 1
            position.quantity = fill.quantity  # set at the fill when sized by equity
            self.cash -= fill.fee
            position.entry_price = position.last_price = fill.price
            position.best_price = position.worst_price = fill.price
            position.entry_fee = fill.fee
            position.opened_at = fill.fill_time
            self._emit(
                PositionOpened(
                    position.symbol,
                    position.side,
                    position.quantity,
                    fill.price,
                    fill.fee,
                    fill.fill_time,
                )
            )
            return position
        if (position := self._closing.pop(fill.order_id, None)) is not None:
            self.changes += 1
            self._close(position, fill)
            return position
        return None

    def pending_entries(self) -> list[ManagedPosition]:
        """Positions whose entry order is sent and not filled yet."""
        return list(self._pending.values())

    def cancel_entry(self, order_id: str) -> None:
        """The entry order ``order_id`` was withdrawn: the pending position is gone."""
        position = self._pending.pop(order_id)
        if self._active.get(position.symbol) is position:
            del self._active[position.symbol]

    def mark(self, bar: Bar, symbol: str) -> None:
        """A candle of ``symbol`` closed: update the price, excursions and age of its position."""
        active = self._active.get(symbol)
        if not self._closing:  # the common case, on every candle: at most one position
            if active is not None and active.state is _OPEN:  # _mark_one(), written out
                active.last_price = bar.close
                active.candles_held += 1
                if active.side == "long":
                    if bar.high > active.best_price:
                        active.best_price = bar.high
                    if bar.low < active.worst_price:
                        active.worst_price = bar.low
                else:
                    if bar.low < active.best_price:
                        active.best_price = bar.low
                    if bar.high > active.worst_price:
                        active.worst_price = bar.high
            return
        for position in (active, *self._closing.values()):
            if position is None or position.symbol != symbol:
                continue
            state = position.state
            if state is not _OPEN and state is not _CLOSING:
                continue
            _mark_one(position, bar)

    def mark_held_since(self, bar: Bar, symbol: str, open_time: int) -> None:
        """Mark only the positions already open at ``open_time``: a restarted strategy,
        replaying candles from before its cursor, rebuilds the excursions of what it holds."""
        active = self._active.get(symbol)
        for position in (active, *self._closing.values()):
            if position is None or position.symbol != symbol or position.opened_at > open_time:
                continue
            if position.state is _OPEN or position.state is _CLOSING:
                _mark_one(position, bar)

    def restore(
        self,
        positions: list[OpenPosition],
        realized_pnl: float,
        last_closed: Sequence[PositionClosed] = (),
    ) -> None:
        """Take back the open positions the journal holds (after a restart), and the last
        closed one of each symbol (what :meth:`last_closed` answers)."""
        self.changes += 1
        self.realized_pnl = realized_pnl
        self.cash = self.initial_cash + realized_pnl - sum(p.entry_fee for p in positions)
        for c in last_closed:
            self.last_closed_by_symbol[c.symbol] = ManagedPosition(
                c.symbol,
                c.side,
                c.quantity,
                state=_CLOSED,
                entry_price=c.entry_price,
                opened_at=c.opened_at,
                exit_price=c.exit_price,
                closed_at=c.closed_at,
                exit_reason=c.reason,
                realized_pnl=c.realized_pnl,
            )
        for p in positions:
            self._active[p.symbol] = ManagedPosition(
                p.symbol,
                p.side,
                p.quantity,
                state=_OPEN,
                entry_price=p.entry_price,
                entry_fee=p.entry_fee,
                opened_at=p.opened_at,
                last_price=p.entry_price,
                best_price=p.entry_price,
                worst_price=p.entry_price,
            )

    def _close(self, position: ManagedPosition, fill: OrderFilled) -> None:
        if position.state is not _CLOSING:
            position.move(_CLOSED)  # raises
        position.state = _CLOSED
        price, fee = fill.price, fill.fee
        position.exit_price = price
        position.exit_fee = fee
        position.closed_at = fill.fill_time
        position.last_price = price
        entry, quantity = position.entry_price, position.quantity
        direction = 1.0 if position.side == "long" else -1.0
        gross = (price - entry) * quantity * direction
        position.realized_pnl = pnl = gross - position.entry_fee - fee
        self.cash += gross - fee
        self.realized_pnl += pnl
        self.last_closed_by_symbol[position.symbol] = position
        # ManagedPosition.mae and .mfe written out (the same operations, so the same values).
        if entry:
            mae = min(0.0, (position.worst_price - entry) * quantity * direction)
            mfe = max(0.0, (position.best_price - entry) * quantity * direction)
        else:
            mae = mfe = 0.0
        self._emit(
            PositionClosed(
                position.symbol,
                position.side,
                quantity,
                entry,
                price,
                position.entry_fee + fee,
                pnl,
                position.opened_at,
                fill.fill_time,
                position.exit_reason,
                mae,
                mfe,
            )
        )


def _mark_one(position: ManagedPosition, bar: Bar) -> None:
    position.last_price = bar.close
    position.candles_held += 1
    high, low = bar.high, bar.low
    # max() and min() written out: each keeps the first of equals, as these do.
    if position.side == "long":
        if high > position.best_price:
            position.best_price = high
        if low < position.worst_price:
            position.worst_price = low
    else:
        if low < position.best_price:
            position.best_price = low
        if high > position.worst_price:
            position.worst_price = high
