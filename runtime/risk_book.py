"""The reservation book of the risk gate: exposure held and reserved, across strategies.

Pure logic, no sockets: the risk service asks :meth:`RiskBook.check` for every opening order
and feeds :meth:`RiskBook.apply` every journaled event, in the order the figures see them.

- **Held**: per symbol and strategy, the signed units every fill leaves (buy +, sell -),
  valued at the symbol's *mark*: the last price heard (a worker's last close in a check, or
  a fill price).
- **Reserved**: an opening order allowed by :meth:`check` and not yet filled or rejected,
  valued at the notional the worker estimated. Its fill converts it into held units in the
  same step (one event), so nothing is counted twice or left out in between; its rejection
  releases it.
- **Exposure**: per symbol, the gross value of held plus reserved over every strategy;
  *gross* sums that over symbols; *net* is the absolute signed sum (long minus short).
- **Daily PnL**: realized PnL of positions closed since 00:00 UTC of *candle time* (the day
  of the latest fill or close seen, so a replay decides the same way), plus the unrealized
  PnL each strategy last reported. Reaching ``-max_daily_loss`` trips the book once that day.

Rebuilt after a restart by replaying the journal through :meth:`apply`: fills give what is
held; an ``order_submitted`` with no reservation (sent before the restart) that opens or adds
to a position is reserved at units times the mark, or, sized by equity (its size is set at
the fill), at the largest configured limit until it fills.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from runtime.messages import (
    Event,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
    Side,
    Stats,
)
from runtime.risk_config import RiskConfig
from runtime.risk_messages import RiskCheck

__all__ = ["REASONS", "Refusal", "RiskBook"]

_DAY_MS = 86_400_000
_EPSILON = 1e-12
_TOMBSTONES = 10_000

# Why an order is refused: the codes metrics count by (a bounded set).
REASONS = (
    "halted",
    "daily_loss",
    "open_orders",
    "symbol",
    "gross",
    "net",
    "duplicate",
    "starting",
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a check failed: ``code`` (one of :data:`REASONS`) and a sentence for the event."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Reservation:
    strategy_id: str
    symbol: str
    sign: float  # +1 buy, -1 sell
    notional: float


def _sign(side: Side) -> float:
    return 1.0 if side == "buy" else -1.0


class RiskBook:
    """Held and reserved exposure of every strategy, and the day's PnL."""

    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self.held: dict[str, dict[str, float]] = {}  # symbol -> strategy -> signed units
        self.reserved: dict[str, _Reservation] = {}  # by order id
        # Running sums of ``reserved`` (a check costs the same with many orders pending).
        self._reserved_on: dict[str, float] = {}  # by symbol
        self._reserved_gross = 0.0
        self._reserved_net = 0.0
        self.marks: dict[str, float] = {}
        self._tombstones: set[str] = set()  # orders rejected before their check was seen
        self._tombstone_order: deque[str] = deque()
        self.day = -1  # days since the epoch, of candle time
        self.realized_today = 0.0
        self.unrealized: dict[str, float] = {}
        self.tripped_day = -1  # the day the loss limit last engaged the kill switch
        self.trip_pending = False  # tripped, the kill switch not yet confirmed on
        self.halted = False  # the kill switch is on (the service watches its file)
        self.live = False  # False while the journal is replayed at start: decide nothing
        self.replayed = 0  # events folded in before going live
        limits = [
            config.max_symbol_exposure,
            config.max_gross_exposure,
            config.max_net_exposure,
        ]
        self._unknown_notional = max((x for x in limits if x is not None), default=0.0)

    # -- the check ---------------------------------------------------------------------

    def check(self, request: RiskCheck) -> Refusal | None:
        """Allow and reserve ``request``, or say why not (nothing reserved then)."""
        cfg = self.config
        if self.trip_pending:
            return Refusal("daily_loss", "risk: daily loss limit: trading halted")
        if self.halted:
            return Refusal("halted", "risk: trading halted (kill switch on)")
        if request.order_id in self.reserved or request.order_id in self._tombstones:
            return Refusal("duplicate", f"risk: order {request.order_id} already decided")
        if cfg.max_daily_loss is not None and self.tripped_day != self.day:
            pnl = self.daily_pnl()
            if pnl <= -cfg.max_daily_loss:  # not tripped yet (replayed, or an old day)
                return Refusal("daily_loss", f"risk: daily loss {-pnl:.8g} reached the limit")
        if cfg.max_open_orders is not None and len(self.reserved) >= cfg.max_open_orders:
            count, limit = len(self.reserved), cfg.max_open_orders
            return Refusal("open_orders", f"risk: {count} open orders, limit {limit}")
        symbol, notional = request.symbol, request.notional
        if request.price > 0.0:
            self.marks[symbol] = request.price
        if cfg.max_symbol_exposure is not None:
            now = self.symbol_exposure(symbol)
            if now + notional > cfg.max_symbol_exposure + _EPSILON:
                return Refusal(
                    "symbol",
                    f"risk: symbol limit: {symbol} exposure {now:.8g} + {notional:.8g} "
                    f"> {cfg.max_symbol_exposure:.8g}",
                )
        if cfg.max_gross_exposure is not None:
            now = self.gross_exposure()
            if now + notional > cfg.max_gross_exposure + _EPSILON:
                return Refusal(
                    "gross",
                    f"risk: gross limit: exposure {now:.8g} + {notional:.8g} "
                    f"> {cfg.max_gross_exposure:.8g}",
                )
        sign = _sign(request.side)
        if cfg.max_net_exposure is not None:
            now = self.net_exposure()
            after = now + sign * notional
            if abs(after) > cfg.max_net_exposure + _EPSILON and abs(after) > abs(now):
                return Refusal(
                    "net",
                    f"risk: net limit: exposure {now:.8g} {'+' if sign > 0 else '-'} "
                    f"{notional:.8g} > {cfg.max_net_exposure:.8g}",
                )
        self._reserve(request.order_id, _Reservation(request.strategy_id, symbol, sign, notional))
        return None

    # -- figures -----------------------------------------------------------------------

    def symbol_exposure(self, symbol: str) -> float:
        """Gross value held and reserved on ``symbol``, every strategy together."""
        mark = self.marks.get(symbol, 0.0)
        held = sum(abs(units) for units in self.held.get(symbol, {}).values()) * mark
        return held + self._reserved_on.get(symbol, 0.0)

    def gross_exposure(self) -> float:
        total = 0.0
        for symbol, by_strategy in self.held.items():
            total += sum(abs(u) for u in by_strategy.values()) * self.marks.get(symbol, 0.0)
        return total + self._reserved_gross

    def net_exposure(self) -> float:
        """Signed: long minus short, held and reserved."""
        total = 0.0
        for symbol, by_strategy in self.held.items():
            total += sum(by_strategy.values()) * self.marks.get(symbol, 0.0)
        return total + self._reserved_net

    def daily_pnl(self) -> float:
        return self.realized_today + sum(self.unrealized.values())

    # -- what the journal says ---------------------------------------------------------

    def apply(self, event: Event) -> bool:
        """Fold one journaled event in; True when it trips the daily loss limit."""
        if not self.live:
            self.replayed += 1
        body = event.body
        match body:
            case OrderFilled():
                self.marks[body.symbol] = body.price
                self._release(body.order_id)
                by_strategy = self.held.setdefault(body.symbol, {})
                units = by_strategy.get(event.strategy_id, 0.0) + _sign(body.side) * body.quantity
                if abs(units) <= _EPSILON:
                    by_strategy.pop(event.strategy_id, None)
                else:
                    by_strategy[event.strategy_id] = units
                self._new_day(body.fill_time)
            case OrderRejected():
                if not self._release(body.order_id):
                    self._tombstone(body.order_id)
            case OrderSubmitted():
                if body.order_id not in self.reserved:
                    self._reserve_unchecked(event.strategy_id, body)
            case PositionClosed():
                if self._new_day(body.closed_at):
                    self.realized_today += body.realized_pnl
            case Stats():
                self.unrealized[event.strategy_id] = body.unrealized_pnl
            case _:
                return False
        return self._check_loss()

    def settle(self, strategy_id: str, pending: set[str]) -> int:
        """A new worker of the strategy says Hello: its orders not pending in the journal
        (allowed, then never sent by a worker that died) are released; returns how many."""
        stale = [
            oid
            for oid, r in self.reserved.items()
            if r.strategy_id == strategy_id and oid not in pending
        ]
        for oid in stale:
            self._release(oid)
        return len(stale)

    def go_live(self) -> bool:
        """The journal is replayed: decide from now on; True if the loss limit trips now."""
        self.live = True
        return self._check_loss()

    def confirmed(self) -> None:
        """The kill switch engaged for the trip is on (its file now says so)."""
        self.trip_pending = False

    def _reserve_unchecked(self, strategy_id: str, body: OrderSubmitted) -> None:
        held = self.held.get(body.symbol, {}).get(strategy_id, 0.0)
        sign = _sign(body.side)
        if held * sign < -_EPSILON:
            return  # it reduces a position: nothing to reserve
        if body.sizing == "units" and body.symbol in self.marks:
            notional = body.quantity * self.marks[body.symbol]
        else:
            notional = self._unknown_notional
        self._reserve(body.order_id, _Reservation(strategy_id, body.symbol, sign, notional))

    def _reserve(self, order_id: str, r: _Reservation) -> None:
        self.reserved[order_id] = r
        self._reserved_on[r.symbol] = self._reserved_on.get(r.symbol, 0.0) + r.notional
        self._reserved_gross += r.notional
        self._reserved_net += r.sign * r.notional

    def _release(self, order_id: str) -> bool:
        r = self.reserved.pop(order_id, None)
        if r is None:
            return False
        if self.reserved:
            self._reserved_on[r.symbol] -= r.notional
            self._reserved_gross -= r.notional
            self._reserved_net -= r.sign * r.notional
        else:  # nothing left: exact zeros, no rounding residue
            self._reserved_on.clear()
            self._reserved_gross = self._reserved_net = 0.0
        return True

    def _tombstone(self, order_id: str) -> None:
        # A worker that gave up waiting rejects the order itself; its check may still be
        # queued at the service: remember the id so that the late check reserves nothing.
        self._tombstones.add(order_id)
        self._tombstone_order.append(order_id)
        if len(self._tombstone_order) > _TOMBSTONES:
            self._tombstones.discard(self._tombstone_order.popleft())

    def _new_day(self, time_ms: int) -> bool:
        """Move to the day of ``time_ms`` if it is later; True if it is the current day."""
        day = time_ms // _DAY_MS
        if day > self.day:
            self.day = day
            self.realized_today = 0.0
        return day == self.day

    def _check_loss(self) -> bool:
        limit = self.config.max_daily_loss
        if limit is None or not self.live or self.tripped_day == self.day or self.day < 0:
            return False
        if self.daily_pnl() > -limit:
            return False
        self.tripped_day = self.day
        self.trip_pending = True
        return True
