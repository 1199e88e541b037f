"""A real process writing its own log: JSON lines, size rotation, nothing lost (stdout, raw
stderr, an uncaught exception), only as many rotated files as configured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runtime.log_follow import read_history, rotated_files
from runtime.logfmt import parse_line
from tests.harness import REPO


def _write(
    path: Path, max_bytes: int, backups: int, count: int
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.log_writer_child",
            str(path),
            str(max_bytes),
            str(backups),
            "burst",
            str(count),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _all_lines(path: Path) -> list[str]:
    """Every line of the log, oldest file first."""
    files = [*reversed(rotated_files(path)), path]
    return [line for f in files for line in f.read_text().splitlines()]


def test_every_line_is_kept_in_order_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "w1.log"
    done = _write(path, 4096, 100, 300)
    assert done.returncode == 1  # died of the uncaught exception
    assert done.stdout == "" and done.stderr == ""  # everything went to the log file
    rotated = rotated_files(path)
    assert len(rotated) >= 10  # 300 lines of ~190 bytes in 4 KiB files
    for f in [*rotated, path]:
        assert f.stat().st_size <= 4096 + 100  # only a raw write may push a file past it
    lines = _all_lines(path)
    parsed = [parse_line(text, "w1") for text in lines]
    messages = [line.msg[:11] for line, _ in parsed if line.msg.startswith("line ")]
    assert messages == [f"line {i:06d}" for i in range(300)]  # none lost, none twice
    # The print and the raw fd-2 write are there, right after the line logged before them,
    # even though the file had been rotated many times (fd 2 follows the rotation).
    middle = next(i for i, text in enumerate(lines) if "line 000150" in text)
    printed, is_json = parse_line(lines[middle + 1], "w1")
    assert is_json and (printed.logger, printed.level, printed.msg) == (
        "stdout",
        "INFO",
        "printed on stdout",
    )
    assert lines[middle + 2] == "raw output on fd 2"
    raw, is_json = parse_line(lines[middle + 2], "w1", printed.ts)
    assert not is_json and raw.level == "ERROR" and raw.ts == printed.ts
    # Below the level: not written. The warning and the crash are JSON lines.
    assert not any("below the level" in text for text in lines)
    warning = parse_line(lines[-2], "w1")[0]
    assert (warning.level, warning.logger) == ("WARNING", "py.warnings")
    assert "careful now" in warning.msg
    crash, is_json = parse_line(lines[-1], "w1")
    assert is_json and crash.level == "CRITICAL"
    assert crash.msg == "uncaught ZeroDivisionError: the end"
    assert crash.exc is not None and "Traceback" in crash.exc
    assert all(parse_line(t, "w1")[0].pid == crash.pid for t in lines if t.startswith("{"))


def test_only_the_configured_number_of_rotated_files_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "w1.log"
    assert _write(path, 4096, 2, 300).returncode == 1
    assert [p.name for p in rotated_files(path)] == ["w1.log.1", "w1.log.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1.log", "w1.log.1", "w1.log.2"]
    # What is kept is the newest part, contiguous.
    numbers = [int(t.split("line ")[1][:6]) for t in _all_lines(path) if "line 0" in t]
    assert numbers == list(range(numbers[0], 300)) and numbers[0] > 0


def test_no_backups_empties_the_file_when_full(tmp_path: Path) -> None:
    path = tmp_path / "w1.log"
    assert _write(path, 4096, 0, 300).returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1.log"]
    assert path.stat().st_size <= 4096 + 100
    assert "uncaught ZeroDivisionError" in path.read_text().splitlines()[-1]


def test_history_reads_back_through_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "w1.log"
    assert _write(path, 4096, 100, 300).returncode == 1
    current = len(path.read_text().splitlines())
    wanted = current + 40  # more than the current file holds
    entries = read_history(path, wanted)
    assert len(entries) == wanted
    assert entries[-1].line.level == "CRITICAL"
    assert [e.text for e in entries] == _all_lines(path)[-wanted:]
    # With a filter, -n counts matching lines: the last 50 "line" messages, oldest first.
    only = read_history(path, 50, lambda line: line.msg.startswith("line "))
    assert [e.line.msg[:11] for e in only] == [f"line {i:06d}" for i in range(250, 300)]
