"""IndicatorRegistry: the strategy's own indicator objects, one per (symbol, name).

Only the indicators the strategy declares are built; each is fed the candles of its own
timeframe (the decision timeframe unless the spec names another).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from workers.indicators import Bar, Indicator, IndicatorParams, make_indicator

__all__ = ["IndicatorRegistry"]


class IndicatorRegistry:
    """Named indicators per symbol; ``value(symbol, name, output)`` reads them."""

    def __init__(
        self,
        specs: Mapping[str, IndicatorParams],
        symbols: Iterable[str],
        decision_timeframe: str,
    ) -> None:
        self.specs = dict(specs)
        self._by_key: dict[tuple[str, str], Indicator] = {}
        self._by_stream: dict[tuple[str, str], list[Indicator]] = {}
        for symbol in symbols:
            for name, spec in self.specs.items():
                indicator = make_indicator(spec)
                timeframe = spec.timeframe or decision_timeframe
                self._by_key[(symbol, name)] = indicator
                self._by_stream.setdefault((symbol, timeframe), []).append(indicator)
        # What update() calls for each stream, looked up once: it runs on every candle.
        self._updates: dict[tuple[str, str], tuple[Callable[[Bar], None], ...]] = {
            stream: tuple(indicator.update for indicator in indicators)
            for stream, indicators in self._by_stream.items()
        }

    @property
    def timeframes(self) -> set[str]:
        """Every timeframe some indicator is fed from."""
        return {timeframe for _, timeframe in self._by_stream}

    def update(self, bar: Bar, symbol: str, timeframe: str) -> None:
        """Feed one closed candle to the indicators of its stream."""
        for update in self._updates.get((symbol, timeframe), ()):
            update(bar)

    def get(self, symbol: str, name: str) -> Indicator:
        """The indicator object itself (KeyError names what is missing)."""
        try:
            return self._by_key[(symbol, name)]
        except KeyError:
            raise KeyError(f"no indicator {name!r} on {symbol}") from None

    def value(self, symbol: str, name: str, output: str | None = None) -> float | None:
        """The indicator's output, None while it warms up."""
        return self.get(symbol, name).output(output)

    def ready(self, symbol: str) -> bool:
        """Every indicator of ``symbol`` has a value."""
        return all(ind.ready for (sym, _), ind in self._by_key.items() if sym == symbol)

    def __len__(self) -> int:
        return len(self._by_key)
