"""Cost of a JSON log line, and how fast ``stratrun logs`` reads a full rotated history.

Write: ``--lines`` INFO lines with two arguments through the JSON handler every process uses
(rotated at 10 MiB, 5 backups), against the standard library's RotatingFileHandler with a
plain-text format (the cost of the log line itself, before this format existed). Read: the
whole history (current file and every rotated one) parsed and filtered as ``stratrun logs
-n N`` does, with and without ``--grep``, and the last 20 lines (``stratrun logs ID``).

    .venv/bin/python benchmarks/bench_logs.py [--lines 200000] [--rounds 3] [--record]
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import re
import statistics
import tempfile
import time
from pathlib import Path

from _results import record

from runtime.log_follow import read_history, rotated_files
from runtime.log_handler import RotatingJsonHandler
from runtime.logfmt import LogFilter

MAX_BYTES = 10 * 2**20
BACKUPS = 5


def _write(handler: logging.Handler, lines: int) -> float:
    """Seconds per line through ``handler``."""
    log = logging.getLogger(f"bench.{id(handler)}")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    for i in range(lines):
        log.info("filled %s buy 1 ETH-BTC @ %.8g", f"bench-{i}", 0.0961 + i * 1e-9)
    took = time.perf_counter() - started
    handler.close()
    return took / lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    json_us, text_us, read_s, grep_s, tail_s = [], [], [], [], []
    history_lines = history_bytes = 0
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.log"
            json_us.append(
                1e6 * _write(RotatingJsonHandler(path, "bench", MAX_BYTES, BACKUPS), args.lines)
            )
            text = logging.handlers.RotatingFileHandler(
                Path(tmp) / "text.log", maxBytes=MAX_BYTES, backupCount=BACKUPS
            )
            text.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
            )
            text_us.append(1e6 * _write(text, args.lines))
            files = [path, *rotated_files(path)]
            history_bytes = sum(f.stat().st_size for f in files)
            started = time.perf_counter()
            history_lines = len(read_history(path, 10**9))
            read_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert len(read_history(path, 20)) == 20
            tail_s.append(time.perf_counter() - started)
            wanted = LogFilter(pattern=re.compile(r"bench-\d*7 buy"))
            started = time.perf_counter()
            read_history(path, 10**9, wanted.keeps)
            grep_s.append(time.perf_counter() - started)
    json_med, text_med = statistics.median(json_us), statistics.median(text_us)
    read_med, grep_med = statistics.median(read_s), statistics.median(grep_s)
    body = "\n".join(
        [
            f"- write, JSON line (RotatingJsonHandler): median {json_med:.2f} us/line",
            f"- write, plain text (stdlib RotatingFileHandler): median {text_med:.2f} us/line",
            f"- read back {history_lines} lines ({history_bytes / 2**20:.1f} MiB, current and "
            f"rotated files): median {read_med:.2f} s ({history_lines / read_med / 1e6:.2f} "
            "M lines/s)",
            f"- the same with --grep: median {grep_med:.2f} s",
            f"- the last 20 lines (stratrun logs ID): median "
            f"{statistics.median(tail_s) * 1e3:.2f} ms",
        ]
    )
    print(body)
    if args.record:
        record(
            "Log lines: write and read",
            f"{args.lines} lines per round, {args.rounds} rounds, files of 10 MiB, 5 backups.",
            body,
        )


if __name__ == "__main__":
    main()
