"""A whole backtest: data loaded and checked first, one process per strategy, one journal.

Every data file is read and checked in this process before anything runs (a bad row stops
the backtest with nothing started). Strategies then run in parallel, one forked process
each (they inherit the loaded candles), at most ``jobs`` at a time; each sends back its
events and equity curve as MessagePack. The journal is written here, strategy by strategy
in config order, so the same input always gives the same file.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from broker.resample import can_resample
from runtime.backtest.data import Candles, DataError, load, resample
from runtime.backtest.engine import EngineResult, collector_paused, run_strategy
from runtime.backtest.stats import Stats, Trade, compute, trades_of
from runtime.config import Config, StrategyConfig
from runtime.journal import Journal

__all__ = ["Options", "Outcome", "StrategyOutcome", "run_backtest"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_JOURNAL_BATCH = 10_000


@dataclass(frozen=True)
class Options:
    """What the command line adds to a config.

    Parameters
    ----------
    data:
        ``SYMBOL -> file`` replacing the config's feed of that symbol.
    columns:
        Our column names (``timestamp``, ``open``, ...) to the file's.
    start, end:
        Keep candles with ``start <= open time < end`` (ms), when given.
    jobs:
        Strategies run at the same time (default: the number of cores).
    journal:
        Where the journal goes (replaced); None writes none.
    """

    data: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    start: int | None = None
    end: int | None = None
    jobs: int = 0
    journal: Path | None = None


@dataclass(frozen=True)
class StrategyOutcome:
    """One strategy's result with its statistics."""

    result: EngineResult
    trades: list[Trade]
    stats: Stats

    @property
    def time(self) -> I64:
        return np.frombuffer(self.result.time, dtype=np.int64)

    @property
    def equity(self) -> F64:
        return np.frombuffer(self.result.equity, dtype=np.float64)

    def prices(self) -> tuple[F64, F64, F64, F64]:
        r = self.result
        o, h, low, c = (
            np.frombuffer(b, dtype=np.float64) for b in (r.open, r.high, r.low, r.close)
        )
        return o, h, low, c


@dataclass(frozen=True)
class Outcome:
    """The whole backtest."""

    strategies: list[StrategyOutcome]
    portfolio: Stats
    portfolio_time: I64
    portfolio_equity: F64
    streams: list[Candles]
    candles: int


# Set before the pool forks: the children read the candles from here, not from disk.
_STREAMS: dict[str, Candles] = {}
_PROGRESS: Any = None


def _streams_for(strategy: StrategyConfig) -> list[Candles]:
    return [_STREAMS[stream] for stream in strategy.streams]


def _child(index: int, strategy_json: bytes) -> bytes:
    strategy = msgspec.json.decode(strategy_json, type=StrategyConfig)
    progress = _PROGRESS

    def report(n: int) -> None:
        progress[index] = n

    result = run_strategy(strategy, _streams_for(strategy), report if progress else None)
    return msgspec.msgpack.encode(result)


def load_streams(config: Config, options: Options) -> tuple[dict[str, Candles], list[Candles]]:
    """Every stream the strategies use, read from the feeds (or ``--data``) and resampled;
    then every stream read or built, files first (for the data report)."""
    feeds = {f.symbol: (f.path, f.timeframe) for f in config.broker.feeds}
    for symbol, path in options.data.items():
        if symbol not in feeds:
            raise DataError(f"{path}: no feed of symbol {symbol} in {config.source}")
        feeds[symbol] = (path, feeds[symbol][1])
    base: dict[str, Candles] = {}
    streams: dict[str, Candles] = {}
    for strategy in config.strategies:
        for stream in strategy.streams:
            if stream in streams:
                continue
            symbol, timeframe = stream.split("|")
            path, feed_tf = feeds[symbol]
            if symbol not in base:
                base[symbol] = load(
                    path,
                    symbol,
                    feed_tf,
                    columns=options.columns,
                    start=options.start,
                    end=options.end,
                )
                if not len(base[symbol]):
                    raise DataError(f"{path}: no candles between --from and --to")
            if timeframe == feed_tf:
                streams[stream] = base[symbol]
            elif can_resample(feed_tf, timeframe):
                streams[stream] = resample(base[symbol], timeframe)
            else:
                raise DataError(f"{path}: cannot build {timeframe} candles from {feed_tf}")
    built = [s for s in streams.values() if all(s is not b for b in base.values())]
    return streams, [*base.values(), *built]


def run_backtest(
    config: Config,
    options: Options,
    progress: Callable[[int, int], None] | None = None,
) -> Outcome:
    """Run every strategy of ``config``; ``progress(done, total)`` is called now and then."""
    with collector_paused():
        return _run(config, options, progress)


def _run(
    config: Config,
    options: Options,
    progress: Callable[[int, int], None] | None,
) -> Outcome:
    global _PROGRESS
    streams, every = load_streams(config, options)
    _STREAMS.clear()
    _STREAMS.update(streams)
    strategies = config.strategies
    total = sum(sum(len(streams[s]) for s in st.streams) for st in strategies)
    jobs = min(options.jobs or os.cpu_count() or 1, len(strategies))
    encoded: list[bytes] = []
    if jobs <= 1:
        done = 0

        def one(n: int) -> None:
            if progress is not None:
                progress(done + n, total)

        for strategy in strategies:
            result = run_strategy(strategy, _streams_for(strategy), one)
            encoded.append(msgspec.msgpack.encode(result))
            done += result.candles
    else:
        context = multiprocessing.get_context("fork")
        _PROGRESS = context.Array("q", len(strategies), lock=False)
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                futures: list[Future[bytes]] = [
                    pool.submit(_child, i, msgspec.json.encode(s)) for i, s in enumerate(strategies)
                ]
                pending = set(futures)
                while pending:
                    _, pending = wait(pending, timeout=0.1)
                    if progress is not None:
                        progress(sum(_PROGRESS), total)
                encoded = [f.result() for f in futures]
        finally:
            _PROGRESS = None
    decoder = msgspec.msgpack.Decoder(EngineResult)
    results = [decoder.decode(b) for b in encoded]
    if options.journal is not None:
        write_journal(options.journal, results)
    outcomes = [_outcome(r) for r in results]
    time, equity, stats = _portfolio(outcomes)
    return Outcome(
        outcomes,
        stats,
        time,
        equity,
        every,
        sum(r.candles for r in results),
    )


def write_journal(path: Path, results: list[EngineResult]) -> None:
    """A fresh journal holding every strategy's events, in config order."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    journal = Journal(path)
    try:
        for result in results:
            events = result.events
            for i in range(0, len(events), _JOURNAL_BATCH):
                journal.append(events[i : i + _JOURNAL_BATCH])
    finally:
        journal.close()


def _outcome(result: EngineResult) -> StrategyOutcome:
    time = np.frombuffer(result.time, dtype=np.int64)
    equity = np.frombuffer(result.equity, dtype=np.float64)
    close = np.frombuffer(result.close, dtype=np.float64)
    trades = trades_of(result.events)
    if not len(time):
        return StrategyOutcome(result, trades, {})
    return StrategyOutcome(result, trades, compute(time, equity, close, trades, result.warmup))


def _portfolio(outcomes: list[StrategyOutcome]) -> tuple[I64, F64, Stats]:
    """Every strategy's equity summed on the union of their times (each carried forward).

    The market for Buy & Hold and Beta is the equal-weight average of each strategy's first
    symbol, relative to its close at the strategy's warm-up bar.
    """
    live = [o for o in outcomes if len(o.time)]
    if not live:
        return np.empty(0, dtype=np.int64), np.empty(0), {}
    time = np.unique(np.concatenate([o.time for o in live]))
    equity = np.zeros(len(time))
    market = np.zeros(len(time))
    for o in live:
        at = np.searchsorted(o.time, time, "right") - 1
        before = at < 0
        at = np.maximum(at, 0)
        equity += np.where(before, o.result.cash, o.equity[at])
        close = o.prices()[3]
        warm = min(o.result.warmup, len(close) - 1)
        relative = close[at] / close[warm]
        relative[(at < warm) | before] = 1.0
        market += relative
    market /= len(live)
    trades = sorted((t for o in live for t in o.trades), key=lambda t: (t.exit_time, t.entry_time))
    return time, equity, compute(time, equity, market, trades, 0)
