"""The candle store: each (source, symbol, timeframe) series in time partitions, each written atomically.

Layout under the root (``$FACTORGYM_STORE`` or ``./store``)::

    <root>/<SOURCE_DIR>/<SYMBOL_DIR>/<timeframe>/<partition>.parquet   candles, sorted, unique timestamps
    <root>/<SOURCE_DIR>/<SYMBOL_DIR>/funding.parquet                   funding events (data_layer/funding.py)
    <root>/<SOURCE_DIR>/markets.json                                   MarketRules per symbol
    <root>/<SOURCE_DIR>/index.json                                     folder name -> real source/symbol

Partitions (:mod:`~factorgym.data_layer.store_partitions`): one file per calendar month (UTC) for
timeframes under an hour, per calendar year for hourly and longer ones. An append rewrites only
the partitions its bars fall in (appending a day of minute bars rewrites one month, whatever the
history); a range read opens only the partitions that overlap it, and in them decodes only the
row groups that do. A store written before partitions (``<SYMBOL_DIR>/<timeframe>.parquet``, one
file per series) is read as it is and migrated to partitions by the next write of that series
(partitions first, then the old file is removed; while the old file exists it is the series).

Folder names are file-system-safe versions of the names (``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``,
``file:my data`` -> ``file_my_data``); the real names live in each file's Parquet schema metadata
(the source of truth) and in ``index.json`` (a readable listing). Two names that sanitise alike get
a hash suffix on the second folder, so they never share a file.

Every file is replaced atomically (temp file, fsync, rename: :mod:`~factorgym.data_layer.store_files`)
under the series' advisory lock, so concurrent appends are not lost. A write spanning several
partitions checks every conflict before it writes any partition, then writes them in time order:
a crash leaves each partition old or new and the stored bars a prefix of the write, so a download
resumes from the newest stored bar.

Bars already stored are never changed silently: a write whose bars overlap stored bars with
different values raises by default (``on_conflict="error"``) naming the first bar and both values;
``"replace"`` lets the new values win, ``"keep"`` keeps the stored ones, and :class:`WriteReport`
counts what was replaced or kept. A stored gap placeholder (``tradable=False``) is filled by a real
bar without asking, and a placeholder never overwrites a real bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.sources.base import MarketRules, default_rules
from factorgym.data_layer.store_files import (  # noqa: F401 - safe_name and remove_stale_temps are public here too
    atomic_write, atomic_write_json, fsync_dir, hashed_name, locked, read_json, remove_stale_temps, safe_name,
)
from factorgym.data_layer.store_merge import (  # noqa: F401 - merge_tables and WriteReport are public here too
    CONFLICT_POLICIES, WriteReport, _last_per_timestamp, _with_tradable, merge_tables, resolve_conflicts,
)
from factorgym.data_layer.store_partitions import (  # noqa: F401 - ROW_GROUP_ROWS is public here too
    FORMAT_VERSION, ROW_GROUP_ROWS, file_meta, overlapping, partition_files, row_groups_for, split_by_partition,
    to_table, write_file,
)
from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

_RESERVED = {"index.json", "markets.json"}  # files beside the symbol folders


def default_store_root() -> Path:
    """``$FACTORGYM_STORE`` when set, else ``./store``."""
    return Path(os.environ.get("FACTORGYM_STORE") or "store").expanduser()


@dataclasses.dataclass(frozen=True)
class StoreEntry:
    """One stored series. ``path`` is its partition folder (or, before migration, its single file),
    ``files`` its Parquet files in time order; ``first``/``last`` are bar open times (UTC ms);
    ``n_gaps`` counts missing grid bars between them (a present bar with ``tradable=False`` is not
    missing; those are ``n_marked``)."""

    source: str
    symbol: str
    timeframe: str
    path: Path
    rows: int
    first: int | None
    last: int | None
    n_gaps: int
    files: tuple[Path, ...] = ()
    n_marked: int = 0


class CandleStore:
    """Partitioned Parquet candle store under ``root``; see the module docstring for layout and guarantees."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_root()

    # ---------------------------------------------------------------- paths
    def _source_dir(self, source: str) -> Path:
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"source {source!r} must be a non-empty name, e.g. 'binance' or 'file:mydata'")
        primary = self.root / safe_name(source)
        owner = read_json(primary / "index.json", "store index").get("source")
        if owner is None or owner == source:  # free, or ours (a different source's folder gets a hash)
            return primary
        return self.root / hashed_name(source)

    def symbol_dir(self, source: str, symbol: str) -> Path:
        """The folder of ``symbol``'s series from ``source`` (candles per timeframe, funding)."""
        if not isinstance(symbol, str) or not symbol.strip():
            raise ConfigError(f"symbol {symbol!r} must be a non-empty name, e.g. 'BTC/USDT'")
        sdir = self._source_dir(source)
        index = read_json(sdir / "index.json", "store index").get("symbols", {})
        for name, real in index.items():
            if real == symbol:
                return sdir / name
        primary = safe_name(symbol)
        taken = index.get(primary, symbol) != symbol or primary in _RESERVED
        if not taken and (sdir / primary).exists():  # index missing/stale: ask the files themselves
            for f in [*(sdir / primary).glob("*.parquet"), *(sdir / primary).glob("*/*.parquet")]:
                with contextlib.suppress(Exception):
                    owner = file_meta(pq.read_schema(f)).get("symbol")
                    taken = owner is not None and owner != symbol
                    break
        return sdir / (hashed_name(symbol) if taken else primary)

    def _paths(self, source: str, symbol: str, timeframe: str) -> tuple[Path, Path]:
        """(partition folder, single file of a store written before partitions) of a series."""
        timeframe_to_ms(timeframe)  # ConfigError for a bad timeframe; also keeps the file name safe
        folder = self.symbol_dir(source, symbol)
        return folder / timeframe, folder / f"{timeframe}.parquet"

    def _files(self, source: str, symbol: str, timeframe: str) -> tuple[list[Path], bool]:
        """The series' Parquet files in time order, and whether it is a single file (not migrated)."""
        folder, legacy = self._paths(source, symbol, timeframe)
        if legacy.exists():
            return [legacy], True
        return partition_files(folder), False

    def _where(self, source: str, symbol: str, timeframe: str) -> str:
        return f"{source} {symbol} {timeframe}"

    @staticmethod
    def _unreadable(where: str, path: Path, why: object) -> DataValidationError:
        return DataValidationError(
            f"stored candles for {where} at {path} are unreadable ({why}): delete the file and download/import again"
        )

    def _register(self, source: str, sdir: Path, symbol: str | None = None, folder: str | None = None) -> None:
        """Record in ``index.json`` that ``sdir`` holds ``source`` (and ``folder`` holds ``symbol``)."""
        with locked(sdir / ".index.lock"):
            index = read_json(sdir / "index.json", "store index")
            symbols = index.setdefault("symbols", {})
            if index.get("source") == source and (symbol is None or symbols.get(folder) == symbol):
                return
            index.update(source=source, version=FORMAT_VERSION)
            if symbol is not None:
                symbols[folder] = symbol
            atomic_write_json(sdir / "index.json", index)

    # ---------------------------------------------------------------- files beside the candles
    @contextlib.contextmanager
    def symbol_file(self, source: str, symbol: str, name: str):
        """Lock the file ``name`` of ``symbol``'s folder (e.g. ``funding.parquet``) and yield its path;
        write it with :meth:`write_symbol_file` inside the block."""
        path = self.symbol_dir(source, symbol) / name
        with locked(path.parent / f".{path.stem}.lock"):
            yield path

    def write_symbol_file(self, source: str, symbol: str, path: Path, table: pa.Table) -> None:
        """Replace ``path`` (from :meth:`symbol_file`) by ``table`` atomically and list the symbol in the index."""
        atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
        self._register(source, path.parent.parent, symbol, path.parent.name)

    # ---------------------------------------------------------------- reading files
    def _open(self, where: str, path: Path) -> pq.ParquetFile:
        try:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(where, path, exc) from exc
        if any(c not in names for c in CANDLE_COLUMNS):
            raise self._unreadable(where, path, f"columns {[c for c in CANDLE_COLUMNS if c not in names]} missing")
        return pf

    def _read_file(self, where: str, path: Path, start: int | None = None, end: int | None = None) -> pa.Table:
        """The rows of one file in the row groups that may overlap ``[start, end)``, without metadata."""
        pf = self._open(where, path)
        groups = row_groups_for(pf, start, end)
        try:
            table = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
        except (pa.ArrowException, OSError) as exc:
            raise self._unreadable(where, path, exc) from exc
        return table.replace_schema_metadata(None)

    def _missing(self, source: str, symbol: str, timeframe: str) -> DataValidationError:
        return DataValidationError(
            f"no candles stored for {self._where(source, symbol, timeframe)} under {self.root}: "
            f"download or import them first (factorgym download / factorgym data import)"
        )

    # ---------------------------------------------------------------- writing
    def write(self, source: str, symbol: str, timeframe: str, candles: pd.DataFrame, *,
              on_conflict: str = "error") -> int:
        """Merge ``candles`` into the stored series (rewriting only the partitions they fall in).
        Returns how many timestamps were not stored before; see :meth:`merge` for ``on_conflict``."""
        return self.merge(source, symbol, timeframe, candles, on_conflict=on_conflict).added

    def merge(self, source: str, symbol: str, timeframe: str, candles: pd.DataFrame, *,
              on_conflict: str = "error") -> WriteReport:
        """Merge ``candles`` into the stored series; each partition they touch is replaced atomically.

        Bars already stored with different values: ``on_conflict="error"`` raises naming the first
        one and both values (nothing is written); ``"replace"``: the new values win; ``"keep"``: the
        stored ones stay.
        """
        where = self._where(source, symbol, timeframe)
        new = to_table(candles, where)
        folder, legacy = self._paths(source, symbol, timeframe)
        if on_conflict not in CONFLICT_POLICIES:
            raise ConfigError(f"on_conflict {on_conflict!r} is not one of {', '.join(CONFLICT_POLICIES)}")
        if new.num_rows == 0:
            return WriteReport(0)
        total = WriteReport(0)
        with locked(folder.parent / f".{timeframe}.lock"):
            self._migrate(where, folder, legacy, source, symbol, timeframe)
            plans = []
            for name, part in split_by_partition(_last_per_timestamp(new), timeframe).items():
                path = folder / f"{name}.parquet"
                old = self._read_file(where, path) if path.exists() else None
                if old is not None and ("tradable" in old.column_names) != ("tradable" in part.column_names):
                    old, part = _with_tradable(old), _with_tradable(part)
                part, report = resolve_conflicts(old, part, on_conflict, where)  # (raises before any write)
                merged, added = merge_tables(old, part)
                total = WriteReport(total.added + added, total.replaced + report.replaced, total.kept + report.kept,
                                    total.filled + report.filled)
                if added or report.replaced or report.filled or old is None:
                    plans.append((path, merged))
            for path, merged in plans:  # in time order
                self._write_partition(path, merged, source, symbol, timeframe)
        self._register(source, folder.parent.parent, symbol, folder.parent.name)
        return total

    def _write_partition(self, path: Path, table: pa.Table, source: str, symbol: str, timeframe: str) -> None:
        meta = {"source": source, "symbol": symbol, "timeframe": timeframe, "version": FORMAT_VERSION,
                "partition": path.stem}
        atomic_write(path, lambda tmp: write_file(tmp, table, meta))

    def _migrate(self, where: str, folder: Path, legacy: Path, source: str, symbol: str, timeframe: str) -> None:
        """A single-file series into partitions (under the series lock): partitions first, then the
        file goes. Partitions found beside the file are an interrupted migration and are redone."""
        if not legacy.exists():
            return
        table = self._read_file(where, legacy)
        for stale in partition_files(folder):
            stale.unlink()
        for name, part in split_by_partition(_last_per_timestamp(table), timeframe).items():
            self._write_partition(folder / f"{name}.parquet", part, source, symbol, timeframe)
        legacy.unlink()
        remove_stale_temps(legacy)
        fsync_dir(legacy.parent)
        log.info("migrated %s from %s to %d partition(s) in %s", where, legacy.name, len(partition_files(folder)), folder)

    def replace_series(self, source: str, symbol: str, timeframe: str, candles: pd.DataFrame) -> None:
        """Replace a stored series by ``candles`` as a whole (``factorgym validate --repair``); each
        partition is replaced atomically, partitions left without bars are removed."""
        where = self._where(source, symbol, timeframe)
        table = _last_per_timestamp(to_table(candles, where))
        if not self.has(source, symbol, timeframe):
            raise self._missing(source, symbol, timeframe)
        folder, legacy = self._paths(source, symbol, timeframe)
        with locked(folder.parent / f".{timeframe}.lock"):
            self._migrate(where, folder, legacy, source, symbol, timeframe)
            parts = split_by_partition(table, timeframe)
            for name, part in parts.items():
                self._write_partition(folder / f"{name}.parquet", part, source, symbol, timeframe)
            for path in partition_files(folder):
                if path.stem not in parts:
                    path.unlink()

    # ---------------------------------------------------------------- reading
    def read(
        self, source: str, symbol: str, timeframe: str, start: int | None = None, end: int | None = None
    ) -> pd.DataFrame:
        """Candles with ``start <= timestamp < end`` (UTC ms; None = unbounded), sorted. Only the
        partitions, and in them the row groups, that overlap the range are read."""
        files, single = self._files(source, symbol, timeframe)
        if not files:
            raise self._missing(source, symbol, timeframe)
        where = self._where(source, symbol, timeframe)
        chosen = files if single else overlapping(files, timeframe, start, end)
        tables = [self._read_file(where, f, start, end) for f in chosen]
        if not tables:
            tables = [self._read_file(where, files[0], 0, 0)]  # (no partition overlaps: the schema, no rows)
        if len({"tradable" in t.column_names for t in tables}) > 1:
            tables = [_with_tradable(t) for t in tables]
        frame = pa.concat_tables(tables).to_pandas() if len(tables) > 1 else tables[0].to_pandas()
        ts = frame["timestamp"].to_numpy()
        mask = np.ones(len(ts), dtype=bool)
        if start is not None:
            mask &= ts >= int(start)
        if end is not None:
            mask &= ts < int(end)
        cols = CANDLE_COLUMNS + (["tradable"] if "tradable" in frame.columns else [])
        return frame.loc[mask, cols].reset_index(drop=True)

    def last_timestamp(self, source: str, symbol: str, timeframe: str) -> int | None:
        """Open time of the newest stored bar, or None when nothing is stored (footers only)."""
        files, _ = self._files(source, symbol, timeframe)
        where = self._where(source, symbol, timeframe)
        for path in reversed(files):
            pf = self._open(where, path)
            md = pf.metadata
            if md.num_rows == 0:
                continue
            col = pf.schema_arrow.get_field_index("timestamp")
            stats = md.row_group(md.num_row_groups - 1).column(col).statistics
            if stats is not None and stats.has_min_max:
                return int(stats.max)
            return int(pf.read(columns=["timestamp"]).column(0).to_numpy().max())
        return None

    def has(self, source: str, symbol: str, timeframe: str) -> bool:
        """Whether candles are stored for this series."""
        return bool(self._files(source, symbol, timeframe)[0])

    def remove(self, source: str, symbol: str, timeframe: str | None = None) -> list[Path]:
        """Delete the stored series of ``symbol`` from ``source`` (one timeframe, or all of them when
        None); returns the series removed (folders, or files of an unmigrated store). The symbol's
        index entry and empty folder go with its last series; its market rules stay."""
        removed = []
        for e in self.entries():
            if e.source == source and e.symbol == symbol and timeframe in (None, e.timeframe):
                with locked(e.path.parent / f".{e.timeframe}.lock"):
                    beside = e.path.with_suffix("")  # (a single file's interrupted migration)
                    for f in [*e.files, *(partition_files(beside) if e.path.is_file() else [])]:
                        f.unlink()
                        remove_stale_temps(f)
                    for folder in (e.path, beside):
                        if folder.is_dir():
                            with contextlib.suppress(OSError):
                                folder.rmdir()
                removed.append(e.path)
        for folder in {p.parent for p in removed}:
            if not any(folder.glob("*.parquet")) and not any(folder.glob("*/*.parquet")):
                for leftover in folder.glob(".*.lock"):
                    leftover.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
                sdir = folder.parent
                with locked(sdir / ".index.lock"):
                    index = read_json(sdir / "index.json", "store index")
                    if index.get("symbols", {}).pop(folder.name, None) is not None:
                        atomic_write_json(sdir / "index.json", index)
        return removed

    # ---------------------------------------------------------------- market rules
    def write_rules(self, source: str, rules: MarketRules) -> None:
        """Store (or replace) ``rules`` for ``rules.symbol`` in ``<source>/markets.json``, atomically."""
        if not isinstance(rules, MarketRules):
            raise ConfigError(f"write_rules expects MarketRules, got {type(rules).__name__}")
        sdir = self._source_dir(source)
        with locked(sdir / ".markets.lock"):
            path = sdir / "markets.json"
            data = read_json(path, "market rules file")
            data[rules.symbol] = rules.to_dict()
            atomic_write_json(path, data)
        self._register(source, sdir)

    def read_rules(self, source: str, symbol: str) -> MarketRules:
        """Stored rules of ``symbol``; :func:`default_rules` when none are stored."""
        path = self._source_dir(source) / "markets.json"
        data = read_json(path, "market rules file").get(symbol)
        if data is None:
            return default_rules(symbol)
        try:
            return MarketRules.from_dict(data)
        except TypeError as exc:
            raise DataValidationError(f"market rules of {source} {symbol} in {path} are malformed ({exc})") from exc

    # ---------------------------------------------------------------- listing
    def entries(self) -> list[StoreEntry]:
        """Every stored series with rows, first/last bar, missing and marked bars, read from Parquet
        footers and the timestamp and tradable columns only. Unreadable files are logged and skipped."""
        out = []
        if not self.root.exists():
            return out
        series = [(p, [p]) for p in sorted(self.root.glob("*/*/*.parquet"))]  # single files (and funding)
        # partition folders; one beside a single file of its series is an interrupted migration (the file counts)
        series += [(d, partition_files(d)) for d in sorted(self.root.glob("*/*/*/"))
                   if d.is_dir() and not d.with_name(f"{d.name}.parquet").exists()]
        for path, files in series:
            if not files:
                continue
            entry = self._entry(path, files)
            if entry is not None:
                out.append(entry)
        return sorted(out, key=lambda e: (e.source, e.symbol, e.timeframe))

    @staticmethod
    def _entry(path: Path, files: list[Path]) -> StoreEntry | None:
        meta, parts, marked, rows = {}, [], 0, 0
        for f in files:
            try:
                pf = pq.ParquetFile(f)
                meta = file_meta(pf.schema_arrow) or meta
                if meta.get("kind") == "funding":  # funding events (data_layer/funding.py), not candles
                    return None
                cols = ["timestamp"] + (["tradable"] if "tradable" in pf.schema_arrow.names else [])
                table = pf.read(columns=cols)
            except (pa.ArrowException, OSError, KeyError) as exc:
                log.warning("skipping unreadable store file %s: %s", f, exc)
                return None
            parts.append(table.column(0).to_numpy())
            if "tradable" in cols:
                marked += int((~table.column(1).to_numpy(zero_copy_only=False).astype(bool)).sum())
            rows += table.num_rows
        ts = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        timeframe = meta.get("timeframe", path.stem if path.is_file() else path.name)
        n_gaps = 0
        if len(ts) > 1:
            with contextlib.suppress(ConfigError):
                step = timeframe_to_ms(timeframe)
                n_gaps = int(np.sum(np.maximum(np.diff(ts) // step - 1, 0)))
        symbol_dir = path.parent
        return StoreEntry(source=meta.get("source", symbol_dir.parent.name), symbol=meta.get("symbol", symbol_dir.name),
                          timeframe=timeframe, path=path, rows=rows, first=int(ts[0]) if len(ts) else None,
                          last=int(ts[-1]) if len(ts) else None, n_gaps=n_gaps, files=tuple(files), n_marked=marked)
