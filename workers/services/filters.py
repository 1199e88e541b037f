"""FilterOrchestrator: vetoes on new entries (exits are never filtered)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from workers.indicators import Bar
from workers.services.indicator_registry import IndicatorRegistry
from workers.services.positions import PositionLifecycleService

__all__ = ["FilterConfig", "FilterOrchestrator", "VolatilityFloor"]

Hour = Annotated[int, msgspec.Meta(ge=0, le=24)]


class VolatilityFloor(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """No entry while ``indicator`` (an ATR, say) is under ``min_pct`` percent of the close."""

    indicator: str
    min_pct: Annotated[float, msgspec.Meta(gt=0)]


class FilterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[strategies.filters]``.

    Parameters
    ----------
    trading_hours_utc:
        ``[[start, end], ...]`` hours (UTC, end excluded) in which entries are allowed, judged
        by the candle's close time; empty = always.
    volatility_floor:
        Minimum volatility for an entry.
    max_open_positions:
        At most this many positions of the strategy at once (all symbols); 0 = no limit.
    cooldown_after_loss_candles:
        After a losing position closes, no new entry on that symbol for this many
        decision-timeframe candles.
    """

    trading_hours_utc: tuple[tuple[Hour, Hour], ...] = ()
    volatility_floor: VolatilityFloor | None = None
    max_open_positions: Annotated[int, msgspec.Meta(ge=0)] = 0
    cooldown_after_loss_candles: Annotated[int, msgspec.Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        for start, end in self.trading_hours_utc:
            if start >= end:
                raise ValueError(f"trading hours [{start}, {end}] are empty")


class FilterOrchestrator:
    """Answers "may the strategy enter now?" with None (yes) or the reason it may not."""

    def __init__(
        self,
        config: FilterConfig,
        indicators: IndicatorRegistry,
        positions: PositionLifecycleService,
        timeframe_ms: int,
    ) -> None:
        self.config = config
        self._indicators = indicators
        self._positions = positions
        self._timeframe_ms = timeframe_ms
        self.vetoes: dict[str, int] = {}

    def veto(self, symbol: str, bar: Bar) -> str | None:
        """The first filter that refuses an entry on ``symbol`` after ``bar``, or None."""
        reason = self._check(symbol, bar)
        if reason is not None:
            key = reason.split(":", 1)[0]
            self.vetoes[key] = self.vetoes.get(key, 0) + 1
        return reason

    def _check(self, symbol: str, bar: Bar) -> str | None:
        c = self.config
        if c.trading_hours_utc:
            closed_at = datetime.fromtimestamp((bar.open_time + self._timeframe_ms) / 1000, UTC)
            hour = closed_at.hour + closed_at.minute / 60
            if not any(start <= hour < end for start, end in c.trading_hours_utc):
                return f"trading_hours: {closed_at:%H:%M} UTC is outside {c.trading_hours_utc}"
        if c.volatility_floor is not None:
            floor = c.volatility_floor
            level = self._indicators.value(symbol, floor.indicator)
            if level is None:
                return f"volatility_floor: {floor.indicator} is not warm yet"
            pct = level / bar.close * 100.0
            if pct < floor.min_pct:
                return f"volatility_floor: {floor.indicator} {pct:.3g}% < {floor.min_pct:g}%"
        held = self._positions.exposure_count
        if c.max_open_positions and held >= c.max_open_positions:
            return f"max_open_positions: {held} open or on their way"
        if c.cooldown_after_loss_candles:
            last = self._positions.last_closed(symbol)
            if last is not None and last.realized_pnl < 0:
                since = (bar.open_time - last.closed_at) // self._timeframe_ms + 1
                if since <= c.cooldown_after_loss_candles:
                    return (
                        f"cooldown: {since} of {c.cooldown_after_loss_candles} candles after a loss"
                    )
        return None
