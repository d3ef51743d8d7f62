"""Contract 1: the ``FactorTensor`` -- arrays and names, nothing else.

| field          | shape / dtype       | meaning                                                    |
| -------------- | ------------------- | ---------------------------------------------------------- |
| features       | float32 [T, A, F]   | factor values; row t known at the close of bar t           |
| prices         | float64 [T, A, 5]   | open, high, low, close, volume of each bar                 |
| timestamps     | int64 [T]           | bar open time, UTC milliseconds                            |
| symbols        | list[str]           | unified symbols (``BTC/USDT``)                             |
| feature_names  | list[str]           | one per F                                                  |
| tradable       | bool [T, A]         | false before listing, on missing bars, after delisting     |
| meta           | dict                | timeframe, source, hashes, normalisation stats, version... |
| funding        | float64 [T, A], opt | funding rate charged at the close of bar t; None for spot  |

Funding (perpetual swaps): ``funding[t, a]`` is the fraction of asset ``a``'s position notional
(at bar t's close) paid at the close of bar t; positive = longs pay shorts, 0 = no funding event in
the bar. It is the sum of the funding events whose time falls inside bar t (``open <= time <
open + timeframe``), so a rate is charged at the close of the bar in which it is settled, never
earlier. The tensor holds only finite values: :meth:`FactorTensor.from_arrays` turns a missing
(non-finite) rate on an untradable row into 0 (no bar, no charge -- like the features) and
refuses one on a tradable row (a missing rate there is a data gap a quant must see, not a silent
zero). ``|rate| > 1`` is refused too (a percentage or basis points given as a fraction). Spot
tensors have ``funding = None``. ``meta['funding']`` records the source and a hash of the array.

Saved as a folder of ``.npy`` files plus ``meta.json`` (``funding.npy`` only when present);
:meth:`FactorTensor.load` memory-maps the arrays so a tensor larger than memory still trains.

Untradable bars (as built by ``factorgym.data_layer.build``): features are 0; prices are NaN before
an asset's first bar (not listed yet), and on a missing or delisted bar after it they carry the
last close forward (open = high = low = close = last close, volume 0) so held positions can be
valued -- never a later price. A tradable bar always has finite, positive prices.

Meta written by the builder: ``timeframe``, ``source``, ``data_hash`` (aligned candles),
``content_hash`` (these arrays), ``factor_set_hash`` and ``factor_set`` (the resolved definitions,
enough to rebuild the online path), ``normalisation`` (method and fitted statistics),
``market_rules`` per symbol, ``warmup_bars``, ``nan_count``, ``untradable_share``, ``version``.
Splits: :meth:`FactorTensor.split` / :meth:`FactorTensor.walk_forward` (``data_layer/splits.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from factorgym.fsutil import temp_dir_beside
from factorgym.errors import DataValidationError

FORMAT_VERSION = 1
PRICE_FIELDS = ("open", "high", "low", "close", "volume")
_ARRAYS = ("features", "prices", "timestamps", "tradable")
MAX_FUNDING_RATE = 1.0  # |rate| above this is a unit mistake (percent, basis points), not a funding rate


@dataclasses.dataclass
class FactorTensor:
    features: np.ndarray
    prices: np.ndarray
    timestamps: np.ndarray
    symbols: list[str]
    feature_names: list[str]
    tradable: np.ndarray
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    funding: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.symbols = [str(s) for s in self.symbols]
        self.feature_names = [str(n) for n in self.feature_names]
        self._check()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        features,
        prices,
        timestamps,
        symbols=None,
        feature_names=None,
        tradable=None,
        meta: dict | None = None,
        funding=None,
    ) -> "FactorTensor":
        """Build from plain arrays. ``prices`` may be ``[T, A, 5]`` or close-only ``[T, A]``
        (open = high = low = close, volume 0). ``tradable`` defaults to "finite close".

        ``funding``: optional ``[T, A]`` rates (fraction of notional charged at each bar's close,
        positive = longs pay); non-finite values on untradable rows become 0, on tradable rows
        they raise (see the module docstring)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim == 2:
            features = features[:, :, None]
        prices = np.asarray(prices, dtype=np.float64)
        if prices.ndim == 2:
            prices = np.stack([prices, prices, prices, prices, np.zeros_like(prices)], axis=-1)
        timestamps = np.asarray(timestamps, dtype=np.int64)
        if features.ndim != 3:
            raise DataValidationError(f"features must be [T, A, F], got shape {features.shape}")
        T, A, F = features.shape
        symbols = list(symbols) if symbols is not None else [f"ASSET{i}" for i in range(A)]
        feature_names = list(feature_names) if feature_names is not None else [f"f{j}" for j in range(F)]
        if tradable is None:
            tradable = np.isfinite(prices[..., 3]) & (prices[..., 3] > 0) if prices.ndim == 3 else None
        meta = {"timeframe": "1h", "source": "arrays", **(meta or {})}
        tradable = np.asarray(tradable, dtype=bool)
        if funding is not None:
            funding = clean_funding(funding, tradable, symbols, timestamps)
            meta["funding"] = {"source": "arrays", **meta.get("funding", {}), "hash": funding_hash(funding)}
        return cls(features, prices, timestamps, symbols, feature_names, tradable, meta, funding)

    # ------------------------------------------------------------------ shape
    @property
    def n_bars(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[2])

    @property
    def timeframe(self) -> str:
        return str(self.meta.get("timeframe", "1h"))

    def __len__(self) -> int:
        return self.n_bars

    def __repr__(self) -> str:
        from factorgym.data_layer.timeframes import ms_to_iso

        span = f"{ms_to_iso(int(self.timestamps[0]))} .. {ms_to_iso(int(self.timestamps[-1]))}" if self.n_bars else "empty"
        return (
            f"FactorTensor(T={self.n_bars}, A={self.n_assets}, F={self.n_features}, "
            f"timeframe={self.timeframe!r}, symbols={self.symbols}, {span})"
        )

    def _check(self) -> None:
        f, p, t, m = self.features, self.prices, self.timestamps, self.tradable
        if f.ndim != 3:
            raise DataValidationError(f"features must be [T, A, F], got shape {f.shape}")
        T, A, F = f.shape
        if p.shape != (T, A, 5):
            raise DataValidationError(f"prices must be [T, A, 5] = {(T, A, 5)} (open, high, low, close, volume), got {p.shape}")
        if t.shape != (T,):
            raise DataValidationError(f"timestamps must be [T] = ({T},), got {t.shape}")
        if m.shape != (T, A):
            raise DataValidationError(f"tradable must be [T, A] = {(T, A)}, got {m.shape}")
        if len(self.symbols) != A:
            raise DataValidationError(f"{len(self.symbols)} symbols given for {A} assets")
        if len(self.feature_names) != F:
            raise DataValidationError(f"{len(self.feature_names)} feature names given for {F} features")
        if len(set(self.feature_names)) != F:
            dup = sorted({n for n in self.feature_names if self.feature_names.count(n) > 1})
            raise DataValidationError(f"duplicate feature names: {dup}")
        if f.dtype != np.float32 or p.dtype != np.float64 or t.dtype != np.int64 or m.dtype != bool:
            raise DataValidationError(
                f"dtypes must be features float32, prices float64, timestamps int64, tradable bool; "
                f"got {f.dtype}, {p.dtype}, {t.dtype}, {m.dtype}"
            )
        if self.funding is not None:
            _check_funding(self.funding, T, A, self.symbols)
        if T > 1 and not isinstance(t, np.memmap) and np.any(np.diff(t) <= 0):
            i = int(np.argmax(np.diff(t) <= 0)) + 1
            raise DataValidationError(f"timestamps must strictly increase; row {i} ({t[i]}) is not after row {i - 1} ({t[i - 1]})")

    # ------------------------------------------------------------------ slicing
    def slice_bars(self, start: int, stop: int) -> "FactorTensor":
        """Rows ``start:stop`` as views (no copy, memory maps stay maps)."""
        meta = {k: v for k, v in self.meta.items() if k != "content_hash"}  # the parent's hash is not the slice's
        funding = None if self.funding is None else self.funding[start:stop]
        if funding is not None:  # [T, A] float64 is small: the slice's own hash
            meta["funding"] = {**meta.get("funding", {}), "hash": funding_hash(funding)}
        return FactorTensor(
            self.features[start:stop], self.prices[start:stop], self.timestamps[start:stop],
            list(self.symbols), list(self.feature_names), self.tradable[start:stop], meta, funding,
        )

    def slice_time(self, start_ms: int | None = None, end_ms: int | None = None) -> "FactorTensor":
        """Bars with ``start_ms <= timestamp < end_ms``."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.timestamps, start_ms, side="left"))
        hi = self.n_bars if end_ms is None else int(np.searchsorted(self.timestamps, end_ms, side="left"))
        return self.slice_bars(lo, hi)

    def split(self, train, validation=None, test=None, embargo: int = 0) -> dict[str, "FactorTensor"]:
        """Train/validation/test by time ranges with an embargo; see ``data_layer/splits.py``."""
        from factorgym.data_layer.splits import split

        return split(self, train, validation, test, embargo)

    def walk_forward(self, n_folds: int, test_bars: int, train_bars: int | None = None, embargo: int = 0):
        """Walk-forward folds; see ``data_layer/splits.py``."""
        from factorgym.data_layer.splits import walk_forward

        return walk_forward(self, n_folds, test_bars, train_bars, embargo)

    @property
    def factor_set_hash(self) -> str | None:
        return self.meta.get("factor_set_hash")

    @property
    def has_funding(self) -> bool:
        return self.funding is not None

    def _array_names(self) -> tuple[str, ...]:
        return _ARRAYS + (("funding",) if self.funding is not None else ())

    # ------------------------------------------------------------------ hashing
    def content_hash(self) -> str:
        """sha256 over the arrays and names (not ``meta``), chunked so a memory map is not loaded whole.
        ``funding`` counts only when present (a spot tensor's hash is unchanged by the field)."""
        h = hashlib.sha256()
        for name in self._array_names():
            arr = getattr(self, name)
            h.update(f"{name}{arr.shape}{arr.dtype}".encode())
            flat = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(-1, 1)
            step = max(1, (1 << 24) // max(1, flat.strides[0]))
            for i in range(0, len(flat), step):
                h.update(np.ascontiguousarray(flat[i : i + step]).tobytes())
        h.update(json.dumps([self.symbols, self.feature_names]).encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``features.npy``, ``prices.npy``, ``timestamps.npy``, ``tradable.npy``, ``meta.json``
        (and ``funding.npy`` when the tensor has funding).

        Written to a temporary sibling folder and renamed, so a crash never leaves half a tensor.
        """
        out = Path(directory)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(out)  # follows the umask like any mkdir
        try:
            for name in self._array_names():
                np.save(tmp / f"{name}.npy", np.asarray(getattr(self, name)), allow_pickle=False)
            if self.funding is not None:
                self.meta["funding"] = {**self.meta.get("funding", {}), "hash": funding_hash(self.funding)}
            meta = {
                **self.meta,
                "format_version": FORMAT_VERSION,
                "symbols": self.symbols,
                "feature_names": self.feature_names,
                "shape": [self.n_bars, self.n_assets, self.n_features],
            }
            meta.setdefault("content_hash", self.content_hash())
            self.meta["content_hash"] = meta["content_hash"]  # the saved arrays are these: same hash
            write_meta(tmp, meta)
            replace_folder(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> "FactorTensor":
        """Load a saved tensor; with ``mmap=True`` arrays are read-only memory maps (read lazily)."""
        d = Path(directory)
        meta_path = d / "meta.json"
        if not meta_path.exists():
            raise DataValidationError(f"{d} is not a saved FactorTensor (no meta.json); build one with `factorgym build`")
        meta = json.loads(meta_path.read_text())
        arrays = {}
        for name in _ARRAYS:
            path = d / f"{name}.npy"
            if not path.exists():
                raise DataValidationError(f"{d}: {name}.npy is missing; the tensor folder is incomplete")
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        funding = None
        if (d / "funding.npy").exists():
            funding = np.load(d / "funding.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        elif "funding" in meta:
            raise DataValidationError(f"{d}: funding.npy is missing but meta.json records funding; the tensor folder is incomplete")
        symbols = meta.pop("symbols")
        feature_names = meta.pop("feature_names")
        meta.pop("shape", None)
        return cls(arrays["features"], arrays["prices"], arrays["timestamps"], symbols, feature_names, arrays["tradable"],
                   meta, funding)

    # ------------------------------------------------------------------ inspection
    def to_frame(self):
        """Long pandas frame (timestamp, symbol) x (features, OHLCV, tradable) for inspection only."""
        import pandas as pd

        T, A, F = self.features.shape
        idx = pd.MultiIndex.from_product(
            [pd.to_datetime(np.asarray(self.timestamps), unit="ms", utc=True), self.symbols], names=["time", "symbol"]
        )
        data = {n: np.asarray(self.features[:, :, j]).reshape(-1) for j, n in enumerate(self.feature_names)}
        for k, n in enumerate(PRICE_FIELDS):
            data[n] = np.asarray(self.prices[:, :, k]).reshape(-1)
        data["tradable"] = np.asarray(self.tradable).reshape(-1)
        if self.funding is not None:
            data["funding"] = np.asarray(self.funding).reshape(-1)
        return pd.DataFrame(data, index=idx)


def write_meta(folder: Path, meta: dict) -> None:
    (folder / "meta.json").write_text(json.dumps(_jsonable(meta), indent=1, sort_keys=True))


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an existing ``out`` by renames only."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def funding_hash(funding: np.ndarray) -> str:
    """sha256 of a funding array (shape, dtype and values)."""
    arr = np.ascontiguousarray(funding)
    return hashlib.sha256(f"{arr.shape}{arr.dtype}".encode() + arr.tobytes()).hexdigest()


def clean_funding(funding, tradable: np.ndarray, symbols: list[str], timestamps: np.ndarray) -> np.ndarray:
    """``funding`` as float64 ``[T, A]``: non-finite on untradable rows -> 0; non-finite on a tradable
    row or ``|rate| > MAX_FUNDING_RATE`` -> :class:`DataValidationError` naming the symbol and bar."""
    f = np.array(funding, dtype=np.float64)  # a copy: the caller's array is not changed
    if f.shape != tradable.shape:
        raise DataValidationError(f"funding must be [T, A] = {tradable.shape}, got shape {f.shape}")
    bad = ~np.isfinite(f)
    on_bar = bad & tradable
    if on_bar.any():
        t, a = (int(i[0]) for i in np.nonzero(on_bar))
        raise DataValidationError(
            f"funding of {symbols[a]} at row {t} ({_iso(timestamps, t)}) is {f[t, a]} on a tradable bar; "
            f"give 0 where no funding was charged"
        )
    f[bad] = 0.0
    return f


def _check_funding(f: np.ndarray, T: int, A: int, symbols: list[str]) -> None:
    if f.shape != (T, A):
        raise DataValidationError(f"funding must be [T, A] = {(T, A)}, got shape {f.shape}")
    if f.dtype != np.float64:
        raise DataValidationError(f"funding must be float64, got {f.dtype}")
    if isinstance(f, np.memmap):
        return  # saved tensors were checked before saving; a full scan would read the whole map
    bad = ~np.isfinite(f) | (np.abs(f) > MAX_FUNDING_RATE)
    if bad.any():
        t, a = (int(i[0]) for i in np.nonzero(bad))
        raise DataValidationError(
            f"funding of {symbols[a]} at row {t} is {f[t, a]}: rates must be finite fractions of notional "
            f"with |rate| <= {MAX_FUNDING_RATE} (0.0001 = 0.01%; was a percentage given?)"
        )


def _iso(timestamps: np.ndarray, t: int) -> str:
    from factorgym.data_layer.timeframes import ms_to_iso

    return ms_to_iso(int(timestamps[t])) if t < len(timestamps) else "?"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
