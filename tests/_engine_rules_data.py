"""Small hand-made tensors and envs for the engine rule tests (tests/test_engine_rules*.py): prices
chosen so that every expected value is exact (or worked to 1e-12) by hand."""

from __future__ import annotations

import numpy as np

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig

HOUR = 3_600_000


def tensor(open_, close=None, high=None, low=None, volume=1000.0, features=None, tradable=None, funding=None,
           symbols=None) -> FactorTensor:
    """A [T, A] tensor from plain lists: high/low default to max/min(open, close), volume to 1000,
    features to zeros [T, A, 1]."""
    o = np.asarray(open_, float)
    c = o.copy() if close is None else np.asarray(close, float)
    h = np.fmax(o, c) if high is None else np.asarray(high, float)
    lo = np.fmin(o, c) if low is None else np.asarray(low, float)
    v = np.broadcast_to(np.asarray(volume, float), o.shape)
    T, A = o.shape
    feats = np.zeros((T, A, 1), np.float32) if features is None else np.asarray(features, np.float32)
    symbols = symbols or ["X", "Y", "Z"][:A]
    return FactorTensor.from_arrays(feats, np.stack([o, h, lo, c, v], axis=-1), np.arange(T) * HOUR,
                                    symbols=symbols, tradable=tradable, funding=funding)


def env(t: FactorTensor, cfg: ExecutionConfig | None = None, start: int = 0, end: int | None = None,
        initial_cash: float = 1000.0, mapping: str = "direct", long_only: bool = False, **kw) -> CryptoTradingEnv:
    """A started env over ``t`` (frictionless with leverage 2 unless ``cfg``), from decision bar ``start``;
    ``long_only=None`` lets a discrete env infer it from its levels."""
    cfg = ExecutionConfig.frictionless(max_leverage=2.0) if cfg is None else cfg
    lo = None if mapping == "simplex" else long_only  # (simplex is long-only by itself)
    e = CryptoTradingEnv(t, mapping=mapping, long_only=lo, execution=cfg, initial_cash=initial_cash,
                         random_start=False, **kw)
    options = {"start": start} if end is None else {"start": start, "end": end}
    e.reset(options=options)
    return e


def act(*w) -> np.ndarray:
    return np.array(w, np.float64)
