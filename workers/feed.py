"""What a worker knows of its feed: the last seq of each stream, and whether the feed is alive.

A candle is ``next`` (seq = last + 1), a ``duplicate`` (seq <= last: a resumed broker
sending again what it sent before dying), or after a ``gap`` (seq > last + 1: candles lost
on the way, to be backfilled from history before this one is used).
"""

from __future__ import annotations

__all__ = ["FeedHealth", "StreamSeqs"]


class StreamSeqs:
    """The seq of the last candle processed, per stream (``SYMBOL|TF``): the cursor."""

    def __init__(self, streams: list[str]) -> None:
        self.last: dict[str, int] = dict.fromkeys(streams, 0)


class FeedHealth:
    """Stale after ``stale_after_s`` without a heartbeat or candle; a new broker
    incarnation is noticed on the first heartbeat it sends."""

    def __init__(self, stale_after_s: float, now: float, incarnation: str = "") -> None:
        self.stale_after_s = stale_after_s
        self.last_heard = now
        self.incarnation = incarnation
        self.stale = False
        self.stale_count = 0

    def heard(self, now: float) -> float:
        """Something came from the broker; returns how long the feed had been stale (0 if
        it was not)."""
        silent = now - self.last_heard if self.stale else 0.0
        self.last_heard = now
        self.stale = False
        return silent

    def new_incarnation(self, incarnation: str) -> bool:
        """True when ``incarnation`` differs from the one heard before (broker restarted)."""
        changed = bool(self.incarnation) and incarnation != self.incarnation
        self.incarnation = incarnation
        return changed

    def check(self, now: float) -> bool:
        """True exactly once when the feed goes stale."""
        if self.stale or now - self.last_heard < self.stale_after_s:
            return False
        self.stale = True
        self.stale_count += 1
        return True
