"""A two-asset tensor (open != previous close, a volume on every bar) and env options shared by
the env contract tests (tests/test_env_contract.py, tests/test_core_contract.py)."""

from __future__ import annotations

import numpy as np

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import ExecutionConfig

HOUR = 3_600_000

FEES = ExecutionConfig(taker_fee=0.001, use_market_rules=False)

LS = dict(window=2, mapping="direct", long_only=False, random_start=False, execution=FEES)  # long/short, direct



def two_assets(T: int = 12, F: int = 2) -> FactorTensor:
    """Two assets, open != previous close, a volume on every bar."""
    rng = np.random.default_rng(11)
    close = np.exp(np.cumsum(rng.normal(0, 0.02, (T, 2)), axis=0)) * np.array([100.0, 20.0])
    opn = close * np.exp(rng.normal(0, 0.005, (T, 2)))
    prices = np.stack([opn, np.maximum(opn, close), np.minimum(opn, close), close, np.full((T, 2), 1e4)], -1)
    return FactorTensor.from_arrays(rng.normal(size=(T, 2, F)), prices, np.arange(T) * HOUR, symbols=["X", "Y"])



def with_prices(t: FactorTensor, prices=None, tradable=None) -> FactorTensor:
    return FactorTensor(t.features, t.prices if prices is None else prices, t.timestamps, t.symbols, t.feature_names,
                        t.tradable if tradable is None else tradable, t.meta)

