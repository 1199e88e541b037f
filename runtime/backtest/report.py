"""The backtest report: one self-contained HTML file, nothing fetched when it opens.

The figures travel as JSON inside the page; a small inline script draws them as SVG (equity,
drawdown, candles with the trades) when the page loads. Long series are reduced per pixel
column first (candles: open, high, low, close of the bucket; equity: its last value;
drawdown: the deepest), so a million candles still make a light page. The page holds no
time of its own making: the same backtest gives the same bytes.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from runtime.backtest.run import Outcome
from runtime.backtest.stats import Stats, format_value

__all__ = ["render", "write_report"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_MAX_POINTS = 1200  # buckets per chart
_MAX_MARKERS = 1500  # trades drawn on a candle chart


def _buckets(n: int) -> I64:
    """Start index of each bucket when ``n`` points are reduced to at most _MAX_POINTS."""
    if n <= _MAX_POINTS:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n, _MAX_POINTS, endpoint=False).astype(np.int64))


def _line(time: I64, values: F64, deepest: bool = False) -> dict[str, list[Any]]:
    starts = _buckets(len(time))
    if deepest:
        reduced = np.maximum.reduceat(values, starts) if len(values) else values
    else:
        ends = np.r_[starts[1:], len(values)] - 1
        reduced = values[ends] if len(values) else values
    return {"t": time[starts].tolist(), "v": [round(float(v), 10) for v in reduced]}


def _candles(time: I64, o: F64, h: F64, low: F64, c: F64) -> dict[str, list[Any]]:
    starts = _buckets(len(time))
    if not len(time):
        return {"t": [], "o": [], "h": [], "l": [], "c": []}
    ends = np.r_[starts[1:], len(time)] - 1
    return {
        "t": time[starts].tolist(),
        "o": o[starts].tolist(),
        "h": np.maximum.reduceat(h, starts).tolist(),
        "l": np.minimum.reduceat(low, starts).tolist(),
        "c": c[ends].tolist(),
    }


def _drawdown(equity: F64) -> F64:
    if not len(equity):
        return equity
    return 1 - equity / np.maximum.accumulate(equity)


def _table(outcome: Outcome) -> str:
    columns: list[tuple[str, Stats]] = [(o.result.strategy_id, o.stats) for o in outcome.strategies]
    if len(columns) > 1:
        columns.append(("portfolio", outcome.portfolio))
    keys: list[str] = []
    for _, stats in columns:
        keys.extend(k for k in stats if k not in keys)
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _ in columns)
    rows = []
    for key in keys:
        cells = "".join(
            f"<td>{html.escape(format_value(key, stats[key])) if key in stats else ''}</td>"
            for _, stats in columns
        )
        rows.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    return f'<table id="stats"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _data(outcome: Outcome) -> dict[str, Any]:
    strategies = []
    for o in outcome.strategies:
        time, equity = o.time, o.equity
        trades = o.trades[:_MAX_MARKERS]
        strategies.append(
            {
                "id": o.result.strategy_id,
                "state": o.result.state,
                "candles": _candles(time, *o.prices()),
                "equity": _line(time, equity),
                "drawdown": _line(time, _drawdown(equity), deepest=True),
                "trades": [
                    [t.entry_time, t.entry_price, t.exit_time, t.exit_price, t.size, t.pnl]
                    for t in trades
                ],
                "trades_left_out": len(o.trades) - len(trades),
            }
        )
    return {
        "portfolio": {
            "equity": _line(outcome.portfolio_time, outcome.portfolio_equity),
            "drawdown": _line(
                outcome.portfolio_time, _drawdown(outcome.portfolio_equity), deepest=True
            ),
        },
        "strategies": strategies,
    }


def render(outcome: Outcome, title: str) -> str:
    """The report page for ``outcome``."""
    data = msgspec.json.encode(_data(outcome)).decode().replace("</", "<\\/")
    sections = []
    for i, o in enumerate(outcome.strategies):
        name = html.escape(o.result.strategy_id)
        sections.append(
            f'<section class="strategy"><h2>{name}</h2>'
            f'<svg id="candles-{i}" class="plot" data-kind="candles" data-index="{i}"></svg>'
            f'<svg id="equity-{i}" class="plot small" data-kind="equity" data-index="{i}"></svg>'
            f'<svg id="drawdown-{i}" class="plot small" data-kind="drawdown" data-index="{i}">'
            "</svg></section>"
        )
    gaps = [
        f"<li>{html.escape(s.symbol)} {s.timeframe}: {len(s)} candles, {s.holes} holes in "
        f"the source ({s.missing} candles missing, not filled)</li>"
        for s in outcome.streams
    ]
    return _PAGE.format(
        title=html.escape(title),
        table=_table(outcome),
        sections="".join(sections),
        gaps="".join(gaps),
        data=data,
        style=_STYLE,
        script=_SCRIPT,
    )


def write_report(path: Path, outcome: Outcome, title: str) -> None:
    """Write the report page to ``path``."""
    path.write_text(render(outcome, title), encoding="utf-8")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body>
<h1>{title}</h1>
<section class="portfolio"><h2>Portfolio</h2>
<svg id="equity-portfolio" class="plot" data-kind="equity" data-index="portfolio"></svg>
<svg id="drawdown-portfolio" class="plot small" data-kind="drawdown" data-index="portfolio">
</svg></section>
<h2>Statistics</h2>
{table}
<h2>Data</h2><ul id="data">{gaps}</ul>
{sections}
<script id="figures" type="application/json">{data}</script>
<script>{script}</script>
</body></html>
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin: 20px 0 6px; }
svg.plot { display: block; width: 100%; height: 320px; background: #fafafa;
  border: 1px solid #ddd; margin-bottom: 6px; }
svg.small { height: 140px; }
table#stats { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table#stats th, table#stats td { border-bottom: 1px solid #eee; padding: 2px 10px;
  text-align: right; }
table#stats th:first-child { text-align: left; font-weight: normal; color: #555; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("figures").textContent);
  const NS = "http://www.w3.org/2000/svg";
  function el(parent, name, attrs) {
    const node = document.createElementNS(NS, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    parent.appendChild(node);
    return node;
  }
  function frame(svg, t, lo, hi) {
    const w = svg.clientWidth || 900, h = svg.clientHeight || 300, pad = 40;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const t0 = t[0], t1 = t[t.length - 1] === t0 ? t0 + 1 : t[t.length - 1];
    if (hi === lo) { hi = lo + 1; }
    const x = v => pad + (v - t0) / (t1 - t0) * (w - 2 * pad);
    const y = v => h - 20 - (v - lo) / (hi - lo) * (h - 40);
    el(svg, "line", {x1: pad, y1: h - 20, x2: w - pad, y2: h - 20, stroke: "#999",
                     class: "axis"});
    el(svg, "line", {x1: pad, y1: 20, x2: pad, y2: h - 20, stroke: "#999", class: "axis"});
    const label = el(svg, "text", {x: 2, y: 16, "font-size": 11, fill: "#555"});
    label.textContent = hi.toPrecision(6);
    const low = el(svg, "text", {x: 2, y: h - 24, "font-size": 11, fill: "#555"});
    low.textContent = lo.toPrecision(6);
    const first = el(svg, "text", {x: pad, y: h - 4, "font-size": 11, fill: "#555"});
    first.textContent = new Date(t0).toISOString().slice(0, 10);
    const last = el(svg, "text", {x: w - pad - 70, y: h - 4, "font-size": 11, fill: "#555"});
    last.textContent = new Date(t1).toISOString().slice(0, 10);
    return {x: x, y: y};
  }
  function line(svg, series, color, cls, invert) {
    const t = series.t, v = series.v.map(a => a === null ? 0 : (invert ? -a : a));
    if (!t.length) return;
    const f = frame(svg, t, Math.min(...v), Math.max(...v));
    let d = "";
    for (let i = 0; i < t.length; i++) d += (i ? "L" : "M") + f.x(t[i]).toFixed(1) + " " +
      f.y(v[i]).toFixed(1);
    el(svg, "path", {d: d, fill: "none", stroke: color, "stroke-width": 1.5, class: cls});
  }
  function candles(svg, s) {
    const c = s.candles, t = c.t;
    if (!t.length) return;
    const f = frame(svg, t, Math.min(...c.l), Math.max(...c.h));
    const width = Math.max(1, (f.x(t[t.length - 1]) - f.x(t[0])) / t.length * 0.7);
    for (let i = 0; i < t.length; i++) {
      const up = c.c[i] >= c.o[i], color = up ? "#26a269" : "#c01c28", x = f.x(t[i]);
      el(svg, "line", {x1: x, x2: x, y1: f.y(c.h[i]), y2: f.y(c.l[i]), stroke: color,
                       class: "wick"});
      const top = f.y(Math.max(c.o[i], c.c[i])), bottom = f.y(Math.min(c.o[i], c.c[i]));
      el(svg, "rect", {x: x - width / 2, y: top, width: width,
                       height: Math.max(1, bottom - top), fill: color, class: "candle"});
    }
    for (const tr of s.trades) {
      const long = tr[4] > 0, ex = f.x(tr[0]), ey = f.y(tr[1]);
      const tip = long ? ey + 8 : ey - 8, base = long ? ey + 16 : ey - 16;
      el(svg, "path", {d: "M" + ex + " " + tip + "L" + (ex - 5) + " " + base + "L" + (ex + 5) +
                       " " + base + "Z", fill: long ? "#1c71d8" : "#e66100",
                       class: "trade-entry"});
      el(svg, "circle", {cx: f.x(tr[2]), cy: f.y(tr[3]), r: 3,
                         fill: tr[5] > 0 ? "#26a269" : "#c01c28", class: "trade-exit"});
    }
  }
  let drawn = 0;
  for (const svg of document.querySelectorAll("svg.plot")) {
    const index = svg.dataset.index, kind = svg.dataset.kind;
    const s = index === "portfolio" ? data.portfolio : data.strategies[Number(index)];
    if (kind === "candles") candles(svg, s);
    else if (kind === "equity") line(svg, s.equity, "#1c71d8", "equity-line", false);
    else line(svg, s.drawdown, "#c01c28", "drawdown-line", true);
    svg.setAttribute("data-rendered", "yes");
    drawn++;
  }
  document.body.setAttribute("data-charts", String(drawn));
})();
"""
