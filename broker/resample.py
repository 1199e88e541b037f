"""Build higher-timeframe candles (5m, 1h, 1d, ...) from a stream of closed base candles.

Buckets are aligned to the UTC epoch: a bucket opens at ``open_time - open_time % tf_ms``, so
15m buckets open at :00/:15/:30/:45, 4h buckets at 00/04/08/12/16/20 UTC and 1d buckets at
00:00 UTC. Week timeframes (``1w``, ``2w``, ...) are the exception: they open on Monday 00:00
UTC, i.e. they are offset by 4 days from the epoch (1970-01-01 was a Thursday). ``7d`` keeps
the plain epoch alignment and so opens on Thursdays.

A bucket is emitted as soon as it is known complete: on the base candle that ends it, or, when
the source has a hole at the end of the bucket, on the first base candle of a later bucket.
Buckets that no base candle falls into are skipped, never invented.
"""

from __future__ import annotations

import re

from broker.csv_source import Row

__all__ = ["Resampler", "can_resample", "timeframe_ms"]

_UNIT_MS = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
}
_TIMEFRAME = re.compile(r"([1-9][0-9]*)([smhdw])")
_WEEK_OFFSET_MS = 4 * _UNIT_MS["d"]  # Thursday 1970-01-01 + 4 days = Monday 1970-01-05


def _parse(timeframe: str) -> tuple[int, int]:
    """``(length_ms, alignment offset_ms)`` of ``timeframe``."""
    match = _TIMEFRAME.fullmatch(timeframe)
    if match is None:
        if re.fullmatch(r"[1-9][0-9]*M", timeframe):
            raise ValueError(f"timeframe {timeframe!r}: months are not supported")
        raise ValueError(f"timeframe {timeframe!r} is not N followed by one of s, m, h, d, w")
    count, unit = match.groups()
    return int(count) * _UNIT_MS[unit], _WEEK_OFFSET_MS if unit == "w" else 0


def timeframe_ms(timeframe: str) -> int:
    """Length of ``timeframe`` (``"1m"``, ``"4h"``, ``"1w"``, ...) in milliseconds."""
    return _parse(timeframe)[0]


def can_resample(base: str, target: str) -> bool:
    """Whether ``target`` candles can be built from ``base`` candles.

    True when ``target`` is longer than ``base``, a whole multiple of it, and every ``target``
    bucket starts on a ``base`` bucket boundary. Raises ValueError on a malformed timeframe.
    """
    base_ms, base_offset = _parse(base)
    target_ms, target_offset = _parse(target)
    return (
        target_ms > base_ms
        and target_ms % base_ms == 0
        and (target_offset - base_offset) % base_ms == 0
    )


class Resampler:
    """Aggregates closed ``base`` candles into ``target`` candles, one base candle at a time."""

    def __init__(self, base: str, target: str) -> None:
        if not can_resample(base, target):
            raise ValueError(f"cannot build {target} candles from {base} candles")
        self.base = base
        self.target = target
        self._base_ms, self._base_offset = _parse(base)
        self._target_ms, self._target_offset = _parse(target)
        self._last_time: int | None = None
        self._bucket: int | None = None  # open time of the bucket in progress, if any
        self._open = self._high = self._low = self._close = self._volume = 0.0

    @property
    def partial(self) -> Row | None:
        """The bucket in progress (not yet known complete), or None."""
        return None if self._bucket is None else self._row(self._bucket)

    def _row(self, bucket: int) -> Row:
        return Row(bucket, self._open, self._high, self._low, self._close, self._volume)

    def update(self, row: Row) -> list[Row]:
        """Feed one closed base candle; return the target candles it completes, oldest first.

        Usually zero or one; two when the bucket in progress lacked its last base candles and
        ``row`` is alone in, and ends, a later bucket. Raises ValueError (leaving the state
        unchanged) if ``row`` is not aligned to the base timeframe or not later than the last.
        """
        time = row.open_time
        if (time - self._base_offset) % self._base_ms:
            raise ValueError(f"candle at {time} ms is not aligned to the {self.base} timeframe")
        if self._last_time is not None and time <= self._last_time:
            raise ValueError(
                f"candle at {time} ms does not follow the last one at {self._last_time}"
            )
        self._last_time = time

        done: list[Row] = []
        bucket = time - (time - self._target_offset) % self._target_ms
        if self._bucket is not None and bucket != self._bucket:
            # The source skipped the end of the bucket in progress: nothing more will come for it.
            done.append(self._row(self._bucket))
            self._bucket = None
        if self._bucket is None:
            self._bucket = bucket
            self._open, self._high, self._low = row.open, row.high, row.low
            self._close, self._volume = row.close, row.volume
        else:
            self._high = max(self._high, row.high)
            self._low = min(self._low, row.low)
            self._close = row.close
            self._volume += row.volume
        if time + self._base_ms == bucket + self._target_ms:
            done.append(self._row(bucket))
            self._bucket = None
        return done
