"""Envs over memory-mapped tensors: the feature array is read window by window, never copied, and
the observations are the same bits as over the tensor in memory."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv
from factorgym.envs.backtest import backtest
from factorgym.envs.core import is_mapped

T, A, F, W = 300, 3, 4, 5


def _tensor() -> FactorTensor:
    """Features with NaN, +-inf and -0.0 on tradable and untradable bars; some bars untradable."""
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    prices = np.stack([close, close * 1.01, close * 0.99, close, rng.lognormal(5, 1, (T, A))], axis=-1)
    feats = rng.normal(size=(T, A, F)).astype(np.float32)
    feats[rng.random((T, A, F)) < 0.05] = np.nan
    feats[rng.random((T, A, F)) < 0.02] = np.inf
    feats[rng.random((T, A, F)) < 0.02] = -np.inf
    feats[rng.random((T, A, F)) < 0.02] = -0.0
    tradable = rng.random((T, A)) > 0.1
    return FactorTensor.from_arrays(feats, prices, np.arange(T, dtype=np.int64) * 3_600_000, tradable=tradable)


@pytest.fixture(scope="module")
def tensors(tmp_path_factory):
    mem = _tensor()
    d = tmp_path_factory.mktemp("mapped") / "t"
    mem.save(d)
    mapped = FactorTensor.load(d, mmap=True)
    assert is_mapped(mapped.features) and not is_mapped(mem.features)
    return mem, mapped


def _expected_features(t: FactorTensor, bar: int) -> np.ndarray:
    """The window's feature block as documented: 0 where the value is not finite or the bar untradable."""
    f = np.asarray(t.features[bar - W + 1:bar + 1])
    ok = np.isfinite(f) & np.asarray(t.tradable[bar - W + 1:bar + 1])[..., None]
    return np.where(ok, f, np.float32(0)).reshape(-1)


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _run_single(t: FactorTensor, steps: int = 120) -> tuple[int, list[np.ndarray]]:
    env = CryptoTradingEnv(t, window=W, mapping="signed", episode_length=steps)
    obs, info = env.reset(seed=3)
    out = [obs]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        obs, *_rest = env.step(rng.uniform(-1, 1, A).astype(np.float32))
        out.append(obs)
    return info["start"], out


def test_the_env_does_not_copy_a_mapped_feature_array(tensors):
    mem, mapped = tensors
    core = CryptoTradingEnv(mapped, window=W).core
    assert core.raw_features
    assert np.shares_memory(core.data, np.asarray(mapped.features))
    # the price records of read-only (mapped) arrays are shared by the envs over them; writable ones are not
    assert CryptoTradingVectorEnv(mapped, 4, window=W).core.prices is core.prices
    assert CryptoTradingEnv(mem, window=W).core.prices is not CryptoTradingEnv(mem, window=W).core.prices
    assert not CryptoTradingEnv(mem, window=W).core.raw_features


def test_single_env_observations_are_the_same_bits_mapped_or_in_memory(tensors):
    mem, mapped = tensors
    (start, a), (_, b) = _run_single(mem), _run_single(mapped)
    assert len(a) == len(b)
    n_feat = W * A * F
    for k, (x, y) in enumerate(zip(a, b)):
        assert np.array_equal(_bits(x), _bits(y)), f"step {k}"
        # and both are the documented values (an answer computed without the env)
        assert np.array_equal(_bits(x[:n_feat]), _bits(_expected_features(mem, start + k))), f"step {k}"
        assert np.array_equal(x[n_feat:n_feat + W * A], mem.tradable[start + k - W + 1:start + k + 1].reshape(-1))


def test_vector_env_and_backtest_are_the_same_mapped_or_in_memory(tensors):
    mem, mapped = tensors
    results = []
    for t in (mem, mapped):
        venv = CryptoTradingVectorEnv(t, 9, window=W, mapping="signed", episode_length=40)
        obs, _ = venv.reset(seed=1)
        seq = [obs.copy()]
        rng = np.random.default_rng(2)
        for _ in range(100):  # (episodes end and autoreset)
            obs, *_rest = venv.step(rng.uniform(-1, 1, (9, A)).astype(np.float32))
            seq.append(obs.copy())
        res = backtest(t, lambda o: np.full(A, 0.3, dtype=np.float32), window=W, mapping="signed")
        results.append((np.stack(seq), res.equity))
    (s0, e0), (s1, e1) = results
    assert np.array_equal(_bits(s0), _bits(s1))
    assert np.array_equal(e0, e1)
