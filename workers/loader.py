"""Resolve a strategy class from its dotted path ``package.module:Class``.

A config may only name classes inside stratrun's own ``workers.strategies`` package or in a
folder it lists in ``runtime.plugin_paths``: a class path is not a way to import any module
on the interpreter's path.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from workers.strategy import Strategy

__all__ = ["StrategyLoadError", "add_plugin_paths", "load_strategy_class"]


class StrategyLoadError(Exception):
    """The class path is malformed, does not import, or is not a Strategy subclass."""


def add_plugin_paths(paths: list[str]) -> None:
    """Let strategy classes be imported from these folders too (searched first)."""
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


BUILT_IN = "workers.strategies"


def _plugin_root(module_name: str, plugin_paths: Sequence[str]) -> Path | None:
    """The plugin folder that holds the top-level package or module of ``module_name``."""
    top = module_name.split(".")[0]
    for folder in plugin_paths:
        root = Path(folder).resolve()
        if (root / f"{top}.py").is_file() or (root / top).is_dir():
            return root
    return None


def load_strategy_class(path: str, plugin_paths: Sequence[str] | None = None) -> type[Strategy]:
    """Import ``package.module:Class`` and check it subclasses :class:`Strategy`.

    With ``plugin_paths`` (a config being checked), the module must be in
    ``workers.strategies`` or come from one of those folders; it is checked before the
    import (nothing else is executed) and again after it (where it really came from).
    """
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise StrategyLoadError(f"{path!r} is not of the form 'package.module:Class'")
    built_in = module_name == BUILT_IN or module_name.startswith(BUILT_IN + ".")
    root = None
    if plugin_paths is not None and not built_in:
        root = _plugin_root(module_name, plugin_paths)
        if root is None:
            raise StrategyLoadError(
                f"{module_name!r} is neither in {BUILT_IN} nor in a folder of "
                "runtime.plugin_paths (add the folder that holds it there)"
            )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is a config problem
        raise StrategyLoadError(f"cannot import {module_name!r}: {exc}") from exc
    if root is not None:
        origin = Path(getattr(module, "__file__", None) or "/").resolve()
        if not origin.is_relative_to(root):
            raise StrategyLoadError(
                f"{module_name!r} was imported from {origin}, not from the plugin folder {root}"
            )
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StrategyLoadError(f"module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyLoadError(f"{path!r} is not a subclass of workers.strategy.Strategy")
    return cls
