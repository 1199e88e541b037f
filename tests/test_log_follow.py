"""last_lines and follow_file (tail -F): appends, rotation, truncation."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from runtime import log_follow
from runtime.log_follow import follow_file, last_lines
from tests.harness import wait_until

DEADLINE_S = 5.0


# --------------------------------------------------------------------------- last_lines


def test_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    path.write_text("".join(f"line {n}\n" for n in range(1, 11)), encoding="utf-8")
    assert last_lines(path, 3) == ["line 8", "line 9", "line 10"]
    assert last_lines(path, 1) == ["line 10"]
    assert last_lines(path, 100) == [f"line {n}" for n in range(1, 11)]
    assert last_lines(path, 0) == []
    assert last_lines(path, -5) == []


def test_last_lines_without_final_newline_and_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    path.write_bytes(b"one\ntw\xffo\nthree")
    assert last_lines(path, 2) == ["tw\ufffdo", "three"]


def test_last_lines_of_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "w.log"
    path.touch()
    assert last_lines(path, 5) == []


# --------------------------------------------------------------------------- follow_file


class Follower:
    """Runs follow_file in a thread and hands its lines over through a queue."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lines = follow_file(self.path)
        assert isinstance(lines, Generator)
        try:
            for line in lines:
                if self._stop.is_set():
                    return
                self.lines.put(line)
        finally:
            lines.close()

    def take(self, count: int) -> list[str]:
        """The next ``count`` lines, waiting up to the deadline for them."""
        deadline = time.monotonic() + DEADLINE_S
        got: list[str] = []
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only got {got!r} of {count} lines in {DEADLINE_S}s")
            try:
                got.append(self.lines.get(timeout=left))
            except queue.Empty:
                pass
        return got

    def sync(self) -> None:
        """Wait until the follower reads the file: append probes until one comes through.

        follow_file starts at the end of the file *when the thread first runs it*, so lines
        written before that would be missed; a probe that arrives proves it is reading.
        """
        deadline = time.monotonic() + DEADLINE_S
        n = 0
        while time.monotonic() < deadline:
            n += 1
            _append(self.path, f"probe {n}\n")
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            assert line.startswith("probe ")
            # Drain the probes that were written before the first one was seen.
            last = int(line.split()[1])
            while last < n:
                nxt = self.take(1)[0]
                assert nxt == f"probe {last + 1}"
                last += 1
            return
        raise AssertionError("follow_file never started reading")

    def nothing_more(self) -> None:
        assert self.lines.empty(), f"unexpected line {self.lines.get_nowait()!r}"

    def stop(self) -> None:
        self._stop.set()
        if self.path.exists():
            _append(self.path, "wake up\n")  # the generator only returns on a line
        self._thread.join(timeout=DEADLINE_S)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "worker.log"
    path.write_text("old 1\nold 2\n", encoding="utf-8")
    return path


@pytest.fixture
def follower(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Follower]:
    # Poll ten times faster than tail -F does, so that the tests wait less.
    monkeypatch.setattr(log_follow, "_POLL_S", 0.02)
    f = Follower(log_path)
    f.sync()
    yield f
    f.stop()


def test_follow_yields_appended_lines_not_old_ones(log_path: Path, follower: Follower) -> None:
    _append(log_path, "new 1\nnew 2\n")
    _append(log_path, "new 3\n")
    assert follower.take(3) == ["new 1", "new 2", "new 3"]
    follower.nothing_more()


def test_follow_joins_a_line_written_in_pieces(log_path: Path, follower: Follower) -> None:
    _append(log_path, "half")
    # Give the follower time to read the fragment; nothing may come out before the newline.
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        follower.nothing_more()
        time.sleep(0.02)
    _append(log_path, " and half\n")
    assert follower.take(1) == ["half and half"]


def test_follow_across_rotation(log_path: Path, follower: Follower) -> None:
    _append(log_path, "before rotation\n")
    assert follower.take(1) == ["before rotation"]

    os.rename(log_path, log_path.with_suffix(".log.1"))
    log_path.write_text("fresh 1\nfresh 2\n", encoding="utf-8")
    # The new file is read from its start.
    assert follower.take(2) == ["fresh 1", "fresh 2"]
    _append(log_path, "fresh 3\n")
    assert follower.take(1) == ["fresh 3"]
    # The rotated file is no longer followed.
    _append(log_path.with_suffix(".log.1"), "into the old file\n")
    _append(log_path, "fresh 4\n")
    assert follower.take(1) == ["fresh 4"]


def test_follow_when_the_file_is_briefly_missing(log_path: Path, follower: Follower) -> None:
    log_path.unlink()
    # The follower polls a missing file without failing; the open handle keeps the old inode,
    # so the new file cannot reuse it.
    log_path.write_text("recreated\n", encoding="utf-8")
    assert follower.take(1) == ["recreated"]


def test_follow_across_truncation(log_path: Path, follower: Follower) -> None:
    _append(log_path, "".join(f"filler line {n:04d}\n" for n in range(200)))
    assert len(follower.take(200)) == 200
    # Truncate in place (same inode) and write less than was there: read from the start.
    with open(log_path, "w", encoding="utf-8") as handle:
        handle.write("after truncation\n")
    assert follower.take(1) == ["after truncation"]
    _append(log_path, "and more\n")
    assert follower.take(1) == ["and more"]
    follower.nothing_more()


def test_rotation_does_not_glue_an_unterminated_line_onto_the_new_file(
    log_path: Path, follower: Follower
) -> None:
    _append(log_path, "cut-off")  # the writer died mid-line
    os.rename(log_path, log_path.with_suffix(".log.1"))
    log_path.write_text("fresh\n", encoding="utf-8")
    got = follower.take(1)[0]
    if got == "cut-off":  # yielding the fragment on its own would be fine too
        got = follower.take(1)[0]
    assert got == "fresh"


# --------------------------------------------------------------------------- a real writer


def test_logs_follow_reads_every_line_across_rotations_by_a_live_writer(tmp_path: Path) -> None:
    """A process logging JSON lines rotates its 4 KiB file again and again while
    `stratrun logs -f --json` follows it: every line arrives, in order, none twice.

    The writer logs in batches smaller than a file (so at most one rotation between two
    reads by the follower), each batch once the follower has shown the previous one: a
    handshake, so that the follower's polling pace cannot lose a whole rotated file.
    """
    import json
    import subprocess
    import sys

    from runtime.log_follow import rotated_files
    from tests.harness import REPO
    from tests.log_helpers import LogsFollower

    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    path = run_dir / "logs" / "w1.log"
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.log_writer_child", str(path), "4096", "50", "batches", "15"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert writer.stdin is not None
    follower: LogsFollower | None = None

    def numbers(lines: list[str]) -> list[int]:
        return [int(json.loads(line)["msg"][5:11]) for line in lines]

    def shown(n: int) -> Callable[[list[str]], bool]:
        return lambda lines: n in numbers(lines)

    try:
        writer.stdin.write("go\n")
        writer.stdin.flush()
        wait_until(lambda: path.exists() and path.stat().st_size > 0, 20, "the first batch")
        follower = LogsFollower(run_dir, "w1", "-f", "--json", "-n", "1")
        follower.read_until(lambda lines: len(lines) >= 1, 20, "the history line")
        first = numbers(follower.lines)[0]
        for batch in range(1, 21):
            writer.stdin.write("go\n")
            writer.stdin.flush()
            last = batch * 15 + 14
            follower.read_until(shown(last), 20, f"line {last}")
        assert numbers(follower.lines) == list(range(first, 315))
        assert len(rotated_files(path)) >= 5  # it really rotated under the follower
    finally:
        if follower is not None:
            follower.close()
        writer.stdin.close()
        try:
            writer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(writer.pid, 9)
            writer.wait()


# --------------------------------------------------------------------------- read_history


def test_history_of_a_big_file_reads_back_as_far_as_the_filter_needs(tmp_path: Path) -> None:
    """read_history reads from the end in growing blocks: a raw line deep in a 2 MiB file
    still gets the time of the JSON line before it, and nothing is cut or doubled."""
    from runtime.log_follow import read_history
    from runtime.logfmt import LogLine, encode_line

    path = tmp_path / "s1.log"
    lines = []
    for i in range(10_000):
        ts = f"2026-11-25T10:{i // 600:02d}:{i // 10 % 60:02d}.{i % 10}00Z"
        lines.append(encode_line(LogLine(ts, "INFO", "worker", "s1", f"n {i:05d} " + "y" * 120)))
        if i == 500:
            lines.append(b"raw line deep in the file\n")
    path.write_bytes(b"".join(lines))
    assert path.stat().st_size > 1_500_000
    last = read_history(path, 3)
    assert [e.line.msg[:7] for e in last] == ["n 09997", "n 09998", "n 09999"]
    raw = read_history(path, 5, lambda line: line.logger == "stderr")
    assert [(e.text, e.line.ts) for e in raw] == [
        ("raw line deep in the file", "2026-11-25T10:00:50.000Z")
    ]
    everything = read_history(path, 20_000)
    assert len(everything) == 10_001
    assert [e.line.msg[:7] for e in everything if e.is_json] == [
        f"n {i:05d}" for i in range(10_000)
    ]
