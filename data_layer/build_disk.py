"""Out-of-core build: the tensor of ``build.py`` written straight into its folder, bit for bit the
same, with peak memory bounded by one asset's factor work or one time chunk -- not by T x A x F.

Passes (a scratch folder inside the output's temporary sibling holds the intermediate files):

1. **Candles**, one symbol at a time: read from the store, aligned on the symbol's own grid
   (``align_candles``, the same checks), kept as a compact file; the global grid is the union.
2. **Factors, asset by asset**: each asset's panel (``[T, 1]`` per field) goes through every factor
   that computes per asset (TA-Lib and custom factors: their ``compute_series`` sees one asset's
   available bars, exactly as in the in-memory build); its raw float64 ``[T, F]`` block is written to
   a file. A factor that does not compute per asset (Qlib expressions, third-party kinds) runs once
   on the full panel and writes its own ``[T, A, k]`` file: memory is then bounded by that factor.
3. **Features in time chunks**: rows ``[t0, t1)`` of every asset are gathered into ``[n, A, F]``;
   cross-sectional transforms (row-wise) and normalisation (the running state of
   ``normalise._State`` carried from chunk to chunk: the same sequential arithmetic as one pass)
   run on the chunk, which is then cast, sanitised and appended to ``features.npy``.
   ``method: train`` fits its statistics on the fit range gathered once (that range is in memory).
4. **Prices in time chunks** (last close carried per asset across chunks), timestamps, tradable,
   funding; the content hash and the data hash are streamed in the same order as
   :meth:`FactorTensor.content_hash` and ``build._data_hash`` read them.

Files are written with plain writes (page cache, not the process's memory); the folder appears
atomically (temp sibling + rename), like :meth:`FactorTensor.save`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from factorgym.fsutil import temp_dir_beside
from factorgym.data_layer import funding as fstore
from factorgym.data_layer.build import align_candles, open_inputs, tensor_meta
from factorgym.data_layer.factors.base import CandlePanel
from factorgym.data_layer.factors.factor_set import FactorSet, load_factor_set
from factorgym.data_layer.factors.normalise import _State, fit_train_stats, normalise_offline
from factorgym.data_layer.factors.transforms import cross_sectional
from factorgym.data_layer.tensor import FORMAT_VERSION, FactorTensor, funding_hash, replace_folder, write_meta
from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.errors import ConfigError, DataValidationError

CHUNK_BYTES = 32 << 20  # float64 bytes of one time chunk [n, A, F]


class _Scratch:
    """Per-asset candle and raw-factor files of one build, read back by row ranges."""

    def __init__(self, folder: Path, n_assets: int) -> None:
        self.dir = folder
        self.span: list[tuple[int, int]] = [(0, 0)] * n_assets  # (first grid row, rows) of each asset's candles

    def put_candles(self, a: int, first_row: int, ohlcv: np.ndarray) -> None:
        np.ascontiguousarray(ohlcv, dtype=np.float64).tofile(self.dir / f"ohlcv{a}.bin")
        self.span[a] = (first_row, len(ohlcv))

    def ohlcv(self, a: int, t0: int, t1: int) -> np.ndarray:
        """float64 ``[t1 - t0, 5]`` of asset ``a`` on the global grid (NaN outside its candles)."""
        out = np.full((t1 - t0, 5), np.nan)
        first, n = self.span[a]
        lo, hi = max(t0, first), min(t1, first + n)
        if hi > lo:
            out[lo - t0 : hi - t0] = np.fromfile(self.dir / f"ohlcv{a}.bin", dtype=np.float64, count=(hi - lo) * 5,
                                                 offset=(lo - first) * 5 * 8).reshape(-1, 5)
        return out

    def rows(self, name: str, t0: int, t1: int, width: int) -> np.ndarray:
        """Rows ``[t0, t1)`` of a float64 row-major file of ``width`` values per row."""
        return np.fromfile(self.dir / name, dtype=np.float64, count=(t1 - t0) * width,
                           offset=t0 * width * 8).reshape(t1 - t0, width)


class _NpyWriter:
    """Append rows to a ``.npy`` file of a known shape, hashing them as ``content_hash`` does."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype, hasher) -> None:
        self.fh = open(path, "wb")
        self.dtype = np.dtype(dtype)
        np.lib.format.write_array_header_1_0(
            self.fh, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})
        self.hasher = hasher
        hasher.update(f"{path.stem}{shape}{self.dtype}".encode())

    def write(self, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(rows, dtype=self.dtype).tobytes()
        self.fh.write(data)
        self.hasher.update(data)

    def close(self) -> None:
        self.fh.close()


def _stage_candles(store, source: str, symbols: list[str], timeframe: str, lo, hi, scratch: _Scratch):
    """Pass 1: returns ``timestamps`` int64 [T] and ``store_ok`` bool [T, A]."""
    step = timeframe_to_ms(timeframe)
    staged = []
    for a, sym in enumerate(symbols):
        df = store.read(source, sym, timeframe, lo, hi)
        if len(df) == 0:
            staged.append(None)
            continue
        ts, ohlcv, ok = align_candles({sym: df}, timeframe)
        del df
        np.ascontiguousarray(ohlcv[:, 0, :]).tofile(scratch.dir / f"ohlcv{a}.bin")
        staged.append((int(ts[0]), len(ts), ok[:, 0].copy()))
    if all(s is None for s in staged):
        raise DataValidationError(f"no candles for any of {symbols} in the requested range")
    first = min(s[0] for s in staged if s)
    last = max(s[0] + (s[1] - 1) * step for s in staged if s)
    timestamps = np.arange(first, last + step, step, dtype=np.int64)
    store_ok = np.zeros((len(timestamps), len(symbols)), dtype=bool)
    for a, s in enumerate(staged):
        if s:
            row = (s[0] - first) // step
            scratch.span[a] = (row, s[1])
            store_ok[row : row + s[1], a] = s[2]
    return timestamps, store_ok


def _factor_pass(fs: FactorSet, symbols, timestamps, timeframe, scratch: _Scratch, bar) -> tuple[list[int], list[int]]:
    """Pass 2: per-asset raw files ``raw{a}.bin`` ``[T, len(cols)]`` for the per-asset factors and
    ``factor{i}.bin`` ``[T, A, k]`` for the others. Returns (per-asset columns, full-panel factor ids)."""
    T, A = len(timestamps), len(symbols)
    per_asset = [i for i, f in enumerate(fs.factors) if hasattr(f, "compute_series")]
    slices = fs.column_slices
    cols = [j for i in per_asset for j in range(slices[i].start, slices[i].stop)]
    for a, sym in enumerate(symbols):
        if not per_asset:
            break
        panel = CandlePanel.from_arrays(timestamps, scratch.ohlcv(a, 0, T)[:, None, :], [sym], timeframe)
        raw = np.empty((T, len(cols)))
        j = 0
        for i in per_asset:
            f, k = fs.factors[i], len(fs.factors[i].names)
            vals = np.asarray(f.compute(panel), dtype=np.float64)
            if vals.shape != (T, 1, k):
                raise ConfigError(f"factor {f.names[0]!r} returned shape {vals.shape}, expected {(T, 1, k)}")
            raw[:, j : j + k] = vals[:, 0, :]
            j += k
        raw.tofile(scratch.dir / f"raw{a}.bin")
        del raw, panel
        if bar is not None:
            bar.update(1)
    whole = [i for i in range(len(fs.factors)) if i not in per_asset]
    if whole:  # factors that need every asset at once: one factor's [T, A, k] at a time
        ohlcv = np.stack([scratch.ohlcv(a, 0, T) for a in range(A)], axis=1)
        panel = CandlePanel.from_arrays(timestamps, ohlcv, symbols, timeframe)
        del ohlcv
        for i in whole:
            f, k = fs.factors[i], len(fs.factors[i].names)
            vals = np.asarray(f.compute(panel), dtype=np.float64)
            if vals.shape != (T, A, k):
                raise ConfigError(f"factor {f.names[0]!r} returned shape {vals.shape}, expected {(T, A, k)}")
            vals.tofile(scratch.dir / f"factor{i}.bin")
            del vals
    return cols, whole


def _gather(fs: FactorSet, scratch: _Scratch, cols: list[int], whole: list[int], A: int, t0: int, t1: int) -> np.ndarray:
    """Raw features of rows ``[t0, t1)`` as float64 ``[n, A, F]``, cross-sectional transforms applied."""
    n, F = t1 - t0, len(fs.names)
    block = np.empty((n, A, F))
    if cols:
        for a in range(A):
            block[:, a, cols] = scratch.rows(f"raw{a}.bin", t0, t1, len(cols))
    slices = fs.column_slices
    for i in whole:
        k = slices[i].stop - slices[i].start
        block[:, :, slices[i]] = scratch.rows(f"factor{i}.bin", t0, t1, A * k).reshape(n, A, k)
    for cs, sl in zip(fs.cross_sectional, slices):
        if cs != "none":
            block[:, :, sl] = cross_sectional(np.ascontiguousarray(block[:, :, sl]), cs)
    return block


class _FitRows:
    """``rows[lo:hi]`` of the masked raw features for :func:`fit_train_stats` (gathered on demand)."""

    def __init__(self, gather, mask: np.ndarray) -> None:
        self.gather, self.mask = gather, mask

    def __getitem__(self, sl: slice) -> np.ndarray:
        block = self.gather(sl.start, sl.stop)
        return block if self.mask.all() else block[:, :, self.mask]


def build_tensor_to_disk(
    store: Any,
    source: str,
    symbols: list[str],
    timeframe: str,
    factor_set: FactorSet | dict[str, Any] | str | Path,
    out: str | Path,
    start: Any = None,
    end: Any = None,
    *,
    funding: Any = "auto",
    chunk_rows: int | None = None,
    progress: bool = False,
) -> FactorTensor:
    """Build what :func:`~factorgym.data_layer.build.build_tensor` builds, into the folder ``out``
    (replaced atomically), and return it loaded memory-mapped. ``chunk_rows``: rows per time chunk
    (default: about :data:`CHUNK_BYTES` of float64 features)."""
    t_start = time.perf_counter()
    fs = factor_set if isinstance(factor_set, FactorSet) else load_factor_set(factor_set)
    symbols = list(symbols)
    store, lo, hi = open_inputs(store, source, symbols, timeframe, start, end)
    rules = {s: store.read_rules(source, s).to_dict() for s in symbols}
    events = fstore.stored_funding(store, source, symbols, funding, lo, hi, timeframe)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)  # follows the umask like any mkdir
    try:
        scratch = _Scratch(tmp / "scratch", len(symbols))
        scratch.dir.mkdir()
        meta = _build(fs, store, source, symbols, timeframe, lo, hi, rules, events, scratch, tmp, chunk_rows, progress)
        shutil.rmtree(scratch.dir)
        meta["requested_range"] = [lo, hi]
        meta["build_seconds"] = round(time.perf_counter() - t_start, 4)
        write_meta(tmp, meta)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FactorTensor.load(out, mmap=True)


def _build(fs, store, source, symbols, timeframe, lo, hi, rules, events, scratch, folder, chunk_rows, progress) -> dict:
    """Passes 1-4 into ``folder``; returns the meta (``build.py``'s keys, ``content_hash`` included)."""
    A, F = len(symbols), len(fs.names)
    timestamps, store_ok = _stage_candles(store, source, symbols, timeframe, lo, hi, scratch)
    T = len(timestamps)
    W = fs.warmup
    ready = np.zeros((T, A), dtype=bool)
    fit_valid = np.zeros((T, A), dtype=bool) if fs.normalise.method == "train" else None
    bars = {}
    for a, sym in enumerate(symbols):
        has = np.isfinite(scratch.ohlcv(a, 0, T)[:, 3])
        seen = np.cumsum(has)
        ready[:, a] = has & (seen > W)
        if fit_valid is not None:
            fit_valid[:, a] = has & (seen > fs.factor_warmup) & store_ok[:, a]
        bars[sym] = int(seen[-1]) if T else 0
    if not ready.any():
        raise ConfigError(
            f"the factor set needs {W + 1} bars of history per asset (warm-up {fs.factor_warmup} + normalisation "
            f"{fs.normalise.warmup}) but the data is shorter: bars per symbol {bars}; load more history or shorten the windows"
        )
    bar = None
    if progress:
        from factorgym.progress import progress_bar

        bar = progress_bar(total=A, desc="factors (per asset)", unit="asset")
    cols, whole = _factor_pass(fs, symbols, timestamps, timeframe, scratch, bar)
    if bar is not None:
        bar.close()
    n = int(chunk_rows or max(1, CHUNK_BYTES // max(1, A * F * 8)))
    if n < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")

    def gather(t0: int, t1: int) -> np.ndarray:
        return _gather(fs, scratch, cols, whole, A, t0, t1)

    tradable_all = ready & store_ok
    start = int(np.argmax(ready.any(axis=1)))
    content = hashlib.sha256()
    stats, nan_count = _features_pass(fs, gather, timestamps, tradable_all, fit_valid, start, n, folder, content)

    data_hash = _prices_pass(scratch, timestamps, store_ok, symbols, start, n, folder, content)
    Tn = T - start

    tradable = tradable_all[start:]
    ts_out = timestamps[start:].copy()
    arrays: dict[str, np.ndarray] = {"timestamps": ts_out, "tradable": tradable}
    rates = None
    if events is not None:
        rates = fstore.funding_grid(events, symbols, timestamps, timeframe)[start:]
        arrays["funding"] = rates
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr, allow_pickle=False)
        content.update(f"{name}{arr.shape}{arr.dtype}".encode())
        content.update(np.ascontiguousarray(arr).tobytes())
    content.update(json.dumps([symbols, fs.names]).encode())

    meta = tensor_meta(fs, timeframe, source, data_hash, stats, rules, start, nan_count, tradable)
    if rates is not None:
        meta["funding"] = {**fstore.funding_meta(events, symbols, source), "hash": funding_hash(rates)}
    meta.update(format_version=FORMAT_VERSION, symbols=symbols, feature_names=fs.names, shape=[Tn, A, F],
                content_hash=content.hexdigest())
    return meta


def _features_pass(fs: FactorSet, gather, timestamps, tradable_all, fit_valid, start: int, n: int, folder: Path,
                   content) -> tuple[dict | None, int]:
    """Pass 3: chunks of ``n`` rows gathered, normalised (running state carried), cast, sanitised and
    appended to ``features.npy``; returns the train statistics (or None) and the NaN count."""
    T, A = tradable_all.shape
    cfg, mask = fs.normalise, fs.normalise_mask
    normalising = bool(mask.any()) and cfg.method != "none"
    stats = None
    if normalising and cfg.method == "train":
        stats = fit_train_stats(_FitRows(gather, mask), timestamps, fit_valid, cfg)
    state = _State(A * int(mask.sum()), cfg) if normalising and cfg.method != "train" else None
    writer = _NpyWriter(folder / "features.npy", (T - start, A, len(fs.names)), np.float32, content)
    nan_count = 0
    for t0 in range(0, T, n):
        t1 = min(T, t0 + n)
        feats = gather(t0, t1)
        if normalising:
            sub = feats if mask.all() else feats[:, :, mask]
            m = sub.shape[2]
            z = normalise_offline(sub, cfg, stats) if state is None else state.run(sub.reshape(t1 - t0, A * m)).reshape(t1 - t0, A, m)
            if mask.all():
                feats = z
            else:
                feats[:, :, mask] = z
            del z, sub
        r0 = max(t0, start)
        if r0 < t1:
            part = feats[r0 - t0 :].astype(np.float32)
            trad = tradable_all[r0:t1]
            bad = ~np.isfinite(part)
            nan_count += int(np.count_nonzero(bad & trad[:, :, None]))
            part[bad] = 0.0
            part[~trad] = 0.0
            writer.write(part)
        del feats
    writer.close()
    return stats, nan_count


def _prices_pass(scratch: _Scratch, timestamps, store_ok, symbols, start: int, n: int, folder: Path, content) -> str:
    """Pass 4: prices in chunks of ``n`` rows (last close carried across chunks) appended to
    ``prices.npy``; returns the data hash (``build._data_hash`` over the aligned candles)."""
    T, A = store_ok.shape
    data = hashlib.sha256(np.ascontiguousarray(timestamps).tobytes())
    writer = _NpyWriter(folder / "prices.npy", (T - start, A, 5), np.float64, content)
    last_close = np.full(A, np.nan)
    for t0 in range(0, T, n):
        t1 = min(T, t0 + n)
        ohlcv = np.stack([scratch.ohlcv(a, t0, t1) for a in range(A)], axis=1)
        data.update(ohlcv.tobytes())
        prices = _carry(ohlcv, last_close)
        if t1 > start:
            writer.write(prices[max(t0, start) - t0 :])
    writer.close()
    data.update(np.ascontiguousarray(store_ok).tobytes())
    data.update("|".join(symbols).encode())
    return data.hexdigest()


def _carry(ohlcv: np.ndarray, last_close: np.ndarray) -> np.ndarray:
    """``build._carry_prices`` for one chunk: a missing bar after an asset's first one gets the last
    close (volume 0); ``last_close`` [A] carries it across chunks (NaN = no bar yet) and is updated."""
    has = np.isfinite(ohlcv[..., 3])
    n = ohlcv.shape[0]
    idx = np.where(has, np.arange(n)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)
    prices = ohlcv.copy()
    fill = ~has & ((last >= 0) | np.isfinite(last_close)[None, :])
    rows, cols = np.nonzero(fill)
    src = last[rows, cols]
    value = np.where(src >= 0, ohlcv[np.maximum(src, 0), cols, 3], last_close[cols])
    for k in range(4):
        prices[rows, cols, k] = value
    prices[rows, cols, 4] = 0.0
    seen = last[-1] >= 0 if n else np.zeros(len(last_close), bool)
    last_close[seen] = ohlcv[last[-1][seen], np.flatnonzero(seen), 3]
    return prices


def build_from_config_to_disk(config, out: str | Path, *, store: Any = None, chunk_rows: int | None = None,
                              progress: bool = False) -> FactorTensor:
    """:func:`~factorgym.data_layer.build.build_from_config`, out of core, into ``out``."""
    from factorgym.data_layer.build import load_build_config

    data, fs_src = load_build_config(config)
    return build_tensor_to_disk(
        store if store is not None else data.get("store"), data["source"], list(data["symbols"]),
        str(data["timeframe"]), load_factor_set(fs_src), out, data.get("start"), data.get("end"),
        funding=data.get("funding", "auto"), chunk_rows=chunk_rows, progress=progress,
    )
