"""Cross-sectional transforms: at each bar, across the assets that have a value.

Both work on ``[..., A, k]`` (assets on axis -2) so the offline block ``[T, A, k]`` and an online
row ``[A, k]`` go through the same arithmetic. NaN (no bar, warm-up) is left out and stays NaN.

* ``rank``: average rank of ties, scaled to [0, 1] (lowest 0, highest 1); 0.5 when only one asset
  has a value.
* ``zscore``: (x - mean) / std (population std) across assets; 0 when they are all equal.
"""

from __future__ import annotations

import numpy as np

from factorgym.errors import ConfigError

METHODS = ("none", "rank", "zscore")


def cross_sectional(x: np.ndarray, method: str | None) -> np.ndarray:
    """Apply ``method`` across axis -2 of ``x`` (float64 ``[..., A, k]``); returns a new array."""
    if method in (None, "none"):
        return x
    if method == "rank":
        return _rank(x)
    if method == "zscore":
        return _zscore(x)
    raise ConfigError(f"cross_sectional {method!r} is not one of {METHODS}")


def _rank(x: np.ndarray) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    ok = np.isfinite(x)
    n = ok.sum(axis=-2, keepdims=True)
    # chunk the leading axis so the [.., A, A, k] comparison stays small
    lead = x.reshape((-1,) + x.shape[-2:])
    okl = ok.reshape(lead.shape)
    o = out.reshape(lead.shape)
    step = max(1, (1 << 22) // max(1, x.shape[-2] ** 2 * x.shape[-1]))
    for i in range(0, lead.shape[0], step):
        v = lead[i : i + step]
        m = okl[i : i + step]
        vi = v[:, :, None, :]  # asset i
        vj = v[:, None, :, :]  # against asset j
        mj = m[:, None, :, :]
        less = ((vj < vi) & mj).sum(axis=2)
        equal = ((vj == vi) & mj).sum(axis=2)
        o[i : i + step] = less + (equal - 1) / 2.0
    nn = n.astype(np.float64)
    out = np.where(nn > 1, out / np.where(nn > 1, nn - 1, 1.0), 0.5)
    return np.where(ok, out, np.nan)


def _zscore(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    n = ok.sum(axis=-2, keepdims=True)
    xs = np.where(ok, x, 0.0)
    safe_n = np.maximum(n, 1)
    mean = xs.sum(axis=-2, keepdims=True) / safe_n
    dev = np.where(ok, x - mean, 0.0)
    sd = np.sqrt((dev * dev).sum(axis=-2, keepdims=True) / safe_n)
    z = np.where(sd > 1e-12, (x - mean) / np.where(sd > 1e-12, sd, 1.0), 0.0)
    return np.where(ok, z, np.nan)
