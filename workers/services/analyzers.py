"""Analyzers turn indicator values into a score in [-1, 1]; the registry weighs them.

+1 is the strongest case for long, -1 for short, 0 no view. The registry's score is the
weighted mean of its analyzers (weights from the strategy's config), None until every
analyzer has what it needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, ClassVar

import msgspec

from workers.indicators import Bar, Indicator
from workers.services.indicator_registry import IndicatorRegistry

__all__ = [
    "ANALYZERS",
    "AdxParams",
    "Analyzer",
    "AnalyzerParams",
    "AnalyzerRegistry",
    "AnalyzerSpec",
    "BollingerParams",
    "CrossParams",
    "MacdParams",
    "OscillatorParams",
    "PriceVsParams",
    "make_analyzer",
]


class AnalyzerParams(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"
):
    """Base of analyzer specs; ``weight`` is this analyzer's share of the combined score."""

    weight: float = 1.0

    def indicator_names(self) -> list[str]:
        """The indicators this analyzer reads (checked against the strategy's)."""
        return []


class CrossParams(AnalyzerParams, tag="cross", frozen=True):
    """Trend: ``fast`` above ``slow`` is long. ``scale_pct`` > 0 grades the score by the gap
    in percent of ``slow`` (a gap of ``scale_pct`` or more scores +/-1); 0 gives +/-1."""

    fast: str
    slow: str
    scale_pct: Annotated[float, msgspec.Meta(ge=0)] = 0.0

    def indicator_names(self) -> list[str]:
        return [self.fast, self.slow]


class OscillatorParams(AnalyzerParams, tag="oscillator", frozen=True):
    """Mean reversion on a bounded oscillator (RSI, stochastic %K): at or below ``lower``
    scores +1, at or above ``upper`` -1, linear in between through 0 at the midpoint."""

    indicator: str
    output: str | None = None
    lower: float = 30.0
    upper: float = 70.0

    def __post_init__(self) -> None:
        if self.lower >= self.upper:
            raise ValueError("lower must be below upper")

    def indicator_names(self) -> list[str]:
        return [self.indicator]


class MacdParams(AnalyzerParams, tag="macd", frozen=True):
    """Momentum: the sign of the MACD histogram (the MACD line above its signal is long)."""

    indicator: str

    def indicator_names(self) -> list[str]:
        return [self.indicator]


class BollingerParams(AnalyzerParams, tag="bollinger", frozen=True):
    """Mean reversion inside Bollinger Bands: close at the lower band +1, at the upper -1."""

    indicator: str

    def indicator_names(self) -> list[str]:
        return [self.indicator]


class PriceVsParams(AnalyzerParams, tag="price_vs", frozen=True):
    """Trend: close above the indicator (a moving average, VWAP) is long, below is short."""

    indicator: str

    def indicator_names(self) -> list[str]:
        return [self.indicator]


class AdxParams(AnalyzerParams, tag="adx", frozen=True):
    """Trend strength: no view while ADX is under ``threshold``, else the side of +DI/-DI."""

    indicator: str
    threshold: Annotated[float, msgspec.Meta(ge=0, le=100)] = 25.0

    def indicator_names(self) -> list[str]:
        return [self.indicator]


AnalyzerSpec = (
    CrossParams | OscillatorParams | MacdParams | BollingerParams | PriceVsParams | AdxParams
)


def _clip(x: float) -> float:
    return -1.0 if x < -1.0 else 1.0 if x > 1.0 else x


def _sign(x: float) -> float:
    return 1.0 if x > 0 else -1.0 if x < 0 else 0.0


class Analyzer:
    """Scores one symbol from the registry's indicators; None while inputs warm up."""

    Params: ClassVar[type[AnalyzerParams]]

    def __init__(self, params: AnalyzerParams) -> None:
        self.weight = params.weight
        self._names = params.indicator_names()
        # The indicator objects of each symbol, looked up once: this runs on every candle.
        self._inputs: dict[str, tuple[Indicator, ...]] = {}

    def inputs(self, indicators: IndicatorRegistry, symbol: str) -> tuple[Indicator, ...]:
        """This analyzer's indicators for ``symbol``, in ``indicator_names()`` order."""
        found = self._inputs.get(symbol)
        if found is None:
            found = tuple(indicators.get(symbol, name) for name in self._names)
            self._inputs[symbol] = found
        return found

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        raise NotImplementedError


class _Cross(Analyzer):
    Params = CrossParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, CrossParams)
        self.p = params

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        fast_ind, slow_ind = self.inputs(indicators, symbol)
        fast, slow = fast_ind.output(), slow_ind.output()
        if fast is None or slow is None or slow == 0:
            return None
        if self.p.scale_pct == 0:
            return _sign(fast - slow)
        return _clip((fast / slow - 1.0) * 100.0 / self.p.scale_pct)


class _Oscillator(Analyzer):
    Params = OscillatorParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, OscillatorParams)
        self.p = params
        self._mid = (params.lower + params.upper) / 2.0
        self._half = (params.upper - params.lower) / 2.0

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        (oscillator,) = self.inputs(indicators, symbol)
        value = oscillator.output(self.p.output)
        if value is None:
            return None
        return _clip((self._mid - value) / self._half)


class _Macd(Analyzer):
    Params = MacdParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, MacdParams)
        self.p = params

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        (macd,) = self.inputs(indicators, symbol)
        hist = macd.output("hist")
        return None if hist is None else _sign(hist)


class _Bollinger(Analyzer):
    Params = BollingerParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, BollingerParams)
        self.p = params

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        (bands,) = self.inputs(indicators, symbol)
        upper, middle = bands.output("upper"), bands.output("middle")
        if upper is None or middle is None:
            return None
        width = upper - middle
        if width <= 0:
            return 0.0
        return _clip((middle - bar.close) / width)


class _PriceVs(Analyzer):
    Params = PriceVsParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, PriceVsParams)
        self.p = params

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        (indicator,) = self.inputs(indicators, symbol)
        level = indicator.output()
        return None if level is None else _sign(bar.close - level)


class _Adx(Analyzer):
    Params = AdxParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, AdxParams)
        self.p = params

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        (indicator,) = self.inputs(indicators, symbol)
        adx = indicator.output("adx")
        plus, minus = indicator.output("plus_di"), indicator.output("minus_di")
        if adx is None or plus is None or minus is None:
            return None
        return 0.0 if adx < self.p.threshold else _sign(plus - minus)


ANALYZERS: dict[type[AnalyzerParams], type[Analyzer]] = {
    cls.Params: cls for cls in (_Cross, _Oscillator, _Macd, _Bollinger, _PriceVs, _Adx)
}


def make_analyzer(spec: AnalyzerParams) -> Analyzer:
    """A new analyzer object for ``spec``."""
    return ANALYZERS[type(spec)](spec)


class AnalyzerRegistry:
    """The strategy's analyzers with its own weights."""

    def __init__(self, specs: Sequence[AnalyzerParams], indicators: IndicatorRegistry) -> None:
        self.analyzers = [make_analyzer(spec) for spec in specs]
        self._indicators = indicators
        self._total_weight = sum(abs(a.weight) for a in self.analyzers)

    def score(self, symbol: str, bar: Bar) -> float | None:
        """Weighted mean score in [-1, 1]; None until every analyzer can score."""
        if not self.analyzers or self._total_weight == 0:
            return None
        total = 0.0
        for analyzer in self.analyzers:
            score = analyzer.score(self._indicators, symbol, bar)
            if score is None or math.isnan(score):
                return None
            total += analyzer.weight * score
        return _clip(total / self._total_weight)

    def __len__(self) -> int:
        return len(self.analyzers)
