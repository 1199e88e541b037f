"""A fixed replay run twice, once clean and once while a seeded schedule SIGKILLs a worker,
the aggregator and the broker at random moments: the two journals hold the same trades."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from runtime.messages import FEED_HEARTBEAT_DECODER, HEARTBEAT_TOPIC
from tests.harness import DATA, RunningSystem, wait_until, write_config

SEED = 20260105
CANDLES = 1500  # per feed; at 75 candles a second per stream the replay lasts 20 s
KILLS_EACH = 3
STRATEGIES = ("sma_eth", "sma_pair", "rsi_ltc", "rules_eth")
# Strategies on one symbol: their fills come in one order however the run was interrupted,
# so their sub-accounts must match to the last float (two symbols may interleave, above).
ONE_SYMBOL = ("sma_eth", "rsi_ltc", "rules_eth")


def feed(tmp_path: Path, symbol: str) -> Path:
    """The first CANDLES rows of a bundled 5m file."""
    lines = (DATA / "crypto" / f"{symbol}-5m.csv").read_text().splitlines(keepends=True)
    path = tmp_path / f"{symbol}-5m.csv"
    path.write_text("".join(lines[: CANDLES + 1]))
    return path


def config(tmp_path: Path) -> str:
    eth, ltc = feed(tmp_path, "ETH-BTC"), feed(tmp_path, "LTC-BTC")
    return f"""
[runtime]
stop_timeout_s = 5
restart = {{ delay_s = 0.1, multiplier = 1.0, jitter = 0.0, start_limit_burst = 100 }}

[broker]
speed = 22500
heartbeat_interval_s = 0.2
stale_after_s = 1.0

[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{eth}"
resample_to = ["1h"]

[[broker.feeds]]
symbol = "LTC-BTC"
timeframe = "5m"
path = "{ltc}"

[aggregator]
metrics_port = 0

[defaults]
timeframe = "5m"
stats_interval_s = 0.2
execution = {{ fee_bps = 10, slippage_bps = 2, quantity = 1.0 }}

[[strategies]]
id = "sma_eth"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC"]
params = {{ fast = 3, slow = 8 }}

[[strategies]]
id = "sma_pair"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC", "LTC-BTC"]
params = {{ fast = 5, slow = 12, allow_short = true }}

[[strategies]]
id = "rsi_ltc"
class = "workers.strategies.rsi_reversion:RsiReversion"
symbols = ["LTC-BTC"]
params = {{ period = 6, oversold = 40, exit_above = 55 }}

[[strategies]]
id = "rules_eth"
symbols = ["ETH-BTC"]

[strategies.indicators]
ema_fast = {{ type = "ema", period = 12 }}
ema_slow = {{ type = "ema", period = 26 }}
rsi = {{ type = "rsi", period = 14 }}
atr = {{ type = "atr", period = 14 }}
trend_1h = {{ type = "sma", period = 12, timeframe = "1h" }}

[[strategies.analyzers]]
type = "cross"
fast = "ema_fast"
slow = "ema_slow"
weight = 2.0

[[strategies.analyzers]]
type = "oscillator"
indicator = "rsi"
lower = 30
upper = 70
weight = 0.5

[strategies.entry]
long_threshold = 0.5
short_threshold = -0.5

[strategies.exit]
stop_loss_pct = 1.0
take_profit_pct = 1.5
trailing_stop_pct = 0.8
time_stop_candles = 48

[strategies.filters]
cooldown_after_loss_candles = 6

[strategies.gate]
timeframe = "1h"
indicator = "trend_1h"
"""


def final_seqs(system: RunningSystem) -> dict[str, int]:
    """Each stream's last seq once the replay has finished (from a feed heartbeat)."""
    log = system.run_dir.log_file("broker")
    wait_until(lambda: "replay finished" in log.read_text(), 90, "the replay to finish")
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    try:
        sub.connect(system.run_dir.endpoint("market_data"))
        sub.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)

        def heartbeat() -> dict[str, int] | None:
            if not sub.poll(100):
                return None
            _, payload = sub.recv_multipart()
            beat = FEED_HEARTBEAT_DECODER.decode(payload)
            return dict(beat.last_seq) if beat.started else None

        return wait_until(heartbeat, 30, "a feed heartbeat")
    finally:
        sub.close()
        ctx.term()


def wait_done(system: RunningSystem, last: dict[str, int]) -> None:
    """Until every strategy's journal cursor is at the last seq of each of its streams."""

    def done() -> bool:
        rows = system.journal_rows("SELECT strategy_id, stream, seq FROM cursors")
        cursors: dict[str, dict[str, int]] = {}
        for sid, stream, seq in rows:
            cursors.setdefault(sid, {})[stream] = seq
        return all(
            cursors.get(sid) and all(last[s] == seq for s, seq in cursors[sid].items())
            for sid in STRATEGIES
        )

    wait_until(done, 90, "every strategy's cursor at the end of its streams")


def trades(system: RunningSystem, sid: str) -> list[tuple[Any, ...]]:
    """The positions the strategy opened and closed, as comparable tuples, by time.

    By time and symbol, not by journal order: after a hole in one stream is backfilled, a
    strategy on two symbols may have gone on with the other stream first, so its events of
    the two symbols can interleave differently while every trade is the same."""
    rows = system.journal_rows(
        "SELECT kind, body FROM events WHERE strategy_id = ? "
        "AND kind IN ('position_opened', 'position_closed') ORDER BY seq",
        sid,
    )
    found = []
    for kind, body in rows:
        b = json.loads(body)
        at = b["closed_at"] if kind == "position_closed" else b["opened_at"]
        found.append(
            (
                at,
                b["symbol"],
                kind == "position_opened",  # a close before an open at the same time
                b["side"],
                b["quantity"],
                b["entry_price"],
                b.get("exit_price"),
                b["opened_at"],
            )
        )
    return sorted(found)


def accounts(system: RunningSystem, sid: str) -> list[str]:
    """The strategy's account points (its ledger's curve) as journaled, in seq order."""
    rows = system.journal_rows(
        "SELECT body FROM events WHERE strategy_id = ? AND kind = 'account' ORDER BY seq", sid
    )
    return [body for (body,) in rows]


def holes(system: RunningSystem, sid: str) -> list[tuple[int, int]]:
    """Where the strategy's journaled event seqs skip: (before, after) pairs."""
    rows = system.journal_rows("SELECT seq FROM events WHERE strategy_id = ? ORDER BY seq", sid)
    seqs = [0] + [seq for (seq,) in rows]
    return [(a, b) for a, b in itertools.pairwise(seqs) if b != a + 1]


Trades = dict[str, list[tuple[Any, ...]]]
Accounts = dict[str, list[str]]


def run(tmp_path: Path, kill_seed: int | None) -> tuple[Trades, Accounts, int]:
    """One run of the replay to its end; with ``kill_seed``, under the kill schedule.
    Returns the trades and account points per strategy and how many kills it survived;
    asserts that every strategy's journal has its events without a hole."""
    tmp_path.mkdir()
    system = RunningSystem(
        write_config(tmp_path / "faults.toml", config(tmp_path)), tmp_path / "run"
    )
    kills = 0
    try:
        system.wait_all_running()
        if kill_seed is not None:
            kills = kill_schedule(system, random.Random(kill_seed))
        wait_done(system, final_seqs(system))
        lost = {sid: holes(system, sid) for sid in STRATEGIES}
        assert not any(lost.values()), f"events missing from the journal: {lost}"
        return (
            {sid: trades(system, sid) for sid in STRATEGIES},
            {sid: accounts(system, sid) for sid in ONE_SYMBOL},
            kills,
        )
    finally:
        leftovers = system.cleanup()
        assert not leftovers, f"processes left behind: {leftovers}"


def kill_schedule(system: RunningSystem, rng: random.Random) -> int:
    """SIGKILL a worker, the aggregator and the broker KILLS_EACH times each, at seeded
    random moments over the replay; each victim is running (restarted) when its turn comes."""
    victims = ["worker", "aggregator", "broker"] * KILLS_EACH
    rng.shuffle(victims)
    moments = sorted(rng.uniform(0.5, 17.0) for _ in victims)
    began = time.monotonic()
    kills = 0
    for role, moment in zip(victims, moments, strict=True):
        name = rng.choice(STRATEGIES) if role == "worker" else role
        # The schedule itself, not a readiness wait: the kill is due at this moment.
        time.sleep(max(0.0, moment - (time.monotonic() - began)))

        def running(name: str = name) -> int:
            row = (system.try_ps() or {}).get(name)
            return int(row.pid) if row is not None and row.state == "running" else 0

        pid = wait_until(running, 30, f"{name} to be running")
        os.kill(pid, signal.SIGKILL)
        kills += 1
        print(f"  {time.monotonic() - began:5.1f}s  SIGKILL {name} (pid {pid})")
    return kills


@pytest.mark.timeout(300)
def test_a_killed_run_trades_like_a_clean_one(tmp_path: Path) -> None:
    clean, clean_accounts, _ = run(tmp_path / "clean", None)
    faulty, faulty_accounts, kills = run(tmp_path / "faulty", SEED)
    compared = sum(len(t) for t in clean.values())
    print(f"survived {kills} kills; compared {compared} trade events in {len(clean)} strategies")
    assert kills == 3 * KILLS_EACH
    assert all(clean[sid] for sid in STRATEGIES), "every strategy traded"
    for sid in STRATEGIES:
        assert faulty[sid] == clean[sid], sid
    for sid in ONE_SYMBOL:
        assert faulty_accounts[sid] == clean_accounts[sid], f"{sid}'s sub-account"
