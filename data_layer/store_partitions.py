"""Time partitions of a stored series, and the Parquet files that hold them.

A series is stored as one Parquet file per time partition in the folder
``<SYMBOL_DIR>/<timeframe>/``: a calendar month (``2024-03.parquet``) for timeframes under an hour
(a month of 1m bars is 44,640 rows at most), a calendar year (``2024.parquet``) for hourly and
longer ones (8,784 hourly rows at most), in UTC. File names sort in time order. Each file is sorted
by timestamp, one row per timestamp, written in row groups of :data:`ROW_GROUP_ROWS` with min/max
statistics on ``timestamp`` (a range read decodes only the row groups it needs).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.errors import DataValidationError

ROW_GROUP_ROWS = 4096  # ~6 months of hourly bars: small enough that short range reads skip most data
META_KEY = b"factorgym"
FORMAT_VERSION = 2  # 1: one file per series (read, and migrated on the next write)
MAX_MS = 10**14  # ~ year 5138 in ms; a nanosecond epoch (~1.7e18) is far above it
HOUR_MS = 3_600_000

_SCHEMA_FIELDS = [pa.field("timestamp", pa.int64())] + [pa.field(c, pa.float64()) for c in CANDLE_COLUMNS[1:]]


def partition_unit(timeframe: str) -> str:
    """numpy datetime unit of the partitions of ``timeframe``: "M" (month) under 1h, else "Y"."""
    return "M" if timeframe_to_ms(timeframe) < HOUR_MS else "Y"


def partition_keys(ts: np.ndarray, timeframe: str) -> np.ndarray:
    """Partition name (``2024-03`` or ``2024``) of each timestamp (UTC ms)."""
    return np.datetime_as_string(np.asarray(ts, dtype="int64").astype("datetime64[ms]")
                                 .astype(f"datetime64[{partition_unit(timeframe)}]"))


def partition_span(name: str, timeframe: str) -> tuple[int, int]:
    """``[first, end)`` in UTC ms of the partition called ``name``."""
    unit = partition_unit(timeframe)
    lo = np.datetime64(name, unit)
    return int(lo.astype("datetime64[ms]").astype(np.int64)), int((lo + 1).astype("datetime64[ms]").astype(np.int64))


def split_by_partition(table: pa.Table, timeframe: str) -> dict[str, pa.Table]:
    """Rows of ``table`` (sorted by timestamp) by partition name, in time order."""
    ts = table.column("timestamp").to_numpy()
    if not len(ts):
        return {}
    keys = partition_keys(ts, timeframe)
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(ts)]
    return {str(keys[a]): table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])}


def partition_files(folder: Path) -> list[Path]:
    """The partition files of a series folder, in time order (temp and hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def overlapping(files: list[Path], timeframe: str, start: int | None, end: int | None) -> list[Path]:
    """The partition files that may hold timestamps in ``[start, end)``."""
    out = []
    for f in files:
        lo, hi = partition_span(f.stem, timeframe)
        if (start is None or hi > int(start)) and (end is None or lo < int(end)):
            out.append(f)
    return out


def write_file(path_tmp: Path, table: pa.Table, meta: dict) -> None:
    """``table`` as a Parquet file with the store's metadata, row groups and statistics."""
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path_tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd", write_statistics=True)


def file_meta(schema: pa.Schema) -> dict:
    with contextlib.suppress(ValueError, TypeError):
        return json.loads((schema.metadata or {})[META_KEY])
    return {}


def to_table(candles: pd.DataFrame, what: str) -> pa.Table:
    """Candle frame -> Arrow table with the store schema (int64 ms timestamps, float64 OHLCV,
    optional bool ``tradable``)."""
    if not isinstance(candles, pd.DataFrame):
        raise DataValidationError(f"{what}: candles must be a pandas DataFrame, got {type(candles).__name__}")
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataValidationError(f"{what}: candle frame lacks columns {missing}; expected {CANDLE_COLUMNS}")
    ts = candles["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        if getattr(ts.dt, "tz", None) is None:
            ts = ts.dt.tz_localize("UTC")
        ts = ts.dt.tz_convert("UTC").dt.as_unit("ms").astype("int64")
    ts_arr = pd.to_numeric(ts, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # integer ms before year ~5000: catches NaN, fractions and nanosecond/microsecond values
    bad = ~np.isfinite(ts_arr) | (ts_arr != np.round(ts_arr)) | (np.abs(ts_arr) >= MAX_MS)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            f"{what}: row {row} has timestamp {candles['timestamp'].iloc[row]!r}; expected integer UTC milliseconds"
        )
    arrays = [pa.array(ts_arr.astype(np.int64))]
    for col in CANDLE_COLUMNS[1:]:
        try:
            arrays.append(pa.array(pd.to_numeric(candles[col]).to_numpy(dtype=np.float64, na_value=np.nan)))
        except (ValueError, TypeError) as exc:
            raise DataValidationError(f"{what}: column {col!r} is not numeric ({exc})") from exc
    fields = list(_SCHEMA_FIELDS)
    if "tradable" in candles.columns:
        trad = candles["tradable"]
        if trad.isna().any():
            raise DataValidationError(f"{what}: column 'tradable' has missing values; expected True/False")
        arrays.append(pa.array(trad.to_numpy(dtype=bool)))
        fields.append(pa.field("tradable", pa.bool_()))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def row_groups_for(pf: pq.ParquetFile, start: int | None, end: int | None) -> list[int]:
    """Indices of row groups that may hold timestamps in ``[start, end)`` (all if stats are missing)."""
    md = pf.metadata
    col = pf.schema_arrow.get_field_index("timestamp")
    out = []
    for i in range(md.num_row_groups):
        stats = md.row_group(i).column(col).statistics
        if stats is None or not stats.has_min_max:
            out.append(i)
            continue
        if (start is not None and stats.max < int(start)) or (end is not None and stats.min >= int(end)):
            continue
        out.append(i)
    return out
