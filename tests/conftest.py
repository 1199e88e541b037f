"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import RunningSystem


@pytest.fixture
def systems() -> Iterator[list[RunningSystem]]:
    """Systems a test starts (it appends them): each is cleaned up afterwards, the last
    started first, even when the test fails, and none may leave a process behind."""
    made: list[RunningSystem] = []
    try:
        yield made
    finally:
        leftovers: list[int] = []
        for system in reversed(made):
            leftovers += system.cleanup()
        assert not leftovers, f"processes left behind: {leftovers}"
