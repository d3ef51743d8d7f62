"""Actions given as 0-d arrays: a Discrete space takes a 0-d array of the level (any number dtype)
like the plain int; a Box space refuses one with the one-line shape error (never reaches the kernel)."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv

HOUR = 3_600_000


def one_asset(T: int = 40) -> FactorTensor:
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, 1)), axis=0))
    return FactorTensor.from_arrays(rng.normal(size=(T, 1, 2)), close, np.arange(T) * HOUR)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_discrete_zero_d_array_is_the_level(dtype):
    kw = dict(window=2, action_scheme="discrete", levels=(-1, 0, 1), long_only=False, random_start=False)
    plain, arr = CryptoTradingEnv(one_asset(), **kw), CryptoTradingEnv(one_asset(), **kw)
    plain.reset(seed=0)
    arr.reset(seed=0)
    for level in (2, 0, 1):
        a = plain.step(level)
        b = arr.step(np.array(level, dtype=dtype))
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]
        assert a[4]["weights"] == b[4]["weights"] and a[4]["equity"] == b[4]["equity"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_box_refuses_a_zero_d_array_with_the_shape_error(dtype):
    env = CryptoTradingEnv(one_asset(), window=2, mapping="direct", random_start=False)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"has shape \(\); the action space .* expects \(1,\)"):
        env.step(np.array(0.5, dtype=dtype))
