"""The RLlib env creator without Ray running: single env, the vector entry point's next-step autoreset
(what RLlib's env runner assumes) checked step by step against a lone CryptoTradingEnv, and the
registration. Runs in the default venv (gymnasium 1.4) and in `make test-rllib`'s (gymnasium 1.2)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from factorgym.agents import rllib_env
from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs.trading_env import CryptoTradingEnv


@pytest.fixture(scope="module")
def env_config(tmp_path_factory):
    rng = np.random.default_rng(3)
    T, A = 200, 2
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    d = FactorTensor.from_arrays(rng.normal(size=(T, A, 3)), close, np.arange(T) * 3_600_000,
                                 symbols=["S0/USDT", "S1/USDT"]).save(tmp_path_factory.mktemp("rl") / "t")
    run = {"tensor": str(d), "window": 4, "episode_length": 6, "random_start": False, "split": [0.6, 0.2, 0.2]}
    return {"run_config": run, "part": "train"}


def test_single_env_is_the_trading_env_of_the_run_config(env_config):
    env = rllib_env.make_env(env_config)
    assert isinstance(env, CryptoTradingEnv) and env.window == 4
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_vector_entry_point_autoresets_on_the_next_step_as_rllib_expects(env_config):
    print("gymnasium", gym.__version__)
    venv = rllib_env.make_env({**env_config, "num_envs": 3})
    assert venv.num_envs == 3 and venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    lone = rllib_env.make_env(env_config)
    rng = np.random.default_rng(0)
    obs, _ = venv.reset(seed=7)
    ref, _ = lone.reset(seed=7)
    np.testing.assert_array_equal(obs[0], ref)
    ends = 0
    for t in range(20):
        a = rng.uniform(-1, 1, (3, *lone.action_space.shape)).astype(np.float32)
        obs, rew, term, trunc, _ = venv.step(a)
        if ends and just_done:  # the step after an end: the reset observation, reward 0, action ignored
            ref, _ = lone.reset()
            np.testing.assert_array_equal(obs[0], ref)
            assert rew[0] == 0.0 and not (term[0] or trunc[0])
            just_done = False
            continue
        ref, r, te, tr, _ = lone.step(a[0])
        np.testing.assert_array_equal(obs[0], ref)  # the terminal observation itself at an end
        assert rew[0] == pytest.approx(r) and (term[0], trunc[0]) == (te, tr)
        just_done = bool(te or tr)
        ends += just_done
    assert ends >= 2


def test_registered_with_rays_registry():
    pytest.importorskip("ray.tune")
    from ray.tune.registry import ENV_CREATOR, _global_registry

    assert rllib_env.register() == "factorgym"
    assert _global_registry.contains(ENV_CREATOR, "factorgym")
