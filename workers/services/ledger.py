"""LedgerService: one strategy's sub-account (cash, positions' value, PnL, fees, equity).

Cash and realized PnL are booked by the position lifecycle at every fill (an entry takes its
fee off the cash; a close adds the gross PnL and takes the exit fee off). The ledger adds
what the account needs on top: the allocation, the fees paid, the trades closed, the open
positions at their marks, and the peak and drawdown of its equity curve.

The curve is the ledger's *points* (``AccountUpdated`` events), not every candle: a point
after each decision candle that brought a fill, and one at each candle that opens a period
of ``every_ms`` (candle time, so a replay gives the same points however often it is
interrupted) while positions are held. Peak and drawdown are measured on these points. The
journal holds them; a restarted worker takes the last one back (:meth:`restore`) and goes on
from the very same floats.
"""

from __future__ import annotations

from typing import Literal

from runtime.messages import AccountUpdated, OrderFilled
from workers.services.positions import ManagedPosition, PositionLifecycleService, PositionState

__all__ = ["LedgerService", "PointReason"]

PointReason = Literal["start", "fill", "mark", "capital"]

_CLOSED = PositionState.CLOSED


class LedgerService:
    """The sub-account of one strategy, fed by its fills and its positions' marks."""

    def __init__(self, positions: PositionLifecycleService, capital: float, every_ms: int) -> None:
        self.positions = positions
        self.capital = capital
        self.every_ms = every_ms
        self.fees = 0.0
        self.trades = 0
        self.peak_equity = capital
        self.max_drawdown = 0.0
        self.last_at = -1  # open time of the candle of the last point
        self.dirty = False  # a fill was booked since the last point

    @property
    def cash(self) -> float:
        return self.positions.cash

    @property
    def realized_pnl(self) -> float:
        return self.positions.realized_pnl

    def on_fill(self, fill: OrderFilled, position: ManagedPosition | None) -> None:
        """Book the fee of a fill the position lifecycle applied (``position``: what it moved;
        None for an order it did not know, which changed nothing)."""
        if position is None:
            return
        self.fees += fill.fee
        if position.state is _CLOSED:
            self.trades += 1
        self.dirty = True

    def due(self, open_time: int) -> bool:
        """Whether a point is due after the decision candle opened at ``open_time``."""
        if self.dirty:
            return True
        return (
            open_time % self.every_ms == 0
            and open_time > self.last_at
            and bool(self.positions.held())
        )

    def equity(self) -> float:
        """Cash plus the open positions' gross PnL at their last marks (no point taken)."""
        equity = self.positions.cash
        for p in self.positions.held():
            equity += (p.last_price - p.entry_price) * p.quantity * p.direction
        return equity

    def point(self, at: int, reason: PointReason | None = None) -> AccountUpdated:
        """Take a point of the curve after the candle opened at ``at``: the figures now, the
        peak and drawdown moved on. ``reason`` defaults to ``fill`` or ``mark``."""
        cash = self.positions.cash
        equity = cash
        exposure = 0.0
        unrealized = 0.0
        for p in self.positions.held():
            gross = (p.last_price - p.entry_price) * p.quantity * p.direction
            equity += gross
            exposure += p.quantity * p.last_price
            unrealized += gross - p.entry_fee
        if equity > self.peak_equity:
            self.peak_equity = equity
        drawdown = self.peak_equity - equity
        if drawdown > self.max_drawdown:
            self.max_drawdown = drawdown
        why: PointReason = reason or ("fill" if self.dirty else "mark")
        self.last_at = at
        self.dirty = False
        return AccountUpdated(
            self.capital,
            cash,
            exposure,
            self.positions.realized_pnl,
            unrealized,
            self.fees,
            equity,
            self.peak_equity,
            self.max_drawdown,
            self.trades,
            at,
            why,
        )

    def restore(self, last: AccountUpdated | None) -> PointReason | None:
        """Take back the last journaled point (after a restart; the positions are restored
        already). Returns the reason of a point due now: ``start`` when there was none,
        ``capital`` when the allocation in the config changed (the difference moves into or
        out of the cash, like a deposit or a withdrawal), else None."""
        if last is None:
            return "start"
        self.positions.cash = last.cash
        self.fees = last.fees
        self.trades = last.trades
        self.peak_equity = last.peak_equity
        self.max_drawdown = last.max_drawdown
        self.last_at = last.at
        if last.capital != self.capital:
            moved = self.capital - last.capital
            self.positions.cash += moved
            self.peak_equity += moved
            return "capital"
        return None
