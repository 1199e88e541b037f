"""The risk gate's parts without a running system: the reservation book (limits, release,
conversion, daily loss, rebuild), the container asking it, the worker's client (timeout,
late replies) and the ``[risk]`` config."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from runtime.config import ConfigError, StrategyConfig, load_config
from runtime.messages import (
    ENCODER,
    Event,
    EventBody,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    PositionClosed,
    Side,
    Stats,
)
from runtime.risk_book import RiskBook
from runtime.risk_config import RiskConfig
from runtime.risk_messages import RISK_REQUEST_DECODER, RiskCheck, RiskVerdict
from runtime.security import Security
from runtime.transport import RejectCounter
from tests.harness import REPO
from tests.test_cli_config_errors import GOOD as CONFIG_GOOD
from workers.factory import build_container
from workers.risk_client import UNAVAILABLE, RiskClient
from workers.services.risk_gate import RiskGate

DAY = 86_400_000
_seq = iter(range(1, 1_000_000))


def _event(sid: str, body: EventBody) -> Event:
    return Event(sid, next(_seq), 0, body)


def _check(sid: str, oid: str, notional: float, side: Side = "buy", price: float = 0.1) -> Any:
    return RiskCheck(1, sid, oid, "ETH-BTC", side, notional, price)


def _fill(oid: str, side: Side, qty: float, price: float, at: int = 0) -> OrderFilled:
    return OrderFilled(oid, "ETH-BTC", side, qty, price, 0.0, at)


def _closed(pnl: float, at: int) -> PositionClosed:
    return PositionClosed("ETH-BTC", "long", 1.0, 0.1, 0.1, 0.0, pnl, at - 1, at)


# --------------------------------------------------------------------------- the book


def test_symbol_limit_reserves_converts_and_releases() -> None:
    book = RiskBook(RiskConfig(max_symbol_exposure=0.15))
    assert book.check(_check("a", "a-1", 0.1)) is None  # reserved
    refusal = book.check(_check("b", "b-1", 0.1))
    assert refusal is not None and refusal.code == "symbol"
    assert refusal.reason.startswith("risk: symbol limit: ETH-BTC exposure 0.1 + 0.1 > 0.15")
    book.apply(_event("a", _fill("a-1", "buy", 1.0, 0.1)))  # converted: held, same value
    assert book.reserved == {} and book.symbol_exposure("ETH-BTC") == pytest.approx(0.1)
    assert book.check(_check("b", "b-2", 0.1)) is not None
    book.apply(_event("a", _fill("a-2", "sell", 1.0, 0.1)))  # the close: released
    assert book.symbol_exposure("ETH-BTC") == 0.0
    assert book.check(_check("b", "b-3", 0.1)) is None
    book.apply(_event("b", OrderRejected("b-3", "ETH-BTC", "buy", 1.0, "insufficient cash")))
    assert book.reserved == {}
    assert book.check(_check("a", "a-3", 0.1)) is None


def test_held_is_valued_at_the_latest_price() -> None:
    book = RiskBook(RiskConfig(max_symbol_exposure=0.25))
    book.apply(_event("a", _fill("a-1", "buy", 2.0, 0.1)))
    assert book.symbol_exposure("ETH-BTC") == pytest.approx(0.2)
    assert book.check(_check("b", "b-1", 0.04, price=0.1)) is None
    refusal = book.check(_check("b", "b-2", 0.01, price=0.11))  # 2 x 0.11 + 0.04 + 0.01
    assert refusal is not None and refusal.code == "symbol"


def test_gross_net_and_open_orders() -> None:
    book = RiskBook(RiskConfig(max_gross_exposure=0.3, max_net_exposure=0.15))
    assert book.check(_check("a", "a-1", 0.1)) is None
    net = book.check(_check("b", "b-1", 0.1))
    assert net is not None and net.code == "net"
    assert book.check(_check("b", "b-2", 0.1, side="sell")) is None  # it reduces the net
    assert book.net_exposure() == pytest.approx(0.0)
    gross = book.check(_check("c", "c-1", 0.11))
    assert gross is not None and gross.code == "gross"
    orders = RiskBook(RiskConfig(max_open_orders=2))
    assert orders.check(_check("a", "a-1", 1.0)) is None
    assert orders.check(_check("b", "b-1", 1.0)) is None
    refused = orders.check(_check("c", "c-1", 1.0))
    assert refused is not None and refused.code == "open_orders"
    orders.apply(_event("a", _fill("a-1", "buy", 10.0, 0.1)))
    assert orders.check(_check("c", "c-2", 1.0)) is None


def test_a_check_the_worker_gave_up_on_reserves_nothing() -> None:
    book = RiskBook(RiskConfig(max_symbol_exposure=1.0))
    book.apply(_event("a", OrderRejected("a-1", "ETH-BTC", "buy", 1.0, UNAVAILABLE)))
    late = book.check(_check("a", "a-1", 0.1))  # the check reaches the service after that
    assert late is not None and late.code == "duplicate"
    assert book.reserved == {}


def test_halted_refuses_every_open() -> None:
    book = RiskBook(RiskConfig(max_open_orders=5))
    book.halted = True
    refusal = book.check(_check("a", "a-1", 0.1))
    assert refusal is not None and refusal.code == "halted"


def test_daily_loss_trips_once_a_day_on_candle_time() -> None:
    book = RiskBook(RiskConfig(max_daily_loss=1.0))
    book.go_live()
    day = 20_000 * DAY
    assert not book.apply(_event("a", _closed(-0.6, day + 10)))
    assert not book.apply(_event("b", _closed(-0.3, day + 20)))
    assert book.apply(_event("b", Stats(0, 0, 0, unrealized_pnl=-0.2)))  # 1.1 lost: trips
    assert book.trip_pending
    refusal = book.check(_check("a", "a-1", 0.1))
    assert refusal is not None and refusal.code == "daily_loss"
    book.confirmed()  # the kill switch is on ...
    book.halted = False  # ... and lifted by resume-trading: allowed again that day
    assert not book.apply(_event("a", _closed(-5.0, day + 30)))
    assert book.check(_check("a", "a-2", 0.1)) is None
    # A new day (of candle time) starts from zero realized, and can trip again.
    assert not book.apply(_event("a", _closed(-0.5, day + DAY)))
    assert book.daily_pnl() == pytest.approx(-0.7)
    assert book.apply(_event("b", _closed(-0.4, day + DAY + 5)))
    # A late close of an earlier day does not count for today.
    before = book.daily_pnl()
    book.apply(_event("c", _closed(-3.0, day + 40)))
    assert book.daily_pnl() == before


def test_rebuild_from_the_journal() -> None:
    """Replayed (not live) nothing trips; what was held and pending is back."""
    events = [
        _event("a", OrderSubmitted("a-1", "ETH-BTC", "buy", 2.0)),
        _event("a", _fill("a-1", "buy", 2.0, 0.1, at=DAY)),
        _event("b", OrderSubmitted("b-1", "ETH-BTC", "sell", 1.0)),  # pending, units
        _event("c", OrderSubmitted("c-1", "ETH-BTC", "buy", 0.5, sizing="equity")),
        _event("a", OrderSubmitted("a-2", "ETH-BTC", "sell", 2.0)),  # a's close: no reservation
        _event("a", _closed(-9.0, DAY + 1)),
    ]
    book = RiskBook(RiskConfig(max_symbol_exposure=1.0, max_daily_loss=5.0))
    for event in events:
        assert not book.apply(event)
    assert book.held == {"ETH-BTC": {"a": 2.0}}
    assert set(book.reserved) == {"b-1", "c-1"}
    assert book.reserved["b-1"].notional == pytest.approx(0.1)  # units x the last fill price
    assert book.reserved["c-1"].notional == 1.0  # sized at its fill: the largest limit
    assert book.go_live()  # the day's loss is over the limit: trips now
    # A new worker of c says Hello; the journal has c-1 pending: kept. b's did not make it.
    assert book.settle("c", {"c-1"}) == 0
    assert book.settle("b", set()) == 1
    assert set(book.reserved) == {"c-1"}


def test_a_trip_already_engaged_that_day_does_not_trip_again_after_a_restart() -> None:
    book = RiskBook(RiskConfig(max_daily_loss=1.0))
    book.tripped_day = 3  # from risk.json
    book.apply(_event("a", _closed(-2.0, 3 * DAY + 5)))
    assert not book.go_live()


# --------------------------------------------------------------------------- the container


class _Gate:
    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str, str, float, float]] = []

    def __call__(self, oid: str, symbol: str, side: Side, notional: float, price: float) -> str:
        self.asked.append((oid, symbol, side, notional, price))
        return self.answer


def _container(**execution: Any) -> tuple[Any, list[EventBody]]:
    config = msgspec.convert(
        {"id": "gated", "symbols": ["ETH-BTC"], "timeframe": "5m", "execution": execution},
        StrategyConfig,
    )
    emitted: list[EventBody] = []
    return build_container(config, emitted.append), emitted


def test_a_refused_open_becomes_order_rejected_and_closes_are_never_asked() -> None:
    c, emitted = _container(quantity=2.0)
    ask = _Gate("risk: symbol limit: no")
    c.risk = RiskGate(ask)
    c.open_position("ETH-BTC", "long", "go")
    c.carry_out()  # no price seen yet: refused without asking (fail closed)
    assert ask.asked == [] and isinstance(emitted[-1], OrderRejected)
    assert emitted[-1].reason == "risk: no price known for ETH-BTC yet"
    c.risk.prices["ETH-BTC"] = 0.1
    c.open_position("ETH-BTC", "long", "go")
    c.carry_out()
    assert len(ask.asked) == 1 and ask.asked[0][:3] == ("gated-2", "ETH-BTC", "buy")
    assert ask.asked[0][3] == pytest.approx(0.2) and ask.asked[0][4] == 0.1
    assert emitted[-1:] == [OrderRejected("gated-2", "ETH-BTC", "buy", 2.0, ask.answer)]
    assert not any(isinstance(e, OrderSubmitted) for e in emitted)
    assert c.positions.active("ETH-BTC") is None
    ask.answer = ""
    c.open_position("ETH-BTC", "long", "go")
    c.carry_out()
    assert emitted[-1:] == [OrderSubmitted("gated-3", "ETH-BTC", "buy", 2.0, "go")]
    c.positions.on_fill(OrderFilled("gated-3", "ETH-BTC", "buy", 2.0, 0.1, 0.0, 1))
    ask.answer = UNAVAILABLE
    c.close_position("ETH-BTC", "out")
    c.carry_out()
    assert len(ask.asked) == 2  # the close went out without a question
    assert emitted[-1:] == [OrderSubmitted("gated-4", "ETH-BTC", "sell", 2.0, "out")]


def test_an_order_sized_by_equity_is_valued_at_its_share_of_free_cash() -> None:
    c, _ = _container(sizing="equity", equity_fraction=0.5, cash=1000.0)
    ask = _Gate("")
    c.risk = RiskGate(ask)
    c.risk.prices["ETH-BTC"] = 0.1
    c.open_position("ETH-BTC", "short", "go")
    c.carry_out()
    assert len(ask.asked) == 1 and ask.asked[0][:3] == ("gated-1", "ETH-BTC", "sell")
    assert ask.asked[0][3] == pytest.approx(500.0) and ask.asked[0][4] == 0.1


# --------------------------------------------------------------------------- the client


@pytest.fixture
def service() -> Iterator[tuple[zmq.Socket[Any], RiskClient]]:
    ctx: zmq.Context[Any] = zmq.Context()
    security = Security(ctx, None, RejectCounter(), __import__("logging").getLogger("t"))
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = RiskClient(security, f"tcp://127.0.0.1:{port}", "s", 2000, RejectCounter())
    try:
        yield router, client
    finally:
        client.socket.close(linger=0)
        router.close(linger=0)
        ctx.term()


def test_no_answer_in_time_is_unavailable_and_a_late_answer_is_not_taken(
    service: tuple[zmq.Socket[Any], RiskClient],
) -> None:
    router, client = service
    client._timeout_s = 0.05
    # Nobody answers: unavailable (until connected the send fails at once; then it waits).
    while True:
        assert client.ask("s-1", "ETH-BTC", "buy", 0.1, 0.1) == UNAVAILABLE
        if router.poll(1000):
            break
    _, first = router.recv_multipart()
    given_up = RISK_REQUEST_DECODER.decode(first)
    client._timeout_s = 5.0

    def answer_late_then_right() -> None:
        identity, second = router.recv_multipart()
        wanted = RISK_REQUEST_DECODER.decode(second)
        router.send_multipart([identity, ENCODER.encode(RiskVerdict(given_up.req_id, True))])
        router.send_multipart([identity, b"\x00not msgpack"])
        router.send_multipart([identity, ENCODER.encode(RiskVerdict(wanted.req_id, False, "no"))])

    thread = threading.Thread(target=answer_late_then_right)
    thread.start()
    try:
        # The given-up check's "allowed" arrives first: it must not be taken.
        assert client.ask("s-2", "ETH-BTC", "buy", 0.1, 0.1) == "no"
    finally:
        thread.join(timeout=10)
    assert client.late == 1


def test_with_no_service_at_all_the_answer_is_immediate() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    security = Security(ctx, None, RejectCounter(), __import__("logging").getLogger("t"))
    client = RiskClient(security, "ipc:///tmp/stratrun-no-such-risk", "s", 60_000, RejectCounter())
    try:
        assert client.ask("s-1", "ETH-BTC", "buy", 0.1, 0.1) == UNAVAILABLE  # not 60 s later
    finally:
        client.socket.close(linger=0)
        ctx.term()


# --------------------------------------------------------------------------- config

GOOD = "[risk]\nmax_symbol_exposure = 1.5\n" + CONFIG_GOOD

BAD = {
    "unknown key": (
        "max_symbol_exposure = 1.5",
        "max_symbol_exposur = 1.5",
        "risk.max_symbol_exposur",
        "unknown key",
    ),
    "negative": (
        "max_symbol_exposure = 1.5",
        "max_symbol_exposure = -1",
        "risk.max_symbol_exposure",
        "Expected `float` > 0",
    ),
    "no limit": ("max_symbol_exposure = 1.5", "timeout_ms = 50", "risk", "set at least one limit"),
    "zero orders": (
        "max_symbol_exposure = 1.5",
        "max_open_orders = 0",
        "risk.max_open_orders",
        ">= 1",
    ),
    "timeout": (
        "max_symbol_exposure = 1.5",
        "max_daily_loss = 1\ntimeout_ms = 0",
        "risk.timeout_ms",
        "> 0",
    ),
    "not a table": ("[risk]\nmax_symbol_exposure = 1.5", "risk = 3", "risk", "Expected `object`"),
}


def test_the_risk_table_loads(tmp_path: Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    risk = load_config(path).risk
    assert risk == RiskConfig(max_symbol_exposure=1.5, timeout_ms=100.0)
    path.write_text(GOOD.replace("[risk]\nmax_symbol_exposure = 1.5\n", ""))
    assert load_config(path).risk is None  # no table: no gate


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_risk_table_names_the_key(case: str, tmp_path: Path) -> None:
    old, new, key, problem = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_stratrun_up_refuses_a_bad_risk_table_with_status_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("max_symbol_exposure = 1.5", "max_gross_exposure = 0"))
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "--run-dir", str(run_dir), "up", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: risk.max_gross_exposure: " in lines[0]
    assert not run_dir.exists()
