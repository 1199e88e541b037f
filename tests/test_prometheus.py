"""A real Prometheus scrapes a running system; promtool checks its metrics and deploy/.

``/usr/bin/prometheus`` and ``/usr/bin/promtool`` come from Debian's ``prometheus`` package,
which ``.ci/run`` installs: when they are missing these tests fail, they do not skip.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DATA, REPO, RunningSystem, fetch, wait_until, write_config

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
ALERTS = DEPLOY / "stratrun-alerts.yml"
STRATEGIES = ("sma_a", "rsi_b")

CONFIG = f"""
[runtime]
stop_timeout_s = 5

[broker]
speed = 3000            # 10 candles a second per 5-minute stream
heartbeat_interval_s = 0.5

[[broker.feeds]]
symbol = "ETH-BTC"
timeframe = "5m"
path = "{DATA}/crypto/ETH-BTC-5m.csv"

[[broker.feeds]]
symbol = "LTC-BTC"
timeframe = "5m"
path = "{DATA}/crypto/LTC-BTC-5m.csv"

[aggregator]
metrics_port = 0

[defaults]
timeframe = "5m"
stats_interval_s = 0.2
execution = {{ fee_bps = 10, quantity = 1.0 }}

[[strategies]]
id = "sma_a"
class = "workers.strategies.sma_cross:SmaCross"
symbols = ["ETH-BTC"]
params = {{ fast = 3, slow = 8 }}

[[strategies]]
id = "rsi_b"
class = "workers.strategies.rsi_reversion:RsiReversion"
symbols = ["LTC-BTC"]
params = {{ period = 6, oversold = 40, exit_above = 55 }}
"""


def tool(name: str) -> str:
    """The path of a Prometheus binary; fails (not skips) the test when it is missing."""
    path = Path("/usr/bin") / name
    assert path.is_file() and os.access(path, os.X_OK), (
        f"{path} is missing: install Debian's prometheus package "
        "(apt-get install --no-install-recommends prometheus; .ci/run does)"
    )
    return str(path)


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class System:
    """The running stratrun system and its metrics URL."""

    running: RunningSystem
    metrics_url: str


@dataclass
class Prometheus:
    """A Prometheus server of the test's own, and its HTTP API."""

    base_url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer."""
        url = f"{self.base_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            answer = json.loads(fetch(url))
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{url}: HTTP {exc.code}: {exc.read().decode()}") from None
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    base = tmp_path_factory.mktemp("prom")
    running = RunningSystem(write_config(base / "prom.toml", CONFIG), base / "run")
    try:
        rows = running.wait_all_running()
        yield System(running, rows["aggregator"].detail["metrics_url"])
    finally:
        leftovers = running.cleanup()
        assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture(scope="module")
def prometheus(system: System, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """``/usr/bin/prometheus`` scraping the system every second, in its own session."""
    binary = tool("prometheus")
    base = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlsplit(system.metrics_url)
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "stratrun",
                "metrics_path": target.path,
                "static_configs": [{"targets": [target.netloc]}],
            }
        ],
    }
    (base / "prometheus.yml").write_text(json.dumps(config, indent=2))
    port = free_port()
    log = base / "prometheus.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={base / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", log)
    try:

        def ready() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"prometheus exited {server.returncode}:\n{log.read_text()}")
            try:
                return "Ready" in fetch(f"{prom.base_url}/-/ready")
            except OSError:
                return False

        wait_until(ready, 20, "prometheus to be ready")
        yield prom
    finally:
        _stop(server)


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not exited within 10 s."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if server.poll() is not None:
            return
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    assert server.poll() is not None, f"prometheus pid {server.pid} survived SIGKILL"


def test_prometheus_scrapes_every_strategy(prometheus: Prometheus) -> None:
    def every_strategy_counted() -> dict[str, float] | None:
        result = prometheus.query("stratrun_candles_processed_total")
        values = {r["metric"].get("strategy_id", ""): float(r["value"][1]) for r in result}
        return values if all(values.get(sid, 0) > 0 for sid in STRATEGIES) else None

    values = wait_until(every_strategy_counted, 20, "candle counts of every strategy", 0.25)
    assert set(values) == set(STRATEGIES)
    up = prometheus.query('up{job="stratrun"}')
    assert [float(r["value"][1]) for r in up] == [1.0]


def test_alert_rules_evaluate_and_none_fires(prometheus: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        failed = [r for r in rules if r["health"] == "err"]
        assert not failed, f"alert rules failed to evaluate: {failed}"
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    rules = wait_until(evaluated, 20, "every alert rule to be evaluated", 0.25)
    assert {r["name"] for r in rules} >= {
        "StratrunWorkerDown",
        "StratrunRestartStorm",
        "StratrunStaleFeed",
        "StratrunGapRate",
        "StratrunFramesRejected",
        "StratrunBrokerSilent",
        "StratrunWatchdogKills",
    }
    # A healthy system: nothing pending or firing.
    assert prometheus.api("alerts")["alerts"] == []


def _dashboard_queries() -> list[str]:
    """Every target expression of the dashboard's panels."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_return_data(prometheus: Prometheus) -> None:
    """Each panel's PromQL is valid and finds series (Grafana's variables filled in)."""

    def concrete(expr: str) -> str:
        return expr.replace("$__rate_interval", "10s").replace("$strategy", ".*")

    def all_answer() -> bool:
        return all(prometheus.query(concrete(expr)) for expr in _dashboard_queries())

    try:
        wait_until(all_answer, 20, "every dashboard query to return series", 0.5)
    except AssertionError:
        empty = [e for e in _dashboard_queries() if not prometheus.query(concrete(e))]
        raise AssertionError(f"dashboard queries with no series: {empty}") from None


def _exposed_names(scrape: str) -> set[str]:
    """Sample names a query can use, by family type (``_bucket`` only for histograms, ...)."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", scrape, re.M))
    present = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", scrape, re.M))
    names: set[str] = set()
    for family, kind in types.items():
        if kind == "histogram":
            names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
        elif kind == "summary":
            names |= {family, f"{family}_sum", f"{family}_count"}
        elif kind == "counter":
            names.add(family if family.endswith("_total") else f"{family}_total")
        else:
            names.add(family)
    return names & present


def test_dashboard_metrics_exist(system: System) -> None:
    used = {name for expr in _dashboard_queries() for name in re.findall(r"stratrun_[a-z_]+", expr)}
    assert {
        "stratrun_realized_pnl",
        "stratrun_open_positions",
        "stratrun_candle_to_decision_seconds_bucket",
        "stratrun_process_restarts_total",
        "stratrun_process_resident_memory_bytes",
        "stratrun_process_unique_memory_bytes",
        "stratrun_candles_processed_total",
        "stratrun_events_total",
    } <= used

    def complete() -> str | None:
        scrape = fetch(system.metrics_url)
        return scrape if used <= _exposed_names(scrape) else None

    try:
        wait_until(complete, 20, "every dashboard metric in the scrape", 0.25)
    except AssertionError:
        missing = sorted(used - _exposed_names(fetch(system.metrics_url)))
        raise AssertionError(
            f"dashboard uses metrics the system does not expose: {missing}"
        ) from None


def test_every_documented_family_is_in_the_scrape(system: System) -> None:
    """The issue's list: data path, PnL and equity, orders, heartbeat age, broker rate and lag,
    journal commit latency and queue depth, by Prometheus' naming conventions."""
    wanted = {
        "stratrun_candles_processed_total",
        "stratrun_candle_gaps_total",
        "stratrun_candles_backfilled_total",
        "stratrun_candles_duplicate_total",
        "stratrun_candles_missed_total",
        "stratrun_candle_to_decision_seconds_bucket",
        "stratrun_candle_to_journal_seconds_bucket",
        "stratrun_events_total",
        "stratrun_orders_total",
        "stratrun_fills_total",
        "stratrun_orders_rejected_total",
        "stratrun_open_positions",
        "stratrun_realized_pnl",
        "stratrun_unrealized_pnl",
        "stratrun_equity",
        "stratrun_strategy_lag_seconds",
        "stratrun_feed_stale",
        "stratrun_process_up",
        "stratrun_process_restarts_total",
        "stratrun_process_resident_memory_bytes",
        "stratrun_process_cpu_ratio",
        "stratrun_process_heartbeat_age_seconds",
        "stratrun_broker_candles_published_total",
        "stratrun_broker_lag_seconds",
        "stratrun_journal_commit_seconds_bucket",
        "stratrun_aggregator_queue_depth",
        "stratrun_account_capital",
        "stratrun_account_cash",
        "stratrun_account_equity",
        "stratrun_account_drawdown",
        "stratrun_account_fees_total",
        "stratrun_account_trades_total",
        "stratrun_portfolio_equity",
        "stratrun_portfolio_fees_total",
    }

    def complete() -> set[str] | None:
        names = _exposed_names(fetch(system.metrics_url))
        return names if wanted <= names else None

    try:
        wait_until(complete, 20, "every documented metric family", 0.25)
    except AssertionError:
        missing = sorted(wanted - _exposed_names(fetch(system.metrics_url)))
        raise AssertionError(f"not exposed: {missing}") from None


def test_promtool_check_metrics(system: System) -> None:
    def with_histograms() -> str | None:
        scrape = fetch(system.metrics_url)
        return scrape if "_bucket{" in scrape and "stratrun_process_up{" in scrape else None

    scrape = wait_until(with_histograms, 20, "latency histograms and process figures", 0.25)
    checked = run(tool("promtool"), "check", "metrics", stdin=scrape)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == "", (
        f"promtool lint:\n{checked.stdout}{checked.stderr}"
    )


def test_promtool_check_rules_and_config() -> None:
    rules = run(tool("promtool"), "check", "rules", str(ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 9 rules found" in rules.stdout
    config = run(tool("promtool"), "check", "config", str(DEPLOY / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    tested = run(tool("promtool"), "test", "rules", str(DEPLOY / "stratrun-alerts.test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "strategy"} <= variables
    for panel in panels:
        assert panel["type"] and panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs))
        assert all(t["expr"].strip() for t in panel["targets"])
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("pnl", "open positions", "p50", "restarts", "rss", "uss", "candles", "kind"):
        assert topic in titles, f"no panel about {topic}"
