"""The TOML config: its schema, the merge of ``[defaults]`` and the checks run before any start.

``load_config`` either returns a fully validated :class:`Config` or raises one
:class:`ConfigError` that names the file, the key path and the problem.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from broker.csv_source import CsvError, read_candles
from broker.resample import can_resample, timeframe_ms
from runtime.restart_policy import RestartSettings
from runtime.risk_config import LIMIT_KEYS, RiskConfig
from runtime.secrets import SecretRef, problem
from workers.indicators import IndicatorSpec
from workers.loader import StrategyLoadError, add_plugin_paths, load_strategy_class
from workers.services.analyzers import AnalyzerSpec
from workers.services.entry import EntryConfig
from workers.services.exit import ExitConfig
from workers.services.filters import FilterConfig
from workers.services.gate import GateConfig

__all__ = [
    "AggregatorConfig",
    "BrokerConfig",
    "Config",
    "ConfigError",
    "ExecutionConfig",
    "FeedConfig",
    "RuntimeConfig",
    "StrategyConfig",
    "TcpConfig",
    "load_config",
    "load_strategies",
]

_T = TypeVar("_T")
RULE_STRATEGY = "workers.strategies.rules:RuleStrategy"
# At most 24 characters: client order ids <strategy_id>-<n> stay within exchanges' 36
# (runtime/order_ids.py).
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,23}$"
_SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,31}$"
# Months are left out: they have no fixed length, so they cannot be resampled or paced.
_TIMEFRAME_PATTERN = r"^[1-9][0-9]*[smhdw]$"


class ConfigError(Exception):
    """A config that must not start: ``file: key: problem`` on one line."""

    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        self.file = str(file)
        self.key = key
        # One line, whatever the cause said (an import error can span several).
        problem = " ".join(problem.split())
        self.problem = problem
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(where + problem)


class _Section(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every config table: a misspelt key is an error, not a silent default."""


class TcpConfig(_Section, kw_only=True, frozen=True):
    """``[runtime.tcp]``: where the links listen when ``transport = "tcp"``.

    Parameters
    ----------
    host:
        Address the servers bind (``0.0.0.0`` for every interface).
    port_base:
        Port of the market data; events, supervision, control and lifecycle take the next ones.
    connect_host:
        Address clients connect to, when it is not ``host`` (e.g. binding ``0.0.0.0``).
    """

    host: str = "127.0.0.1"
    port_base: Annotated[int, msgspec.Meta(ge=1, le=65500)] = 7400
    connect_host: str | None = None


class RuntimeConfig(_Section, kw_only=True, frozen=True):
    """``[runtime]``: where the system lives and how long it waits.

    Parameters
    ----------
    run_dir:
        Run directory, relative to the config file; the CLI's ``--run-dir`` wins.
    plugin_paths:
        Folders (relative to the config file) where strategy classes outside stratrun live.
    ready_timeout_s:
        How long a child may take to report ready before it counts as failed.
    stop_timeout_s:
        Grace between SIGTERM and SIGKILL when stopping a child.
    watchdog_timeout_s:
        A running child silent for this long (no heartbeat: stuck) is killed and restarted.
    max_rss_mb:
        A worker whose resident memory exceeds this is killed and restarted (no cap if unset).
    restart:
        Restart policy, backoff and start limit of every process.
    zygote:
        Fork workers from a pre-imported process (fast, lean starts; Linux) rather than
        starting each as a new interpreter.
    background_nice:
        How much nicer (lower CPU priority) than the broker and the workers the manager and
        the aggregator run (Linux), so that the workers a candle wakes decide first; 0 (the
        default): the same priority.
    log_level:
        Least level every process logs: debug, info, warning or error.
    log_max_bytes:
        A process's log file is rotated before it grows past this (``name.log.1``...).
    log_backups:
        Rotated files kept per process (0: the log is emptied when full instead).
    transport:
        ``ipc`` (one host, endpoints in the run directory) or ``tcp`` (CURVE-secured).
    tcp:
        Addresses and ports of the TCP links.
    keys_dir:
        CURVE keys (``stratrun keys generate``), relative to the config file; default
        ``<run_dir>/keys``. Only used with ``transport = "tcp"``.
    connect:
        Per link, the address clients connect to instead of the bound one (a relay, a port
        mapping); keys are link names (``market_data``, ``events``, ...).
    """

    run_dir: str | None = None
    plugin_paths: list[str] = []
    ready_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    stop_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    watchdog_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    max_rss_mb: Annotated[float, msgspec.Meta(gt=0)] | None = None
    restart: RestartSettings = RestartSettings()
    zygote: bool = True
    background_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_max_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 10 * 2**20
    log_backups: Annotated[int, msgspec.Meta(ge=0, le=100)] = 5
    transport: Literal["ipc", "tcp"] = "ipc"
    tcp: TcpConfig = TcpConfig()
    keys_dir: str | None = None
    connect: dict[str, str] = {}


class FeedConfig(_Section, kw_only=True, frozen=True):
    """One ``[[broker.feeds]]`` entry: a CSV file replayed as one candle stream."""

    symbol: Annotated[str, msgspec.Meta(pattern=_SYMBOL_PATTERN)]
    timeframe: Annotated[str, msgspec.Meta(pattern=_TIMEFRAME_PATTERN)]
    path: str
    resample_to: list[Annotated[str, msgspec.Meta(pattern=_TIMEFRAME_PATTERN)]] = []

    @property
    def stream(self) -> str:
        """``SYMBOL|TIMEFRAME``, the stream's name."""
        return f"{self.symbol}|{self.timeframe}"

    @property
    def streams(self) -> list[str]:
        """The base stream and every stream resampled from it."""
        return [self.stream, *(f"{self.symbol}|{tf}" for tf in self.resample_to)]


class BrokerConfig(_Section, kw_only=True, frozen=True):
    """``[broker]``: the market-data replay.

    Parameters
    ----------
    speed:
        Multiple of real time (candle spacing divided by ``speed``); 0 publishes as fast as
        the subscribers take candles.
    heartbeat_interval_s:
        Period of feed heartbeats.
    history_limit:
        Candles kept per stream for backfill and warm-up.
    stale_after_s:
        A worker that hears nothing from the feed (candle or heartbeat) for this long
        reports it stale.
    send_hwm, receive_hwm:
        Frames (a lone candle, or a batch of up to 100 of one stream when the replay is
        behind) queued for one subscriber by the broker, and by the subscriber itself, before
        the broker drops (paced replay) or waits (speed 0); a subscriber that lost candles
        backfills them from history.
    feeds:
        The streams to replay.
    """

    speed: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    heartbeat_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    history_limit: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    stale_after_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    send_hwm: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    receive_hwm: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    feeds: Annotated[list[FeedConfig], msgspec.Meta(min_length=1)]


class AggregatorConfig(_Section, kw_only=True, frozen=True):
    """``[aggregator]``: where metrics are served (port 0 picks a free one)."""

    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464


class ExecutionConfig(_Section, kw_only=True, frozen=True):
    """Paper execution of one strategy (live paper trading and the backtest alike).

    Parameters
    ----------
    fee_bps, slippage_bps:
        Commission on the traded value and price slippage, in basis points (20 = 0.002).
    quantity:
        Units per entry when ``sizing = "fixed"``.
    sizing:
        ``fixed`` (``quantity`` units) or ``equity``: each entry uses ``equity_fraction`` of
        the free cash at its fill, in whole units if ``whole_units``.
    cash:
        The strategy's allocated capital: the cash of its sub-account before any trade
        (its ledger, see workers/services/ledger.py).
    """

    fee_bps: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    slippage_bps: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    quantity: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    sizing: Literal["fixed", "equity"] = "fixed"
    equity_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    whole_units: bool = True
    cash: Annotated[float, msgspec.Meta(gt=0)] = 10_000.0


class _Defaults(_Section, kw_only=True, frozen=True):
    """``[defaults]``: anything a strategy section may hold, except its id and class."""

    indicators: dict[str, IndicatorSpec] | None = None
    analyzers: list[AnalyzerSpec] | None = None
    entry: EntryConfig | None = None
    exit: ExitConfig | None = None
    filters: FilterConfig | None = None
    gate: GateConfig | None = None
    max_consecutive_errors: Annotated[int, msgspec.Meta(ge=1)] | None = None
    warmup_candles: Annotated[int, msgspec.Meta(ge=0)] | None = None
    max_unacked_events: Annotated[int, msgspec.Meta(ge=10)] | None = None

    symbols: Annotated[list[str], msgspec.Meta(min_length=1)] | None = None
    timeframe: Annotated[str, msgspec.Meta(pattern=_TIMEFRAME_PATTERN)] | None = None
    execution: ExecutionConfig | None = None
    params: dict[str, Any] | None = None
    stats_interval_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    secrets: dict[str, SecretRef] | None = None
    account_every: Annotated[str, msgspec.Meta(pattern=_TIMEFRAME_PATTERN)] | None = None


class StrategyConfig(_Section, kw_only=True, frozen=True):
    """One ``[[strategies]]`` entry after ``[defaults]`` was merged under it.

    Parameters
    ----------
    id:
        Unique id, at most 24 characters of ``[A-Za-z0-9_.-]``; tags every event, names the
        log file and the process, and starts every client order id (``<id>-<n>``).
    class_path:
        ``package.module:Class`` (key ``class`` in TOML), a subclass of Strategy.
    symbols, timeframe:
        The streams the strategy subscribes to: each symbol at that timeframe.
    execution:
        Paper execution settings.
    params:
        The strategy's own parameters, validated against its ``Params`` struct.
    stats_interval_s:
        How often the worker reports its figures.
    indicators:
        Named indicators (``{ type = "ema", period = 12 }``); only these are built.
    analyzers:
        Weighted analyzers scoring the indicators.
    entry, exit, filters, gate:
        Rules of the orchestrators (the declarative strategy drives them).
    max_consecutive_errors:
        After this many hook failures in a row the strategy stops itself (state ``errored``).
    warmup_candles:
        Candles per stream replayed from the broker's history, without acting, before the
        strategy decides (indicators and its own state are then warm).
    max_unacked_events:
        Events kept in memory while the aggregator does not acknowledge; older ones are
        spilled to ``<run_dir>/spill/<id>.spill``.
    secrets:
        Named secrets (``{ env = "NAME" }`` or ``{ file = "path" }``, mode 0600), read by the
        worker when the strategy asks (``ctx.secret(name)``); their values never enter the
        config, the specs on disk, the logs or the events.
    account_every:
        Candle time between two periodic points of the sub-account's curve (``account``
        events) while positions are held, a whole multiple of ``timeframe``; a fill always
        makes a point. Default: an hour, or every candle when an hour is not a multiple
        of the timeframe (see :attr:`account_every_ms`).
    """

    id: Annotated[str, msgspec.Meta(pattern=_ID_PATTERN)]
    class_path: str = msgspec.field(default=RULE_STRATEGY, name="class")
    symbols: Annotated[list[str], msgspec.Meta(min_length=1)]
    timeframe: Annotated[str, msgspec.Meta(pattern=_TIMEFRAME_PATTERN)]
    execution: ExecutionConfig = ExecutionConfig()
    params: dict[str, Any] = {}
    stats_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    indicators: dict[str, IndicatorSpec] = {}
    analyzers: list[AnalyzerSpec] = []
    entry: EntryConfig = EntryConfig()
    exit: ExitConfig = ExitConfig()
    filters: FilterConfig = FilterConfig()
    gate: GateConfig | None = None
    max_consecutive_errors: Annotated[int, msgspec.Meta(ge=1)] = 5
    warmup_candles: Annotated[int, msgspec.Meta(ge=0)] = 1000
    max_unacked_events: Annotated[int, msgspec.Meta(ge=10)] = 100_000
    secrets: dict[str, SecretRef] = {}
    account_every: Annotated[str, msgspec.Meta(pattern=_TIMEFRAME_PATTERN)] | None = None

    @property
    def timeframes(self) -> list[str]:
        """The decision timeframe first, then every other one indicators or the gate use."""
        extra = {spec.timeframe for spec in self.indicators.values() if spec.timeframe}
        if self.gate is not None:
            extra.add(self.gate.timeframe)
        extra.discard(self.timeframe)
        return [self.timeframe, *sorted(extra)]

    @property
    def account_every_ms(self) -> int:
        """The period of the sub-account's marks in milliseconds."""
        if self.account_every is not None:
            return timeframe_ms(self.account_every)
        hour, candle = 3_600_000, timeframe_ms(self.timeframe)
        return hour if hour % candle == 0 else candle

    @property
    def streams(self) -> list[str]:
        """``SYMBOL|TIMEFRAME`` of every stream the strategy uses."""
        return [f"{s}|{tf}" for s in self.symbols for tf in self.timeframes]

    def digest(self) -> str:
        """A hash of the merged section, to tell a changed strategy from an unchanged one."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:16]


class Config(_Section, kw_only=True, frozen=True):
    """A whole validated config; paths inside it are absolute."""

    runtime: RuntimeConfig = RuntimeConfig()
    broker: BrokerConfig
    aggregator: AggregatorConfig = AggregatorConfig()
    strategies: Annotated[list[StrategyConfig], msgspec.Meta(min_length=1)]
    source: str = ""
    defaults: dict[str, Any] = {}  # the raw [defaults] table, merged under added strategies
    risk: RiskConfig | None = None  # no [risk] table: no pre-trade check


def load_config(path: str | Path) -> Config:
    """Read, merge and validate a config file; raise :class:`ConfigError` on any problem."""
    file = Path(path).resolve()
    return _validate(_read_toml(file), file)


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"invalid TOML: {exc}") from None


def _validate(raw: dict[str, Any], file: Path) -> Config:
    known = {"runtime", "broker", "aggregator", "defaults", "strategies", "risk"}
    for key in raw:
        if key not in known:
            raise ConfigError(
                file, key, f"unknown key (expected one of {', '.join(sorted(known))})"
            )
    defaults_raw = raw.get("defaults", {})
    _convert(defaults_raw, _Defaults, file, "defaults")
    strategies_raw = raw.get("strategies")
    if not isinstance(strategies_raw, list) or not strategies_raw:
        raise ConfigError(file, "strategies", "at least one [[strategies]] table is required")
    strategies = [
        _convert_strategy(_merge(defaults_raw, s), file, f"strategies[{i}]")
        if isinstance(s, dict)
        else _fail(file, f"strategies[{i}]", "expected a table")
        for i, s in enumerate(strategies_raw)
    ]
    if "broker" not in raw:
        raise ConfigError(file, "broker", "required table is missing")
    config = Config(
        runtime=_convert(raw.get("runtime", {}), RuntimeConfig, file, "runtime"),
        broker=_convert(raw["broker"], BrokerConfig, file, "broker"),
        aggregator=_convert(raw.get("aggregator", {}), AggregatorConfig, file, "aggregator"),
        strategies=strategies,
        source=str(file),
        defaults=defaults_raw,
        risk=_risk(raw, file),
    )
    return _check(config, file)


def _risk(raw: dict[str, Any], file: Path) -> RiskConfig | None:
    if "risk" not in raw:
        return None
    risk = _convert(raw["risk"], RiskConfig, file, "risk")
    if not risk.any_limit():
        raise ConfigError(file, "risk", f"set at least one limit ({', '.join(LIMIT_KEYS)})")
    return risk


def _convert_strategy(raw: dict[str, Any], file: Path, key: str) -> StrategyConfig:
    """Validate one merged strategy section; indicators and secrets one by one so errors
    name them; secret files resolved and every secret checked readable (not read)."""
    indicators = raw.get("indicators")
    if isinstance(indicators, dict):
        for name, spec in indicators.items():
            _convert(spec, IndicatorSpec, file, f"{key}.indicators.{name}")  # type: ignore[arg-type]
    refs = raw.get("secrets")
    if isinstance(refs, dict):
        for name, ref in refs.items():
            _convert(ref, SecretRef, file, f"{key}.secrets.{name}")
    strategy = _convert(raw, StrategyConfig, file, key)
    if not strategy.secrets:
        return strategy
    secrets = {}
    for name, ref in strategy.secrets.items():
        if ref.file is not None:
            ref = msgspec.structs.replace(ref, file=str((file.parent / ref.file).resolve()))
        if (why := problem(ref)) is not None:
            raise ConfigError(file, f"{key}.secrets.{name}", why)
        secrets[name] = ref
    return msgspec.structs.replace(strategy, secrets=secrets)


def _check(config: Config, file: Path) -> Config:
    """Cross-field checks: files exist, ids unique, streams fed, classes import, params fit."""
    base = file.parent
    feeds: list[FeedConfig] = []
    seen_streams: dict[str, int] = {}
    for i, feed in enumerate(config.broker.feeds):
        key = f"broker.feeds[{i}]"
        if feed.stream in seen_streams:
            raise ConfigError(
                file,
                key,
                f"stream {feed.stream} is already fed by broker.feeds[{seen_streams[feed.stream]}]",
            )
        seen_streams[feed.stream] = i
        data = (base / feed.path).resolve()
        if not data.is_file():
            raise ConfigError(file, f"{key}.path", f"data file not found: {data}")
        try:
            read_candles(data)  # the broker would fail on it only after everything started
        except CsvError as exc:
            raise ConfigError(file, f"{key}.path", str(exc)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(file, f"{key}.path", f"cannot read {data}: {exc}") from None
        for j, target in enumerate(feed.resample_to):
            if not can_resample(feed.timeframe, target):
                raise ConfigError(
                    file, f"{key}.resample_to[{j}]", f"cannot build {target} from {feed.timeframe}"
                )
        feeds.append(msgspec.structs.replace(feed, path=str(data)))
    resampled = {i: list(feed.resample_to) for i, feed in enumerate(feeds)}
    plugin_paths = []
    for j, folder in enumerate(config.runtime.plugin_paths):
        path = (base / folder).resolve()
        if not path.is_dir():
            raise ConfigError(file, f"runtime.plugin_paths[{j}]", f"no such folder: {path}")
        plugin_paths.append(str(path))
    add_plugin_paths(plugin_paths)
    seen_ids: dict[str, str] = {}
    for i, strategy in enumerate(config.strategies):
        _check_strategy(
            strategy, file, f"strategies[{i}]", seen_ids, feeds, resampled, plugin_paths
        )
    runtime = msgspec.structs.replace(config.runtime, plugin_paths=plugin_paths)
    if runtime.run_dir is not None:
        runtime = msgspec.structs.replace(runtime, run_dir=str((base / runtime.run_dir).resolve()))
    if runtime.keys_dir is not None:
        runtime = msgspec.structs.replace(
            runtime, keys_dir=str((base / runtime.keys_dir).resolve())
        )
    _check_connect(runtime, file)
    feeds = [
        msgspec.structs.replace(feed, resample_to=sorted(set(resampled[i]), key=timeframe_ms))
        for i, feed in enumerate(feeds)
    ]
    broker = msgspec.structs.replace(config.broker, feeds=feeds)
    return msgspec.structs.replace(config, runtime=runtime, broker=broker)


_LINKS = ("market_data", "events", "supervision", "control", "lifecycle", "risk")


def _check_connect(runtime: RuntimeConfig, file: Path) -> None:
    for link, address in runtime.connect.items():
        key = f"runtime.connect.{link}"
        if link not in _LINKS:
            raise ConfigError(file, key, f"unknown link (expected one of {', '.join(_LINKS)})")
        scheme = "tcp://" if runtime.transport == "tcp" else "ipc://"
        if not address.startswith(scheme):
            raise ConfigError(
                file, key, f"with transport {runtime.transport!r} the address must start {scheme}"
            )


def _check_strategy(
    strategy: StrategyConfig,
    file: Path,
    key: str,
    seen_ids: dict[str, str],
    feeds: list[FeedConfig],
    resampled: dict[int, list[str]] | None,
    plugin_paths: list[str],
) -> None:
    """Everything one strategy must satisfy; ``resampled`` None means the broker is running
    already, so only streams it publishes now can be used."""
    if strategy.id in seen_ids:
        raise ConfigError(
            file,
            f"{key}.id",
            f"duplicate strategy id {strategy.id!r} (also {seen_ids[strategy.id]})",
        )
    seen_ids[strategy.id] = key
    _check_rules(strategy, file, key)
    for j, symbol in enumerate(strategy.symbols):
        for timeframe, where in _timeframe_keys(strategy, key, j):
            _feed_stream(feeds, resampled, symbol, timeframe, file, where)
    every = strategy.account_every
    if every is not None and timeframe_ms(every) % timeframe_ms(strategy.timeframe):
        raise ConfigError(
            file,
            f"{key}.account_every",
            f"must be a whole multiple of the timeframe {strategy.timeframe}",
        )
    try:
        cls = load_strategy_class(strategy.class_path, plugin_paths)
    except StrategyLoadError as exc:
        raise ConfigError(file, f"{key}.class", str(exc)) from None
    _convert(strategy.params, cls.Params, file, f"{key}.params")


def load_strategies(path: str | Path, running: Config) -> list[StrategyConfig]:
    """Read a file of ``[[strategies]]`` to add to the running system ``running``.

    The running config's ``[defaults]`` are merged under them; they must use streams the
    running broker publishes already, and their ids must be new.
    """
    file = Path(path).resolve()
    raw = _read_toml(file)
    for key in raw:
        if key != "strategies":
            raise ConfigError(file, key, "a file to add may only hold [[strategies]] tables")
    tables = raw.get("strategies")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(file, "strategies", "at least one [[strategies]] table is required")
    seen_ids = {s.id: f"the running strategy {s.id!r}" for s in running.strategies}
    added = []
    for i, table in enumerate(tables):
        key = f"strategies[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(file, key, "expected a table")
        strategy = _convert_strategy(_merge(running.defaults, table), file, key)
        _check_strategy(
            strategy, file, key, seen_ids, running.broker.feeds, None, running.runtime.plugin_paths
        )
        added.append(strategy)
    return added


def _timeframe_keys(strategy: StrategyConfig, key: str, j: int) -> list[tuple[str, str]]:
    """Each timeframe the strategy needs for one symbol, with the key that asks for it."""
    needs = [(strategy.timeframe, f"{key}.symbols[{j}]")]
    for name, spec in strategy.indicators.items():
        if spec.timeframe:
            needs.append((spec.timeframe, f"{key}.indicators.{name}.timeframe"))
    if strategy.gate is not None:
        needs.append((strategy.gate.timeframe, f"{key}.gate.timeframe"))
    return needs


def _feed_stream(
    feeds: list[FeedConfig],
    resampled: dict[int, list[str]] | None,
    symbol: str,
    timeframe: str,
    file: Path,
    key: str,
) -> None:
    """Make sure the broker publishes ``symbol`` at ``timeframe``, resampling if it must."""
    bases = [(i, f) for i, f in enumerate(feeds) if f.symbol == symbol]
    if any(f.timeframe == timeframe for _, f in bases):
        return
    if resampled is None:  # the broker runs already: only what it publishes now
        if any(timeframe in f.resample_to for _, f in bases):
            return
        raise ConfigError(
            file,
            key,
            f"the running broker does not publish {symbol}|{timeframe}; add it to the config "
            "and restart the broker first",
        )
    for i, feed in bases:
        if can_resample(feed.timeframe, timeframe):
            resampled[i].append(timeframe)
            return
    fed = ", ".join(f.timeframe for _, f in bases)
    problem = f"no broker feed for stream {symbol}|{timeframe}"
    if fed:
        problem += f" ({symbol} is fed at {fed}, which cannot be resampled to {timeframe})"
    raise ConfigError(file, key, problem)


def _check_rules(strategy: StrategyConfig, file: Path, key: str) -> None:
    """Analyzers, filters and the gate may only name indicators the strategy declares."""
    known = strategy.indicators
    defined = ", ".join(sorted(known)) or "none"

    def need(name: str, where: str) -> None:
        if name not in known:
            raise ConfigError(file, where, f"no indicator named {name!r} (defined: {defined})")

    for name, spec in known.items():
        if spec.timeframe is not None and not re.match(_TIMEFRAME_PATTERN, spec.timeframe):
            raise ConfigError(file, f"{key}.indicators.{name}.timeframe", "not a timeframe")
    for j, analyzer in enumerate(strategy.analyzers):
        for field_name in ("indicator", "fast", "slow"):
            value = getattr(analyzer, field_name, None)
            if isinstance(value, str):
                need(value, f"{key}.analyzers[{j}].{field_name}")
    floor = strategy.filters.volatility_floor
    if floor is not None:
        need(floor.indicator, f"{key}.filters.volatility_floor.indicator")
    gate = strategy.gate
    if gate is not None:
        need(gate.indicator, f"{key}.gate.indicator")
        if known[gate.indicator].timeframe != gate.timeframe:
            raise ConfigError(
                file,
                f"{key}.gate.indicator",
                f"indicator {gate.indicator!r} must be declared with timeframe = "
                f"{gate.timeframe!r} to gate on it",
            )
    if strategy.class_path == RULE_STRATEGY and not strategy.analyzers:
        raise ConfigError(
            file, f"{key}.analyzers", "a declarative strategy needs at least one analyzer"
        )


def _merge(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``own`` over ``defaults``: tables merge, everything else (lists too) replaces."""
    merged = dict(defaults)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def _convert(raw: Any, type_: type[_T], file: Path, prefix: str) -> _T:
    """``msgspec.convert`` with its error rewritten as ``file: key.path: problem``."""
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        raise _config_error(str(exc), file, prefix) from None


def _config_error(message: str, file: Path, prefix: str) -> ConfigError:
    match = _AT.match(message)
    assert match is not None
    problem, path = match["problem"], match["path"] or ""
    key = prefix + path
    for pattern, text in ((_UNKNOWN, "unknown key"), (_MISSING, "required key is missing")):
        found = pattern.match(problem)
        if found:
            key = f"{key}.{found['field']}" if key else found["field"]
            problem = text
    if key.startswith("."):
        key = key[1:]
    return ConfigError(file, key, problem)


def _fail(file: Path, key: str, problem: str) -> Any:
    raise ConfigError(file, key, problem)
