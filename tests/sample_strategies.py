"""Strategies used only by tests (imported by worker processes by dotted path)."""

from __future__ import annotations

import os
import time
from typing import Annotated

import msgspec

from runtime.messages import Candle
from workers.strategy import Strategy, StrategyContext


class FlakyParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    every: Annotated[int, msgspec.Meta(ge=1)] = 3


class Flaky(Strategy):
    """Raises on every ``every``-th candle; buys on the others when flat, sells when long."""

    Params = FlakyParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, FlakyParams)
        self.every = params.every
        self.seen = 0

    def on_candle(self, candle: Candle) -> None:
        self.seen += 1
        if self.seen % self.every == 0:
            raise RuntimeError(f"flaky on candle {candle.seq}")
        held = self.ctx.position(candle.symbol) is not None
        self.ctx.target(candle.symbol, "flat" if held else "long", "flip")


class AfterParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    after: Annotated[int, msgspec.Meta(ge=1)] = 3


class Crash(Strategy):
    """Kills its own process (exit status 3) after ``after`` candles: a crash loop."""

    Params = AfterParams

    def on_candle(self, candle: Candle) -> None:
        assert isinstance(self.params, AfterParams)
        self.seen = getattr(self, "seen", 0) + 1
        if self.seen >= self.params.after:
            os._exit(3)


class Hang(Strategy):
    """Spins forever in on_candle after ``after`` candles: a stuck strategy."""

    Params = AfterParams

    def on_candle(self, candle: Candle) -> None:
        assert isinstance(self.params, AfterParams)
        self.seen = getattr(self, "seen", 0) + 1
        if self.seen >= self.params.after:
            while True:
                pass


class LeakParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    mb_per_candle: Annotated[int, msgspec.Meta(ge=1)] = 4


class Leak(Strategy):
    """Keeps ``mb_per_candle`` MiB more on every candle: a memory leak."""

    Params = LeakParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, LeakParams)
        self.size = params.mb_per_candle * 2**20
        self.kept: list[bytearray] = []

    def on_candle(self, candle: Candle) -> None:
        self.kept.append(bytearray(b"x" * self.size))  # written, so the pages are resident


class Flip(Strategy):
    """Long on one candle, flat on the next: it trades on every candle it acts on."""

    def on_candle(self, candle: Candle) -> None:
        held = self.ctx.position(candle.symbol) is not None
        self.ctx.target(candle.symbol, "flat" if held else "long", "flip")


class SlowStop(Strategy):
    """Takes two seconds to stop: long enough to be busy while a command waits on it."""

    def on_stop(self) -> None:
        time.sleep(2.0)


class Broken(Strategy):
    """Raises on every candle: it should end up errored, its process alive and idle."""

    def on_candle(self, candle: Candle) -> None:
        raise ValueError(f"cannot handle candle {candle.seq}")


class SlowParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sleep_s: float = 0.05


class SeqParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sleep_s: float = 0.0


class SeqRecorder(Strategy):
    """Reports the seq of every candle it decides on (as a warning: warnings become events),
    so a test can check it saw each candle once, in order; with ``sleep_s`` it is also slow."""

    Params = SeqParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, SeqParams)
        self.sleep_s = params.sleep_s

    def on_candle(self, candle: Candle) -> None:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self.ctx.log.warning("%d", candle.seq)


class Slow(Strategy):
    """Takes ``sleep_s`` over every candle: a consumer slower than the feed."""

    Params = SlowParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, SlowParams)
        self.sleep_s = params.sleep_s

    def on_candle(self, candle: Candle) -> None:
        time.sleep(self.sleep_s)


class WarmthReporter(Strategy):
    """Reports, on every candle it acts on, how many candles it had seen by then (its own
    count: warm-up replays history through it without acting) and the candle's seq."""

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        self.seen = 0

    def on_candle(self, candle: Candle) -> None:
        self.seen += 1
        self.ctx.log.warning("seen=%d seq=%d", self.seen, candle.seq)


class Hold(Strategy):
    """Wants to be long on every candle: opens once and holds."""

    def on_candle(self, candle: Candle) -> None:
        self.ctx.target(candle.symbol, "long", "hold")
