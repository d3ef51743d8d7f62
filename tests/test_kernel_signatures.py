"""One compiled step kernel per asset count and action dtype, whatever the env's mapping (action size),
number of envs (block size) or way of being built: a second specialisation would cost every user a
cold compile of tens of seconds."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv
from factorgym.envs.core import ACT_ARG

A = 2


def _tensor(T: int = 12) -> FactorTensor:
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    return FactorTensor.from_arrays(rng.normal(size=(T, A, 3)).astype(np.float32), close,
                                    np.arange(T, dtype=np.int64) * 3_600_000, symbols=["A/USDT", "B/USDT"])


def _kernel_types(core, dtype) -> tuple:
    """The argument types ``core`` compiles its step entry point for (as ``core._fast`` does)."""
    sig = [numba.typeof(a) for a in core._kernel_args]
    sig[ACT_ARG] = numba.types.Array(numba.from_dtype(np.dtype(dtype)), 1, "A")
    return tuple(sig)


def _cores():
    t = _tensor()
    yield CryptoTradingEnv(t, mapping="simplex", window=2)._core  # K = A + 1, one env
    yield CryptoTradingEnv(t, mapping="direct", window=3)._core  # K = A (as the baselines of a walk-forward)
    yield CryptoTradingEnv(t, mapping="signed", window=2, long_only=False)._core
    yield CryptoTradingEnv(t, action_scheme="discrete", window=2)._core
    yield CryptoTradingVectorEnv(t, 3, mapping="simplex", window=2).core
    yield CryptoTradingVectorEnv(t, 70, mapping="direct", window=2).core  # (once run in blocks of 16)
    yield CryptoTradingVectorEnv(_tensor(30), 5, mapping="signed", window=4, parallel=True).core


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_kernel_type_for_every_env_of_one_asset_count(dtype):
    types = {_kernel_types(core, dtype) for core in _cores()}
    assert len(types) == 1, sorted(map(str, types))


def test_envs_of_different_shapes_step_through_one_specialisation():
    """Each env's compiled entry point is the same object: one signature of step_batch_nb for all of
    them (and so one of step_blocks_nb, which it calls with types made of its own)."""
    cores = [c for c in _cores() if not c.parallel]
    entries = set()
    for core in cores:
        core.reset(np.arange(core.n_envs), np.full(core.n_envs, core.first_start), np.full(core.n_envs, core.last_bar))
        core.step(np.zeros(core.n_envs * core.action_dim))
        entries.add(id(core.step64))
    assert len(entries) == 1
