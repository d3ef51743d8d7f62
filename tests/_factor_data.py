"""Synthetic candles for the factor tests (random walks with realistic OHLC relations)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from factorgym.data_layer.factors.base import CandlePanel

HOUR = 3_600_000


def random_ohlcv(T: int, A: int, seed: int = 0) -> np.ndarray:
    """float64 [T, A, 5] OHLCV."""
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0)) * (1 + 10 * np.arange(A))
    o = c * np.exp(rng.normal(0, 0.003, (T, A)))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.01, (T, A)))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.01, (T, A)))
    v = rng.lognormal(3, 1, (T, A))
    return np.stack([o, h, lo, c, v], axis=-1)


def random_panel(T: int = 400, A: int = 3, seed: int = 0, holes: bool = True) -> CandlePanel:
    """Panel where asset 1 lists late and asset 2 (if any) misses a few bars."""
    x = random_ohlcv(T, A, seed)
    if holes and A > 1:
        x[: T // 5, 1] = np.nan
    if holes and A > 2:
        x[[T // 3, T // 3 + 1, T // 2], 2] = np.nan
    return CandlePanel.from_arrays(np.arange(T, dtype=np.int64) * HOUR, x, [f"S{a}/USD" for a in range(A)])


def frames(x: np.ndarray, start_row: int = 0) -> dict[str, pd.DataFrame]:
    """{symbol: candle frame} from [T, A, 5]; NaN rows are left out (no bar)."""
    out = {}
    for a in range(x.shape[1]):
        ok = np.isfinite(x[:, a, 3])
        rows = np.flatnonzero(ok)
        out[f"S{a}/USD"] = pd.DataFrame({
            "timestamp": (rows + start_row).astype(np.int64) * HOUR,
            **{f: x[rows, a, k] for k, f in enumerate(["open", "high", "low", "close", "volume"])},
        })
    return out
