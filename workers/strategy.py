"""The strategy API: the base class users subclass and the context it acts through."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar, Protocol

import msgspec

from runtime.messages import Candle, Direction, OrderFilled, PositionSide
from runtime.secrets import Secret

if TYPE_CHECKING:
    from workers.services.analyzers import AnalyzerRegistry
    from workers.services.indicator_registry import IndicatorRegistry
    from workers.services.positions import PositionLifecycleService

__all__ = ["NoParams", "PositionView", "Strategy", "StrategyContext"]


class NoParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Params of a strategy that takes none."""


class PositionView(msgspec.Struct, frozen=True):
    """A read-only copy of one open position."""

    symbol: str
    side: PositionSide
    quantity: float
    entry_price: float
    opened_at: int


class StrategyContext(Protocol):
    """What a strategy may see and do: its service container implements it."""

    @property
    def strategy_id(self) -> str:
        """The id of the strategy, as in the config."""
        ...

    @property
    def log(self) -> logging.Logger:
        """A logger writing to this strategy's log file (warnings also become events)."""
        ...

    def secret(self, name: str) -> Secret:
        """A secret named in the strategy's config (``secrets``); print it and you see ***."""
        ...

    @property
    def indicators(self) -> IndicatorRegistry:
        """The strategy's own indicators (``value(symbol, name, output)``)."""
        ...

    @property
    def analyzers(self) -> AnalyzerRegistry:
        """The strategy's analyzers with its weights (``score(symbol, candle)``)."""
        ...

    @property
    def positions(self) -> PositionLifecycleService:
        """Every position of the strategy, pending to closed (read it, don't drive it)."""
        ...

    def position(self, symbol: str) -> PositionView | None:
        """The open position on ``symbol``, or None."""
        ...

    def open_position(
        self, symbol: str, side: PositionSide, reason: str, quantity: float = 0.0
    ) -> bool:
        """Queue an entry, filled at the next candle's open; False if it repeats one."""
        ...

    def close_position(self, symbol: str, reason: str) -> bool:
        """Queue the exit of the open position on ``symbol``; False if there is none."""
        ...

    def target(self, symbol: str, direction: Direction, reason: str) -> None:
        """Be long, short or flat on ``symbol`` with the configured quantity."""
        ...

    def signal(
        self, candle: Candle, direction: Direction, strength: float = 1.0, reason: str = ""
    ) -> None:
        """Report a change of view on the candle's stream."""
        ...


class Strategy:
    """Base class of every strategy. Subclasses set ``Params`` and override the hooks.

    ``Params`` is a msgspec Struct (``forbid_unknown_fields=True``): the config's ``params``
    table is validated against it before any process starts. ``on_candle`` receives every
    candle of every stream the strategy subscribes to (check ``candle.timeframe`` when the
    strategy uses more than one).
    """

    Params: ClassVar[type[msgspec.Struct]] = NoParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        self.ctx = ctx
        self.params = params

    def warmup(self) -> int:
        """Decision candles seen before the first one the strategy can decide on.

        The backtest's Buy & Hold return starts at that candle; a strategy whose longest
        indicator has period N returns N - 1.
        """
        return 0

    def on_start(self) -> None:
        """Called once, before the first candle."""

    def on_candle(self, candle: Candle) -> None:
        """Called on every closed candle of the strategy's streams."""

    def on_fill(self, fill: OrderFilled) -> None:
        """Called after one of the strategy's orders filled."""

    def on_stop(self) -> None:
        """Called once when the strategy stops gracefully."""
