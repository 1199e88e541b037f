"""``[risk]``: the global limits the pre-trade risk gate enforces across every strategy.

No ``[risk]`` table: no gate, workers send orders without asking anything (no added
latency). With one, every order that opens a position is checked first (README, "Risk gate").
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["LIMIT_KEYS", "RiskConfig"]

_Positive = Annotated[float, msgspec.Meta(gt=0)]

# The keys that are limits (at least one must be set for the table to mean anything).
LIMIT_KEYS = (
    "max_gross_exposure",
    "max_net_exposure",
    "max_symbol_exposure",
    "max_daily_loss",
    "max_open_orders",
)


class RiskConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Global risk limits, in quote currency; an unset limit is not checked.

    Parameters
    ----------
    max_gross_exposure:
        Sum over every symbol and strategy of the absolute value of positions and of opening
        orders not yet filled.
    max_net_exposure:
        Absolute value of the signed sum (long minus short) of the same.
    max_symbol_exposure:
        Per symbol, the gross exposure of every strategy together on it.
    max_daily_loss:
        Realized PnL of the positions closed since 00:00 UTC (candle time) plus the
        unrealized PnL of the open ones, summed over strategies; when the loss reaches it the
        kill switch engages by itself (once per day).
    max_open_orders:
        Opening orders sent and not yet filled or rejected, every strategy together.
    timeout_ms:
        How long a worker waits for the risk service's answer; no answer in time rejects
        the order (fail closed).
    """

    max_gross_exposure: _Positive | None = None
    max_net_exposure: _Positive | None = None
    max_symbol_exposure: _Positive | None = None
    max_daily_loss: _Positive | None = None
    max_open_orders: Annotated[int, msgspec.Meta(ge=1)] | None = None
    timeout_ms: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 100.0

    def any_limit(self) -> bool:
        return any(getattr(self, key) is not None for key in LIMIT_KEYS)
