"""Analyzers turn indicator values into a score in [-1, 1]; the registry weighs them.

+1 is the strongest case for long, -1 for short, 0 no view. The registry's score is the
weighted mean of its analyzers (weights from the strategy's config), None until every
analyzer has what it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
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


Scorer = Callable[[Bar], float | None]


class Analyzer:
    """Scores one symbol from the registry's indicators; None while inputs warm up.

    The registry scores every candle through :meth:`scorer`, a function of the bar it asks
    for once per symbol. By default that function calls :meth:`score`.
    """

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

    def scorer(self, indicators: IndicatorRegistry, symbol: str) -> Scorer:
        """``score(indicators, symbol, bar)`` as a function of ``bar`` alone."""
        return partial(self.score, indicators, symbol)

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        raise NotImplementedError


class _BuiltinAnalyzer(Analyzer):
    """Base of this module's analyzers.

    Their scorer, built by ``_bind`` once per symbol, is a closure over the indicators'
    :meth:`~workers.indicators.Indicator.reader` functions, with the sign of a gap and the clip
    to [-1, 1] written out: it runs on every candle. :meth:`score` calls the same function.
    """

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        self._scorers: dict[str, Scorer] = {}

    def scorer(self, indicators: IndicatorRegistry, symbol: str) -> Scorer:
        found = self._scorers.get(symbol)
        if found is None:
            found = self._bind(self.inputs(indicators, symbol))
            self._scorers[symbol] = found
        return found

    def score(self, indicators: IndicatorRegistry, symbol: str, bar: Bar) -> float | None:
        return self.scorer(indicators, symbol)(bar)

    def _bind(self, inputs: tuple[Indicator, ...]) -> Scorer:
        """The scorer of one symbol, whose indicators are ``inputs``."""
        raise NotImplementedError


class _Cross(_BuiltinAnalyzer):
    Params = CrossParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, CrossParams)
        self.p = params

    def _bind(self, inputs: tuple[Indicator, ...]) -> Scorer:
        fast_indicator, slow_indicator = inputs
        read_fast, read_slow = fast_indicator.reader(), slow_indicator.reader()

        def score(bar: Bar) -> float | None:
            fast, slow = read_fast(), read_slow()
            if fast is None or slow is None or slow == 0.0:
                return None
            scale_pct = self.p.scale_pct
            if scale_pct == 0.0:
                gap = fast - slow
                return 1.0 if gap > 0.0 else -1.0 if gap < 0.0 else 0.0
            x = (fast / slow - 1.0) * 100.0 / scale_pct
            return -1.0 if x < -1.0 else 1.0 if x > 1.0 else x

        return score


class _Oscillator(_BuiltinAnalyzer):
    Params = OscillatorParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, OscillatorParams)
        self.p = params
        self._mid = (params.lower + params.upper) / 2.0
        self._half = (params.upper - params.lower) / 2.0

    def _bind(self, inputs: tuple[Indicator, ...]) -> Scorer:
        (oscillator,) = inputs
        read = oscillator.reader(self.p.output)

        def score(bar: Bar) -> float | None:
            value = read()
            if value is None:
                return None
            x = (self._mid - value) / self._half
            return -1.0 if x < -1.0 else 1.0 if x > 1.0 else x

        return score


class _Macd(_BuiltinAnalyzer):
    Params = MacdParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, MacdParams)
        self.p = params

    def _bind(self, inputs: tuple[Indicator, ...]) -> Scorer:
        (macd,) = inputs
        read_hist = macd.reader("hist")

        def score(bar: Bar) -> float | None:
            hist = read_hist()
            if hist is None:
                return None
            return 1.0 if hist > 0.0 else -1.0 if hist < 0.0 else 0.0

        return score


class _Bollinger(_BuiltinAnalyzer):
    Params = BollingerParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, BollingerParams)
        self.p = params

    def _bind(self, inputs: tuple[Indicator, ...]) -> Scorer:
        (bands,) = inputs
        read_upper, read_middle = bands.reader("upper"), bands.reader("middle")

        def score(bar: Bar) -> float | None:
            upper, middle = read_upper(), read_middle()
            if upper is None or middle is None:
                return None
            width = upper - middle
            if width <= 0.0:
                return 0.0
            x = (middle - bar.close) / width
            return -1.0 if x < -1.0 else 1.0 if x > 1.0 else x

        return score


class _PriceVs(_BuiltinAnalyzer):
    Params = PriceVsParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, PriceVsParams)
        self.p = params

    def _bind(self, inputs: tuple[Indicator, ...]) -> Scorer:
        (indicator,) = inputs
        read = indicator.reader()

        def score(bar: Bar) -> float | None:
            level = read()
            if level is None:
                return None
            gap = bar.close - level
            return 1.0 if gap > 0.0 else -1.0 if gap < 0.0 else 0.0

        return score


class _Adx(_BuiltinAnalyzer):
    Params = AdxParams

    def __init__(self, params: AnalyzerParams) -> None:
        super().__init__(params)
        assert isinstance(params, AdxParams)
        self.p = params

    def _bind(self, inputs: tuple[Indicator, ...]) -> Scorer:
        (indicator,) = inputs
        read_adx = indicator.reader("adx")
        read_plus, read_minus = indicator.reader("plus_di"), indicator.reader("minus_di")

        def score(bar: Bar) -> float | None:
            adx, plus, minus = read_adx(), read_plus(), read_minus()
            if adx is None or plus is None or minus is None:
                return None
            if adx < self.p.threshold:
                return 0.0
            gap = plus - minus
            return 1.0 if gap > 0.0 else -1.0 if gap < 0.0 else 0.0

        return score


ANALYZERS: dict[type[AnalyzerParams], type[Analyzer]] = {
    cls.Params: cls for cls in (_Cross, _Oscillator, _Macd, _Bollinger, _PriceVs, _Adx)
}


def make_analyzer(spec: AnalyzerParams) -> Analyzer:
    """A new analyzer object for ``spec``."""
    return ANALYZERS[type(spec)](spec)


class AnalyzerRegistry:
    """The strategy's analyzers with its own weights."""

    def __init__(self, specs: Sequence[AnalyzerParams], indicators: IndicatorRegistry) -> None:
        self._indicators = indicators
        self.analyzers = [make_analyzer(spec) for spec in specs]
        self._total_weight = sum(abs(a.weight) for a in self.analyzers)

    @property
    def analyzers(self) -> tuple[Analyzer, ...]:
        """The analyzers, in config order; assign a new sequence to replace them."""
        return self._analyzers

    @analyzers.setter
    def analyzers(self, analyzers: Iterable[Analyzer]) -> None:
        self._analyzers = tuple(analyzers)
        # Each analyzer with its scorer, per symbol: bound on the symbol's first score.
        self._scorers: dict[str, tuple[tuple[Analyzer, Scorer], ...]] = {}

    def score(self, symbol: str, bar: Bar) -> float | None:
        """Weighted mean score in [-1, 1]; None until every analyzer can score."""
        if not self._analyzers or self._total_weight == 0:
            return None
        total = 0.0
        for analyzer, scorer in self._scorers.get(symbol) or self._bind(symbol):
            score = scorer(bar)
            if score is None or score != score:  # none yet, or NaN
                return None
            total += analyzer.weight * score
        mean = total / self._total_weight
        return -1.0 if mean < -1.0 else 1.0 if mean > 1.0 else mean

    def _bind(self, symbol: str) -> tuple[tuple[Analyzer, Scorer], ...]:
        scorers = tuple((a, a.scorer(self._indicators, symbol)) for a in self._analyzers)
        self._scorers[symbol] = scorers
        return scorers

    def __len__(self) -> int:
        return len(self._analyzers)
