"""What the manager hands each child process: its role's config and the endpoints to use.

The manager writes one spec file per child under ``<run_dir>/specs/`` and starts the child
with its path; the child never re-reads the user's config file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec

from runtime.config import (
    AggregatorConfig,
    BrokerConfig,
    Config,
    RuntimeConfig,
    StrategyConfig,
)
from runtime.risk_config import RiskConfig
from runtime.rundir import RunDir

__all__ = [
    "LINKS",
    "AggregatorSpec",
    "BrokerSpec",
    "ChildSpec",
    "Endpoints",
    "LogSettings",
    "WorkerSpec",
    "endpoints_for",
    "keys_dir",
    "read_spec",
    "write_spec",
]


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    """The ZeroMQ endpoints of one system: the addresses clients connect to.

    ``binds`` holds a link's bind address where it differs from the one clients use (TCP
    with a relay, a NAT or a port mapping in between); ``keys_dir`` is set when the links
    are TCP and CURVE-secured (only the directory: no key ever goes in a spec).
    """

    market_data: str
    events: str
    supervision: str
    control: str
    lifecycle: str = ""
    history: str = ""
    binds: dict[str, str] = {}
    keys_dir: str = ""
    risk: str = ""

    def bind(self, link: str) -> str:
        """Where the server of ``link`` binds."""
        address: str = self.binds.get(link) or getattr(self, link)
        return address


class LogSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where a child logs (JSON lines; stderr when ``file`` is empty) and how it rotates."""

    file: str = ""
    max_bytes: int = 10 * 2**20
    backups: int = 5


class _Spec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag=True):
    name: str
    endpoints: Endpoints
    log_level: str = "info"
    log: LogSettings = LogSettings()


class BrokerSpec(_Spec, frozen=True):
    """The broker's spec."""

    broker: BrokerConfig
    cursor_file: str = ""
    epoch: str = ""


class AggregatorSpec(_Spec, frozen=True):
    """The aggregator's spec; ``journal`` is the SQLite file."""

    aggregator: AggregatorConfig
    journal: str
    risk: RiskConfig | None = None  # the risk gate's limits; None: no risk service
    kill_switch_file: str = ""


class WorkerSpec(_Spec, frozen=True):
    """One worker's spec: its strategy's merged config."""

    strategy: StrategyConfig
    ready_timeout_s: float = 15.0
    plugin_paths: list[str] = []
    market_data_hwm: int = 100_000
    spill_dir: str = ""
    feed_stale_after_s: float = 5.0
    max_unacked_events: int = 100_000
    kill_switch_file: str = ""
    risk_timeout_ms: float = 0.0  # > 0: ask the risk service before every opening order


ChildSpec = BrokerSpec | AggregatorSpec | WorkerSpec

# Every link a system binds, with its port offset from ``[runtime.tcp] port_base``.
LINKS = {
    "market_data": 0,
    "events": 1,
    "supervision": 2,
    "control": 3,
    "lifecycle": 4,
    "history": 5,
    "risk": 6,
}


def keys_dir(config: Config, run_dir: RunDir) -> Path:
    """The CURVE keys of a system: the configured folder, else ``<run_dir>/keys``."""
    return Path(config.runtime.keys_dir) if config.runtime.keys_dir else run_dir.keys_dir


def endpoints_for(runtime: RuntimeConfig, run_dir: RunDir, keys_dir: Path | None) -> Endpoints:
    """The endpoints of a system: ipc under the run directory, or TCP as configured."""
    binds: dict[str, str] = {}
    if runtime.transport == "tcp":
        tcp = runtime.tcp
        host = tcp.connect_host or tcp.host
        address = {link: f"tcp://{host}:{tcp.port_base + n}" for link, n in LINKS.items()}
        binds = {link: f"tcp://{tcp.host}:{tcp.port_base + n}" for link, n in LINKS.items()}
    else:
        address = {link: run_dir.endpoint(link) for link in LINKS}
    for link, override in runtime.connect.items():
        binds.setdefault(link, address[link])
        address[link] = override
    binds = {link: where for link, where in binds.items() if where != address[link]}
    return Endpoints(
        **address,
        binds=binds,
        keys_dir=str(keys_dir) if keys_dir is not None and runtime.transport == "tcp" else "",
    )


def write_spec(path: Path, spec: ChildSpec) -> str:
    """Write ``spec`` atomically (a child may be starting from the previous version),
    readable by its owner only.

    Returns a hash of its content, to tell an unchanged spec from a changed one.
    """
    data = msgspec.json.encode(spec)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()[:16]


def read_spec(path: str | Path) -> ChildSpec:
    """Read a spec written by :func:`write_spec`."""
    spec: ChildSpec = msgspec.json.decode(Path(path).read_bytes(), type=ChildSpec)
    return spec
