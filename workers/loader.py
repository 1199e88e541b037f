"""Resolve a strategy class from its dotted path ``package.module:Class``."""

from __future__ import annotations

import importlib
import sys

from workers.strategy import Strategy

__all__ = ["StrategyLoadError", "add_plugin_paths", "load_strategy_class"]


class StrategyLoadError(Exception):
    """The class path is malformed, does not import, or is not a Strategy subclass."""


def add_plugin_paths(paths: list[str]) -> None:
    """Let strategy classes be imported from these folders too (searched first)."""
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


def load_strategy_class(path: str) -> type[Strategy]:
    """Import ``package.module:Class`` and check it subclasses :class:`Strategy`."""
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise StrategyLoadError(f"{path!r} is not of the form 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a config problem
        raise StrategyLoadError(f"cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StrategyLoadError(f"module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyLoadError(f"{path!r} is not a subclass of workers.strategy.Strategy")
    return cls
