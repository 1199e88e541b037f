"""Strategies the backtest tests import by dotted path (forked backtest processes load them)."""

from __future__ import annotations

import msgspec

from runtime.messages import Candle, Direction
from workers.indicators.moving import EmaCore
from workers.strategy import Strategy, StrategyContext


class EmaCrossParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fast: int = 12
    slow: int = 26
    threshold: float = 0.5
    stop_loss_pct: float = 1.5
    take_profit_pct: float = 3.0


class EmaCrossByHand(Strategy):
    """What ``rules_ema.toml``'s declarative strategy says, written out in Python.

    One cross analyzer (EMA fast vs slow, +1/-1), entry thresholds +/-``threshold``, exits
    on stop loss, take profit and the opposite signal: the same decisions, signals, reasons
    and orders as the rules, without the orchestrators.
    """

    Params = EmaCrossParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, EmaCrossParams)
        self.p = params
        self.fast = EmaCore(params.fast)
        self.slow = EmaCore(params.slow)
        self.last: Direction = "flat"

    def on_candle(self, candle: Candle) -> None:
        fast, slow = self.fast.update(candle.close), self.slow.update(candle.close)
        score: float | None = None
        if fast is not None and slow is not None and slow != 0.0:
            score = 1.0 if fast > slow else -1.0 if fast < slow else 0.0
        direction: Direction = "flat"
        if score is not None and score >= self.p.threshold:
            direction = "long"
        elif score is not None and score <= -self.p.threshold:
            direction = "short"
        symbol = candle.symbol
        held = self.ctx.position(symbol)
        if held is not None:
            rule = None
            stop, take = self.p.stop_loss_pct, self.p.take_profit_pct
            if held.side == "long":
                if candle.low <= held.entry_price * (1 - stop / 100):
                    rule = "stop_loss"
                elif candle.high >= held.entry_price * (1 + take / 100):
                    rule = "take_profit"
            elif candle.high >= held.entry_price * (1 + stop / 100):
                rule = "stop_loss"
            elif candle.low <= held.entry_price * (1 - take / 100):
                rule = "take_profit"
            if rule is None and direction != "flat" and direction != held.side:
                rule = "opposite_signal"
            if rule is not None:
                self.ctx.close_position(symbol, rule)
        if direction != self.last:
            self.last = direction
            if score is None:
                self.ctx.signal(candle, direction, 0.0, "no score")
            else:
                self.ctx.signal(candle, direction, abs(score), f"score {score:+.3f}")
        if direction == "flat" or self.ctx.positions.active(symbol) is not None:
            return
        assert score is not None
        self.ctx.open_position(symbol, direction, f"{direction} on score {score:+.3f}")


class Recorder(Strategy):
    """Signals every candle it is given (``flat``, reason ``SYMBOL TF OPEN_TIME``): the
    journal then shows the order in which the backtest fed the streams."""

    def on_candle(self, candle: Candle) -> None:
        reason = f"{candle.symbol} {candle.timeframe} {candle.open_time} {candle.seq}"
        self.ctx.signal(candle, "flat", 0.0, reason)


class ChurnParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    every: int = 7  # candles between two decisions
    fail_on_fill: int = 0  # > 0: on_fill raises from this fill on
    fail_on_candle: int = 0  # > 0: on_candle raises from this candle on


class Churn(Strategy):
    """Long, short, flat and reversals in turn, every ``every`` candles; optionally raising
    in ``on_fill`` or ``on_candle`` from some point on (so that the runner gives up)."""

    Params = ChurnParams

    def __init__(self, ctx: StrategyContext, params: msgspec.Struct) -> None:
        super().__init__(ctx, params)
        assert isinstance(params, ChurnParams)
        self.p = params
        self.candles = 0
        self.fills = 0

    def on_candle(self, candle: Candle) -> None:
        self.candles += 1
        if self.p.fail_on_candle and self.candles >= self.p.fail_on_candle:
            raise RuntimeError("on_candle fails")
        if self.candles % self.p.every:
            return
        turn = (self.candles // self.p.every) % 5
        direction: Direction = ("long", "short", "flat", "short", "long")[turn]
        if turn == 2 and self.ctx.position(candle.symbol) is not None:
            self.ctx.close_position(candle.symbol, "flat")
        else:
            self.ctx.target(candle.symbol, direction, f"turn {turn}")

    def on_fill(self, fill: object) -> None:
        self.fills += 1
        if self.p.fail_on_fill and self.fills >= self.p.fail_on_fill:
            raise RuntimeError("on_fill fails")
