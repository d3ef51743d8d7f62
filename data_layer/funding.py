"""Funding rates of perpetual swaps: a series kind of its own in the store, and its place on the
tensor's time grid.

**Events.** A funding series is a list of settlement events: ``timestamp`` (int64 UTC ms, the
exchange's funding time) and ``funding_rate`` (float64, fraction of position notional; positive =
longs pay shorts). Events are validated before they are stored: finite, ``|rate| <= 1``, times
strictly increasing after merging.

**Store.** One Parquet file per (source, symbol) beside the candles of the same symbol,
``<root>/<SOURCE_DIR>/<SYMBOL_DIR>/funding.parquet`` (file metadata ``kind: funding``), written
with the candle store's atomic replace and per-file lock; new events win on equal times.

**Grid rule (point in time).** An event at time ``tau`` is charged at the close of the bar that
contains it: bar ``t`` with ``open_t <= tau < open_t + timeframe``. Several events in one bar (a
daily bar holds three 8-hourly events) are summed. An event exactly at a bar's open time belongs to
that bar, so it is charged one bar after its settlement instant rather than ever before it: no
row of the tensor depends on an event that had not happened by that row's close. Events before the
grid's first bar or after its last bar's close are not in the tensor; a bar without an event has 0.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from factorgym.data_layer.tensor import MAX_FUNDING_RATE
from factorgym.data_layer.timeframes import ms_to_iso, timeframe_to_ms
from factorgym.errors import ConfigError, DataValidationError

FUNDING_COLUMNS = ["timestamp", "funding_rate"]
FUNDING_FILE = "funding.parquet"
_SCHEMA = pa.schema([pa.field("timestamp", pa.int64()), pa.field("funding_rate", pa.float64())])
_MAX_MS = 10**14


def empty_funding() -> pd.DataFrame:
    return pd.DataFrame({"timestamp": np.empty(0, np.int64), "funding_rate": np.empty(0, np.float64)})


def validate_funding(events: pd.DataFrame, where: str) -> pd.DataFrame:
    """Events sorted by time with one row per time (the later row wins); raises
    :class:`DataValidationError` naming ``where`` and the row on a bad time or rate."""
    missing = [c for c in FUNDING_COLUMNS if c not in getattr(events, "columns", [])]
    if missing:
        raise DataValidationError(f"{where}: funding frame lacks column(s) {missing}; expected {FUNDING_COLUMNS}")
    ts = pd.to_numeric(events["timestamp"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    rate = pd.to_numeric(events["funding_rate"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_ts = ~np.isfinite(ts) | (ts != np.round(ts)) | (np.abs(ts) >= _MAX_MS)
    if bad_ts.any():
        i = int(np.argmax(bad_ts))
        raise DataValidationError(f"{where}: funding row {i} has time {events['timestamp'].iloc[i]!r}; expected integer UTC ms")
    bad = ~np.isfinite(rate) | (np.abs(rate) > MAX_FUNDING_RATE)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataValidationError(
            f"{where}: funding rate {events['funding_rate'].iloc[i]!r} at {ms_to_iso(int(ts[i]))} is not a finite "
            f"fraction of notional with |rate| <= {MAX_FUNDING_RATE}"
        )
    out = pd.DataFrame({"timestamp": ts.astype(np.int64), "funding_rate": rate})
    out = out.iloc[np.argsort(out["timestamp"].to_numpy(), kind="stable")]
    return out.drop_duplicates("timestamp", keep="last").reset_index(drop=True)


FILE_COLUMN_KEYS = ("fundingrate", "funding")  # column names, lower case without separators


def funding_from_file(df: pd.DataFrame, ts: np.ndarray, where: str) -> pd.DataFrame | None:
    """Events from a candle file's ``funding_rate`` column (also ``fundingRate``, ``funding``), or
    None when it has none. A value on a bar's row is the funding charged in that bar: it is stored
    as an event at the bar's open time, which the grid rule puts back on the same bar. Empty cells
    are bars without funding; a non-numeric cell is an error naming the file row."""
    col = next((c for c in df.columns if "".join(ch for ch in str(c).lower() if ch.isalnum()) in FILE_COLUMN_KEYS), None)
    if col is None:
        return None
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    unparsed = np.isnan(values) & raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
    if unparsed.any():
        i = int(np.argmax(unparsed))
        raise DataValidationError(f"{where}: column {col!r} row {i} holds {raw.iloc[i]!r}, not a funding rate")
    keep = ~np.isnan(values)
    return validate_funding(pd.DataFrame({"timestamp": np.asarray(ts)[keep], "funding_rate": values[keep]}), where)


def funding_on_grid(events: pd.DataFrame | None, timestamps: np.ndarray, timeframe: str) -> np.ndarray:
    """float64 ``[T]``: per bar of the grid ``timestamps`` (bar open times) the sum of the rates of
    the events inside the bar (see the module's grid rule)."""
    timestamps = np.asarray(timestamps, dtype=np.int64)
    out = np.zeros(len(timestamps))
    if events is None or len(events) == 0 or len(timestamps) == 0:
        return out
    step = timeframe_to_ms(timeframe)
    tau = events["timestamp"].to_numpy(dtype=np.int64)
    rows = np.searchsorted(timestamps, tau, side="right") - 1  # last bar opening at or before tau
    inside = (rows >= 0) & (tau < timestamps[np.clip(rows, 0, None)] + step)
    np.add.at(out, rows[inside], events["funding_rate"].to_numpy(dtype=np.float64)[inside])
    return out


# ---------------------------------------------------------------------------- build
def funding_grid(funding: dict[str, pd.DataFrame], symbols: list[str], timestamps: np.ndarray, timeframe: str) -> np.ndarray:
    """float64 ``[T, A]`` of the events per symbol on the grid (a symbol without events: 0)."""
    unknown = sorted(set(funding) - set(symbols))
    if unknown:
        raise DataValidationError(f"funding given for symbol(s) {unknown} that are not in the tensor {symbols}")
    out = np.zeros((len(timestamps), len(symbols)))
    for a, sym in enumerate(symbols):
        if sym in funding:
            out[:, a] = funding_on_grid(validate_funding(funding[sym], f"{sym} funding"), timestamps, timeframe)
    return out


def funding_meta(funding: dict[str, pd.DataFrame], symbols: list[str], source: str) -> dict[str, Any]:
    """``meta['funding']`` of a built tensor (the array's hash is added once it exists)."""
    per = {}
    for sym in symbols:
        ev = funding.get(sym)
        n = 0 if ev is None else len(ev)
        ts = None if not n else np.asarray(ev["timestamp"], dtype=np.int64)
        per[sym] = {"events": n, "first": None if ts is None else int(ts.min()), "last": None if ts is None else int(ts.max())}
    return {"source": source, "rule": "event at tau charged at the close of the bar containing tau", "symbols": per}


def stored_funding(store: Any, source: str, symbols: list[str], mode: Any, lo: int | None,
                   hi: int | None, timeframe: str) -> dict[str, pd.DataFrame] | None:
    """Funding events to build with, by ``data.funding`` (``data_layer/build.py``'s docstring)."""
    if mode not in ("auto", True, False):
        raise ConfigError(f"data.funding must be auto, true or false, got {mode!r}")
    if mode is False:
        return None
    have = [s for s in symbols if has_funding(store, source, s)]
    if mode == "auto" and not have:
        return None
    need = symbols if mode is True else [s for s in symbols if ":" in s]
    lacking = [s for s in need if s not in have]
    if lacking:
        raise DataValidationError(
            f"no funding rates stored for {lacking} (source {source!r}): download them with "
            f"`factorgym download --funding`, or set data.funding: false for a tensor without funding"
        )
    # events up to the close of the last bar: the bar opening just before ``hi`` still charges them
    end = None if hi is None else hi + timeframe_to_ms(timeframe)
    return {s: read_funding(store, source, s, lo, end) for s in have}


# ---------------------------------------------------------------------------- store
def funding_path(store, source: str, symbol: str):
    """Path of the funding file of ``symbol``: the candle store's folder of that symbol."""
    return store.symbol_dir(source, symbol) / FUNDING_FILE


def has_funding(store, source: str, symbol: str) -> bool:
    return funding_path(store, source, symbol).exists()


def read_funding(store, source: str, symbol: str, start: int | None = None, end: int | None = None) -> pd.DataFrame:
    """Stored events with ``start <= timestamp < end`` (UTC ms; None = unbounded), sorted."""
    path = funding_path(store, source, symbol)
    if not path.exists():
        raise DataValidationError(
            f"no funding rates stored for {source} {symbol} under {store.root}: download them with "
            f"`factorgym download --funding` or import a file with a funding_rate column"
        )
    try:
        frame = pq.read_table(path, columns=FUNDING_COLUMNS).to_pandas()
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise DataValidationError(f"stored funding rates of {source} {symbol} at {path} are unreadable ({exc}): "
                                  f"delete the file and download again") from exc
    ts = frame["timestamp"].to_numpy()
    mask = np.ones(len(ts), bool)
    if start is not None:
        mask &= ts >= int(start)
    if end is not None:
        mask &= ts < int(end)
    return frame.loc[mask].reset_index(drop=True)


def last_funding_time(store, source: str, symbol: str) -> int | None:
    """Time of the newest stored event, or None."""
    if not has_funding(store, source, symbol):
        return None
    ts = read_funding(store, source, symbol)["timestamp"]
    return int(ts.iloc[-1]) if len(ts) else None


def write_funding(store, source: str, symbol: str, events: pd.DataFrame) -> int:
    """Merge validated ``events`` into the stored series (new rows win on equal times), atomically.
    Returns how many event times were not stored before."""
    where = f"{source} {symbol} funding"
    new = validate_funding(events, where)
    if new.empty:
        return 0
    with store.symbol_file(source, symbol, FUNDING_FILE) as path:
        old = read_funding(store, source, symbol) if path.exists() else empty_funding()
        merged = validate_funding(pd.concat([old, new], ignore_index=True), where)
        added = len(merged) - len(old)
        meta = {"kind": "funding", "source": source, "symbol": symbol, "version": 1}
        table = pa.Table.from_pandas(merged, schema=_SCHEMA, preserve_index=False)
        table = table.replace_schema_metadata({b"factorgym": json.dumps(meta).encode()})
        store.write_symbol_file(source, symbol, path, table)
    return added
