"""Paths of the Python around the engine that the mutation run (scripts/mutation.py) found
unchecked: each test fails for a planted bug that the suite let through."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig

HOUR = 3_600_000


def two_assets(T: int = 12) -> FactorTensor:
    rng = np.random.default_rng(3)
    close = np.exp(np.cumsum(rng.normal(0, 0.02, (T, 2)), axis=0)) * np.array([100.0, 20.0])
    return FactorTensor.from_arrays(rng.normal(size=(T, 2, 2)), close, np.arange(T) * HOUR, symbols=["X", "Y"])


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.int16, np.uint8, np.bool_])
def test_an_action_array_of_any_number_dtype_acts_as_its_values(dtype):
    """A 1-d action array of a dtype other than float32/float64 (which the kernels take as they
    are) is converted first: it steps exactly as the float32 array of the same values."""
    values = [1, 0] if dtype in (np.uint8, np.bool_) else [1, -1]
    kw = dict(window=2, mapping="direct", long_only=False, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, max_leverage=2.0, use_market_rules=False))
    ref, env = CryptoTradingEnv(two_assets(), **kw), CryptoTradingEnv(two_assets(), **kw)
    ref.reset(options={"start": 1})
    env.reset(options={"start": 1})
    for _ in range(3):
        obs_a, r_a, _, _, info_a = ref.step(np.array(values, np.float32))
        obs_b, r_b, _, _, info_b = env.step(np.array(values, dtype))
        assert np.array_equal(obs_a, obs_b) and r_a == r_b
        assert list(info_b["weights"]) == list(info_a["weights"]) and info_b["equity"] == info_a["equity"]
    assert info_a["positions"][0] > 0.0  # the action was taken (not read as zeros)


@pytest.mark.parametrize("days, text", [(0.5, "12 h"), (1.99, "48 h"), (2.0, "2 d"), (108.4, "108 d")])
def test_a_span_shows_in_days_from_two_days_and_in_hours_below(days, text):
    from factorgym.envs.backtest import format_metric

    assert format_metric("span_days", days) == text
