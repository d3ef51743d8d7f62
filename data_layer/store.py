"""The candle store: one Parquet file per (source, symbol, timeframe), written atomically.

Layout under the root (``$FACTORGYM_STORE`` or ``./store``)::

    <root>/<SOURCE_DIR>/<SYMBOL_DIR>/<timeframe>.parquet   candles, sorted, unique timestamps
    <root>/<SOURCE_DIR>/markets.json                       MarketRules per symbol
    <root>/<SOURCE_DIR>/index.json                         folder name -> real source/symbol

Folder names are file-system-safe versions of the names (``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``,
``file:my data`` -> ``file_my_data``); the real names live in each file's Parquet schema metadata
(the source of truth) and in ``index.json`` (a readable listing). Two names that sanitise alike get
a hash suffix on the second folder, so they never share a file.

Every write goes to a temp file in the same folder, is fsync'ed and then ``os.replace``'d over the
old file: a crash leaves the old file or the new one, never half of one. Writers of the same file
also take an advisory ``fcntl`` lock (where the platform has one) so concurrent appends are not lost.
A temp file left by a killed writer (its name carries the writer's pid) is removed by the next
write of the same file.

Bars already stored are never changed silently: a write whose bars overlap stored bars with
different values raises by default (``on_conflict="error"``) naming the first bar and both values;
``"replace"`` lets the new values win, ``"keep"`` keeps the stored ones, and :class:`WriteReport`
counts what was replaced or kept. A stored gap placeholder (``tradable=False``) is filled by a real
bar without asking, and a placeholder never overwrites a real bar.

Files are written in row groups of :data:`ROW_GROUP_ROWS` with min/max statistics on ``timestamp``;
``read(start, end)`` decodes only the row groups whose range overlaps the request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.sources.base import MarketRules, default_rules
from factorgym.data_layer.store_merge import (  # noqa: F401 - merge_tables and WriteReport are public here too
    CONFLICT_POLICIES, WriteReport, _last_per_timestamp, _with_tradable, merge_tables, resolve_conflicts,
)
from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.errors import ConfigError, DataValidationError

try:  # POSIX advisory locks; elsewhere atomic rename alone keeps files whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 4096  # ~6 months of hourly bars: small enough that short range reads skip most data
META_KEY = b"factorgym"
FORMAT_VERSION = 1
MAX_MS = 10**14  # ~ year 5138 in ms; a nanosecond epoch (~1.7e18) is far above it
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_RESERVED = {"index.json", "markets.json"}  # files beside the symbol folders

_SCHEMA_FIELDS = [pa.field("timestamp", pa.int64())] + [pa.field(c, pa.float64()) for c in CANDLE_COLUMNS[1:]]


def default_store_root() -> Path:
    """``$FACTORGYM_STORE`` when set, else ``./store``."""
    return Path(os.environ.get("FACTORGYM_STORE") or "store").expanduser()


@dataclasses.dataclass(frozen=True)
class StoreEntry:
    """One stored series. ``first``/``last`` are bar open times (UTC ms); ``n_gaps`` counts missing
    grid bars between them (a present bar with ``tradable=False`` is not missing)."""

    source: str
    symbol: str
    timeframe: str
    path: Path
    rows: int
    first: int | None
    last: int | None
    n_gaps: int


def safe_name(name: str) -> str:
    """File-system-safe folder name: anything outside ``[A-Za-z0-9._-]`` becomes ``_``; a leading
    dot becomes ``_`` too, so ``..`` or hidden names cannot appear."""
    out = _UNSAFE.sub("_", str(name)) or "_"
    return "_" + out[1:] if out.startswith(".") else out


def _hashed(name: str) -> str:
    return f"{safe_name(name)}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened/fsync'ed
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM)
        return True
    return True


def remove_stale_temps(path: Path) -> int:
    """Delete ``path``'s temp files (``.<name>.<pid>.<id>.tmp``) whose writer process is gone (killed
    mid-write); a live writer's temp file is left alone. Returns how many were removed."""
    removed = 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
                log.info("removed %s, left by a killed writer", tmp)
    return removed


def _atomic_write(path: Path, write_fn) -> None:
    """Call ``write_fn(tmp_path)``, fsync, then ``os.replace`` onto ``path``; the temp file is removed
    on any failure, so a crash leaves the old file untouched. Temp files of killed writers of the
    same file are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _atomic_write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=True)
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def _locked(lock_path: Path):
    """Exclusive advisory lock on ``lock_path`` (no-op where fcntl is missing)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"{what} {path} is not valid JSON ({exc}): fix or delete it") from exc
    if not isinstance(data, dict):
        raise DataValidationError(f"{what} {path} must hold a JSON object: fix or delete it")
    return data


def _file_meta(schema: pa.Schema) -> dict:
    with contextlib.suppress(ValueError, TypeError):
        return json.loads((schema.metadata or {})[META_KEY])
    return {}


def _to_table(candles: pd.DataFrame, what: str) -> pa.Table:
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


class CandleStore:
    """Parquet candle store under ``root``; see the module docstring for layout and guarantees."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_root()

    # ---------------------------------------------------------------- paths
    def _source_dir(self, source: str) -> Path:
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"source {source!r} must be a non-empty name, e.g. 'binance' or 'file:mydata'")
        primary = self.root / safe_name(source)
        owner = _read_json(primary / "index.json", "store index").get("source")
        if owner is None or owner == source:  # free, or ours (a different source's folder gets a hash)
            return primary
        return self.root / _hashed(source)

    def _series_path(self, source: str, symbol: str, timeframe: str) -> Path:
        timeframe_to_ms(timeframe)  # ConfigError for a bad timeframe; also keeps the file name safe
        if not isinstance(symbol, str) or not symbol.strip():
            raise ConfigError(f"symbol {symbol!r} must be a non-empty name, e.g. 'BTC/USDT'")
        sdir = self._source_dir(source)
        index = _read_json(sdir / "index.json", "store index").get("symbols", {})
        for name, real in index.items():
            if real == symbol:
                return sdir / name / f"{timeframe}.parquet"
        primary = safe_name(symbol)
        taken = index.get(primary, symbol) != symbol or primary in _RESERVED
        if not taken and (sdir / primary).exists():  # index missing/stale: ask the files themselves
            for f in (sdir / primary).glob("*.parquet"):
                with contextlib.suppress(Exception):
                    owner = _file_meta(pq.read_schema(f)).get("symbol")
                    taken = owner is not None and owner != symbol
                    break
        return sdir / (_hashed(symbol) if taken else primary) / f"{timeframe}.parquet"

    def _where(self, source: str, symbol: str, timeframe: str) -> str:
        return f"{source} {symbol} {timeframe}"

    @staticmethod
    def _unreadable(where: str, path: Path, why: object) -> DataValidationError:
        return DataValidationError(
            f"stored candles for {where} at {path} are unreadable ({why}): delete the file and download/import again"
        )

    def _register(self, source: str, sdir: Path, symbol: str | None = None, folder: str | None = None) -> None:
        """Record in ``index.json`` that ``sdir`` holds ``source`` (and ``folder`` holds ``symbol``)."""
        with _locked(sdir / ".index.lock"):
            index = _read_json(sdir / "index.json", "store index")
            symbols = index.setdefault("symbols", {})
            if index.get("source") == source and (symbol is None or symbols.get(folder) == symbol):
                return
            index.update(source=source, version=FORMAT_VERSION)
            if symbol is not None:
                symbols[folder] = symbol
            _atomic_write_json(sdir / "index.json", index)

    def _open(self, source: str, symbol: str, timeframe: str) -> tuple[Path, pq.ParquetFile]:
        path = self._series_path(source, symbol, timeframe)
        if not path.exists():
            raise DataValidationError(
                f"no candles stored for {self._where(source, symbol, timeframe)} under {self.root}: "
                f"download or import them first (factorgym download / factorgym data import)"
            )
        try:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(self._where(source, symbol, timeframe), path, exc) from exc
        if any(c not in names for c in CANDLE_COLUMNS):
            lacking = [c for c in CANDLE_COLUMNS if c not in names]
            raise self._unreadable(self._where(source, symbol, timeframe), path, f"columns {lacking} missing")
        return path, pf

    # ---------------------------------------------------------------- candles
    def write(self, source: str, symbol: str, timeframe: str, candles: pd.DataFrame, *,
              on_conflict: str = "error") -> int:
        """Merge ``candles`` into the stored series, sort, and replace the file atomically. Returns
        how many timestamps were not stored before; see :meth:`merge` for ``on_conflict``."""
        return self.merge(source, symbol, timeframe, candles, on_conflict=on_conflict).added

    def merge(self, source: str, symbol: str, timeframe: str, candles: pd.DataFrame, *,
              on_conflict: str = "error") -> WriteReport:
        """Merge ``candles`` into the stored series and replace the file atomically.

        Bars already stored with different values: ``on_conflict="error"`` raises naming the first
        one and both values; ``"replace"``: the new values win; ``"keep"``: the stored ones stay.
        """
        where = self._where(source, symbol, timeframe)
        new = _to_table(candles, where)
        path = self._series_path(source, symbol, timeframe)
        if on_conflict not in CONFLICT_POLICIES:
            raise ConfigError(f"on_conflict {on_conflict!r} is not one of {', '.join(CONFLICT_POLICIES)}")
        if new.num_rows == 0:
            return WriteReport(0)
        with _locked(path.parent / f".{timeframe}.lock"):
            old = None
            if path.exists():
                _, pf = self._open(source, symbol, timeframe)
                try:
                    old = pf.read()
                except (pa.ArrowException, OSError) as exc:
                    raise self._unreadable(where, path, exc) from exc
                old = old.replace_schema_metadata(None)
            if old is not None and ("tradable" in old.column_names) != ("tradable" in new.column_names):
                old, new = _with_tradable(old), _with_tradable(new)
            new, report = resolve_conflicts(old, new, on_conflict, where)
            merged, added = merge_tables(old, new)
            meta = {"source": source, "symbol": symbol, "timeframe": timeframe, "version": FORMAT_VERSION}
            merged = merged.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
            _atomic_write(
                path,
                lambda tmp: pq.write_table(
                    merged, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd", write_statistics=True
                ),
            )
        self._register(source, path.parent.parent, symbol, path.parent.name)
        return dataclasses.replace(report, added=added)

    def replace_series(self, source: str, symbol: str, timeframe: str, candles: pd.DataFrame) -> None:
        """Replace a stored series by ``candles`` as a whole, atomically (``factorgym validate
        --repair``)."""
        where = self._where(source, symbol, timeframe)
        table = _last_per_timestamp(_to_table(candles, where))
        path, _ = self._open(source, symbol, timeframe)
        meta = {"source": source, "symbol": symbol, "timeframe": timeframe, "version": FORMAT_VERSION}
        table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
        with _locked(path.parent / f".{timeframe}.lock"):
            _atomic_write(path, lambda tmp: pq.write_table(
                table, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd", write_statistics=True))

    def read(
        self, source: str, symbol: str, timeframe: str, start: int | None = None, end: int | None = None
    ) -> pd.DataFrame:
        """Candles with ``start <= timestamp < end`` (UTC ms; None = unbounded), sorted. Only the row
        groups whose timestamp statistics overlap the range are decoded."""
        path, pf = self._open(source, symbol, timeframe)
        groups = self._row_groups_for(pf, start, end)
        try:
            table = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(self._where(source, symbol, timeframe), path, exc) from exc
        frame = table.to_pandas()
        ts = frame["timestamp"].to_numpy()
        mask = np.ones(len(ts), dtype=bool)
        if start is not None:
            mask &= ts >= int(start)
        if end is not None:
            mask &= ts < int(end)
        cols = CANDLE_COLUMNS + (["tradable"] if "tradable" in frame.columns else [])
        return frame.loc[mask, cols].reset_index(drop=True)

    @staticmethod
    def _row_groups_for(pf: pq.ParquetFile, start: int | None, end: int | None) -> list[int]:
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

    def last_timestamp(self, source: str, symbol: str, timeframe: str) -> int | None:
        """Open time of the newest stored bar, or None when nothing is stored (footer read only)."""
        if not self.has(source, symbol, timeframe):
            return None
        _, pf = self._open(source, symbol, timeframe)
        md = pf.metadata
        if md.num_rows == 0:
            return None
        col = pf.schema_arrow.get_field_index("timestamp")
        stats = md.row_group(md.num_row_groups - 1).column(col).statistics
        if stats is not None and stats.has_min_max:
            return int(stats.max)
        return int(pf.read(columns=["timestamp"]).column(0).to_numpy().max())

    def has(self, source: str, symbol: str, timeframe: str) -> bool:
        """Whether a file is stored for this series."""
        return self._series_path(source, symbol, timeframe).exists()

    def remove(self, source: str, symbol: str, timeframe: str | None = None) -> list[Path]:
        """Delete the stored series of ``symbol`` from ``source`` (one timeframe, or all of them when
        None); returns the files removed. The symbol's index entry and empty folder go with its
        last file; its market rules stay (they belong to the source's markets)."""
        removed = []
        for e in self.entries():
            if e.source == source and e.symbol == symbol and timeframe in (None, e.timeframe):
                with _locked(e.path.parent / f".{e.timeframe}.lock"):
                    e.path.unlink()
                    remove_stale_temps(e.path)
                removed.append(e.path)
        for folder in {p.parent for p in removed}:
            if not any(folder.glob("*.parquet")):
                for leftover in folder.glob(".*.lock"):
                    leftover.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
                sdir = folder.parent
                with _locked(sdir / ".index.lock"):
                    index = _read_json(sdir / "index.json", "store index")
                    if index.get("symbols", {}).pop(folder.name, None) is not None:
                        _atomic_write_json(sdir / "index.json", index)
        return removed

    # ---------------------------------------------------------------- market rules
    def write_rules(self, source: str, rules: MarketRules) -> None:
        """Store (or replace) ``rules`` for ``rules.symbol`` in ``<source>/markets.json``, atomically."""
        if not isinstance(rules, MarketRules):
            raise ConfigError(f"write_rules expects MarketRules, got {type(rules).__name__}")
        sdir = self._source_dir(source)
        with _locked(sdir / ".markets.lock"):
            path = sdir / "markets.json"
            data = _read_json(path, "market rules file")
            data[rules.symbol] = rules.to_dict()
            _atomic_write_json(path, data)
        self._register(source, sdir)

    def read_rules(self, source: str, symbol: str) -> MarketRules:
        """Stored rules of ``symbol``; :func:`default_rules` when none are stored."""
        path = self._source_dir(source) / "markets.json"
        data = _read_json(path, "market rules file").get(symbol)
        if data is None:
            return default_rules(symbol)
        try:
            return MarketRules.from_dict(data)
        except TypeError as exc:
            raise DataValidationError(f"market rules of {source} {symbol} in {path} are malformed ({exc})") from exc

    # ---------------------------------------------------------------- listing
    def entries(self) -> list[StoreEntry]:
        """Every stored series with rows, first/last bar and missing-bar count, read from Parquet
        footers and the timestamp column only. Unreadable files are logged and skipped."""
        out = []
        if not self.root.exists():
            return out
        for path in sorted(self.root.glob("*/*/*.parquet")):
            try:
                pf = pq.ParquetFile(path)
                meta = _file_meta(pf.schema_arrow)
                if meta.get("kind") == "funding":  # funding events (data_layer/funding.py), not candles
                    continue
                timeframe = meta.get("timeframe", path.stem)
                ts = pf.read(columns=["timestamp"]).column(0).to_numpy()
            except (pa.ArrowException, OSError, KeyError) as exc:
                log.warning("skipping unreadable store file %s: %s", path, exc)
                continue
            n_gaps = 0
            if len(ts) > 1:
                with contextlib.suppress(ConfigError):
                    step = timeframe_to_ms(timeframe)
                    diffs = np.diff(ts)
                    n_gaps = int(np.sum(np.maximum(diffs // step - 1, 0)))
            out.append(
                StoreEntry(
                    source=meta.get("source", path.parent.parent.name),
                    symbol=meta.get("symbol", path.parent.name),
                    timeframe=timeframe,
                    path=path,
                    rows=int(pf.metadata.num_rows),
                    first=int(ts[0]) if len(ts) else None,
                    last=int(ts[-1]) if len(ts) else None,
                    n_gaps=n_gaps,
                )
            )
        return sorted(out, key=lambda e: (e.source, e.symbol, e.timeframe))
