"""Historical candles as numpy columns: read (CSV, Parquet), checked, cut, resampled.

A file is read whole and decoded column by column with numpy; only when a column does not
decode are its rows looked at one by one, to name the first bad one. Every problem is one
:class:`DataError` line ``file:line: problem`` (the CLI exits 2 on it).

Holes in the source (a quiet market printed no candle) are kept as holes: they are counted
and reported (:attr:`Candles.holes`, :attr:`Candles.missing`), never filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from broker.csv_source import Row
from broker.resample import Resampler, timeframe_ms

__all__ = [
    "COLUMNS",
    "Candles",
    "DataError",
    "load",
    "parse_time",
    "resample",
]

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
_LAST_MS = (2**63 - 1) // 1_000_000 - 366 * 86_400_000  # room for a candle's length

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class DataError(Exception):
    """A data file that cannot be backtested: ``file:line: problem`` on one line."""


@dataclass(frozen=True)
class Candles:
    """One stream's candles, oldest first, open times strictly increasing (ms, UTC)."""

    symbol: str
    timeframe: str
    source: str
    time: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    gap_after: I64 = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    gap_missing: I64 = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.time)

    @property
    def holes(self) -> int:
        """Holes in the source: places where candles that would fit are missing."""
        return len(self.gap_after)

    @property
    def missing(self) -> int:
        """Candles missing in all the holes together."""
        return int(self.gap_missing.sum())


def parse_time(text: str) -> int:
    """``2020-01-02``, ``2020-01-02T03:04:05Z`` or epoch seconds/ms as UTC milliseconds."""
    try:
        return _epoch_ms(np.array([float(text)]))[0].item()  # type: ignore[no-any-return]
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = datetime.fromisoformat(text + "+00:00")
    return int(stamp.timestamp() * 1000)


def load(
    path: str | Path,
    symbol: str,
    timeframe: str,
    *,
    columns: dict[str, str] | None = None,
    start: int | None = None,
    end: int | None = None,
) -> Candles:
    """Read ``path`` (CSV, or Parquet by its suffix), check it, keep ``start <= t < end``."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        raw, lines = _read_parquet(path, columns or {})
    else:
        raw, lines = _read_csv(path, columns or {})
    candles = _check(path, symbol, timeframe, raw, lines)
    if start is not None or end is not None:
        lo = 0 if start is None else int(np.searchsorted(candles.time, start, "left"))
        hi = len(candles) if end is None else int(np.searchsorted(candles.time, end, "left"))
        candles = _slice(candles, lo, hi)
    return candles


def resample(candles: Candles, target: str) -> Candles:
    """``candles`` aggregated to ``target`` with the broker's resampler (same buckets)."""
    try:
        resampler = Resampler(candles.timeframe, target)
    except ValueError as exc:
        raise DataError(f"{candles.source}: {exc}") from None
    rows: list[Row] = []
    for row in zip(
        candles.time.tolist(),
        candles.open.tolist(),
        candles.high.tolist(),
        candles.low.tolist(),
        candles.close.tolist(),
        candles.volume.tolist(),
        strict=True,
    ):
        try:
            rows.extend(resampler.update(Row(*row)))
        except ValueError as exc:
            raise DataError(f"{candles.source}: cannot resample to {target}: {exc}") from None
    # The last bucket is only emitted when known complete; a partial one is left out.
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), (), ()]
    time = np.array(cols[0], dtype=np.int64)
    o, h, low, c, v = (np.array(col, dtype=np.float64) for col in cols[1:])
    return Candles(
        candles.symbol,
        target,
        candles.source,
        time,
        o,
        h,
        low,
        c,
        v,
        *_gaps(time, timeframe_ms(target)),
    )


# -- reading -----------------------------------------------------------------------------


def _mapping(path: Path, header: list[str], columns: dict[str, str]) -> list[int]:
    """Index in ``header`` of each of COLUMNS (``columns`` maps ours to the file's names)."""
    for ours in columns:
        if ours not in COLUMNS:
            raise DataError(f"{path}:1: column mapping names {ours!r}, not one of {COLUMNS}")
    names = [h.strip() for h in header]
    lowered = [n.lower() for n in names]
    index = []
    for ours in COLUMNS:
        theirs = columns.get(ours, ours)
        if theirs in names:
            index.append(names.index(theirs))
        elif theirs.lower() in lowered:
            index.append(lowered.index(theirs.lower()))
        elif ours == "volume" and ours not in columns:
            index.append(-1)  # no volume column: zeros
        else:
            raise DataError(f"{path}:1: no column {theirs!r} (header: {','.join(names)})")
    return index


def _read_csv(path: Path, columns: dict[str, str]) -> tuple[list[list[str]], I64]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {' '.join(str(exc).split())}") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    head, _, rest = text.partition("\n")
    header = head.split(",")
    index = _mapping(path, header, columns)
    fast = _split_fast(rest.rstrip("\n"), len(header), index)
    if fast is not None:
        return fast
    lines = text.split("\n")
    body = lines[1:]
    numbers = [i + 2 for i, line in enumerate(body) if line.strip()]
    if len(numbers) != len(body):
        body = [lines[n - 1] for n in numbers]
    records = [line.rstrip("\r").split(",") for line in body]
    width = len(header)
    for record, number in zip(records, numbers, strict=True):
        if len(record) != width:
            raise DataError(f"{path}:{number}: expected {width} fields, got {len(record)}")
    raw: list[list[str]] = []
    for i in index:
        raw.append([r[i] for r in records] if i >= 0 else ["0"] * len(records))
    return raw, np.array(numbers, dtype=np.int64)


def _split_fast(body: str, width: int, index: list[int]) -> tuple[list[list[str]], I64] | None:
    """Columns of a well-formed body, split in one pass; None when some line is blank or
    has the wrong number of fields (the line-by-line path then names it)."""
    if not body:
        return None
    data = np.frombuffer(body.encode(), dtype=np.uint8)
    ends = np.flatnonzero(data == 10)  # "\n"
    commas = np.flatnonzero(data == 44)  # ","
    per_line = np.diff(np.r_[0, np.searchsorted(commas, ends), len(commas)])
    if (per_line != width - 1).any() or (np.diff(np.r_[-1, ends, len(data)]) <= 1).any():
        return None
    flat = body.replace("\n", ",").split(",")
    rows = len(ends) + 1
    raw = [flat[i::width] if i >= 0 else ["0"] * rows for i in index]
    return raw, np.arange(2, rows + 2, dtype=np.int64)


def _read_parquet(path: Path, columns: dict[str, str]) -> tuple[list[list[str]], I64]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read Parquet: {' '.join(str(exc).split())}") from None
    index = _mapping(path, list(table.column_names), columns)
    raw: list[list[str]] = []
    for name_index in index:
        if name_index < 0:
            raw.append(["0"] * table.num_rows)
            continue
        column = table.column(name_index)
        values = column.to_pylist()
        if values and isinstance(values[0], datetime):
            raw.append([v.isoformat() if v.tzinfo else v.isoformat() + "Z" for v in values])
        else:
            raw.append([str(v) for v in values])
    # Rows of a Parquet file are named by their 1-based position.
    return raw, np.arange(1, table.num_rows + 1, dtype=np.int64)


# -- checking ----------------------------------------------------------------------------


def _epoch_ms(values: F64) -> I64:
    """Epoch numbers as ms: seconds when they look like seconds (before year 5138)."""
    if len(values) and np.nanmax(np.abs(values)) < 1e11:
        values = values * 1000.0
    return values.astype(np.int64)


def _times(path: Path, texts: list[str], lines: I64) -> I64:
    try:
        return _epoch_ms(np.array(texts, dtype=np.float64))
    except ValueError:
        pass
    size = len(texts[0]) if texts else 0
    if size > 1 and all(len(t) == size and t[-1] == "Z" for t in texts):
        # The usual file: one ISO format, "Z" last. Cast to a string type one character
        # shorter (which drops the "Z"), then let numpy decode them all at once.
        try:
            return np.array(texts, dtype=f"U{size - 1}").astype("datetime64[ms]").astype(np.int64)
        except ValueError:
            pass  # the line-by-line path names the bad one
    utc = []  # naive ISO text in UTC, which numpy decodes in one call
    for text, line in zip(texts, lines.tolist(), strict=True):
        text = text.strip()
        if text.endswith("Z"):
            utc.append(text[:-1])
        elif text.endswith("+00:00"):
            utc.append(text[:-6])
        elif len(text) == 10 and text[4] == "-" and text[7] == "-":
            utc.append(text)  # a date alone: the day's candle, opening 00:00 UTC
        else:
            try:
                stamp = datetime.fromisoformat(text)
            except ValueError:
                raise DataError(f"{path}:{line}: timestamp {text!r} is not a time") from None
            if stamp.tzinfo is None:
                raise DataError(
                    f"{path}:{line}: timestamp {text!r} has no time zone (expected UTC, ...Z)"
                )
            utc.append(str(np.datetime64(int(stamp.timestamp() * 1000), "ms")))
    try:
        return np.array(utc, dtype="datetime64[ms]").astype(np.int64)
    except ValueError:
        for text, line in zip(utc, lines.tolist(), strict=True):
            try:
                np.datetime64(text, "ms")
            except ValueError:
                raise DataError(f"{path}:{line}: timestamp {text!r} is not a time") from None
        raise


def _floats(path: Path, name: str, texts: list[str], lines: I64) -> F64:
    try:  # float() per text: about twice as fast as numpy's own conversion of strings
        values = np.fromiter(map(float, texts), dtype=np.float64, count=len(texts))
    except ValueError:
        for text, line in zip(texts, lines.tolist(), strict=True):
            try:
                float(text)
            except ValueError:
                raise DataError(f"{path}:{line}: {name} {text!r} is not a number") from None
        raise
    bad = ~np.isfinite(values)
    if bad.any():
        line = lines[int(np.argmax(bad))]
        raise DataError(f"{path}:{line}: {name} is not a finite number")
    return values


def _check(path: Path, symbol: str, timeframe: str, raw: list[list[str]], lines: I64) -> Candles:
    if not lines.size:
        raise DataError(f"{path}: no candles")
    time = _times(path, raw[0], lines)
    o, h, low, c, v = (
        _floats(path, n, t, lines) for n, t in zip(COLUMNS[1:], raw[1:], strict=True)
    )
    bad = (low > np.minimum(o, c)) | (np.maximum(o, c) > h) | (low <= 0)
    if bad.any():
        line = lines[int(np.argmax(bad))]
        raise DataError(f"{path}:{line}: prices are not 0 < low <= open, close <= high")
    if (v < 0).any():
        raise DataError(f"{path}:{lines[int(np.argmax(v < 0))]}: volume is negative")
    late = time >= _LAST_MS
    if late.any():
        line = lines[int(np.argmax(late))]
        raise DataError(
            f"{path}:{line}: time after 2261-04-10 (events are stamped in int64 nanoseconds)"
        )
    step = np.diff(time)
    if (step <= 0).any():
        i = int(np.argmax(step <= 0)) + 1
        what = "duplicates the row before" if step[i - 1] == 0 else "is earlier than the row before"
        raise DataError(
            f"{path}:{lines[i]}: time {_iso(int(time[i]))} {what} (rows must be sorted)"
        )
    tf = timeframe_ms(timeframe)
    return Candles(symbol, timeframe, str(path), time, o, h, low, c, v, *_gaps(time, tf))


def _gaps(time: I64, tf: int) -> tuple[I64, I64]:
    """Open time of the candle before each hole, and how many candles the hole misses."""
    step = np.diff(time)
    where = np.flatnonzero(step > tf)
    return time[where], step[where] // tf - 1


def _slice(c: Candles, lo: int, hi: int) -> Candles:
    time = c.time[lo:hi]
    return Candles(
        c.symbol,
        c.timeframe,
        c.source,
        time,
        c.open[lo:hi],
        c.high[lo:hi],
        c.low[lo:hi],
        c.close[lo:hi],
        c.volume[lo:hi],
        *_gaps(time, timeframe_ms(c.timeframe)),
    )


def _iso(ms: int) -> str:
    return str(np.datetime64(ms, "ms")) + "Z"
