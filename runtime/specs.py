"""What the manager hands each child process: its role's config and the endpoints to use.

The manager writes one spec file per child under ``<run_dir>/specs/`` and starts the child
with its path; the child never re-reads the user's config file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec

from runtime.config import AggregatorConfig, BrokerConfig, StrategyConfig

__all__ = [
    "AggregatorSpec",
    "BrokerSpec",
    "ChildSpec",
    "Endpoints",
    "LogSettings",
    "WorkerSpec",
    "read_spec",
    "write_spec",
]


class Endpoints(msgspec.Struct, frozen=True, kw_only=True):
    """The ZeroMQ endpoints of one system."""

    market_data: str
    events: str
    supervision: str
    control: str
    history: str = ""


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


class WorkerSpec(_Spec, frozen=True):
    """One worker's spec: its strategy's merged config."""

    strategy: StrategyConfig
    ready_timeout_s: float = 15.0
    plugin_paths: list[str] = []
    market_data_hwm: int = 100_000
    spill_dir: str = ""
    feed_stale_after_s: float = 5.0
    max_unacked_events: int = 100_000


ChildSpec = BrokerSpec | AggregatorSpec | WorkerSpec


def write_spec(path: Path, spec: ChildSpec) -> str:
    """Write ``spec`` atomically (a child may be starting from the previous version).

    Returns a hash of its content, to tell an unchanged spec from a changed one.
    """
    data = msgspec.json.encode(spec)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()[:16]


def read_spec(path: str | Path) -> ChildSpec:
    """Read a spec written by :func:`write_spec`."""
    spec: ChildSpec = msgspec.json.decode(Path(path).read_bytes(), type=ChildSpec)
    return spec
