"""``stratrun backtest`` end to end: the command, its outputs, determinism, data errors."""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from broker.csv_source import read_candles
from broker.resample import Resampler
from runtime.backtest.command import Progress
from runtime.journal import Journal
from runtime.messages import PositionClosed

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
GOOG = DATA / "GOOG-1d.csv"
UNITTEST = DATA / "crypto" / "UNITTEST-BTC-1m.csv"


def _config(tmp_path: Path, symbol: str, timeframe: str, path: Path, strategies: str) -> Path:
    config = tmp_path / "backtest.toml"
    config.write_text(
        f"""
[broker]
speed = 0
[[broker.feeds]]
symbol = "{symbol}"
timeframe = "{timeframe}"
path = "{path}"
{strategies}
""",
        encoding="utf-8",
    )
    return config


TWO_GOOG = """
[defaults]
symbols = ["GOOG"]
timeframe = "1d"
execution = { fee_bps = 20, sizing = "equity", cash = 10000 }

[[strategies]]
id = "reversing"
class = "workers.strategies.sma_cross:SmaCross"
params = { fast = 10, slow = 20, allow_short = true }

[[strategies]]
id = "long_only"
class = "workers.strategies.sma_cross:SmaCross"
params = { fast = 5, slow = 30 }
"""


def _stratrun(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "backtest", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_two_strategies_in_parallel_give_stats_journal_and_report(tmp_path: Path) -> None:
    config = _config(tmp_path, "GOOG", "1d", GOOG, TWO_GOOG)
    out = _json(
        _stratrun(
            config,
            "--json",
            "--jobs",
            "2",
            "--report",
            "r.html",
            "--journal",
            "j.sqlite",
            cwd=tmp_path,
        )
    )
    assert set(out["strategies"]) == {"reversing", "long_only"}
    for strategy in out["strategies"].values():
        assert strategy["state"] == "stopped"
        assert strategy["candles"] == 2148
        assert strategy["stats"]["# Trades"] > 10
    portfolio = out["portfolio"]
    both = [s["stats"]["Equity Final [$]"] for s in out["strategies"].values()]
    assert portfolio["Equity Final [$]"] == pytest.approx(sum(both), rel=1e-12)
    assert portfolio["# Trades"] == sum(s["stats"]["# Trades"] for s in out["strategies"].values())
    # The journal: the aggregator's schema, every event once, strategies in config order.
    journal = Journal(tmp_path / "j.sqlite")
    try:
        events = [e for _, e in journal.events()]
    finally:
        journal.close()
    ids = [e.strategy_id for e in events]
    assert ids == sorted(ids, key=["reversing", "long_only"].index)
    for sid in ("reversing", "long_only"):
        seqs = [e.seq for e in events if e.strategy_id == sid]
        assert seqs == list(range(1, len(seqs) + 1))
        closed = [e for e in events if e.strategy_id == sid and isinstance(e.body, PositionClosed)]
        assert len(closed) == out["strategies"][sid]["stats"]["# Trades"]
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script src" not in page and "http://" not in page.replace(
        "http://www.w3.org/2000/svg", ""
    )
    assert 'id="stats"' in page and "Sharpe Ratio" in page


def test_the_same_input_gives_byte_identical_journal_report_and_json(tmp_path: Path) -> None:
    config = _config(tmp_path, "GOOG", "1d", GOOG, TWO_GOOG)
    runs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        out = _stratrun(config, "--json", "--report", "r.html", "--journal", "j.sqlite", cwd=folder)
        assert out.returncode == 0, out.stderr
        runs.append(
            (
                out.stdout.replace(str(folder), ""),
                (folder / "j.sqlite").read_bytes(),
                (folder / "r.html").read_bytes(),
            )
        )
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ("swap", "is earlier than the row before (rows must be sorted)"),
        ("duplicate", "duplicates the row before (rows must be sorted)"),
        ("letters", "close 'abc' is not a number"),
        ("short", "expected 6 fields, got 5"),
        ("prices", "prices are not 0 < low <= open, close <= high"),
    ],
)
def test_bad_rows_stop_the_backtest_naming_file_and_line(
    tmp_path: Path, edit: str, problem: str
) -> None:
    lines = GOOG.read_text(encoding="utf-8").splitlines()
    i = 100  # 0-based: file line 101
    if edit == "swap":
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        line = i + 2
    elif edit == "duplicate":
        lines.insert(i + 1, lines[i])
        line = i + 2
    elif edit == "letters":
        fields = lines[i].split(",")
        fields[4] = "abc"
        lines[i] = ",".join(fields)
        line = i + 1
    elif edit == "short":
        lines[i] = ",".join(lines[i].split(",")[:5])
        line = i + 1
    else:
        fields = lines[i].split(",")
        fields[2] = str(float(fields[3]) - 1)  # high below low
        lines[i] = ",".join(fields)
        line = i + 1
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = _config(tmp_path, "GOOG", "1d", GOOG, TWO_GOOG)
    result = _stratrun(config, "--data", f"GOOG={bad}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"stratrun: data error: {bad}:{line}: "
        + result.stderr.split(f"{bad}:{line}: ", 1)[1].strip()
    ]
    assert problem in result.stderr
    assert not (tmp_path / "backtest.sqlite").exists()  # nothing ran


SMA_1M = """
[[strategies]]
id = "sma_5m"
symbols = ["UNITTEST-BTC"]
timeframe = "5m"
class = "workers.strategies.sma_cross:SmaCross"
params = { fast = 5, slow = 20 }
execution = { fee_bps = 10, sizing = "equity", whole_units = false, cash = 1.0 }
"""


def test_holes_in_the_source_are_reported_and_not_filled_and_resampling_matches_the_broker(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, "UNITTEST-BTC", "1m", UNITTEST, SMA_1M)
    out = _json(_stratrun(config, "--json", cwd=tmp_path))
    rows = read_candles(UNITTEST)
    resampler = Resampler("1m", "5m")
    five = [bar for row in rows for bar in resampler.update(row)]
    data = {d["timeframe"]: d for d in out["data"]}
    one = data["1m"]
    expected_missing = sum(
        (b.open_time - a.open_time) // 60_000 - 1
        for a, b in itertools.pairwise(rows)
        if b.open_time - a.open_time > 60_000
    )
    assert (one["candles"], one["holes"], one["missing"]) == (len(rows), 538, expected_missing)
    assert data["5m"]["candles"] == len(five)
    assert out["strategies"]["sma_5m"]["candles"] == len(five)
    human = _stratrun(config, cwd=tmp_path)
    assert human.returncode == 0
    assert f"538 holes in the source, {expected_missing} candles missing (not filled)" in (
        human.stdout
    )


def test_from_to_and_a_column_mapping(tmp_path: Path) -> None:
    lines = GOOG.read_text(encoding="utf-8").splitlines()
    renamed = ["Date,Open,High,Low,Close,Volume"]
    renamed += [line.replace("T00:00:00Z", "", 1) for line in lines[1:]]
    mapped = tmp_path / "goog-yahoo.csv"
    mapped.write_text("\n".join(renamed) + "\n", encoding="utf-8")
    config = _config(tmp_path, "GOOG", "1d", GOOG, TWO_GOOG)
    args = ["--json", "--from", "2008-01-01", "--to", "2010-01-01T00:00:00Z"]
    plain = _json(_stratrun(config, *args, cwd=tmp_path))
    columns = "timestamp=Date,open=Open,high=High,low=Low,close=Close,volume=Volume"
    via_mapping = _json(
        _stratrun(config, *args, "--data", f"GOOG={mapped}", "--columns", columns, cwd=tmp_path)
    )
    stats = plain["strategies"]["reversing"]["stats"]
    assert stats["Start"] == "2008-01-02T00:00:00Z" and stats["End"] == "2009-12-31T00:00:00Z"
    plain["data"][0]["file"] = via_mapping["data"][0]["file"] = ""
    assert plain == via_mapping
    by_name = _json(_stratrun(config, *args, "--data", mapped, "--columns", columns, cwd=tmp_path))
    assert by_name["data"][0]["file"] == str(mapped)


def test_parquet_is_read_when_pyarrow_is_installed_and_named_when_not(tmp_path: Path) -> None:
    config = _config(tmp_path, "GOOG", "1d", GOOG, TWO_GOOG)
    target = tmp_path / "goog.parquet"
    if importlib.util.find_spec("pyarrow") is None:
        target.write_bytes(b"PAR1")
        result = _stratrun(config, "--data", f"GOOG={target}", cwd=tmp_path)
        assert result.returncode == 2
        assert "reading Parquet needs pyarrow" in result.stderr
        return
    import pyarrow as pa  # optional: only when installed
    import pyarrow.parquet as pq

    rows = read_candles(GOOG)
    table = pa.table({name: [getattr(r, name) for r in rows] for name in rows[0]._fields})
    table = table.rename_columns(["timestamp", "open", "high", "low", "close", "volume"])
    pq.write_table(table, target)  # times as epoch milliseconds
    typed = tmp_path / "goog-typed.parquet"
    stamps = pa.array([r.open_time for r in rows], type=pa.timestamp("ms", tz="UTC"))
    pq.write_table(table.set_column(0, "timestamp", stamps), typed)  # as a timestamp type
    csv = _json(_stratrun(config, "--json", cwd=tmp_path))
    for source in (target, typed):
        parquet = _json(_stratrun(config, "--json", "--data", f"GOOG={source}", cwd=tmp_path))
        assert csv["strategies"] == parquet["strategies"]


def test_the_progress_bar_shows_on_a_terminal_after_a_second_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen, pipe = Terminal(), io.StringIO()
    for stream in (screen, pipe):
        progress = Progress(stream)
        progress(10, 100)
        assert stream.getvalue() == ""  # not yet a second
        progress.started = time.monotonic() - 2.0
        progress(50, 100)
        progress.close()
    assert "[###############               ]  50.0% 50/100 candles" in screen.getvalue()
    assert pipe.getvalue() == ""


def test_a_config_error_exits_2_before_anything_runs(tmp_path: Path) -> None:
    config = _config(tmp_path, "GOOG", "1d", GOOG, TWO_GOOG.replace("fast = 5", "fast = 50"))
    result = _stratrun(config, cwd=tmp_path)
    assert result.returncode == 2
    assert "strategies[1].params" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "backtest.sqlite").exists()
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file:{tmp_path / 'backtest.sqlite'}?mode=ro", uri=True).execute(
            "SELECT 1"
        )
