"""One strategy over history: the worker's own StrategyRunner, fed candle by candle.

Nothing here decides or fills: the runner, the service container, the orchestrators and
the paper execution model are the ones a live worker uses. The engine only orders the
candles of the strategy's streams in time (a candle counts when it closes; on a tie the
shorter timeframe first, then the config's symbol order, as the broker publishes them),
stamps each event with the closing time of the candle being processed (so a run is
deterministic), and follows the equity after every decision candle.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import repeat

import msgspec
import numpy as np
import numpy.typing as npt

from broker.resample import timeframe_ms
from runtime.backtest.data import Candles
from runtime.config import StrategyConfig
from runtime.messages import Candle, Event, EventBody
from workers.outbox import Outbox
from workers.runner import StrategyRunner
from workers.services.positions import PositionLifecycleService

__all__ = ["EngineResult", "collector_paused", "run_strategy"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_PROGRESS_EVERY = 4096


class EngineResult(msgspec.Struct, frozen=True):
    """What one strategy's run leaves: its events, equity curve and market prices.

    Parameters
    ----------
    strategy_id:
        The strategy.
    events:
        Every event it emitted, in order.
    time:
        Open times (ms) of the decision candles, int64 bytes; one equity value each.
    equity:
        Equity after each decision candle (cash plus open positions at the close), float64.
    open, high, low, close:
        The first symbol's decision candles, float64 bytes, aligned with ``time``.
    candles:
        Candles fed to the strategy (every stream).
    warmup:
        Decision candles before the first the strategy can decide on.
    state:
        The strategy's state at the end (``stopped``, or ``errored``).
    cash:
        Starting cash.
    """

    strategy_id: str
    events: list[Event]
    time: bytes
    equity: bytes
    open: bytes
    high: bytes
    low: bytes
    close: bytes
    candles: int
    warmup: int
    state: str
    cash: float


class _Checked(Candle, array_like=True, frozen=True, gc=False):
    """A Candle from a row the data module checked already (finite, positive, low and high
    around open and close): not checked a second time, once per candle."""

    # msgspec calls __post_init__(self) after every construction; a C built-in that does
    # nothing with its argument costs less than a Python function that does nothing.
    __post_init__ = id  # type: ignore[assignment,misc]


class _ClockOutbox(Outbox):
    """An outbox whose clock is the candle being processed; it keeps every event."""

    def __init__(self, strategy_id: str) -> None:
        super().__init__(strategy_id, 0, lambda event: None)
        self.now_ms = 0  # open time of the candle in hand
        self.length_ns = 0  # its timeframe's length
        self.kept: list[Event] = []

    def emit(self, body: EventBody) -> Event:
        self.last_seq = seq = self.last_seq + 1
        event = Event(self.strategy_id, seq, self.now_ms * 1_000_000 + self.length_ns, body)
        self.kept.append(event)
        return event


@contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off for a while.

    A backtest makes objects by the million and no reference cycles: with the collector on,
    each full collection walks every object made so far, so the time grows faster than the
    number of candles (a million candles took twice as long as five runs of 200,000).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _order(streams: list[Candles]) -> tuple[list[int], list[int]]:
    """(stream index, row) of every candle, in the order they close."""
    closes = [s.time + timeframe_ms(s.timeframe) for s in streams]
    close = np.concatenate(closes)
    length = np.concatenate(
        [np.full(len(s), timeframe_ms(s.timeframe), dtype=np.int64) for s in streams]
    )
    which = np.concatenate([np.full(len(s), i, dtype=np.int64) for i, s in enumerate(streams)])
    row = np.concatenate([np.arange(len(s), dtype=np.int64) for s in streams])
    order = np.lexsort((which, length, close))
    return which[order].tolist(), row[order].tolist()


def run_strategy(
    config: StrategyConfig,
    streams: list[Candles],
    progress: Callable[[int], None] | None = None,
) -> EngineResult:
    """Run ``config`` over ``streams`` (each ``SYMBOL|TIMEFRAME`` the strategy uses)."""
    outbox = _ClockOutbox(config.id)
    runner = StrategyRunner(config, outbox, account_points=False)
    decision_tf = config.timeframe
    decision = [s for s in streams if s.timeframe == decision_tf]
    main = decision[0]
    times = (
        main.time if len(decision) == 1 else np.unique(np.concatenate([s.time for s in decision]))
    )
    equity = np.empty(len(times), dtype=np.float64)
    with collector_paused():
        runner.start()
        if len(streams) == 1:
            fed = _feed_one(main, runner, outbox, equity, progress)
        else:
            fed = _feed_many(streams, decision_tf, times, runner, outbox, equity, progress)
    outbox.now_ms = int(times[-1]) if len(times) else 0
    outbox.length_ns = timeframe_ms(decision_tf) * 1_000_000
    runner.stop()
    if len(main) != len(times):  # several symbols: the first one's prices on the union times
        at = np.searchsorted(main.time, times, "right") - 1
        at = np.maximum(at, 0)
        prices = [main.open[at], main.high[at], main.low[at], main.close[at]]
    else:
        prices = [main.open, main.high, main.low, main.close]
    o, h, low, c = (p.astype(np.float64).tobytes() for p in prices)
    return EngineResult(
        config.id,
        outbox.kept,
        times.astype(np.int64).tobytes(),
        equity.tobytes(),
        o,
        h,
        low,
        c,
        candles=fed,
        warmup=runner.strategy.warmup(),
        state=runner.state,
        cash=config.execution.cash,
    )


def _feed_one(
    s: Candles,
    runner: StrategyRunner,
    outbox: _ClockOutbox,
    equity: F64,
    progress: Callable[[int], None] | None,
) -> int:
    """The common case, kept lean: one stream, every candle a decision candle.

    The equity is not read after every candle, only at the end: between two changes of the
    cash or of what is held (fills, exits sent) each candle only marks what is held at its
    close, so the equity is known from the positions held after the last change
    (:class:`_Held`).
    """
    symbol, tf = s.symbol, s.timeframe
    outbox.length_ns = timeframe_ms(tf) * 1_000_000
    on_candle = runner.on_candle
    positions = runner.container.positions
    held = _Held(positions)
    note = held.note
    seen = positions.changes
    columns = (s.time, s.open, s.high, s.low, s.close, s.volume)
    n = len(s)
    for start in range(0, n, _PROGRESS_EVERY):  # chunks: no progress test per candle
        end = min(start + _PROGRESS_EVERY, n)
        # Built by map() in C, a chunk at a time: cheaper than unpacking a row per candle.
        candles = list(
            map(
                _Checked,
                repeat(symbol),
                repeat(tf),
                *(column[start:end].tolist() for column in columns),
                range(start + 1, end + 1),  # seq
            )
        )
        for candle in candles:
            outbox.now_ms = candle.open_time
            on_candle(candle)
            if positions.changes != seen:
                seen = positions.changes
                note(candle.seq - 1)
        if progress is not None:
            progress(end)
    held.equity(equity, s.close.astype(np.float64), runner.candles)
    return n


class _Held:
    """What the positions service held after each candle where something happened."""

    def __init__(self, positions: PositionLifecycleService) -> None:
        self._positions = positions
        self.before = positions.equity()
        self.at: list[int] = []  # candle indexes, increasing
        # After each (the first from before the first candle): the cash, how many positions
        # were held, and their entry prices, quantities and sides, in the order equity()
        # adds them, one note after the other. Flat lists of numbers and strings: objects
        # per note (tuples, or the positions themselves) would be tens of thousands that the
        # collector tracks, scans and, once they reach the oldest generation, collects in full.
        self.cash: list[float] = []
        self.count: list[int] = []
        self.entry: list[float] = []
        self.quantity: list[float] = []
        self.side: list[str] = []
        self.note(-1)
        self.at.clear()  # that first note is at no candle

    def note(self, index: int) -> None:
        self.at.append(index)
        p = self._positions
        held = p.held_in_equity_order()
        self.cash.append(p.cash)
        self.count.append(len(held))
        for position in held:
            self.entry.append(position.entry_price)
            self.quantity.append(position.quantity)
            self.side.append(position.side)

    def equity(self, equity: F64, close: F64, processed: int) -> None:
        """Write the equity after each candle into ``equity``.

        The runner acted on the first ``processed`` candles (all, unless it gave up); the
        last of them may not have been marked (it gave up inside ``on_fill``), and nothing
        changed after it: there and after, the service's own ``equity()``, read now.
        """
        if processed == 0:
            equity[:] = self.before
            return
        # The holdings after each candle: those noted after it or the last candle before it,
        # i.e. how many notes were taken up to it (at most one per candle).
        noted = np.zeros(processed, dtype=np.int64)
        noted[self.at] = 1
        state = np.cumsum(noted[: processed - 1])
        equity[: processed - 1] = self._equity_between(state, close[: processed - 1])
        equity[processed - 1 :] = self._positions.equity()

    def _equity_between(self, state: I64, close: F64) -> F64:
        """``PositionLifecycleService.equity()`` after each candle, with what note
        ``state`` says was held then, marked at the candle's close: the same operations in
        the same order (the cash, then each position's ``(close - entry) * quantity`` added
        if long, subtracted if short), so the same numbers to the last bit. Tests compare it
        with the service's after every candle."""
        equity = np.array(self.cash, dtype=np.float64)[state]
        count = np.array(self.count, dtype=np.int64)
        first = np.cumsum(count) - count  # where each note's positions start
        entries = np.array(self.entry, dtype=np.float64)
        quantities = np.array(self.quantity, dtype=np.float64)
        signs = np.fromiter(map(_SIGN.__getitem__, self.side), np.float64, len(self.side))
        for slot in range(int(count.max())):
            held = count > slot
            at = np.where(held, first + slot, 0)
            entry = np.where(held, entries[at], 0.0)[state]
            quantity = np.where(held, quantities[at], 0.0)[state]
            sign = np.where(held, signs[at], 0.0)[state]
            # + gross if long, - gross if short (x + -g is x - g in IEEE arithmetic), + 0 if
            # nothing is held in this slot: one pass per operation, no select.
            equity = equity + sign * ((close - entry) * quantity)
        return equity


_SIGN = {"long": 1.0, "short": -1.0}


def _feed_many(
    streams: list[Candles],
    decision_tf: str,
    times: I64,
    runner: StrategyRunner,
    outbox: _ClockOutbox,
    equity: F64,
    progress: Callable[[int], None] | None,
) -> int:
    """Several streams merged in closing order; equity sampled per decision time."""
    which, rows = _order(streams)
    columns = [
        (
            s.symbol,
            s.timeframe,
            timeframe_ms(s.timeframe) * 1_000_000,
            s.timeframe == decision_tf,
            s.time.tolist(),
            s.open.tolist(),
            s.high.tolist(),
            s.low.tolist(),
            s.close.tolist(),
            s.volume.tolist(),
        )
        for s in streams
    ]
    seqs = [0] * len(streams)
    on_candle = runner.on_candle
    value = runner.container.positions.equity
    slot = -1
    last_time = None
    n = 0
    for i, r in zip(which, rows, strict=True):
        symbol, tf, tf_ns, is_decision, t, o, h, low, c, v = columns[i]
        seqs[i] += 1
        time = t[r]
        outbox.now_ms = time
        outbox.length_ns = tf_ns
        on_candle(_Checked(symbol, tf, time, o[r], h[r], low[r], c[r], v[r], seqs[i]))
        if is_decision:
            if time != last_time:
                slot += 1
                last_time = time
            equity[slot] = value()
        n += 1
        if progress is not None and not n % _PROGRESS_EVERY:
            progress(n)
    if progress is not None:
        progress(n)
    return n
