"""Prometheus series of the strategies' sub-accounts and of their sum (the portfolio).

Read at scrape time from each strategy's last journaled ``account`` point (see
workers/services/ledger.py). Per strategy ``stratrun_account_*{strategy_id}``; the totals
``stratrun_portfolio_*`` carry no label: the sum of the strategies' series, added up in
strategy-id order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from runtime.figures import StrategyFigures
from runtime.messages import AccountUpdated

__all__ = ["account_metrics", "portfolio_sums"]

# (name, help, field of AccountUpdated, counter?)
_SERIES: tuple[tuple[str, str, str, bool], ...] = (
    ("capital", "Allocated capital (the config's execution.cash)", "capital", False),
    ("cash", "Capital less fees plus the closed positions' gross PnL", "cash", False),
    ("exposure", "Value of the open positions at their marks", "exposure", False),
    ("equity", "Cash plus the open positions' gross PnL at their marks", "equity", False),
    ("realized_pnl", "PnL of the closed positions, net of fees", "realized_pnl", False),
    ("unrealized_pnl", "PnL of the open positions at their marks, net of entry fees",
     "unrealized_pnl", False),
    ("fees", "Fees paid, entries and exits", "fees", True),
    ("max_drawdown", "Deepest fall of the equity from a peak, on the account's points",
     "max_drawdown", False),
    ("trades", "Positions closed (a count)", "trades", True),
)  # fmt: skip

# Sums that make sense across strategies (a drawdown does not add up).
_SUMMED = ("capital", "cash", "exposure", "equity", "realized_pnl", "unrealized_pnl", "fees")


def portfolio_sums(accounts: Mapping[str, AccountUpdated]) -> dict[str, float]:
    """Each summed figure over every strategy, in strategy-id order, plus ``trades``."""
    sums = dict.fromkeys(_SUMMED, 0.0)
    trades = 0
    for sid in sorted(accounts):
        account = accounts[sid]
        for name in _SUMMED:
            sums[name] += getattr(account, name)
        trades += account.trades
    sums["trades"] = float(trades)
    return sums


def account_metrics(snapshot: Mapping[str, StrategyFigures]) -> Iterator[Metric]:
    """The ``stratrun_account_*`` and ``stratrun_portfolio_*`` families."""
    accounts = {sid: fig.account for sid, fig in snapshot.items() if fig.account is not None}
    drawdown = GaugeMetricFamily(
        "stratrun_account_drawdown",
        "Fall of the equity from its peak at the last point, in quote currency.",
        labels=["strategy_id"],
    )
    for sid in sorted(accounts):
        account = accounts[sid]
        drawdown.add_metric([sid], account.peak_equity - account.equity)
    yield drawdown
    for name, text, attribute, counter in _SERIES:
        family = CounterMetricFamily if counter else GaugeMetricFamily
        per = family(
            f"stratrun_account_{name}",
            f"{text}; the strategy's sub-account, amounts in quote currency.",
            labels=["strategy_id"],
        )
        for sid in sorted(accounts):
            per.add_metric([sid], getattr(accounts[sid], attribute))
        yield per
    sums = portfolio_sums(accounts)
    for name, text, _, counter in _SERIES:
        if name not in sums:
            continue
        family = CounterMetricFamily if counter else GaugeMetricFamily
        total = family(
            f"stratrun_portfolio_{name}", f"{text}; summed over every strategy's sub-account."
        )
        total.add_metric([], sums[name])
        yield total
