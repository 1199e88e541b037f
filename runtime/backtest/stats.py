"""Backtest statistics with backtesting.py's names and definitions, computed with numpy.

Users compare one to one, so each figure follows backtesting.py 0.6's definition, including
its choices: exposure counts the bars of closed trades; returns are annualised from daily
(weekly, monthly) equity returns compounded geometrically, over 252 trading days a year or
365 when the data has weekends; durations are rounded up to the data's own resolution
(a day for daily candles). Durations are given in seconds, times as ISO 8601 UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from runtime.messages import Event, PositionClosed

__all__ = ["DURATION_KEYS", "Stats", "Trade", "compute", "format_value", "trades_of"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Stats = dict[str, float | int | str]

DURATION_KEYS = (
    "Duration",
    "Max. Drawdown Duration",
    "Avg. Drawdown Duration",
    "Max. Trade Duration",
    "Avg. Trade Duration",
)
_DAY_MS = 86_400_000
_NAN = float("nan")


class Trade(msgspec.Struct, frozen=True, gc=False):
    """One closed trade (a closed position), as the statistics see it.

    Untracked by the collector (it holds no container): a long backtest closes tens of
    thousands, and as tracked objects they set off full collections in whoever keeps them.
    """

    strategy_id: str
    symbol: str
    size: float  # signed: negative for a short
    entry_time: int  # ms
    exit_time: int  # ms
    entry_price: float
    exit_price: float
    pnl: float  # net of both commissions
    commissions: float
    reason: str

    @property
    def return_pct(self) -> float:
        """Return as a fraction of the entry value, net of commissions."""
        sign = 1.0 if self.size > 0 else -1.0
        gross = sign * (self.exit_price / self.entry_price - 1)
        return gross - self.commissions / (abs(self.size) * self.entry_price)


def trades_of(events: Sequence[Event]) -> list[Trade]:
    """The closed positions among ``events``, in the order they closed."""
    return [
        Trade(
            event.strategy_id,
            body.symbol,
            body.quantity if body.side == "long" else -body.quantity,
            body.opened_at,
            body.closed_at,
            body.entry_price,
            body.exit_price,
            body.realized_pnl,
            body.fees,
            body.reason,
        )
        for event in events
        if type(body := event.body) is PositionClosed  # nothing derives from it
    ]


def _iso(ms: int) -> str:
    return str(np.datetime64(ms, "ms")).replace(".000", "") + "Z"


def _period_ms(time: I64) -> float:
    """The data's bar spacing: median spacing of the last 100 bars."""
    if len(time) < 2:
        return _NAN
    return float(np.median(np.diff(time[-100:])))


def _resolution_ms(period: float) -> int:
    """The unit a duration is rounded up to: the finest non-zero unit of the bar spacing."""
    if math.isnan(period):
        return 1
    ms = round(period)
    for unit in (_DAY_MS, 3_600_000, 60_000, 1_000):
        if ms % unit == 0:
            return unit
    return 1


def _ceil(value_ms: float, unit: int) -> float:
    """``value_ms`` rounded up to ``unit``, in seconds (NaN stays NaN)."""
    if math.isnan(value_ms):
        return _NAN
    ns = int(value_ms * 1_000_000)
    unit_ns = unit * 1_000_000
    return -(-ns // unit_ns) * unit_ns / 1e9


def _mean_ms(values_ms: Sequence[int]) -> float:
    """Mean of integer ms durations the way a timedelta mean is taken (in ns, truncated)."""
    if not values_ms:
        return _NAN
    return int(sum(values_ms) * 1_000_000 / len(values_ms)) / 1_000_000


def _geometric_mean(returns: F64) -> float:
    r = np.nan_to_num(returns, nan=0.0) + 1
    if np.any(r <= 0):
        return 0.0
    if not len(r):
        return _NAN
    return float(np.exp(np.log(r).sum() / len(r)) - 1)


def _or_nan(x: float) -> float:
    return x if x else _NAN


def _div(a: float, b: float) -> float:
    """``a / b`` as numpy divides floats: by zero gives inf (or NaN), never an exception."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _drawdown_spells(time: I64, dd: F64) -> tuple[list[int], list[float]]:
    """Duration (ms) and deepest drawdown of every spell between two equity peaks."""
    at_peak = np.nonzero(dd == 0)[0]  # increasing; then the last bar, once
    if not len(at_peak) or at_peak[-1] != len(dd) - 1:
        at_peak = np.r_[at_peak, len(dd) - 1]
    prev, last = at_peak[:-1], at_peak[1:]
    keep = last > prev + 1
    prev, last = prev[keep], last[keep]
    durations = (time[last] - time[prev]).tolist()
    # The deepest point of each spell [prev, last]: maxima over [prev, last + 1), in one call
    # (a last + 1 past the end reads the 0.0 appended, which no drawdown is below).
    bounds = np.empty(2 * len(prev), dtype=np.int64)
    bounds[0::2], bounds[1::2] = prev, last + 1
    peaks = np.maximum.reduceat(np.r_[dd, 0.0], bounds)[0::2].tolist() if len(prev) else []
    return durations, peaks


def _day_returns(time: I64, days: I64, equity: F64, freq_days: int) -> F64:
    """Equity returns from the last value of each day (week, month, year); ``days`` are the
    days since the epoch of ``time``."""
    if freq_days == 7:
        key = (days + 3) // 7  # weeks Monday to Sunday (1970-01-01 was a Thursday)
    elif freq_days == 31:
        key = time.astype("datetime64[ms]").astype("datetime64[M]").astype(np.int64)
    elif freq_days == 365:
        key = time.astype("datetime64[ms]").astype("datetime64[Y]").astype(np.int64)
    else:
        key = days
    if not len(key):
        return np.empty(0)
    last = np.r_[np.nonzero(np.diff(key))[0], len(key) - 1]
    values = equity[last]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = values[1:] / values[:-1] - 1
    return r[~np.isnan(r)]


def _column(trades: Sequence[Trade], field: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """One field of every trade as an array, read in C."""
    return np.fromiter(map(attrgetter(field), trades), dtype=dtype, count=len(trades))


def compute(
    time: I64,
    equity: F64,
    close: F64,
    trades: Sequence[Trade],
    warmup: int = 0,
    bars: Sequence[I64] | None = None,
) -> Stats:
    """The statistics of one equity curve and its closed trades.

    ``time`` are the bars' open times (ms), ``equity`` the equity after each bar, ``close``
    the market's closes (Buy & Hold from the bar ``warmup``, and Beta). ``bars`` gives, per
    trade, ``(entry_bar, exit_bar)`` indices when they are not found by time.
    """
    s: Stats = {}
    n = len(time)
    start, end = int(time[0]), int(time[-1])
    period = _period_ms(time)
    unit = _resolution_ms(period)
    s["Start"] = _iso(start)
    s["End"] = _iso(end)
    s["Duration"] = (end - start) / 1000

    # The trades' fields as columns, each read in C: a long run closes tens of thousands.
    size = _column(trades, "size", np.float64)
    entry_time = _column(trades, "entry_time", np.int64)
    exit_time = _column(trades, "exit_time", np.int64)
    entry_price = _column(trades, "entry_price", np.float64)
    exit_price = _column(trades, "exit_price", np.float64)
    pl = _column(trades, "pnl", np.float64)
    if bars is None:
        entry_bar = np.searchsorted(time, entry_time, "left")
        exit_bar = np.searchsorted(time, exit_time, "left")
    else:
        entry_bar, exit_bar = bars[0], bars[1]
    # 1 on every bar some trade covers (entry to exit bar, both in): where more have begun
    # than have ended.
    begun = np.bincount(np.asarray(entry_bar, dtype=np.int64), minlength=n + 1)
    ended = np.bincount(np.asarray(exit_bar, dtype=np.int64) + 1, minlength=n + 1)
    have_position = np.count_nonzero(np.cumsum(begun[:n] - ended[:n]) > 0)
    s["Exposure Time [%]"] = have_position / n * 100
    s["Equity Final [$]"] = float(equity[-1])
    s["Equity Peak [$]"] = float(equity.max())
    commissions = sum(map(attrgetter("commissions"), trades))  # left to right, as the trades closed
    if commissions:
        s["Commissions [$]"] = commissions
    total = float((equity[-1] - equity[0]) / equity[0] * 100)
    s["Return [%]"] = total
    c = close
    w = min(warmup, n - 1)
    hold = float((c[-1] - c[w]) / c[w] * 100)
    s["Buy & Hold Return [%]"] = hold

    freq_days = 0 if math.isnan(period) else int(period // _DAY_MS)
    days_since_epoch = time // _DAY_MS
    weekday = (days_since_epoch + 3) % 7  # Monday is 0
    have_weekends = np.count_nonzero(weekday >= 5) / n > 2 / 7 * 0.6
    year_days = {7: 52, 31: 12, 365: 1}.get(freq_days, 365 if have_weekends else 252)
    day_returns = _day_returns(time, days_since_epoch, equity, freq_days)
    g = _geometric_mean(day_returns)
    annual = (1 + g) ** year_days - 1
    ret_ann = annual * 100
    s["Return (Ann.) [%]"] = ret_ann
    var = float(day_returns.var(ddof=1)) if len(day_returns) > 1 else _NAN
    with np.errstate(invalid="ignore"):
        vol = float(np.sqrt((var + (1 + g) ** 2) ** year_days - (1 + g) ** (2 * year_days)) * 100)
    s["Volatility (Ann.) [%]"] = vol
    days = (end - start) // _DAY_MS
    seconds = ((end - start) % _DAY_MS) // 1000
    years = (days + seconds / 86400) / 365.25
    s["CAGR [%]"] = ((float(equity[-1]) / equity[0]) ** (1 / years) - 1) * 100 if years else _NAN
    s["Sharpe Ratio"] = _div(ret_ann, _or_nan(vol))
    downside = np.sqrt(np.mean(np.clip(day_returns, -np.inf, 0) ** 2)) if len(day_returns) else _NAN
    s["Sortino Ratio"] = _div(annual, float(downside) * np.sqrt(year_days))
    dd = 1 - equity / np.maximum.accumulate(equity)
    max_dd = -float(np.nan_to_num(dd.max()))
    s["Calmar Ratio"] = _div(annual, _or_nan(-max_dd))
    with np.errstate(divide="ignore", invalid="ignore"):
        equity_log = np.log(equity[1:] / equity[:-1])
        market_log = np.log(c[1:] / c[:-1])
    beta = _NAN
    if len(equity_log) > 1:
        cov = np.cov(equity_log, market_log)
        beta = _div(cov[0, 1], cov[1, 1])
    s["Alpha [%]"] = total - beta * hold
    s["Beta"] = beta
    s["Max. Drawdown [%]"] = max_dd * 100
    spells, peaks = _drawdown_spells(time, dd)
    if spells:
        s["Avg. Drawdown [%]"] = -float(np.mean(peaks)) * 100
        s["Max. Drawdown Duration"] = _ceil(float(max(spells)), unit)
        s["Avg. Drawdown Duration"] = _ceil(_mean_ms(spells), unit)
    else:
        nonzero = dd[dd != 0]
        s["Avg. Drawdown [%]"] = -float(nonzero.mean()) * 100 if len(nonzero) else _NAN
        s["Max. Drawdown Duration"] = _NAN
        s["Avg. Drawdown Duration"] = _NAN

    n_trades = len(trades)
    s["# Trades"] = n_trades
    # Trade.return_pct for every trade: the same operations in the same order, so the same
    # values to the last bit.
    sign = np.where(size > 0, 1.0, -1.0)
    commission = _column(trades, "commissions", np.float64)
    returns = sign * (exit_price / entry_price - 1) - commission / (np.abs(size) * entry_price)
    durations = (exit_time - entry_time).tolist()
    win_rate = float((pl > 0).mean()) if n_trades else _NAN
    s["Win Rate [%]"] = win_rate * 100
    s["Best Trade [%]"] = float(returns.max()) * 100 if n_trades else _NAN
    s["Worst Trade [%]"] = float(returns.min()) * 100 if n_trades else _NAN
    s["Avg. Trade [%]"] = _geometric_mean(returns) * 100
    s["Max. Trade Duration"] = _ceil(float(max(durations)), unit) if durations else _NAN
    s["Avg. Trade Duration"] = _ceil(_mean_ms(durations), unit)
    s["Profit Factor"] = _div(
        float(returns[returns > 0].sum()), _or_nan(abs(float(returns[returns < 0].sum())))
    )
    s["Expectancy [%]"] = float(returns.mean()) * 100 if n_trades else _NAN
    std = float(pl.std(ddof=1)) if n_trades > 1 else _NAN
    mean_pl = float(pl.mean()) if n_trades else _NAN
    s["SQN"] = _div(np.sqrt(n_trades) * mean_pl, _or_nan(std))
    wins, losses = pl[pl > 0], pl[pl < 0]
    avg_win = float(wins.mean()) if len(wins) else _NAN
    avg_loss = float(-losses.mean()) if len(losses) else _NAN
    s["Kelly Criterion"] = win_rate - _div(1 - win_rate, _div(avg_win, avg_loss))
    return {k: v if isinstance(v, str | int) else float(v) for k, v in s.items()}


def format_value(key: str, value: float | int | str) -> str:
    """A figure as the stats table shows it."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "--"
    if key in DURATION_KEYS:
        days, rest = divmod(int(value), 86_400)
        hours, rest = divmod(rest, 3_600)
        minutes, sec = divmod(rest, 60)
        return f"{days} days {hours:02d}:{minutes:02d}:{sec:02d}"
    return f"{value:.5g}" if abs(value) < 1e5 else f"{value:.2f}"
