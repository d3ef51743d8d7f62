"""The policy bundle: spec round trip, mismatch refusals, SB3 models with VecNormalize statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factorgym.agents.bundle import (BundleError, ObsNormaliser, PolicySpec, load_policy, read_bundle,
                                     register_policy_loader, save_bundle)
from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv


def _tensor(T=60, A=2, F=3, seed=0, **meta) -> FactorTensor:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    return FactorTensor.from_arrays(rng.normal(size=(T, A, F)), close, np.arange(T) * 3_600_000,
                                    symbols=[f"S{i}/USDT" for i in range(A)], feature_names=[f"f{j}" for j in range(F)],
                                    meta={"factor_set_hash": "abc123", **meta})


class _Const:
    def __init__(self, spec, value):
        self.spec, self.value, self.resets = spec, value, 0

    def __call__(self, obs):
        return np.full(len(self.spec.symbols), self.value, dtype=np.float32)

    def reset(self):
        self.resets += 1


def test_rule_policy_round_trip(tmp_path):
    t = _tensor()
    spec = PolicySpec.from_env(CryptoTradingEnv(t, window=5, mapping="direct"), t, extra={"note": "x"})
    register_policy_loader("test-const", lambda d, s: _Const(s, float((d / "v.txt").read_text())))
    path = save_bundle(tmp_path / "b", spec=spec, model_kind="test-const", write_model=lambda d: (d / "v.txt").write_text("0.25"))
    policy = load_policy(path, tensor=t)
    assert policy(np.zeros(3)).tolist() == [0.25, 0.25]
    assert policy.spec == spec
    doc = json.loads((path / "bundle.json").read_text())
    assert doc["spec"]["window"] == 5 and doc["spec"]["factor_set_hash"] == "abc123" and doc["model_kind"] == "test-const"
    # saving again replaces atomically: no temporary siblings left behind
    save_bundle(path, spec=spec, model_kind="test-const", write_model=lambda d: (d / "v.txt").write_text("0.5"))
    assert load_policy(path)(None).tolist() == [0.5, 0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_spec_rebuilds_the_env(tmp_path):
    t = _tensor(A=1)
    env = CryptoTradingEnv(t, window=3, action_scheme="discrete", levels=(-1, 0, 0.5, 1), long_only=False, reward="differential_sharpe")
    spec = PolicySpec.from_env(env, t)
    assert spec.levels == [-1.0, 0.0, 0.5, 1.0] and spec.action_scheme == "discrete" and spec.mapping is None
    again = PolicySpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    env2 = CryptoTradingEnv(t, **again.env_kwargs())
    assert env2.action_space == env.action_space and env2.observation_space == env.observation_space
    assert env2.reward_config == env.reward_config and env2.execution == env.execution


@pytest.mark.parametrize("change, words", [
    (dict(symbols=["S1/USDT", "S0/USDT"]), "symbols differ: the same names in another order"),
    (dict(feature_names=["f0", "f1", "g2"]), "features differ: the policy was trained on 'f2' at position 2, the tensor has 'g2'"),
    (dict(feature_names=["f0", "f1"]), "features differ: the policy was trained on 3, the tensor has 2 (missing ['f2']"),
    (dict(meta={"timeframe": "4h"}), "timeframe differs"),
    (dict(meta={"factor_set_hash": "zzz"}), "factor-set hash differs"),
])
def test_check_tensor_names_the_mismatch(change, words):
    t = _tensor()
    spec = PolicySpec.from_env(CryptoTradingEnv(t, window=4), t)
    spec.check_tensor(t)
    F = len(change.get("feature_names", t.feature_names))
    other = FactorTensor.from_arrays(np.asarray(t.features)[:, :, :F], np.asarray(t.prices), t.timestamps,
                                     symbols=change.get("symbols", t.symbols),
                                     feature_names=change.get("feature_names", t.feature_names),
                                     meta={**t.meta, **change.get("meta", {})})
    with pytest.raises(BundleError, match=None) as err:
        spec.check_tensor(other)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_load_errors(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_policy(tmp_path / "nope")
    with pytest.raises(BundleError, match="not a policy bundle"):
        load_policy(tmp_path)
    t = _tensor()
    spec = PolicySpec.from_env(CryptoTradingEnv(t), t)
    path = save_bundle(tmp_path / "b", spec=spec, model_kind="no-such-kind", write_model=lambda d: None)
    with pytest.raises(BundleError, match="no loader for model kind 'no-such-kind'"):
        load_policy(path)
    short = t.slice_bars(0, 3)
    spec5 = PolicySpec.from_env(CryptoTradingEnv(t, window=5), t)
    with pytest.raises(BundleError, match="window of 5 needs at least 6"):
        spec5.check_tensor(short)


def test_obs_normaliser_matches_vecnormalize():
    from stable_baselines3.common.vec_env import VecNormalize

    from factorgym.agents.sb3_policy import vecnormalize_stats
    from factorgym.agents.sb3_vec import make_vec_env

    t = _tensor()
    venv = VecNormalize(make_vec_env(t, 4, seed=0, window=3), clip_obs=3.0)
    venv.reset()
    venv.action_space.seed(0)  # replayable
    for _ in range(20):
        obs, *_ = venv.step(np.stack([venv.action_space.sample() for _ in range(4)]))
    raw = venv.get_original_obs()
    stats = vecnormalize_stats(venv)
    assert np.array_equal(ObsNormaliser(json.loads(json.dumps(stats)))(raw), venv.normalize_obs(raw))


def test_sb3_bundle_acts_like_the_model(tmp_path):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from factorgym.agents.sb3_policy import save_sb3_bundle
    from factorgym.agents.sb3_vec import make_vec_env
    from factorgym.envs.backtest import backtest

    torch.set_num_threads(1)
    t = _tensor(T=80)
    venv = VecNormalize(make_vec_env(t, 2, seed=0, window=4, episode_length=20), norm_reward=False)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    spec = PolicySpec.from_env(venv, t)
    path = save_sb3_bundle(tmp_path / "ppo", model, spec, "PPO")
    kind = read_bundle(path)[1]
    assert kind == "sb3-ppo"
    policy = load_policy(path, tensor=t)
    assert policy.spec.obs_normaliser["kind"] == "vecnormalize"
    venv.training = False
    env = CryptoTradingEnv(t, **policy.spec.env_kwargs())
    obs, _ = env.reset(options={"start": 10})
    for _ in range(5):
        expected, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
        got = policy(obs)
        assert np.array_equal(got, expected)
        obs, *_ = env.step(got)
    res = backtest(t, policy, **{k: v for k, v in policy.spec.env_kwargs().items()
                                 if k in ("window", "action_scheme", "mapping", "execution", "initial_cash")})
    assert np.isfinite(res.metrics["sharpe"]) or res.metrics["total_return"] == 0


def test_docstring_example_runs():
    import doctest

    from factorgym.agents import bundle

    result = doctest.testmod(bundle, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("algorithm, kwargs", [("A2C", {"n_steps": 8}), ("SAC", {"learning_starts": 8, "buffer_size": 200}),
                                               ("PPO", {"n_steps": 16, "batch_size": 16, "policy_kwargs": {"share_features_extractor": False}})])
def test_policy_forward_equals_predict(algorithm, kwargs):
    """SB3Policy's direct forward pass gives exactly model.predict(obs, deterministic=True)."""
    from factorgym.agents.bundle import PolicySpec
    from factorgym.agents.sb3_policy import SB3Policy, algorithm_class
    from factorgym.agents.sb3_vec import make_vec_env

    t = _tensor(T=80)
    venv = make_vec_env(t, 2, seed=0, window=4, episode_length=20)
    model = algorithm_class(algorithm)("MlpPolicy", venv, seed=0, device="cpu", **kwargs)
    model.learn(32)
    policy = SB3Policy(model, PolicySpec.from_env(venv, t))
    obs = np.random.default_rng(0).normal(size=(5, venv.observation_space.shape[0])).astype(np.float32) * 3
    for o in obs:
        assert np.array_equal(policy(o), model.predict(o, deterministic=True)[0])
    assert np.array_equal(policy(obs), model.predict(obs, deterministic=True)[0])
