"""``stratrun top``: a refreshing table of the strategies, like top(1) for a trading system.

Each frame asks the manager for ``ps`` (state, positions, PnL, memory, restarts, uptime) and
scrapes the aggregator's metrics for the candle-to-decision histogram. The p99 is over the
last refresh interval when candles arrived in it, else over the whole run. :func:`render`
is pure (data in, lines out) so that the table can be tested without a terminal.
"""

from __future__ import annotations

import math
import os
import select
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from runtime.messages import ProcessRow

__all__ = [
    "Frame",
    "Histogram",
    "parse_latency",
    "quantile",
    "render",
    "run",
]

_LATENCY = "stratrun_candle_to_decision_seconds"
_CLEAR = "\x1b[H\x1b[2J"


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts by upper bound (``inf`` last), as Prometheus exposes them."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def minus(self, earlier: Histogram | None) -> Histogram:
        """The observations made since ``earlier`` (same bounds), or all if it does not fit."""
        if earlier is None or [b for b, _ in earlier.buckets] != [b for b, _ in self.buckets]:
            return self
        if earlier.count > self.count:  # the counts restarted (aggregator restart)
            return self
        return Histogram(
            tuple((b, c - e) for (b, c), (_, e) in zip(self.buckets, earlier.buckets, strict=True))
        )


def quantile(q: float, histogram: Histogram) -> float | None:
    """The ``q`` quantile, interpolated within its bucket as Prometheus' histogram_quantile;
    None without observations; the largest finite bound if it falls in the ``+Inf`` bucket."""
    total = histogram.count
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in histogram.buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def parse_latency(text: str, name: str = _LATENCY) -> dict[str, Histogram]:
    """One per-strategy histogram (by default candle-to-decision) in a Prometheus scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                sid = sample.labels["strategy_id"]
                found.setdefault(sid, []).append((float(sample.labels["le"]), sample.value))
    return {sid: Histogram(tuple(sorted(b))) for sid, b in found.items()}


@dataclass(slots=True)
class Frame:
    """What one screen shows: the processes, each strategy's p99 (seconds), a status line."""

    rows: list[ProcessRow]
    p99_s: dict[str, float | None] = field(default_factory=dict)
    taken_at: float = 0.0  # time.time()
    note: str = ""


_HEADER = (
    "STRATEGY",
    "STATE",
    "PID",
    "EQUITY",
    "REALIZED_PNL",
    "OPEN",
    "CANDLES",
    "P99",
    "RSS",
    "CPU",
    "RESTARTS",
    "UPTIME",
)


def render(frame: Frame, width: int = 0) -> list[str]:
    """The lines of one screen: a title, a header and one row per strategy, then the other
    processes in one line. ``width`` > 0 cuts lines to the terminal's width."""
    strategies = [r for r in frame.rows if r.role == "worker"]
    others = [r for r in frame.rows if r.role != "worker"]
    when = time.strftime("%H:%M:%S", time.localtime(frame.taken_at)) if frame.taken_at else ""
    running = sum(r.state == "running" for r in strategies)
    total_pnl = sum(r.realized_pnl for r in strategies)
    total_equity = sum(r.equity for r in strategies)
    lines = [
        f"stratrun top - {when}  strategies: {len(strategies)}, {running} running  "
        f"equity {total_equity:.6g}  realized PnL {total_pnl:+.6g}".rstrip(),
    ]
    if others:
        lines.append(
            "services: " + ", ".join(f"{r.name} {r.state} ({_memory(r.rss_bytes)})" for r in others)
        )
    lines.append("")
    cells = [_HEADER] + [
        (
            r.name,
            r.state,
            str(r.pid or "-"),
            f"{r.equity:.6g}" if r.capital else "-",
            f"{r.realized_pnl:+.6g}",
            str(r.open_positions),
            str(r.candles),
            _latency(frame.p99_s.get(r.name)),
            _memory(r.rss_bytes),
            f"{r.cpu_percent:.0f}%" if r.pid else "-",
            str(r.restarts),
            _duration(r.uptime_s),
        )
        for r in sorted(strategies, key=lambda r: r.name)
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_HEADER))]
    right = set(range(3, len(_HEADER)))  # numbers align right
    for row in cells:
        parts = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    if not strategies:
        lines.append("(no strategies)")
    if frame.note:
        lines += ["", frame.note]
    return [line[:width] for line in lines] if width > 0 else lines


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


def _memory(rss_bytes: int) -> str:
    return f"{rss_bytes / 2**20:.1f}M" if rss_bytes else "-"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fetch_metrics(url: str, timeout_s: float = 2.0) -> str:
    """The text of a Prometheus scrape of ``url``."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
    return body.decode()


class Sampler:
    """Builds frames: ``ps`` rows plus p99 over the interval since the previous frame."""

    def __init__(
        self,
        get_rows: Callable[[], list[ProcessRow]],
        get_metrics: Callable[[str], str] = fetch_metrics,
    ) -> None:
        self._get_rows = get_rows
        self._get_metrics = get_metrics
        self._previous: dict[str, Histogram] = {}

    def frame(self) -> Frame:
        rows = self._get_rows()
        url = next((r.detail["metrics_url"] for r in rows if "metrics_url" in r.detail), "")
        p99: dict[str, float | None] = {}
        note = ""
        if url:
            try:
                current = parse_latency(self._get_metrics(url))
            except (OSError, ValueError) as exc:
                current, note = {}, f"metrics unavailable ({url}: {exc})"
            for sid, histogram in current.items():
                recent = histogram.minus(self._previous.get(sid))
                p99[sid] = quantile(0.99, recent if recent.count else histogram)
            self._previous = current
        return Frame(rows, p99, time.time(), note)


@contextmanager
def _keys(stream: TextIO) -> Iterator[Callable[[float], str]]:
    """A function that waits up to N seconds for a key press (cbreak mode on a terminal)."""
    if not stream.isatty():

        def wait(seconds: float) -> str:
            time.sleep(seconds)  # no keyboard: only the refresh interval to wait for
            return ""

        yield wait
        return
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read_key(seconds: float) -> str:
        ready, _, _ = select.select([fd], [], [], seconds)
        return os.read(fd, 1).decode(errors="replace") if ready else ""

    try:
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(sampler: Sampler, interval_s: float, once: bool, out: TextIO) -> None:
    """Draw frames every ``interval_s`` until ``q`` or Ctrl-C (one frame with ``once``)."""
    if once:
        out.write("\n".join(render(sampler.frame())) + "\n")
        out.flush()
        return
    tty_out = out.isatty()
    try:
        with _keys(sys.stdin) as wait_key:
            while True:
                width = os.get_terminal_size(out.fileno()).columns if tty_out else 0
                lines = render(sampler.frame(), width)
                lines.append("(q to quit)")
                out.write((_CLEAR if tty_out else "") + "\n".join(lines) + "\n")
                out.flush()
                deadline = time.monotonic() + interval_s
                while (left := deadline - time.monotonic()) > 0:
                    if wait_key(left).lower() == "q":
                        return
    except KeyboardInterrupt:
        pass
