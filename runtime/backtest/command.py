"""``stratrun backtest``: the command line of the backtest (registered in runtime/cli.py)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click
import msgspec

from runtime.backtest.data import DataError, parse_time
from runtime.backtest.run import Options, Outcome, run_backtest
from runtime.backtest.stats import Stats, format_value
from runtime.config import ConfigError, load_config

__all__ = ["backtest"]

DEMO_CONFIG = Path(__file__).resolve().parent.parent.parent / "examples" / "demo.toml"


class Progress:
    """A one-line progress bar on a terminal, shown once a run has lasted a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.shown = False
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty or now - self.started < 1.0 or now - self.last < 0.1:
            return
        self.last = now
        self.shown = True
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        rate = done / (now - self.started)
        self.stream.write(f"\r[{bar:<30}] {share:6.1%} {done:,}/{total:,} candles {rate:,.0f}/s")
        self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * 78 + "\r")
            self.stream.flush()


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            key, sep, target = item.partition("=")
            if not sep or not key or not target:
                raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
            pairs[key.strip()] = target.strip()
    return pairs


def _data_files(values: tuple[str, ...], symbols: list[str]) -> dict[str, str]:
    """``SYMBOL=FILE``, or ``FILE`` alone when its name starts with a feed's symbol (any case)."""
    files: dict[str, str] = {}
    for value in values:
        symbol, sep, path = value.partition("=")
        if not sep:
            path = value
            name = Path(value).name
            fits = [s for s in symbols if name.lower().startswith(s.lower())]
            if not fits:
                raise click.BadParameter(
                    f"{value}: name it SYMBOL=FILE (no feed symbol starts the file name)",
                    param_hint="--data",
                )
            symbol = max(fits, key=len)
        files[symbol] = path
    return files


def _when(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date or time", param_hint=what) from None


def _json_stats(stats: Stats) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in stats.items()}


def _as_json(outcome: Outcome, journal: Path | None, report: Path | None) -> bytes:
    return msgspec.json.encode(
        {
            "strategies": {
                o.result.strategy_id: {
                    "state": o.result.state,
                    "candles": o.result.candles,
                    "events": len(o.result.events),
                    "stats": _json_stats(o.stats),
                }
                for o in outcome.strategies
            },
            "portfolio": _json_stats(outcome.portfolio),
            "data": [
                {
                    "symbol": s.symbol,
                    "timeframe": s.timeframe,
                    "file": s.source,
                    "candles": len(s),
                    "holes": s.holes,
                    "missing": s.missing,
                }
                for s in outcome.streams
            ],
            "journal": str(journal) if journal else None,
            "report": str(report) if report else None,
        }
    )


def _print_table(outcome: Outcome) -> None:
    columns: list[tuple[str, Stats]] = [(o.result.strategy_id, o.stats) for o in outcome.strategies]
    if len(columns) > 1:
        columns.append(("portfolio", outcome.portfolio))
    keys: list[str] = []
    for _, stats in columns:
        keys.extend(k for k in stats if k not in keys)
    width = max(len(k) for k in keys) if keys else 10
    cells = [[format_value(k, s[k]) if k in s else "" for _, s in columns] for k in keys]
    col = [max([len(n), *(len(row[i]) for row in cells)]) for i, (n, _) in enumerate(columns)]
    click.echo(
        " " * width + "  " + "  ".join(n.rjust(w) for (n, _), w in zip(columns, col, strict=True))
    )
    for key, row in zip(keys, cells, strict=True):
        click.echo(
            key.ljust(width) + "  " + "  ".join(c.rjust(w) for c, w in zip(row, col, strict=True))
        )


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--data",
    "data",
    multiple=True,
    metavar="[SYMBOL=]FILE",
    help="Candles of SYMBOL from FILE instead of the config's feed (CSV or Parquet); "
    "without SYMBOL=, the feed whose symbol starts the file name.",
)
@click.option(
    "--columns",
    multiple=True,
    metavar="OURS=THEIRS,...",
    help="Column names of the data files, e.g. timestamp=Date,open=Open.",
)
@click.option("--from", "start", metavar="T", help="First candle time (ISO date/time, UTC).")
@click.option("--to", "end", metavar="T", help="Stop before this time (ISO date/time, UTC).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the HTML report here.")
@click.option(
    "--journal",
    type=click.Path(dir_okay=False),
    default="backtest.sqlite",
    show_default=True,
    help="The journal (replaced); '' for none.",
)
@click.option("--jobs", type=int, default=0, help="Strategies at a time (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def backtest(
    config: str | None,
    data: tuple[str, ...],
    columns: tuple[str, ...],
    start: str | None,
    end: str | None,
    report: str | None,
    journal: str,
    jobs: int,
    as_json: bool,
) -> None:
    """Run CONFIG's strategies over history (CONFIG defaults to the bundled demo)."""
    path = Path(config) if config else DEMO_CONFIG
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        click.echo(f"stratrun: config error: {exc}", err=True)
        sys.exit(2)
    options = Options(
        data=_data_files(data, [f.symbol for f in cfg.broker.feeds]),
        columns=_pairs(columns, "--columns"),
        start=_when(start, "--from"),
        end=_when(end, "--to"),
        jobs=jobs,
        journal=Path(journal) if journal else None,
    )
    progress = Progress(sys.stderr)
    began = time.monotonic()
    try:
        outcome = run_backtest(cfg, options, progress)
    except DataError as exc:
        progress.close()
        click.echo(f"stratrun: data error: {exc}", err=True)
        sys.exit(2)
    progress.close()
    elapsed = time.monotonic() - began
    report_path = Path(report) if report else None
    if report_path is not None:
        from runtime.backtest.report import write_report  # the page template: only when asked

        write_report(report_path, outcome, f"stratrun backtest: {Path(cfg.source).name}")
    if as_json:
        click.echo(_as_json(outcome, options.journal, report_path).decode())
    else:
        _print_table(outcome)
        for s in outcome.streams:
            if s.holes:
                click.echo(
                    f"data: {s.symbol} {s.timeframe}: {s.holes} holes in the source, "
                    f"{s.missing} candles missing (not filled)"
                )
        if options.journal is not None:
            click.echo(f"journal: {options.journal}")
        if report_path is not None:
            click.echo(f"report: {report_path}")
    click.echo(
        f"stratrun: {outcome.candles:,} candles in {elapsed:.2f}s "
        f"({outcome.candles / max(elapsed, 1e-9):,.0f} candles/s)",
        err=True,
    )
    errored = [o.result.strategy_id for o in outcome.strategies if o.result.state == "errored"]
    if errored:
        click.echo(f"stratrun: strategies that gave up on errors: {', '.join(errored)}", err=True)
        sys.exit(1)
