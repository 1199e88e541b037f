"""[runtime] log settings: checked before anything starts, handed to every child in its spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import ConfigError, load_config
from runtime.manager import Manager
from runtime.rundir import RunDir
from runtime.specs import read_spec
from tests.harness import eth_system, sma_strategy


def _config(tmp_path: Path, runtime: str) -> Path:
    path = tmp_path / "logs.toml"
    path.write_text(eth_system(runtime=runtime) + sma_strategy("s1", 5, 20))
    return path


def test_defaults_are_ten_mib_and_five_backups(tmp_path: Path) -> None:
    settings = load_config(_config(tmp_path, "")).runtime
    assert (settings.log_level, settings.log_max_bytes, settings.log_backups) == (
        "info",
        10 * 2**20,
        5,
    )


@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        ("log_max_bytes = 100", "runtime.log_max_bytes", ">= 4096"),
        ("log_backups = -1", "runtime.log_backups", ">= 0"),
        ('log_level = "loud"', "runtime.log_level", "loud"),
        ("log_max_bytes = '1M'", "runtime.log_max_bytes", "Expected `int`"),
    ],
)
def test_bad_log_settings_name_the_key(tmp_path: Path, line: str, key: str, problem: str) -> None:
    path = _config(tmp_path, line)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key and problem in info.value.problem
    assert str(info.value).startswith(f"{path}: {key}: ")


def test_every_child_spec_carries_its_log_file_and_rotation(tmp_path: Path) -> None:
    runtime = 'log_level = "debug"\nlog_max_bytes = 65536\nlog_backups = 2'
    cfg = load_config(_config(tmp_path, runtime))
    run_dir = RunDir.at(tmp_path / "run")
    run_dir.create()
    manager = Manager(cfg, run_dir, open("/dev/null", "w"), show_trades=False)  # noqa: SIM115
    try:
        manager._declare_children()  # writes the specs; starts nothing
    finally:
        manager.out.close()
    for name in ("aggregator", "broker", "s1"):
        spec = read_spec(run_dir.specs_dir / f"{name}.json")
        assert spec.log_level == "debug"
        assert spec.log.file == str(run_dir.log_file(name))
        assert (spec.log.max_bytes, spec.log.backups) == (65536, 2)
