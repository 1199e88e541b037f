"""The reliable data path with real processes: warm-up of a late worker, a stale feed, an
aggregator away for long, a slow strategy next to normal ones."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from runtime.messages import LATENCY_BUCKETS_S
from tests.harness import (
    DATA,
    RunningSystem,
    eth_system,
    fetch,
    sma_strategy,
    stratrun,
    wait_until,
    write_config,
)

Make = Callable[..., RunningSystem]


def head(speed: float = 3000, runtime: str = "", broker: str = "") -> str:
    """The shared test-config head, with extra ``[runtime]`` and ``[broker]`` lines."""
    base = eth_system(speed=speed, runtime=runtime)
    return base.replace("heartbeat_interval_s = 0.5", f"heartbeat_interval_s = 0.2\n{broker}")


def strategy(sid: str, cls: str, params: str = "{}", extra: str = "") -> str:
    """A ``[[strategies]]`` table of a class in tests/sample_strategies.py."""
    return (
        f'\n[[strategies]]\nid = "{sid}"\nclass = "tests.sample_strategies:{cls}"\n'
        f"params = {params}\n{extra}"
    )


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[Make]:
    made: list[RunningSystem] = []

    def make(body: str) -> RunningSystem:
        config = write_config(tmp_path / "reliable.toml", body)
        system = RunningSystem(config, tmp_path / "run")
        made.append(system)
        return system

    try:
        yield make
    finally:
        for system in made:
            leftovers = system.cleanup()
            assert not leftovers, f"processes left behind: {leftovers}"


def events(system: RunningSystem, sid: str, kind: str) -> list[dict[str, Any]]:
    """The bodies of ``sid``'s journaled events of ``kind``, in seq order."""
    rows = system.journal_rows(
        "SELECT body FROM events WHERE strategy_id = ? AND kind = ? ORDER BY seq", sid, kind
    )
    return [json.loads(body) for (body,) in rows]


def logged_seqs(system: RunningSystem, sid: str) -> list[int]:
    """The candle seqs a SeqRecorder logged, in the order it decided on them."""
    return [int(b["message"]) for b in events(system, sid, "log") if b["level"] == "warning"]


def breaks(seqs: list[int]) -> list[tuple[int, int]]:
    """Where a list of seqs is not contiguous: (before, after) pairs."""
    return [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]


def event_seqs(system: RunningSystem, sid: str) -> list[int]:
    rows = system.journal_rows("SELECT seq FROM events WHERE strategy_id = ? ORDER BY seq", sid)
    return [seq for (seq,) in rows]


def metric(system: RunningSystem, name: str, sid: str) -> float | None:
    text = fetch(system.ps()["aggregator"].detail["metrics_url"])
    found = re.search(rf'^{name}{{strategy_id="{sid}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


def test_a_late_worker_is_warm_before_its_first_decision(make_system: Make, tmp_path: Path) -> None:
    system = make_system(eth_system(speed=3000) + strategy("early", "SeqRecorder"))
    system.wait_all_running()
    # The feed runs a while before the late strategy exists.
    wait_until(lambda: len(logged_seqs(system, "early")) >= 30, 60, "30 candles of the feed")

    late = write_config(tmp_path / "late.toml", strategy("late", "WarmthReporter"))
    added = stratrun(system, "add", str(late))
    assert added.returncode == 0, added.stderr

    def decisions() -> list[tuple[int, int]]:
        found = []
        for body in events(system, "late", "log"):
            match = re.fullmatch(r"seen=(\d+) seq=(\d+)", body["message"])
            if match:
                found.append((int(match.group(1)), int(match.group(2))))
        return found if len(found) >= 5 else []

    seen = wait_until(decisions, 60, "the late strategy's first decisions")
    first_seen, first_seq = seen[0]
    assert first_seq > 30, "it joined late in the stream"
    # Its first decision already had every candle since the stream's start behind it.
    assert first_seen == first_seq, seen[:5]
    assert all(s == q for s, q in seen), "no candle missed or seen twice after that"


def feed_states(system: RunningSystem, sid: str) -> list[str]:
    return [body["state"] for body in events(system, sid, "feed")]


def test_a_stale_feed_is_reported_and_recovered(make_system: Make) -> None:
    # The broker's restart waits longer than the stale timeout, so its death is seen as a
    # stale feed too; the watchdog (10 s) leaves a broker stopped for a few seconds alone.
    system = make_system(
        head(runtime="restart = { delay_s = 1.5, jitter = 0.0 }", broker="stale_after_s = 1.0")
        + strategy("rec", "SeqRecorder")
    )
    rows = system.wait_all_running()
    broker = rows["broker"].pid
    wait_until(lambda: len(logged_seqs(system, "rec")) >= 10, 60, "candles to flow")

    os.kill(broker, signal.SIGSTOP)
    try:
        wait_until(lambda: feed_states(system, "rec") == ["stale"], 10, "a stale report")
        wait_until(
            lambda: metric(system, "stratrun_feed_stale", "rec") == 1.0, 10, "the stale gauge"
        )
        before = len(logged_seqs(system, "rec"))
    finally:
        os.kill(broker, signal.SIGCONT)
    wait_until(
        lambda: feed_states(system, "rec") == ["stale", "recovered"], 10, "a recovery report"
    )
    wait_until(lambda: metric(system, "stratrun_feed_stale", "rec") == 0.0, 10, "gauge at 0")
    wait_until(lambda: len(logged_seqs(system, "rec")) >= before + 10, 30, "candles again")
    assert system.ps()["broker"].pid == broker, "stopped, not restarted"

    # Killed, the broker is restarted and resumes its replay where it was.
    at_kill = logged_seqs(system, "rec")[-1]
    os.kill(broker, signal.SIGKILL)
    wait_until(
        lambda: feed_states(system, "rec") == ["stale", "recovered"] * 2,
        30,
        "the restarted broker's feed to be reported stale, then recovered",
    )
    wait_until(
        lambda: logged_seqs(system, "rec")[-1] >= at_kill + 20, 30, "candles after the restart"
    )
    restarted = system.ps()["broker"]
    assert restarted.pid != broker and restarted.restarts == 1
    # Each candle decided on exactly once, in order: the resumed replay's repeats were
    # dropped, and it did not start the stream again from seq 1.
    seqs = logged_seqs(system, "rec")
    assert seqs == list(range(1, len(seqs) + 1)), breaks(seqs)
    assert "resuming after" in system.run_dir.log_file("broker").read_text()


def test_an_aggregator_away_for_30s_loses_nothing(make_system: Make) -> None:
    # The watchdog is set above the time away so the stopped aggregator is not killed;
    # 50 unacknowledged events at most in memory, so the workers spill while it is away.
    system = make_system(
        head(runtime="watchdog_timeout_s = 60")
        + strategy("rec", "SeqRecorder", extra="max_unacked_events = 50\n")
        + sma_strategy("sma", 3, 8)
        + "max_unacked_events = 50\n"
    )
    rows = system.wait_all_running()
    aggregator = rows["aggregator"].pid
    wait_until(lambda: len(logged_seqs(system, "rec")) >= 10, 60, "candles to flow")
    spill = system.run_dir.root / "spill" / "rec.spill"

    os.kill(aggregator, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        wait_until(spill.exists, 30, "the worker to spill unacknowledged events")
        # The scenario itself (not a readiness wait): it stays away for 30 s.
        wait_until(lambda: time.monotonic() - stopped_at >= 30, 40, "30 s away", interval=1)
        decided = system.ps()["rec"].candles
    finally:
        os.kill(aggregator, signal.SIGCONT)
    assert decided >= 300, "about 10 candles a second went on meanwhile"

    wait_until(lambda: len(logged_seqs(system, "rec")) >= decided, 60, "the backlog journaled")
    wait_until(lambda: not spill.exists(), 30, "the spill file cleared once acknowledged")
    assert system.ps()["aggregator"].pid == aggregator
    seqs = logged_seqs(system, "rec")
    assert seqs == list(range(1, len(seqs) + 1)), breaks(seqs)
    for sid in ("rec", "sma"):
        journaled = event_seqs(system, sid)
        assert journaled == list(range(1, len(journaled) + 1)), (sid, breaks(journaled))


def short_feed(tmp_path: Path, candles: int) -> Path:
    """The first ``candles`` rows of the bundled ETH-BTC 5m data, as a feed of its own."""
    lines = (DATA / "crypto" / "ETH-BTC-5m.csv").read_text().splitlines(keepends=True)
    path = tmp_path / "ETH-BTC-5m-short.csv"
    path.write_text("".join(lines[: candles + 1]))
    return path


def stats_totals(system: RunningSystem, sid: str) -> dict[str, Any]:
    """The sums of ``sid``'s Stats events: counts, and latency counts per bucket."""
    totals: dict[str, Any] = {"latency_counts": [0] * (len(LATENCY_BUCKETS_S) + 1)}
    for body in events(system, sid, "stats"):
        for key in ("candles", "candles_backfilled", "candles_duplicate", "gaps"):
            totals[key] = totals.get(key, 0) + body.get(key, 0)
        for i, count in enumerate(body.get("latency_counts", [])):
            totals["latency_counts"][i] += count
    return totals


def test_a_slow_strategy_does_not_delay_the_others_and_catches_up(
    make_system: Make, tmp_path: Path
) -> None:
    candles = 500
    feed = short_feed(tmp_path, candles)
    # 75 candles a second; the slow one takes 20 a second. Small queues: it overflows.
    body = head(speed=22500, broker="send_hwm = 20\nreceive_hwm = 20").replace(
        str(DATA / "crypto" / "ETH-BTC-5m.csv"), str(feed)
    )
    system = make_system(
        body
        + strategy("slow", "SeqRecorder", "{ sleep_s = 0.05 }")
        + strategy("fast", "SeqRecorder")
        + sma_strategy("sma", 3, 8)
    )
    system.wait_all_running()
    wait_until(
        lambda: len(logged_seqs(system, "fast")) == candles, 60, "the fast strategy to finish"
    )
    behind = len(logged_seqs(system, "slow"))
    assert behind < candles, "the slow one is behind when the others are done"
    # It catches up: every candle decided on once, in order, holes backfilled; not killed.
    wait_until(lambda: len(logged_seqs(system, "slow")) >= candles, 90, "the slow one to catch up")
    seqs = logged_seqs(system, "slow")
    assert seqs == list(range(1, candles + 1)), breaks(seqs)
    assert system.ps()["slow"].restarts == 0

    def totals(sid: str) -> dict[str, Any] | None:
        found = stats_totals(system, sid)
        return found if found.get("candles") == candles else None

    slow = wait_until(lambda: totals("slow"), 10, "the slow one's figures")
    assert slow["gaps"] > 0 and slow["candles_backfilled"] > 0, slow
    print(f"slow: {behind}/{candles} decided when the others were done; {slow}")
    # The others: no hole, and candle-to-decision latency in their normal range (99% of
    # their candles decided within 100 ms of publication; here they are in the ms range).
    within = LATENCY_BUCKETS_S.index(0.1) + 1
    for sid in ("fast", "sma"):
        figures = wait_until(partial(totals, sid), 10, f"{sid}'s figures")
        print(f"{sid}: {figures}")
        assert figures["gaps"] == 0 and figures["candles_backfilled"] == 0, figures
        counts = figures["latency_counts"]
        assert sum(counts) == candles, figures
        assert sum(counts[:within]) >= 0.99 * candles, figures
    slow_lag = metric(system, "stratrun_strategy_lag_seconds", "slow")
    fast_lag = metric(system, "stratrun_strategy_lag_seconds", "fast")
    assert slow_lag is not None and fast_lag is not None and slow_lag > fast_lag
