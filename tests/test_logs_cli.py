"""`stratrun logs` with no id: every process's log, each line prefixed with its name."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import REPO


def _cli(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "runtime", "--run-dir", str(run_dir), "logs", *args]


def test_all_logs_show_their_last_lines_with_a_prefix(tmp_path: Path) -> None:
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "sma_fast.log").write_text("one\ntwo\n")
    (logs / "broker.log").write_text("b1\nb2\nb3\n")
    shown = subprocess.run(
        _cli(tmp_path / "run", "-n", "2"), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "broker   | b2",
        "broker   | b3",
        "sma_fast | one",
        "sma_fast | two",
    ]


def test_follow_interleaves_every_log_including_new_ones(tmp_path: Path) -> None:
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "a.log").write_text("old a\n")
    (logs / "b.log").write_text("old b\n")
    proc = subprocess.Popen(
        _cli(tmp_path / "run", "-f", "-n", "1"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        wanted = {"a | old a", "b | old b", "a | new a", "b | new b", "c | first c"}
        seen: set[str] = set()
        pending = b""
        deadline = time.monotonic() + 20
        written = False
        while seen != wanted and time.monotonic() < deadline:
            # The history lines show the follower has opened both files: append only then.
            if not written and {"a | old a", "b | old b"} <= seen:
                with open(logs / "a.log", "a") as f:
                    f.write("new a\n")
                with open(logs / "b.log", "a") as f:
                    f.write("new b\n")
                (logs / "c.log").write_text("first c\n")  # a log that appears later
                written = True
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:  # raw reads: a buffered readline would hide lines from select
                pending += os.read(proc.stdout.fileno(), 65536)
                *lines, pending = pending.split(b"\n")
                seen.update(line.decode() for line in lines)
        assert seen == wanted
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
