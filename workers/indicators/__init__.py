"""Incremental indicators: O(1) work per candle, no recomputation over history.

Each indicator takes closed candles (:class:`Bar`) one at a time and, VWAP aside (TA-Lib
has none), matches TA-Lib's function of the same name once TA-Lib's own warm-up is over.
Configs name them by ``type``: ``msgspec.convert({"type": "ema", "period": 12},
IndicatorSpec)`` then :func:`make_indicator`. ``SMA`` and ``RSI`` are the older float-input
versions.
"""

from __future__ import annotations

from typing import TypeAlias

from workers.indicators._base import Bar, Indicator, IndicatorParams
from workers.indicators.momentum import (
    RSI,
    Macd,
    MacdParams,
    Rsi,
    RsiParams,
    Stochastic,
    StochParams,
)
from workers.indicators.moving import (
    SMA,
    Ema,
    EmaParams,
    Sma,
    SmaPair,
    SmaParams,
    Wma,
    WmaParams,
)
from workers.indicators.trend import Adx, AdxParams
from workers.indicators.volatility import Atr, AtrParams, BbandsParams, BollingerBands
from workers.indicators.volume import Obv, ObvParams, Vwap, VwapParams

__all__ = [
    "INDICATORS",
    "RSI",
    "SMA",
    "Adx",
    "AdxParams",
    "Atr",
    "AtrParams",
    "Bar",
    "BbandsParams",
    "BollingerBands",
    "Ema",
    "EmaParams",
    "Indicator",
    "IndicatorParams",
    "IndicatorSpec",
    "Macd",
    "MacdParams",
    "Obv",
    "ObvParams",
    "Rsi",
    "RsiParams",
    "Sma",
    "SmaPair",
    "SmaParams",
    "StochParams",
    "Stochastic",
    "Vwap",
    "VwapParams",
    "Wma",
    "WmaParams",
    "make_indicator",
]

IndicatorSpec: TypeAlias = (
    SmaParams
    | EmaParams
    | WmaParams
    | RsiParams
    | MacdParams
    | StochParams
    | AtrParams
    | BbandsParams
    | AdxParams
    | VwapParams
    | ObvParams
)
"""Any indicator's params, told apart by their ``type`` tag (the indicator's NAME)."""

INDICATORS: dict[str, type[Indicator]] = {
    cls.NAME: cls
    for cls in (Sma, Ema, Wma, Rsi, Macd, Stochastic, Atr, BollingerBands, Adx, Vwap, Obv)
}

_BY_PARAMS: dict[type[IndicatorParams], type[Indicator]] = {
    cls.Params: cls for cls in INDICATORS.values()
}


def make_indicator(spec: IndicatorParams) -> Indicator:
    """A fresh indicator for ``spec`` (one of the :data:`IndicatorSpec` params)."""
    try:
        cls = _BY_PARAMS[type(spec)]
    except KeyError:
        raise TypeError(f"no indicator takes {type(spec).__name__}") from None
    return cls(spec)
