"""Feature normalisation with statistics from the past (or from the training split only).

Methods (per asset and feature; NaN values -- no bar, warm-up -- are skipped and stay NaN):

* ``expanding``: z-score against every value so far (this bar included), once ``min_periods``
  values exist.
* ``rolling``: z-score against the last ``window`` values (this bar included), same ``min_periods``.
* ``train``: mean and std fitted on the rows of the training range ``[fit_start, fit_end)`` only
  (pooled over assets unless ``per_asset``), saved in the tensor's meta and reused online.
  Rows inside the training range therefore depend on later training bars -- the usual
  "fit on train" convention; nothing after ``fit_end`` ever leaks into any row.
* ``none``.

Then ``clip`` (if set) bounds the z-scores to ``[-clip, clip]``; a flat history (std ~ 0) gives 0.

Offline and online run the same compiled routine (:func:`_zscore_rows`): running sums of
``d = x - c`` and ``d*d`` with ``c`` the first value seen (a shift that avoids cancellation),
accumulated in bar order; rolling windows add the new value then subtract the one leaving. The
offline path feeds the whole block through it, the online path one row at a time with the state
it keeps, so the two paths agree to the last bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numba
import numpy as np

from factorgym.config_keys import check_keys
from factorgym.errors import ConfigError

METHODS = ("none", "expanding", "rolling", "train")
_EPS = 1e-12  # std below this counts as flat (z = 0), as in _zscore_rows


@dataclasses.dataclass(frozen=True)
class NormaliseConfig:
    """``method`` (see module doc); ``window`` bars for rolling; ``min_periods`` values before the
    first z-score; ``clip`` bound (None = no clip); ``fit_start``/``fit_end`` (UTC ms, train);
    ``per_asset`` statistics for train (default pooled over assets)."""

    method: str = "expanding"
    window: int = 720
    min_periods: int = 100
    clip: float | None = 5.0
    fit_start: int | None = None
    fit_end: int | None = None
    per_asset: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"normalise.method {self.method!r} is not one of {METHODS}")
        if self.window < 2:
            raise ConfigError(f"normalise.window must be >= 2 bars, got {self.window}")
        if self.min_periods < 1:
            raise ConfigError(f"normalise.min_periods must be >= 1, got {self.min_periods}")
        if self.method == "rolling" and self.min_periods > self.window:
            raise ConfigError(f"normalise.min_periods ({self.min_periods}) exceeds window ({self.window})")
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"normalise.clip must be > 0 or null, got {self.clip}")
        if self.method == "train" and self.fit_end is None:
            raise ConfigError("normalise.method 'train' needs fit_end (end of the training range, a date)")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "NormaliseConfig":
        from factorgym.data_layer.timeframes import to_utc_ms

        d = dict(d or {})
        if "method" not in d and d:
            raise ConfigError(f"normalise needs 'method' (one of {METHODS}); got keys {sorted(d)}")
        known = {f.name for f in dataclasses.fields(cls)}
        check_keys(d, known, "normalise")
        for k in ("fit_start", "fit_end"):
            if d.get(k) is not None:
                d[k] = to_utc_ms(d[k])
        if not d:
            d = {"method": "none"}
        return cls(**d)

    @property
    def warmup(self) -> int:
        """Extra bars after a factor's own warm-up before the first normalised value."""
        return self.min_periods - 1 if self.method in ("expanding", "rolling") else 0


def _clip(z: np.ndarray, cfg: NormaliseConfig) -> np.ndarray:
    return np.clip(z, -cfg.clip, cfg.clip) if cfg.clip is not None else z


@numba.njit(cache=True)
def _zscore_rows(x, out, c, s1, s2, tot, ring, rolling, window, min_periods, clip):  # pragma: no cover - compiled
    """Advance the running state over rows of ``x`` [R, N] and write z-scores to ``out``.

    The offline path calls it once on the whole block, the online path once per bar with the
    state it keeps: one compiled routine, so both give the same bits. ``clip <= 0`` = no clip.
    """
    R, N = x.shape
    for t in range(R):
        for j in range(N):
            v = x[t, j]
            if not np.isfinite(v):
                out[t, j] = np.nan
                continue
            if np.isnan(c[j]):
                c[j] = v  # shift by the first value: sums of d stay small (no cancellation)
            d = v - c[j]
            s1[j] = s1[j] + d
            s2[j] = s2[j] + d * d
            if rolling:
                pos = tot[j] % window
                if tot[j] >= window:
                    old = ring[pos, j]
                    s1[j] = s1[j] - old
                    s2[j] = s2[j] - old * old
                ring[pos, j] = d
            tot[j] += 1
            n = min(tot[j], window) if rolling else tot[j]
            if n < min_periods:
                out[t, j] = np.nan
                continue
            mean = s1[j] / n
            var = s2[j] / n - mean * mean
            sd = np.sqrt(var) if var > 0.0 else 0.0
            z = (d - mean) / sd if sd > 1e-12 else 0.0
            if clip > 0.0:
                z = min(max(z, -clip), clip)
            out[t, j] = z


class _State:
    """Running sums per column for :func:`_zscore_rows`."""

    def __init__(self, n: int, cfg: NormaliseConfig) -> None:
        self.c = np.full(n, np.nan)
        self.s1 = np.zeros(n)
        self.s2 = np.zeros(n)
        self.tot = np.zeros(n, dtype=np.int64)
        self.ring = np.zeros((cfg.window if cfg.method == "rolling" else 1, n))
        self.cfg = cfg

    def run(self, x: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty_like(x)
        _zscore_rows(x, out, self.c, self.s1, self.s2, self.tot, self.ring, cfg.method == "rolling",
                     int(cfg.window), int(cfg.min_periods), float(cfg.clip or 0.0))
        return out


def fit_train_stats(x: np.ndarray, timestamps: np.ndarray, valid: np.ndarray, cfg: NormaliseConfig) -> dict[str, Any]:
    """Mean/std over rows with ``fit_start <= timestamp < fit_end`` and ``valid`` ([T, A])."""
    lo = 0 if cfg.fit_start is None else int(np.searchsorted(timestamps, cfg.fit_start))
    hi = int(np.searchsorted(timestamps, cfg.fit_end))
    rows = x[lo:hi]
    ok = np.isfinite(rows) & valid[lo:hi, :, None]
    if not ok.any():
        raise ConfigError(
            "normalise.method 'train': no valid bars in the fit range [fit_start, fit_end); "
            "move fit_end later than the warm-up"
        )
    axes = (0,) if cfg.per_asset else (0, 1)
    n = ok.sum(axis=axes)
    xs = np.where(ok, rows, 0.0)
    mean = xs.sum(axis=axes) / np.maximum(n, 1)
    dev = np.where(ok, rows - (mean if cfg.per_asset else mean[None, :]), 0.0)
    std = np.sqrt((dev * dev).sum(axis=axes) / np.maximum(n, 1))
    mean = np.where(n > 0, mean, 0.0)
    std = np.where(n > 0, std, 0.0)
    return {"mean": mean.tolist(), "std": std.tolist(), "count": n.tolist(), "fit_rows": [lo, hi]}


def _apply_train(x: np.ndarray, stats: dict[str, Any], cfg: NormaliseConfig) -> np.ndarray:
    mean = np.asarray(stats["mean"], dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        z = np.where(std > _EPS, (x - mean) / np.where(std > _EPS, std, 1.0), 0.0)
    return _clip(np.where(np.isfinite(x), z, np.nan), cfg)


def normalise_offline(x: np.ndarray, cfg: NormaliseConfig, stats: dict[str, Any] | None = None) -> np.ndarray:
    """Normalise float64 ``[T, A, F]`` along time; ``stats`` from :func:`fit_train_stats` for train."""
    if cfg.method == "none":
        return x
    if cfg.method == "train":
        if stats is None:
            raise ConfigError("normalise.method 'train' needs fitted statistics")
        return _apply_train(x, stats, cfg)
    T, A, F = x.shape
    return _State(A * F, cfg).run(x.reshape(T, A * F)).reshape(T, A, F)


class OnlineNormaliser:
    """The same normalisation one row ``[A, F]`` at a time (state per asset and feature)."""

    def __init__(self, cfg: NormaliseConfig, n_assets: int, n_features: int, stats: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        shape = (n_assets, n_features)
        self.stats = stats
        if cfg.method == "train" and stats is None:
            raise ConfigError("normalise.method 'train' online needs the tensor's saved statistics (meta['normalisation'])")
        self._shape = shape
        self._state = _State(n_assets * n_features, cfg)

    def update(self, x: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        if cfg.method == "none":
            return x
        if cfg.method == "train":
            return _apply_train(x, self.stats, cfg)
        return self._state.run(np.asarray(x, dtype=np.float64).reshape(1, -1)).reshape(self._shape)
