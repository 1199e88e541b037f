"""Read one CSV file of candles (``timestamp,open,high,low,close,volume``) into memory."""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

__all__ = ["CsvError", "Row", "read_candles"]

_HEADER = ["timestamp", "open", "high", "low", "close", "volume"]


class CsvError(Exception):
    """A data file that cannot be replayed: ``path:line: problem``."""


class Row(NamedTuple):
    """One candle as read from a file, before it is stamped with a stream and a seq."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def _millis(text: str) -> int:
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone (expected UTC, e.g. ...Z)")
    return int(stamp.timestamp() * 1000)


def _problem(row: Row) -> str | None:
    """What is wrong with one row's values, if anything."""
    values = (row.open, row.high, row.low, row.close, row.volume)
    if not all(map(math.isfinite, values)):
        return "a price or the volume is not a finite number"
    if min(row.open, row.high, row.low, row.close) <= 0:
        return "prices must be above zero"
    if row.volume < 0:
        return "volume is negative"
    if not row.low <= min(row.open, row.close) <= max(row.open, row.close) <= row.high:
        return "prices are not low <= open, close <= high"
    return None


def read_candles(path: str | Path) -> list[Row]:
    """All rows of ``path``, checked: numeric, finite, positive, high/low consistent, time
    strictly increasing (a duplicated or earlier timestamp names the line it repeats)."""
    rows: list[Row] = []
    previous_line = 0
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != _HEADER:
            raise CsvError(f"{path}:1: header must be {','.join(_HEADER)}, got {header}")
        for line, record in enumerate(reader, start=2):
            if not record:
                continue  # a blank line (a trailing newline too many) holds no candle
            try:
                if len(record) != 6:
                    raise ValueError(f"expected 6 fields, got {len(record)}")
                row = Row(_millis(record[0]), *map(float, record[1:]))
            except ValueError as exc:
                raise CsvError(f"{path}:{line}: {exc}") from None
            if (problem := _problem(row)) is not None:
                raise CsvError(f"{path}:{line}: {problem}")
            if rows and row.open_time == rows[-1].open_time:
                raise CsvError(
                    f"{path}:{line}: duplicate timestamp {record[0]} (line {previous_line})"
                )
            if rows and row.open_time < rows[-1].open_time:
                raise CsvError(
                    f"{path}:{line}: time does not increase: {record[0]} is before line "
                    f"{previous_line} (rows must be sorted by time)"
                )
            rows.append(row)
            previous_line = line
    return rows
