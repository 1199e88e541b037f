"""`stratrun logs` filters and formats on log files laid out as a rotating process leaves them:
-n through rotated files, --since, --level, --grep, --json, several logs merged by time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runtime.logfmt import LogLine, encode_line, format_ts
from tests.log_helpers import run_logs

T = "2026-11-25T10:00:0{}.000Z"


def _json(second: int, level: str, msg: str, exc: str | None = None, logger: str = "worker") -> str:
    return encode_line(LogLine(T.format(second), level, logger, "s1", msg, exc, 4242)).decode()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    logs = tmp_path / "run" / "logs"
    logs.mkdir(parents=True)
    (logs / "s1.log.2").write_text(_json(0, "INFO", "a0 order 1"))
    (logs / "s1.log.1").write_text(
        _json(1, "INFO", "a1 filled order 2") + _json(2, "WARNING", "a2 slow")
    )
    (logs / "s1.log").write_text(
        _json(3, "INFO", "a3")
        + _json(4, "ERROR", "a4 rejected order 3", "Traceback (most recent call last):\n  boom")
        + "raw crash text\n"
        + _json(5, "DEBUG", "a5")
    )
    return tmp_path / "run"


HUMAN = {
    "a0": f"{T.format(0)} INFO     worker: a0 order 1",
    "a1": f"{T.format(1)} INFO     worker: a1 filled order 2",
    "a2": f"{T.format(2)} WARNING  worker: a2 slow",
    "a3": f"{T.format(3)} INFO     worker: a3",
    "a4": f"{T.format(4)} ERROR    worker: a4 rejected order 3",
    "exc": "Traceback (most recent call last):\n  boom",
    "raw": "raw crash text",
    "a5": f"{T.format(5)} DEBUG    worker: a5",
}


def _shown(run_dir: Path, *args: str) -> str:
    done = run_logs(run_dir, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _expect(*keys: str) -> str:
    return "".join(HUMAN[k] + "\n" for k in keys)


def test_history_reads_rotated_files_when_needed(run_dir: Path) -> None:
    everything = _expect("a0", "a1", "a2", "a3", "a4", "exc", "raw", "a5")
    assert _shown(run_dir, "s1") == everything  # no colour codes: stdout is not a terminal
    assert _shown(run_dir, "s1", "-n", "4") == _expect("a3", "a4", "exc", "raw", "a5")
    assert _shown(run_dir, "s1", "-n", "5") == _expect("a2", "a3", "a4", "exc", "raw", "a5")
    assert _shown(run_dir, "s1", "-n", "0") == ""


def test_level_is_a_minimum_and_raw_output_counts_as_error(run_dir: Path) -> None:
    assert _shown(run_dir, "s1", "--level", "warning") == _expect("a2", "a4", "exc", "raw")
    assert _shown(run_dir, "s1", "--level", "ERROR") == _expect("a4", "exc", "raw")
    assert _shown(run_dir, "s1", "--level", "debug") == _shown(run_dir, "s1")


def test_grep_matches_the_message_or_its_traceback(run_dir: Path) -> None:
    assert _shown(run_dir, "s1", "--grep", r"order \d") == _expect("a0", "a1", "a4", "exc")
    assert _shown(run_dir, "s1", "--grep", "boom") == _expect("a4", "exc")
    # -n counts matching lines (reading back as far as needed).
    assert _shown(run_dir, "s1", "--grep", "order", "-n", "2") == _expect("a1", "a4", "exc")


def test_since_takes_the_forms_events_takes(run_dir: Path) -> None:
    expected = _expect("a3", "a4", "exc", "raw", "a5")
    assert _shown(run_dir, "s1", "--since", "2026-11-25T10:00:03Z") == expected
    assert _shown(run_dir, "s1", "--since", "2026-11-25T12:00:03+02:00") == expected
    assert _shown(run_dir, "s1", "--since", "2026-11-25T10:00:03.500") == _expect(
        "a4", "exc", "raw", "a5"
    )
    # An age: lines logged now are shown, lines from 2026-11-25T10:00 long ago are not.
    now = encode_line(LogLine(format_ts(time.time()), "INFO", "worker", "s1", "just now"))
    with open(run_dir / "logs" / "s1.log", "a") as f:
        f.write(now.decode())
    recent = _shown(run_dir, "s1", "--since", "10m")
    assert recent.endswith("worker: just now\n") and len(recent.splitlines()) == 1


def test_filters_combine(run_dir: Path) -> None:
    args = ("--since", "2026-11-25T10:00:01Z", "--level", "info", "--grep", "order")
    assert _shown(run_dir, "s1", *args) == _expect("a1", "a4", "exc")


def test_json_prints_the_lines_as_written_and_wraps_raw_output(run_dir: Path) -> None:
    out = _shown(run_dir, "s1", "--json", "-n", "3").splitlines()
    assert (
        out[0]
        == _json(
            4, "ERROR", "a4 rejected order 3", "Traceback (most recent call last):\n  boom"
        ).rstrip()
    )
    raw = json.loads(out[1])
    assert raw == {
        "ts": T.format(4),  # the time of the line before it
        "level": "ERROR",
        "logger": "stderr",
        "process": "s1",
        "msg": "raw crash text",
    }
    assert json.loads(out[2])["msg"] == "a5"
    only_raw = _shown(run_dir, "s1", "--json", "--grep", "crash").splitlines()
    assert [json.loads(line)["msg"] for line in only_raw] == ["raw crash text"]


def test_several_logs_merge_by_time_with_a_prefix(run_dir: Path) -> None:
    other = LogLine("2026-11-25T10:00:02.500Z", "INFO", "broker", "broker", "feed started")
    (run_dir / "logs" / "broker.log").write_text(encode_line(other).decode())
    out = _shown(run_dir, "-n", "3", "--level", "info").splitlines()
    # The last 3 of each log (at least INFO): s1's a3, a4 and its raw line, broker's one.
    assert out == [
        "broker | 2026-11-25T10:00:02.500Z INFO     broker: feed started",
        "s1     | " + HUMAN["a3"],
        "s1     | " + HUMAN["a4"],
        "Traceback (most recent call last):",
        "  boom",
        "s1     | raw crash text",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday-ish"), "is not a time"),
        (("--grep", "(unclosed"), "is not a regular expression"),
        (("--level", "loud"), "Invalid value for '--level'"),
        (("-n", "-1"), "Invalid value for '-n'"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    run_dir: Path, args: tuple[str, ...], message: str
) -> None:
    done = run_logs(run_dir, "s1", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


def test_an_unknown_id_names_the_logs_there_are(run_dir: Path) -> None:
    done = run_logs(run_dir, "nope")
    assert done.returncode == 1
    assert "no log for 'nope'" in done.stderr and "(there are: s1)" in done.stderr
