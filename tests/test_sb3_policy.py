"""SB3Policy acts exactly as ``model.predict(obs, deterministic=True)`` for every algorithm family the
training supports (its direct forward pass skips predict's per-call bookkeeping), one observation or a
batch, with the bundle's VecNormalize statistics applied the same way."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor

FAMILIES = [
    ("PPO", {"n_steps": 16, "batch_size": 16}, {}),
    ("A2C", {"n_steps": 8}, {"mapping": "signed"}),
    ("SAC", {"learning_starts": 8, "buffer_size": 200}, {}),
    ("TD3", {"learning_starts": 8, "buffer_size": 200}, {}),
    ("DDPG", {"learning_starts": 8, "buffer_size": 200}, {}),
    ("TQC", {"learning_starts": 8, "buffer_size": 200}, {}),
    ("DQN", {"learning_starts": 8, "buffer_size": 200}, {"action_scheme": "discrete", "levels": (-1, 0, 1)}),
    ("RecurrentPPO", {"n_steps": 16, "batch_size": 16}, {}),
]


def _tensor(T=80, A=2, F=3, seed=0) -> FactorTensor:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    return FactorTensor.from_arrays(rng.normal(size=(T, A, F)), close, np.arange(T) * 3_600_000,
                                    symbols=[f"S{i}/USDT" for i in range(A)], feature_names=[f"f{j}" for j in range(F)])


@pytest.mark.parametrize("algorithm, kwargs, env", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_sb3_policy_acts_as_model_predict_deterministic(algorithm, kwargs, env):
    from stable_baselines3.common.vec_env import VecNormalize

    from factorgym.agents.bundle import PolicySpec
    from factorgym.agents.sb3_policy import SB3Policy, algorithm_class, vecnormalize_stats
    from factorgym.agents.sb3_vec import make_vec_env

    t = _tensor(A=1 if algorithm == "DQN" else 2)
    venv = VecNormalize(make_vec_env(t, 2, seed=0, window=4, episode_length=20, **env))
    policy_name = "MlpLstmPolicy" if algorithm == "RecurrentPPO" else "MlpPolicy"
    model = algorithm_class(algorithm)(policy_name, venv, seed=0, device="cpu", **kwargs)
    model.learn(32)
    policy = SB3Policy(model, PolicySpec.from_env(venv, t, obs_normaliser=vecnormalize_stats(venv)))
    raw = np.random.default_rng(1).normal(size=(6, venv.observation_space.shape[0])).astype(np.float32) * 3
    normed = venv.normalize_obs(raw)
    if algorithm == "RecurrentPPO":  # stateful: compare one sequence, started afresh on both sides
        state, start = None, np.ones(1, dtype=bool)
        for o, n in zip(raw, normed):
            expected, state = model.predict(n[None], state=state, episode_start=start, deterministic=True)
            start = np.zeros(1, dtype=bool)
            assert np.array_equal(policy(o[None]), expected)
        return
    for o, n in zip(raw, normed):
        got, expected = policy(o), model.predict(n, deterministic=True)[0]
        assert np.shape(got) == np.shape(expected) and np.array_equal(got, expected), (got, expected)
    assert np.array_equal(policy(raw), model.predict(normed, deterministic=True)[0])
