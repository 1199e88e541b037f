"""The risk link's wire protocol: a worker asks before an opening order, the service answers.

Kept apart from ``runtime/messages.py`` so that the risk gate is one self-contained piece;
the same rules hold: frozen msgspec structs, MessagePack, strict typed decoders, new fields
only appended with defaults.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from runtime.messages import Side, StrictDecoder

__all__ = [
    "RISK_REPLY_DECODER",
    "RISK_REQUEST_DECODER",
    "RiskCheck",
    "RiskVerdict",
]

_Notional = Annotated[float, msgspec.Meta(ge=0.0)]


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Immutable, and a typo in a field name fails to decode."""


class RiskCheck(_Wire, tag="risk_check", frozen=True):
    """Worker to risk service: may this opening order go out? Reserve it if so.

    Parameters
    ----------
    req_id:
        Per worker, increasing: a reply to an older request (late) is told apart and dropped.
    strategy_id, order_id:
        Who asks, and the client order id the order will carry (``<strategy_id>-<n>``).
    symbol, side:
        What the order trades.
    notional:
        Its estimated value in quote currency: units times the last close, or, for an order
        sized by equity at its fill, the fraction times the strategy's free cash.
    price:
        The symbol's last close as the worker knows it (0 when unknown); marks what is held.
    """

    req_id: int
    strategy_id: str
    order_id: str
    symbol: str
    side: Side
    notional: _Notional
    price: _Notional = 0.0


class RiskVerdict(_Wire, tag="risk_verdict", frozen=True):
    """Risk service to worker: ``allowed`` (and reserved), or refused for ``reason``."""

    req_id: int
    allowed: bool
    reason: str = ""


RISK_REQUEST_DECODER = StrictDecoder(msgspec.msgpack.Decoder(RiskCheck))
RISK_REPLY_DECODER = StrictDecoder(msgspec.msgpack.Decoder(RiskVerdict))
