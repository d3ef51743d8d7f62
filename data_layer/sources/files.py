"""Candles from CSV and Parquet files, whatever exporter wrote them.

:func:`import_candle_file` reads one file into validated candle frames, one per symbol:

* **Formats**: CSV (any of ``, ; tab |`` separators, decimal commas, ``.gz``/``.zip``) and Parquet.
* **Layouts**: *long* (one row per bar, optionally a symbol column holding several symbols),
  *wide* (``BTC:open, BTC:high, ...`` or ``BTC_open``: one column group per asset), and
  *headerless* rows in ccxt/Binance/Kraken order ``time, open, high, low, close, volume, ...``.
* **Preamble**: lines before the table (CryptoDataDownload's URL line, ``#`` comments) are skipped.
* **Times**: epoch s/ms/us/ns (unit picked per row by magnitude: s < 1e11 <= ms < 1e14 <= us <
  1e17 <= ns), ISO strings with or without offset, ``dd.mm.yyyy``, CDD's ``2019-07-04 01-PM``,
  separate date and time columns, tz-aware Parquet columns. Naive times are UTC unless ``tz`` is
  given. Everything becomes int64 UTC ms of the bar open.
* **Symbols**: unified ``BASE/QUOTE`` (``BTCUSD`` -> ``BTC/USD``, ``XBT`` -> ``BTC``), from the
  ``symbol`` argument, a symbol column, the wide prefixes (+ ``quote``) or the file name.
* **Empty rows**: a row whose open/high/low/close/volume are all empty is "no bar" (an asset not
  yet listed in a wide file): dropped and reported, never read as zeros. A partly empty row is an
  error from validation.
* **Funding** (perpetuals, long layouts): a ``funding_rate`` column is read as the funding charged
  in each bar (``ImportResult.funding``; see ``data_layer/funding.py``); empty cells are 0.

Every frame then passes :func:`~factorgym.data_layer.validate.validate_candles`; errors name the
file, the symbol, the file line and the rule.
"""

from __future__ import annotations

import dataclasses
import gzip
import inspect
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.funding import funding_from_file
from factorgym.data_layer.sources.base import MarketRules, default_rules
from factorgym.data_layer.sources.file_columns import (
    ROLES, SYMBOL_NAMES, find_columns, key, find_wide, normalize_symbol, symbol_from_filename, timeframe_from_ms,
    to_utc_ms, wide_symbols,
)
from factorgym.data_layer.timeframes import calendar_error
from factorgym.data_layer.validate import ValidationReport, validate_candles
from factorgym.errors import ConfigError, DataValidationError

LAYOUTS = ("auto", "long", "wide", "headerless")
_SEPS = [",", ";", "\t", "|"]
_HEAD_BYTES = 65_536


@dataclasses.dataclass
class ImportResult:
    """What :func:`import_candle_file` read: validated frames and a report per unified symbol."""

    path: Path
    timeframe: str
    layout: str
    candles: dict[str, pd.DataFrame]
    reports: dict[str, ValidationReport]
    notes: list[str] = dataclasses.field(default_factory=list)  # e.g. which volume column was used
    funding: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)  # a funding_rate column's events


def _head_text(path: Path) -> str:
    """First bytes of the file as text (decompressing .gz / single-member .zip)."""
    if path.suffix.lower() == ".gz":
        with gzip.open(path, "rb") as f:
            raw = f.read(_HEAD_BYTES)
    elif path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if len(names) != 1:
                raise DataValidationError(f"{path.name}: a .zip must hold exactly one file, it holds {len(names)}")
            with z.open(names[0]) as f:
                raw = f.read(_HEAD_BYTES)
    else:
        with open(path, "rb") as f:
            raw = f.read(_HEAD_BYTES)
    return raw.decode("utf-8-sig", errors="replace")


def _is_timeish(field: str) -> bool:
    return bool(re.match(r"^\s*(\d{4}[-./]\d\d|\d\d?[./-]\d\d?[./-]\d{2,4}|\d+(\.\d+)?\s*$)", field))


def _sniff(path: Path, text: str, sep: str | None, skiprows: int | str) -> dict:
    """Separator, preamble length, header presence and decimal mark, from the first lines."""
    stripped = text.lstrip().lower()
    if stripped.startswith(("<!doctype", "<html", "<?xml", "<head", "<body")) or "<html" in stripped[:2000]:
        raise DataValidationError(
            f"{path.name}: this is an HTML/XML page, not a CSV table (a download that returned an "
            f"error or login page?): download the file again"
        )
    lines = text.splitlines()
    if len(text) >= _HEAD_BYTES:
        lines = lines[:-1]  # last line may be cut
    lines = lines[:200]
    if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in lines):
        raise DataValidationError(f"{path.name}: the file is empty (no table found)")
    best = None
    for rank, s in enumerate([sep] if sep else _SEPS):
        counts = [len(ln.split(s)) if ln.strip() else 0 for ln in lines]
        for i, n in enumerate(counts):
            if n < 5 or lines[i].lstrip().startswith("#"):
                continue
            nxt = [c for c in counts[i + 1:i + 6] if c]
            if all(c == n for c in nxt):
                fields = [f for ln in lines[i:i + 6] for f in ln.split(s)]
                foreign = any(o in f for f in fields for o in _SEPS[1:] if o != s)
                key = (foreign, i, -n, rank)
                if best is None or key < best[0]:
                    best = (key, s, i)
                break
    if best is None:
        raise DataValidationError(
            f"{path.name}: no table of at least 5 columns (time, open, high, low, close[, volume]) found "
            f"in the first lines; pass --sep and --skiprows if the layout is unusual"
        )
    _, s, start = best
    if skiprows != "auto":
        start = int(skiprows)
    first = [f.strip().strip('"') for f in lines[start].split(s)] if start < len(lines) else []
    header = any(re.search(r"[A-Za-z]", f) and not _is_timeish(f) for f in first)
    body = [f.strip().strip('"') for ln in lines[start + 1:start + 50] for f in ln.split(s)]
    decimal = "," if s != "," and any(re.match(r"^-?\d+,\d+$", f) for f in body) else "."
    thousands = "." if decimal == "," and any(re.match(r"^\d{1,3}(\.\d{3})+(,\d+)?$", f) for f in body) else None
    return {"sep": s, "start": start, "header": header, "decimal": decimal, "thousands": thousands}


def _read_table(path: Path, sep: str | None, skiprows: int | str, layout: str) -> tuple[pd.DataFrame, bool]:
    """The raw table, index = file line numbers (CSV, name ``line``) or row numbers (Parquet)."""
    if not path.exists():
        raise DataValidationError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataValidationError(f"{path.name}: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if path.suffix.lower() in (".parquet", ".pq") or magic == b"PAR1":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DataValidationError(f"{path.name}: not a readable Parquet file ({exc})") from exc
        if not isinstance(df.index, pd.RangeIndex):
            df = df.reset_index()
        df.index = pd.RangeIndex(len(df), name="row")
        return df, True
    info = _sniff(path, _head_text(path), sep, skiprows)
    header = info["header"] and layout != "headerless"
    try:
        df = pd.read_csv(
            path, sep=info["sep"], skiprows=info["start"], header=0 if header else None,
            skip_blank_lines=False, skipinitialspace=True, low_memory=False,
            keep_default_na=False, na_values=[""],  # "N/A", "null" in a price column get named, not guessed
            # decimal commas: read text, convert per column (a date like 01.03.2021 is no number)
            **({"dtype": str} if info["decimal"] == "," else {}),
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path.name}: cannot be read as a table: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    df.attrs.update(decimal=info["decimal"], thousands=info["thousands"])
    df.index = pd.RangeIndex(len(df)) + info["start"] + 1 + int(header)
    df.index.name = "line"
    df = df[df.notna().any(axis=1)]  # blank lines
    if df.empty:
        raise DataValidationError(f"{path.name}: the file has a header but no rows")
    return df, header


def _numeric(series: pd.Series, where: str, col: str, decimal: str = ".", thousands: str | None = None) -> np.ndarray:
    """float64 values; text names its file line and value."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    s = series.astype("str").str.strip().where(series.notna(), None)
    if thousands:
        s = s.str.replace(thousands, "", regex=False)
    if decimal != ".":
        s = s.str.replace(decimal, ".", regex=False)
    num = pd.to_numeric(s, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy() & series.notna().to_numpy() & (s != "").to_numpy())
    if len(bad):
        p = int(bad[0])
        raise DataValidationError(
            f"{where}: {series.index.name or 'row'} {series.index[p]}: column {col!r}: value "
            f"{series.iloc[p]!r} is not a number ({len(bad)} such row(s))"
        )
    return num.to_numpy(dtype=np.float64, na_value=np.nan)


def _frame(df: pd.DataFrame, ts: np.ndarray, cols: dict[str, str], where: str) -> tuple[pd.DataFrame, int]:
    """Candle frame of one symbol; rows with every value empty are dropped (count returned)."""
    out = pd.DataFrame({"timestamp": ts}, index=df.index)
    for role in CANDLE_COLUMNS[1:]:
        out[role] = _numeric(df[cols[role]], where, cols[role], df.attrs.get("decimal", "."),
                             df.attrs.get("thousands"))
    empty = out[CANDLE_COLUMNS[1:]].isna().all(axis=1).to_numpy()
    return out[~empty], int(empty.sum())


def _guess_base(df: pd.DataFrame, wanted: list[str] | None, path: Path) -> str | None:
    """Base currency, to pick ``Volume BTC`` over ``Volume USD``: the symbol given, in a column, or the name."""
    sym_col = next((c for c in df.columns if key(c) in SYMBOL_NAMES), None)
    for cand in ([wanted[0]] if wanted else []) + ([str(df[sym_col].iloc[0])] if sym_col else []):
        try:
            return normalize_symbol(cand).split("/")[0]
        except ConfigError:
            pass
    try:
        return symbol_from_filename(path).split("/")[0]
    except ConfigError:
        return None


def _complete_wide(wide: dict[str, dict[str, str]], wanted: list[str] | None, quote: str | None, path: Path,
                   columns) -> dict[str, dict[str, str]]:
    """The wide groups, refusing an asset that lacks a field (``ETH:low``) unless ``--symbol`` leaves
    it out: an incomplete asset is never dropped without a word."""
    needed = ("open", "high", "low", "close", "volume")
    incomplete = {a: [f for f in needed if f not in g] for a, g in wide.items() if any(f not in g for f in needed)}
    if not incomplete:
        return wide
    names = wide_symbols(list(wide), quote, path, columns)
    keep = {normalize_symbol(w) for w in wanted} if wanted else None
    for asset, lacking in incomplete.items():
        if keep is None or names[asset] in keep:
            cols = ", ".join(f"{asset}:{f}" for f in lacking)
            raise DataValidationError(
                f"{path.name}: wide columns of {names[asset]} lack {cols}; add the column(s), or leave "
                f"{names[asset]} out by naming the symbols to import with --symbol"
            )
    return {a: g for a, g in wide.items() if a not in incomplete}


def import_candle_file(
    path: str | Path,
    *,
    symbol: str | list[str] | None = None,
    timeframe: str | None = None,
    layout: str = "auto",
    columns: dict[str, str] | None = None,
    timestamp_unit: str = "auto",
    tz: str | None = None,
    skiprows: int | str = "auto",
    sep: str | None = None,
    quote: str | None = None,
    date_format: str | None = None,
    gap_policy: str = "mark",
    now_ms: int | None = None,
    jump_threshold: float = 0.5,
) -> ImportResult:
    """Read, normalise and validate a candle file.

    Args:
        symbol: for a one-symbol file, its unified name (overrides the file's); for a multi-symbol
            file, the symbol(s) to keep.
        timeframe: ccxt timeframe; default: the median spacing of the timestamps.
        layout: ``auto``, ``long``, ``wide`` or ``headerless``.
        columns: explicit column names per role: ``timestamp, open, high, low, close, volume,
            symbol`` (and ``date``/``time`` for split date and time columns).
        timestamp_unit: ``auto``, ``s``, ``ms``, ``us``, ``ns`` for epoch numbers.
        tz: time zone of naive date strings (e.g. ``Europe/Berlin``); default UTC.
        skiprows: lines before the header (``auto`` finds the table).
        sep: CSV separator (default: sniffed).
        quote: quote currency of wide files whose columns name only the base (``BTC:open``).
        date_format: strftime format of the time column when auto-detection cannot tell.
        gap_policy, now_ms, jump_threshold: passed to :func:`validate_candles`.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r} is not one of {LAYOUTS}")
    df, header = _read_table(path, sep, skiprows, layout)
    if not header:
        if df.shape[1] < 6 and not columns:
            raise DataValidationError(
                f"{path.name}: headerless file with {df.shape[1]} columns; expected time, open, high, "
                f"low, close, volume (ccxt/Binance order) or pass column options"
            )
        df.columns = [str(c) for c in range(df.shape[1])]
        columns = {**dict(zip(CANDLE_COLUMNS, map(str, range(6)))), **(columns or {})}
        layout = "headerless"
    wide = find_wide(df.columns) if layout in ("auto", "wide") and not (columns or {}).get("open") else {}
    if layout == "wide" and not wide:
        raise DataValidationError(f"{path.name}: no wide column groups like BTC:open, BTC:high found")
    layout = "wide" if wide else ("long" if layout == "auto" else layout)
    wanted = None if symbol is None else [symbol] if isinstance(symbol, str) else list(symbol)
    notes: list[str] = []
    if wide:
        wide = _complete_wide(wide, wanted, quote, path, df.columns)
    cols = find_columns(df.columns, columns or {}, path.name, need_ohlcv=not wide,
                        base=None if wide else _guess_base(df, wanted, path), notes=notes)
    ts = to_utc_ms(df, cols, unit=timestamp_unit, tz=tz, date_format=date_format, where=path.name)

    groups: dict[str, tuple[pd.DataFrame, np.ndarray, dict[str, str]]] = {}
    if wide:
        names = wide_symbols(list(wide), quote, path, df.columns)
        for asset, fields in wide.items():
            groups[names[asset]] = (df, ts, fields)
    elif cols.get("symbol"):
        raw = df[cols["symbol"]].astype("str").str.strip()
        codes, uniq = pd.factorize(raw)
        where = f"{path.name}: column {cols['symbol']!r}"
        if wanted and len(wanted) == 1 and len(uniq) == 1:  # the file's only symbol, named as asked
            norm = np.array([normalize_symbol(wanted[0])], dtype=object)
        else:
            norm = np.array([normalize_symbol(u, where=where) for u in uniq], dtype=object)
        for s in pd.unique(norm):
            pos = np.flatnonzero(np.isin(codes, np.flatnonzero(norm == s)))
            groups[s] = (df.iloc[pos], ts[pos], cols)
    else:
        if wanted and len(wanted) > 1:
            raise ConfigError(f"{path.name} holds one symbol: pass one --symbol, not {wanted}")
        name = normalize_symbol(wanted[0]) if wanted else symbol_from_filename(path)
        groups[name] = (df, ts, cols)
    if wanted:
        keep = {normalize_symbol(w) for w in wanted}
        missing = keep - set(groups)
        if missing and len(groups) > 1:
            raise ConfigError(f"{path.name}: symbol(s) {sorted(missing)} not in the file; it holds {sorted(groups)}")
        groups = {s: g for s, g in groups.items() if s in keep or len(groups) == 1}

    frames: dict[str, tuple[pd.DataFrame, int]] = {
        s: _frame(g, t, c, f"{path.name} [{s}]") for s, (g, t, c) in groups.items()
    }
    if timeframe is None:
        diffs = [np.diff(np.unique(f["timestamp"].to_numpy())) for f, _ in frames.values()]
        diffs = np.concatenate(diffs) if diffs else np.empty(0)
        diffs = diffs[diffs > 0]
        if not len(diffs):
            raise DataValidationError(f"{path.name}: too few rows to infer the timeframe: pass --timeframe")
        days = diffs / 86_400_000
        if np.all((days >= 28) & (days <= 31)) and len(np.unique(diffs)) > 1:
            raise calendar_error(f"{path.name}: bars 28 to 31 days apart are calendar months")
        timeframe = timeframe_from_ms(int(np.median(diffs)), path.name)
    candles, reports = {}, {}
    funding = {} if wide else {s: funding_from_file(g, t, f"{path.name} [{s}]") for s, (g, t, _) in groups.items()}
    for s, (frame, n_empty) in frames.items():
        if frame.empty:
            continue
        out, rep = validate_candles(frame, timeframe, name=f"{path.name} [{s}]", gap_policy=gap_policy,
                                    now_ms=now_ms, jump_threshold=jump_threshold)
        if n_empty:
            rep.repairs.insert(0, f"dropped {n_empty} row(s) with no values (no bar, e.g. not yet listed)")
        candles[s], reports[s] = out, rep
    if not candles:
        raise DataValidationError(f"{path.name}: no candles found (every row is empty)")
    funding = {s: f for s, f in funding.items() if f is not None and s in candles}
    return ImportResult(path=path, timeframe=timeframe, layout=layout, candles=candles, reports=reports,
                        notes=notes, funding=funding)


def load_candle_file(path: str | Path, **options) -> dict[str, pd.DataFrame]:
    """Validated candle frames per unified symbol; options as :func:`import_candle_file`."""
    return import_candle_file(path, **options).candles


load_candle_file.__signature__ = inspect.signature(import_candle_file).replace(  # type: ignore[attr-defined]
    return_annotation="dict[str, pd.DataFrame]")


class FileSource:
    """:class:`OHLCVSource` over one candle file (read lazily, once). ``name`` is ``file:<stem>``."""

    def __init__(self, path: str | Path, *, name: str | None = None, **options) -> None:
        self.path = Path(path)
        self.name = name or f"file:{self.path.stem}"
        self._options = options
        self._result: ImportResult | None = None

    @property
    def result(self) -> ImportResult:
        if self._result is None:
            self._result = import_candle_file(self.path, **self._options)
        return self._result

    @property
    def timeframe(self) -> str:
        return self.result.timeframe

    def symbols(self) -> list[str]:
        return sorted(self.result.candles)

    def fetch(self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None) -> pd.DataFrame:
        """Closed candles ``since <= timestamp < until`` (UTC ms); the file's timeframe only."""
        if timeframe != self.timeframe:
            raise ConfigError(f"{self.path.name} holds {self.timeframe} bars, not {timeframe}: resample elsewhere")
        sym = normalize_symbol(symbol)
        if sym not in self.result.candles:
            raise ConfigError(f"{self.path.name} has no {sym}; it holds {self.symbols()}")
        df = self.result.candles[sym]
        ts = df["timestamp"].to_numpy()
        lo = -(2**62) if since is None else since
        hi = 2**62 if until is None else until
        return df[(ts >= lo) & (ts < hi)].reset_index(drop=True)

    def market_rules(self, symbol: str) -> MarketRules:
        """Files carry no lot or fee rules: :func:`default_rules` (10 bps, no rounding)."""
        return default_rules(normalize_symbol(symbol))


__all__ = ["FileSource", "ImportResult", "LAYOUTS", "ROLES", "import_candle_file", "load_candle_file"]
