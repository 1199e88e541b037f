"""The journal survives SIGKILL mid-write; ``stratrun journal check`` finds what is wrong."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from runtime.journal import Journal, check
from runtime.messages import Event, Stats
from tests.harness import REPO, alive, kill_group, wait_until

# Appends batches of events for two strategies as fast as it can, until killed.
WRITER = """
import sys
from runtime.journal import Journal
from runtime.messages import Event, Log
journal = Journal(sys.argv[1])
seq = 0
while True:
    batch = []
    for _ in range(50):
        seq += 1
        batch += [Event(s, seq, seq, Log("info", "x" * 200)) for s in ("a", "b")]
    journal.append(batch)
"""


def _check_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "journal", "check", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _count(path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_a_journal_killed_mid_write_checks_sound(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], cwd=REPO, start_new_session=True
    )
    try:
        wait_until(lambda: _count(path) > 20_000, 60, "the writer to have written a lot")
        writer.send_signal(signal.SIGKILL)  # in the middle of some batch
        writer.wait(timeout=10)
    finally:
        if alive(writer.pid):
            kill_group(writer.pid)
            writer.wait()
    assert writer.returncode == -signal.SIGKILL
    result = _check_cli(str(path))
    assert result.returncode == 0, result.stderr
    assert ": ok (integrity ok;" in result.stdout
    # Whole batches only: both strategies stop at the same seq, a multiple of the batch size.
    db = sqlite3.connect(path)
    last = dict(db.execute("SELECT strategy_id, MAX(seq) FROM events GROUP BY strategy_id"))
    db.close()
    assert last["a"] == last["b"] and last["a"] % 50 == 0, last
    print(f"\nkilled mid-write after {last['a']} events per strategy; journal check: ok")


def test_check_reports_a_gap_in_seq(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    journal.append([Event("s1", n, n, Stats(1)) for n in (1, 2, 5, 6, 8)])
    journal.append([Event("s2", n, n, Stats(1)) for n in (1, 2, 3)])
    journal.close()
    assert check(path) == [
        f"{path}: strategy s1: seq 3..4 missing",
        f"{path}: strategy s1: seq 7 missing",
    ]
    result = _check_cli(str(path))
    assert result.returncode == 1
    assert "strategy s1: seq 3..4 missing" in result.stderr
    assert "2 problems" in result.stderr


def test_check_reports_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    journal.append([Event("s1", n, n, Stats(n)) for n in range(1, 3000)])
    journal.close()
    data = bytearray(path.read_bytes())
    for at in range(8192, len(data) - 4096, 4096):  # scribble over pages after the first two
        data[at + 100 : at + 300] = b"\xa5" * 200
    path.write_bytes(bytes(data))
    result = _check_cli(str(path))
    assert result.returncode == 1, result.stdout
    assert str(path) in result.stderr


def test_check_of_a_missing_journal_exits_2(tmp_path: Path) -> None:
    result = _check_cli(str(tmp_path / "nothing.sqlite"))
    assert result.returncode == 2
    assert "no such journal" in result.stderr
