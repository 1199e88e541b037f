"""The factory: the one place that builds a strategy's service container."""

from __future__ import annotations

import logging
from collections.abc import Callable

from broker.resample import timeframe_ms
from runtime.config import StrategyConfig
from runtime.messages import EventBody
from workers.container import StrategyServiceContainer
from workers.services.actions import ActionQueueService
from workers.services.analyzers import AnalyzerRegistry
from workers.services.entry import EntryOrchestrator
from workers.services.execution import PaperExecution
from workers.services.exit import ExitOrchestrator
from workers.services.filters import FilterOrchestrator
from workers.services.gate import MultiTimeframeGate
from workers.services.indicator_registry import IndicatorRegistry
from workers.services.ledger import LedgerService
from workers.services.positions import PositionLifecycleService

__all__ = ["build_container"]


def build_container(
    config: StrategyConfig,
    emit: Callable[[EventBody], None],
    *,
    first_order_number: int = 1,
    logger: logging.Logger | None = None,
) -> StrategyServiceContainer:
    """Build every service of one strategy from its merged, validated config.

    ``emit`` tags and sends an event body (the worker's outbox); every service reports
    through it, so everything it emits carries the strategy's id.
    """
    indicators = IndicatorRegistry(config.indicators, config.symbols, config.timeframe)
    analyzers = AnalyzerRegistry(config.analyzers, indicators)
    positions = PositionLifecycleService(emit, config.execution.cash)
    actions = ActionQueueService(positions)
    execution = PaperExecution(
        config.id,
        config.execution.fee_bps,
        config.execution.slippage_bps,
        emit,
        first_order_number=first_order_number,
        account=positions,
        whole_units=config.execution.whole_units,
    )
    filters = FilterOrchestrator(
        config.filters, indicators, positions, timeframe_ms(config.timeframe)
    )
    gate = MultiTimeframeGate(config.gate, indicators) if config.gate is not None else None
    entry = EntryOrchestrator(
        config.entry,
        config.timeframe,
        config.execution.quantity,
        positions,
        actions,
        filters,
        gate,
        emit,
    )
    return StrategyServiceContainer(
        config=config,
        emit_event=emit,
        logger=logger or logging.getLogger(f"strategy.{config.id}"),
        indicators=indicators,
        analyzers=analyzers,
        positions=positions,
        actions=actions,
        execution=execution,
        filters=filters,
        gate=gate,
        entry=entry,
        exit=ExitOrchestrator(config.exit, positions, actions),
        ledger=LedgerService(positions, config.execution.cash, config.account_every_ms),
    )
