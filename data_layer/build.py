"""Build a point-in-time :class:`FactorTensor` from stored candles and a factor set.

Pipeline: read each symbol from the store -> align on one regular time grid -> compute factors
per asset over its own available bars -> cross-sectional transforms -> normalise -> drop the
warm-up rows -> FactorTensor with meta.

Alignment rules (documented in ``tensor.py`` too):

* the grid runs every ``timeframe`` from the earliest to the latest bar of any symbol; a symbol
  without a bar at a grid row (not yet listed, missing, delisted) is **untradable** there;
  rows marked ``tradable=False`` by the store (gap bars kept by validation) are untradable too;
* an asset is also untradable until it has ``factor_set.warmup + 1`` bars of its own history;
* prices: real OHLCV where the asset has a bar; on a missing bar after the first one the last
  close is carried forward (open = high = low = close = last close, volume 0) so held positions
  can be valued -- never a future price; before the first bar prices are NaN (untradable);
* features on untradable rows are 0 (the env masks them by ``tradable``); a non-finite feature on
  a tradable row is set to 0 and counted in ``meta['nan_count']``;
* the tensor starts at the first row where some asset has finished its warm-up;
* funding (perpetuals): each symbol's stored funding events go on the grid by
  :func:`~factorgym.data_layer.funding.funding_on_grid` (an event is charged at the close of the
  bar containing it, summed per bar, 0 where none); ``data.funding``: ``auto`` (default: a funding
  array when any symbol has stored funding; then every swap symbol -- ``BASE/QUOTE:SETTLE`` --
  must have it, spot symbols get 0), ``true`` (every symbol must have it) or ``false`` (none).

``meta['content_hash']`` is added by :meth:`FactorTensor.save` (hashing 50 MB costs a third of a
build; call ``tensor.content_hash()`` for an in-memory tensor).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from factorgym.data_layer.factors.base import CandlePanel
from factorgym.data_layer.factors.factor_set import FactorSet, load_factor_set, resolve_config_path
from factorgym.data_layer.factors.normalise import fit_train_stats, normalise_offline
from factorgym.data_layer import funding as fstore
from factorgym.data_layer.tensor import FactorTensor, funding_hash
from factorgym.data_layer.timeframes import grid_phase, ms_to_iso, timeframe_to_ms
from factorgym.config_keys import check_keys
from factorgym.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

_DATA_KEYS = {"store", "source", "symbols", "timeframe", "start", "end", "funding"}
_BUILD_KEYS = {"data", "factor_set", "factors", "normalise", "cross_sectional"}


def align_candles(candles: dict[str, pd.DataFrame], timeframe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put each symbol's candles on one regular grid.

    Returns ``timestamps`` int64 [T], ``ohlcv`` float64 [T, A, 5] (NaN = no bar) and
    ``store_tradable`` bool [T, A] (False where there is no bar or the store marked it untradable).
    """
    step = timeframe_to_ms(timeframe)
    firsts = [int(df["timestamp"].iloc[0]) for df in candles.values() if "timestamp" in df.columns and len(df)]
    phase = grid_phase(min(firsts), step) if firsts else 0  # Monday-open weeks share one phase
    series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    for sym, df in candles.items():
        missing = [c for c in ("timestamp", "open", "high", "low", "close", "volume") if c not in df.columns]
        if missing:
            raise DataValidationError(f"{sym}: candles lack column(s) {missing}")
        ts = np.asarray(df["timestamp"], dtype=np.int64)
        if len(ts) and np.any(np.diff(ts) <= 0):
            i = int(np.argmax(np.diff(ts) <= 0)) + 1
            raise DataValidationError(f"{sym}: timestamps must strictly increase; row {i} ({ms_to_iso(int(ts[i]))}) does not")
        off = (ts - phase) % step != 0
        if off.any():
            raise DataValidationError(
                f"{sym}: bar {ms_to_iso(int(ts[np.argmax(off)]))} is not on the {timeframe} grid; resample or check the timeframe"
            )
        vals = df[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
        flag = df["tradable"].to_numpy(dtype=bool) if "tradable" in df.columns else np.ones(len(ts), bool)
        series.append((sym, ts, vals, flag))
    nonempty = [s for s in series if len(s[1])]
    if not nonempty:
        raise DataValidationError(f"no candles for any of {list(candles)} in the requested range")
    first = min(int(s[1][0]) for s in nonempty)
    last = max(int(s[1][-1]) for s in nonempty)
    timestamps = np.arange(first, last + step, step, dtype=np.int64)
    T, A = len(timestamps), len(series)
    ohlcv = np.full((T, A, 5), np.nan)
    store_ok = np.zeros((T, A), dtype=bool)
    for a, (_, ts, vals, flag) in enumerate(series):
        rows = (ts - first) // step
        bad = ~np.isfinite(vals).all(axis=1)  # a row with a non-finite field is no bar
        ohlcv[rows[~bad], a] = vals[~bad]
        store_ok[rows[~bad], a] = flag[~bad]
    return timestamps, ohlcv, store_ok


def _data_hash(timestamps: np.ndarray, ohlcv: np.ndarray, store_ok: np.ndarray, symbols: list[str]) -> str:
    h = hashlib.sha256()
    for arr in (timestamps, ohlcv, store_ok):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update("|".join(symbols).encode())
    return h.hexdigest()


def _carry_prices(ohlcv: np.ndarray) -> np.ndarray:
    """Missing bars after an asset's first bar get the last close (volume 0); earlier stay NaN."""
    has = np.isfinite(ohlcv[..., 3])
    T = ohlcv.shape[0]
    idx = np.where(has, np.arange(T)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)  # row of the latest bar at or before t
    prices = ohlcv.copy()
    fill = ~has & (last >= 0)
    cols = np.nonzero(fill)
    last_close = ohlcv[last[cols], cols[1], 3]
    for k in range(4):
        prices[cols[0], cols[1], k] = last_close
    prices[cols[0], cols[1], 4] = 0.0
    return prices


def build_tensor_from_candles(
    candles: dict[str, pd.DataFrame],
    timeframe: str,
    factor_set: FactorSet | dict[str, Any] | str | Path,
    *,
    source: str = "memory",
    rules: dict[str, dict] | None = None,
    progress: bool = False,
    funding: dict[str, pd.DataFrame] | None = None,
) -> FactorTensor:
    """Build from in-memory candle frames ``{symbol: DataFrame}`` (layout of ``candles.py``).

    ``funding``: optional funding events per symbol (``timestamp``, ``funding_rate``; a symbol left
    out gets 0) -> ``tensor.funding``; None builds a spot tensor (``tensor.funding is None``)."""
    t0 = time.perf_counter()
    fs = factor_set if isinstance(factor_set, FactorSet) else load_factor_set(factor_set)
    symbols = list(candles)
    timestamps, ohlcv, store_ok = align_candles(candles, timeframe)
    panel = CandlePanel.from_arrays(timestamps, ohlcv, symbols, timeframe)
    has = np.isfinite(ohlcv[..., 3])
    seen = np.cumsum(has, axis=0)
    W = fs.warmup
    ready = has & (seen > W)
    if not ready.any():
        longest = {s: int(seen[-1, a]) for a, s in enumerate(symbols)}
        raise ConfigError(
            f"the factor set needs {W + 1} bars of history per asset (warm-up {fs.factor_warmup} + normalisation "
            f"{fs.normalise.warmup}) but the data is shorter: bars per symbol {longest}; load more history or shorten the windows"
        )
    bar = _progress(progress, len(fs.factors) + 2)
    raw = fs.compute(panel, progress=bar)
    mask = fs.normalise_mask
    feats = raw
    stats = None
    if mask.any() and fs.normalise.method != "none":
        sub = raw if mask.all() else raw[:, :, mask]
        if fs.normalise.method == "train":
            stats = fit_train_stats(sub, timestamps, has & (seen > fs.factor_warmup) & store_ok, fs.normalise)
        z = normalise_offline(sub, fs.normalise, stats)
        if mask.all():
            feats = z
        else:
            feats[:, :, mask] = z
        del z, sub
    del raw
    if bar is not None:
        bar.update(1)
    tradable = ready & store_ok
    start = int(np.argmax(ready.any(axis=1)))
    tradable = tradable[start:]
    features = feats[start:].astype(np.float32)
    del feats
    bad = ~np.isfinite(features)
    nan_count = int(np.count_nonzero(bad & tradable[:, :, None]))
    features[bad] = 0.0
    features[~tradable] = 0.0
    del bad
    prices = _carry_prices(ohlcv)[start:]
    data_hash = _data_hash(timestamps, ohlcv, store_ok, symbols)
    meta = tensor_meta(fs, timeframe, source, data_hash, stats, rules, start, nan_count, tradable)
    rates = None
    if funding is not None:
        rates = fstore.funding_grid(funding, symbols, timestamps, timeframe)[start:]
        meta["funding"] = fstore.funding_meta(funding, symbols, source)
    tensor = FactorTensor(features, prices, timestamps[start:].copy(), symbols, fs.names, tradable, meta, rates)
    if rates is not None:
        tensor.meta["funding"]["hash"] = funding_hash(rates)
    tensor.meta["build_seconds"] = round(time.perf_counter() - t0, 4)
    if bar is not None:
        bar.update(1)
        bar.close()
    return tensor


def build_tensor(
    store: Any,
    source: str,
    symbols: list[str],
    timeframe: str,
    factor_set: FactorSet | dict[str, Any] | str | Path,
    start: Any = None,
    end: Any = None,
    *,
    progress: bool = False,
    funding: Any = "auto",
) -> FactorTensor:
    """Read ``symbols`` from a :class:`CandleStore` (``start <= ts < end``) and build the tensor.

    ``start``/``end``: dates (``2023-01-01``) or integers in UTC milliseconds.

    The range includes the warm-up: the first ``warmup`` bars of each asset feed the factors and
    are dropped. Unknown symbols raise a :class:`DataValidationError` naming them.
    ``funding``: ``auto``, True or False (see the module docstring).
    """
    store, lo, hi = open_inputs(store, source, symbols, timeframe, start, end)
    candles = {s: store.read(source, s, timeframe, lo, hi) for s in symbols}
    rules = {s: store.read_rules(source, s).to_dict() for s in symbols}
    events = fstore.stored_funding(store, source, symbols, funding, lo, hi, timeframe)
    tensor = build_tensor_from_candles(candles, timeframe, factor_set, source=source, rules=rules, progress=progress,
                                       funding=events)
    tensor.meta["requested_range"] = [lo, hi]
    return tensor


def tensor_meta(fs: FactorSet, timeframe: str, source: str, data_hash: str, stats, rules, start: int,
                nan_count: int, tradable: np.ndarray) -> dict[str, Any]:
    """The builder's meta (module docstring of ``tensor.py``), shared by the out-of-core build."""
    return {
        "timeframe": timeframe,
        "source": source,
        "data_hash": data_hash,
        "factor_set_hash": fs.hash(),
        "factor_set": fs.config,
        "normalisation": {**fs.config["normalise"], "stats": stats},
        "market_rules": rules or {},
        "warmup_bars": fs.warmup,
        "dropped_warmup_rows": start,
        "nan_count": nan_count,
        "untradable_share": float(1.0 - tradable.mean()) if tradable.size else 1.0,
        "version": _version(),
    }


def open_inputs(store: Any, source: str, symbols: list[str], timeframe: str, start: Any, end: Any):
    """``(CandleStore, lo_ms, hi_ms)`` after checking every symbol is stored (shipped samples are
    loaded on first use); unknown symbols raise a :class:`DataValidationError` naming them."""
    if store is None or isinstance(store, (str, Path)):
        from factorgym.data_layer.store import CandleStore

        store = CandleStore(store)
    if not symbols:
        raise ConfigError("data.symbols is empty: list at least one symbol, e.g. [BTC/USDT]")
    from factorgym.data_layer.splits import as_ms

    lo, hi = as_ms(start), as_ms(end)
    absent = [s for s in symbols if not store.has(source, s, timeframe)]
    if absent and source.startswith("sample:"):
        _load_sample(store, source)
        absent = [s for s in symbols if not store.has(source, s, timeframe)]
    if absent:
        have = sorted({e.symbol for e in store.entries() if e.source == source and e.timeframe == timeframe})
        raise DataValidationError(
            f"symbol(s) {absent} not in the store for source {source!r}, timeframe {timeframe}; "
            f"stored there: {have or 'none'} (download or import them first)"
        )
    return store, lo, hi


def load_build_config(config: str | Path | dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | str | Path]:
    """Read a build config: returns (``data`` mapping, factor-set source).

    ``data: {store, source, symbols, timeframe, start, end, funding}`` plus either ``factor_set:`` (path or
    packaged name) or inline ``factors`` / ``normalise`` / ``cross_sectional``.
    """
    import yaml

    if isinstance(config, dict):
        cfg, where = config, "build config"
    else:
        try:
            path = resolve_config_path(config, folder=".")
        except ConfigError:
            path = resolve_config_path(config, folder="factors")
        try:
            cfg = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        where = str(path)
        if not isinstance(cfg, dict):
            raise ConfigError(f"{where}: expected a mapping with 'data' and 'factors'")
    check_keys(cfg, _BUILD_KEYS, where)
    data = cfg.get("data")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: needs a 'data' mapping with keys {sorted(_DATA_KEYS)}")
    check_keys(data, _DATA_KEYS, f"{where}: data")
    for k in ("source", "symbols", "timeframe"):
        if not data.get(k):
            raise ConfigError(f"{where}: data.{k} is required")
    if isinstance(data["symbols"], str):
        data = {**data, "symbols": [data["symbols"]]}
    if cfg.get("factor_set") and cfg.get("factors"):
        raise ConfigError(f"{where}: give either factor_set or inline factors, not both")
    if cfg.get("factor_set"):
        fs_src: dict[str, Any] | str | Path = cfg["factor_set"]
        if not isinstance(config, dict):
            rel = Path(config).parent / str(fs_src)
            fs_src = rel if rel.exists() else fs_src
    else:
        fs_src = {k: cfg[k] for k in ("factors", "normalise", "cross_sectional") if k in cfg}
    return data, fs_src


def build_from_config(config: str | Path | dict[str, Any], *, store: Any = None, progress: bool = False) -> FactorTensor:
    """Build the tensor a build config describes (``store`` overrides ``data.store``)."""
    data, fs_src = load_build_config(config)
    fs = load_factor_set(fs_src)
    return build_tensor(
        store if store is not None else data.get("store"), data["source"], list(data["symbols"]),
        str(data["timeframe"]), fs, data.get("start"), data.get("end"), progress=progress,
        funding=data.get("funding", "auto"),
    )


def _load_sample(store: Any, source: str) -> None:
    """Write the shipped sample whose store source is ``source`` (``sample:bitfinex``) into ``store``."""
    from factorgym.data_layer.sample import load_sample_into_store, samples

    names = [n for n, s in samples().items() if s.source == source]
    if names:
        log.info("loading shipped sample %s into the store at %s", names, getattr(store, "root", "?"))
        load_sample_into_store(store, names)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from factorgym.progress import progress_bar

    return progress_bar(total=total, desc="factors", unit="step")


def _version() -> str:
    from factorgym import __version__

    return __version__
