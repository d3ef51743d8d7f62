"""Candles -> a Qlib provider directory, and the one Qlib session factorgym drives.

Qlib's wheel ships no ``dump_bin.py``; its file format is simple and written here directly::

    <dir>/calendars/<freq>.txt                    one bar open time per line, UTC, "YYYY-MM-DD HH:MM:SS"
    <dir>/instruments/all.txt                     "<inst>\\t<first time>\\t<last time>" per instrument
    <dir>/features/<inst>/<field>.<freq>.bin      float32 little endian [start_index, v0, v1, ...]
    <dir>/mapping.json                            symbols <-> instruments, first rows, bar counts

Fields: ``open high low close volume`` (volume in base units), ``vwap`` and ``factor`` (1.0: no
split adjustment in crypto). ``vwap`` = quote volume / base volume where the quote volume is known
and the base volume is positive, else the typical price (high + low + close) / 3 -- a
:class:`~factorgym.data_layer.factors.base.CandlePanel` carries no quote volume, so the typical
price is the default; pass ``quote_volume`` (or give the panel a ``quote_volume`` attribute) to
get the real one. Alpha158 reads ``$vwap``.

**Missing bars** follow the ``Factor`` contract (``base.py``): an asset's series is the sequence of
its available bars (finite close). Its bin starts at the calendar index of its first bar and holds
its available bars back to back, so without interior gaps (the common case) the bin lines up with
the calendar exactly; after an interior gap the calendar labels are positions in the asset's own
series, not times. :class:`ProviderDir` keeps the mapping back to grid rows.

Directories are **content keyed** (sha256 of the candles, symbols, timeframe and format version)
under :func:`default_cache_root`: building the same candles twice reuses the directory. They are
written to a temporary sibling and renamed, so a crash never leaves half a provider.

Qlib keeps global state (config, provider wrappers, the in-process cache ``H``). :func:`ensure_qlib`
(re)initialises it for one provider directory with ``region="us"``, ``kernels=1``, no disk caches,
quiet logging and a feature provider that also serves in-memory instruments (the online path).
Re-initialisation clears ``H``; :func:`clear_feature_cache` clears the expression cache between
computations on changing in-memory data. A process drives one Qlib configuration at a time: a
caller's own ``qlib.init`` is replaced on the next factorgym computation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.errors import ConfigError, MissingExtraError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
QLIB_FIELDS = ("open", "high", "low", "close", "volume", "vwap", "factor")
_MEMORY_PREFIX = "zzfgmem_"  # in-memory instruments; never a file name we write
_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def require_qlib(purpose: str = "Qlib factors"):
    """Import ``qlib`` or raise :class:`MissingExtraError` naming the ``qlib`` extra."""
    try:
        import qlib  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("pyqlib", "qlib", purpose) from exc
    return qlib


# ---------------------------------------------------------------------- naming
def qlib_freq(timeframe: str) -> str:
    """Qlib frequency label of a ccxt timeframe: ``1m -> 1min``, ``1h -> 60min``, ``4h -> 240min``,
    ``1d -> day``, ``3d -> 3day``, ``1w -> 1week``.

    Qlib's ``Freq`` knows minutes, days, weeks and months but not hours, and the label must equal
    the calendar and ``.bin`` file suffix (``str(Freq(label)) == label``). Seconds are refused.
    """
    ms = timeframe_to_ms(timeframe)  # validates the form
    unit = str(timeframe).strip()[-1]
    if unit == "s":
        raise ConfigError(f"timeframe {timeframe!r} has no Qlib frequency (Qlib's finest is 1min); use 1m or coarser")
    if unit in ("m", "h"):
        return f"{ms // 60_000}min"
    if unit == "d":
        n = ms // _MS["d"]
        return "day" if n == 1 else f"{n}day"
    return f"{ms // _MS['w']}week"


def instrument_names(symbols: list[str]) -> list[str]:
    """Flat, unique, lower-case Qlib instrument names: ``BTC/USDT`` -> ``a0000_btc_usdt``.

    The index prefix keeps names unique and makes Qlib's (sorted) output follow the asset order.
    """
    return [f"a{i:04d}_{re.sub(r'[^a-z0-9]+', '_', str(s).lower()).strip('_') or 'x'}" for i, s in enumerate(symbols)]


def default_cache_root() -> Path:
    """``$FACTORGYM_QLIB_CACHE`` or ``~/.cache/factorgym/qlib``."""
    env = os.environ.get("FACTORGYM_QLIB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "factorgym" / "qlib"


# ---------------------------------------------------------------------- field arrays
def vwap_from(high, low, close, volume, quote_volume=None) -> np.ndarray:
    """quote / base volume where both are known and volume > 0, else (high + low + close) / 3."""
    high, low, close, volume = (np.asarray(x, dtype=np.float64) for x in (high, low, close, volume))
    typical = (high + low + close) / 3.0
    if quote_volume is None:
        return typical
    q = np.asarray(quote_volume, dtype=np.float64)
    ok = np.isfinite(q) & np.isfinite(volume) & (volume > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, q / np.where(ok, volume, 1.0), typical)


def qlib_field_arrays(o, h, l, c, v, quote_volume=None) -> np.ndarray:  # noqa: E741
    """Stack the seven provider fields (:data:`QLIB_FIELDS`) as float32 ``[..., 7]`` exactly as a
    ``.bin`` stores them, so offline and online paths feed Qlib identical numbers."""
    o, h, l, c, v = (np.asarray(x, dtype=np.float64) for x in (o, h, l, c, v))  # noqa: E741
    vw = vwap_from(h, l, c, v, quote_volume)
    return np.stack([o, h, l, c, v, vw, np.ones_like(c)], axis=-1).astype(np.float32)


# ---------------------------------------------------------------------- provider directory
@dataclasses.dataclass(frozen=True)
class ProviderDir:
    """A written provider directory and how its instruments map back to the panel grid.

    ``first_rows[a]`` is the grid row (= calendar index) of asset ``a``'s first bar and
    ``n_bars[a]`` its number of available bars (0: no instrument written).
    """

    path: Path
    freq: str
    symbols: list[str]
    instruments: list[str]
    first_rows: np.ndarray
    n_bars: np.ndarray
    key: str
    reused: bool

    @property
    def live_instruments(self) -> list[str]:
        """Instruments that have at least one bar (the ones with files)."""
        return [i for i, n in zip(self.instruments, self.n_bars) if n > 0]


def _panel_key(timestamps, ohlcv, quote_volume, symbols, freq) -> str:
    h = hashlib.sha256(f"factorgym-qlib-provider-v{FORMAT_VERSION}|{freq}|{json.dumps(list(symbols))}".encode())
    for arr in (timestamps, ohlcv) + (() if quote_volume is None else (quote_volume,)):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def write_provider(panel, cache_root: str | os.PathLike | None = None, quote_volume=None, keep: int = 16) -> ProviderDir:
    """Write (or reuse) the provider directory of a ``CandlePanel``.

    ``quote_volume``: optional float ``[T, A]`` quote-currency volume for ``$vwap`` (defaults to
    ``panel.quote_volume`` when the panel has one). ``keep``: newest directories kept in the cache
    root (older ones are removed; 0 keeps all).
    """
    if quote_volume is None:
        quote_volume = getattr(panel, "quote_volume", None)
    freq = qlib_freq(panel.timeframe)
    symbols = list(panel.symbols)
    ts = np.asarray(panel.timestamps, dtype=np.int64)
    ohlcv = panel.ohlcv()
    T, A = len(ts), len(symbols)
    if T == 0:
        raise ConfigError("cannot build Qlib data from an empty candle panel (0 bars)")
    qv = None if quote_volume is None else np.asarray(quote_volume, dtype=np.float64)
    if qv is not None and qv.shape != (T, A):
        raise ConfigError(f"quote_volume must be [T, A] = {(T, A)}, got {qv.shape}")
    key = _panel_key(ts, ohlcv, qv, symbols, freq)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    out = root / key
    insts = instrument_names(symbols)
    avail = np.isfinite(ohlcv[..., 3])
    n_bars = avail.sum(axis=0).astype(np.int64)
    first = np.where(n_bars > 0, np.argmax(avail, axis=0), 0).astype(np.int64)
    info = ProviderDir(out, freq, symbols, insts, first, n_bars, key, reused=(out / "mapping.json").exists())
    if info.reused:
        os.utime(out)  # mark as recently used for pruning
        return info
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        cal = _calendar_strings(ts)
        (tmp / "calendars").mkdir()
        (tmp / "calendars" / f"{freq}.txt").write_text("\n".join(cal) + "\n")
        fields = qlib_field_arrays(*(ohlcv[..., k] for k in range(5)), qv)  # [T, A, 7] float32
        lines = []
        for a in np.flatnonzero(n_bars > 0):
            rows = np.flatnonzero(avail[:, a])
            d = tmp / "features" / insts[a]
            d.mkdir(parents=True)
            head = np.float32(first[a])
            for k, name in enumerate(QLIB_FIELDS):
                np.concatenate([[head], fields[rows, a, k]]).astype("<f4").tofile(d / f"{name}.{freq}.bin")
            lines.append(f"{insts[a]}\t{cal[first[a]]}\t{cal[first[a] + n_bars[a] - 1]}")
        (tmp / "instruments").mkdir()
        (tmp / "instruments" / "all.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        mapping = {
            "format_version": FORMAT_VERSION, "freq": freq, "timeframe": panel.timeframe, "symbols": symbols,
            "instruments": insts, "first_rows": first.tolist(), "n_bars": n_bars.tolist(),
            "vwap": "quote_volume / volume" if qv is not None else "typical price (high + low + close) / 3",
        }
        (tmp / "mapping.json").write_text(json.dumps(mapping, indent=1))
        try:
            tmp.rename(out)
        except OSError:  # another process finished the same key first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep > 0:
        _prune(root, keep, out)
    return info


def _calendar_strings(ts: np.ndarray) -> list[str]:
    """UTC bar open times as Qlib reads them (naive, second resolution)."""
    return np.char.replace(np.datetime_as_string(ts.astype("datetime64[ms]"), unit="s"), "T", " ").tolist()


def _prune(root: Path, keep: int, current: Path) -> None:
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "mapping.json").exists()]
    dirs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for p in dirs[keep:]:
        if p != current:
            shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------- the Qlib session
_STATE: dict[str, object] = {"path": None}
_MEMORY: dict[str, dict[str, object]] = {}  # instrument -> field -> pd.Series (float32, RangeIndex)


def _feature_provider_class():
    from qlib.data.data import LocalFeatureProvider

    class FactorgymFeatureProvider(LocalFeatureProvider):
        """Qlib's file feature provider, plus in-memory instruments registered by factorgym."""

        def feature(self, instrument, field, start_index, end_index, freq):
            mem = _MEMORY.get(instrument)
            if mem is None:
                return super().feature(instrument, field, start_index, end_index, freq)
            name = str(field)[1:].lower()
            if name not in mem:
                raise KeyError(f"field ${name} is not provided (known: {', '.join('$' + f for f in mem)})")
            series = mem[name]
            return series.iloc[max(int(start_index), 0) : int(end_index) + 1]

    return FactorgymFeatureProvider


def ensure_qlib(provider_path: str | os.PathLike | None = None) -> None:
    """Initialise Qlib for ``provider_path`` (or, when None, keep the current directory / use an
    empty one in the cache root). Re-initialises only when the directory changes or someone else
    re-configured Qlib; ``sys.excepthook`` is restored (``qlib.init`` replaces it)."""
    require_qlib()
    from qlib.config import C

    if provider_path is None:
        provider_path = _STATE["path"]
        if provider_path is None:
            provider_path = default_cache_root() / "_empty"
            Path(provider_path).mkdir(parents=True, exist_ok=True)
    path = str(Path(provider_path))
    ours = _STATE.get("provider_cls")
    fp = C.get("feature_provider") if C.registered else None
    if _STATE["path"] == path and C.registered and isinstance(fp, dict) and fp.get("class") is ours:
        return
    import qlib
    from qlib.config import REG_US
    from qlib.data.cache import H

    if ours is None:
        ours = _STATE["provider_cls"] = _feature_provider_class()
    hook = sys.excepthook
    try:
        qlib.init(
            provider_uri=path, region=REG_US, kernels=1, expression_cache=None, dataset_cache=None,
            logging_level=logging.WARNING, feature_provider={"class": ours},
        )
    finally:
        sys.excepthook = hook
    H["f"].set_limit_size(20_000)  # alpha158 shares ~350 sub-expressions per instrument
    _STATE["path"] = path


def clear_feature_cache() -> None:
    """Drop Qlib's in-process expression cache (stale once in-memory data changes)."""
    from qlib.data.cache import H

    H["f"].clear()


def set_memory_instrument(name: str, fields: dict[str, np.ndarray]) -> None:
    """Serve ``fields`` (1-D float32 arrays, one per :data:`QLIB_FIELDS`) as instrument ``name``."""
    import pandas as pd

    if not name.startswith(_MEMORY_PREFIX):
        name = _MEMORY_PREFIX + name
    _MEMORY[name] = {k: pd.Series(np.asarray(v, dtype=np.float32), copy=False) for k, v in fields.items()}


def drop_memory_instrument(name: str) -> None:
    _MEMORY.pop(name if name.startswith(_MEMORY_PREFIX) else _MEMORY_PREFIX + name, None)


def memory_instrument_name(token: str) -> str:
    return _MEMORY_PREFIX + re.sub(r"[^a-z0-9_]+", "_", token.lower())
