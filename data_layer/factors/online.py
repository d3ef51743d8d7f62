"""Online factor rows: the tensor's feature definitions, one closed bar at a time.

:class:`OnlineFactors` holds one :class:`OnlineFactor` per factor of a set (TA-Lib stream handles,
custom window recomputes, Qlib's online path), then applies the same cross-sectional transform,
normalisation and masking as :func:`factorgym.data_layer.build.build_tensor`, so row ``t`` equals
the offline tensor's row for the same bar (tested to 1e-5 on real data):

* features of an asset that has no bar, is still inside its warm-up (fewer than
  ``factor_set.warmup + 1`` bars of its own) or is marked untradable are 0, as in the tensor;
* non-finite values on tradable rows are 0 (the tensor counts them in ``meta['nan_count']``).

Example::

    online = OnlineFactors.from_tensor(tensor)          # same set, saved normalisation stats
    for ts, bar in feed:                                 # bar: float64 [A, 5] OHLCV
        row = online.update(ts, bar)                     # float64 [A, F]; online.tradable -> bool [A]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from factorgym.data_layer.factors.factor_set import FactorSet, load_factor_set
from factorgym.data_layer.factors.normalise import OnlineNormaliser
from factorgym.data_layer.factors.transforms import cross_sectional
from factorgym.errors import ConfigError


class OnlineFactors:
    """Feature rows for ``symbols`` from a factor set (and saved normalisation statistics)."""

    def __init__(self, factor_set: FactorSet | dict[str, Any] | str | Path, symbols: list[str],
                 norm_stats: dict[str, Any] | None = None) -> None:
        self.factor_set = factor_set if isinstance(factor_set, FactorSet) else load_factor_set(factor_set)
        self.symbols = list(symbols)
        fs = self.factor_set
        self.feature_names = fs.names
        self._online = [f.online(self.symbols) for f in fs.factors]
        # (per factor: its online state, its columns, its cross-sectional transform or None)
        self._parts = [(o, sl, None if cs in (None, "none") else cs)
                       for o, sl, cs in zip(self._online, fs.column_slices, fs.cross_sectional)]
        self._mask = fs.normalise_mask
        # the normalised columns: all of them (a slice: no fancy-index copies), some, or none
        self._norm_cols = None if not self._mask.any() else slice(None) if self._mask.all() else self._mask
        stats = (norm_stats or {}).get("stats") if norm_stats and "stats" in norm_stats else norm_stats
        self._norm = OnlineNormaliser(fs.normalise, len(self.symbols), int(self._mask.sum()),
                                      stats if fs.normalise.method == "train" else None)
        self._warmup = fs.warmup  # (a property that walks the set: read once)
        self._shape = (len(self.symbols), len(self.feature_names))
        self._seen = np.zeros(len(self.symbols), dtype=np.int64)
        self.tradable = np.zeros(len(self.symbols), dtype=bool)
        self.timestamp: int | None = None

    @classmethod
    def from_tensor(cls, tensor) -> "OnlineFactors":
        """Rebuild from a tensor's meta (``factor_set`` config and ``normalisation`` stats)."""
        meta = tensor.meta
        if "factor_set" not in meta:
            raise ConfigError("tensor meta has no 'factor_set': it was not built by build_tensor; pass the set explicitly")
        return cls(meta["factor_set"], list(tensor.symbols), (meta.get("normalisation") or {}).get("stats"))

    def update_raw(self, timestamp: int, bar: np.ndarray) -> np.ndarray:
        """Un-normalised feature row float64 ``[A, F]`` (cross-sectional transforms applied)."""
        bar = np.asarray(bar, dtype=np.float64)
        if bar.shape != (self._shape[0], 5):
            raise ConfigError(f"online bar must be [A, 5] = {(self._shape[0], 5)} OHLCV, got {bar.shape}")
        if self.timestamp is not None and timestamp <= self.timestamp:
            raise ConfigError(f"online bars must arrive in time order: {timestamp} is not after {self.timestamp}")
        self.timestamp = int(timestamp)
        row = np.empty(self._shape)
        for o, sl, cs in self._parts:
            values = o.update(timestamp, bar)
            row[:, sl] = values if cs is None else cross_sectional(values, cs)
        return row

    def update(self, timestamp: int, bar: np.ndarray, tradable: np.ndarray | None = None) -> np.ndarray:
        """Feature row float64 ``[A, F]`` as the tensor holds it; sets ``self.tradable`` (bool [A])."""
        bar = np.asarray(bar, dtype=np.float64)
        row = self.update_raw(timestamp, bar)  # (a new array: normalised in place)
        has = np.isfinite(bar[:, 3])
        self._seen += has
        if self._norm_cols is not None:
            row[:, self._norm_cols] = self._norm.update(row[:, self._norm_cols])
        ok = has & (self._seen > self._warmup)
        if tradable is not None:
            ok &= np.asarray(tradable, dtype=bool)
        self.tradable = ok
        return np.where(ok[:, None] & np.isfinite(row), row, 0.0)
