"""Feature extractors: asset-order equivariance, flat == dict, registry errors, SB3 integration."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gymnasium import spaces

from factorgym.agents.custom.planted import planted_market
from factorgym.agents.extractors import (EXTRACTORS, AssetConvExtractor, AssetGRUExtractor, FlattenObs, ObsLayout,
                                         get_extractor, policy_kwargs)
from factorgym.envs import CryptoTradingEnv
from factorgym.envs.spaces import observation_space
from factorgym.errors import ConfigError

W, A, F, EMBED = 5, 4, 3, 8


def _flat_obs(rng: np.random.Generator, batch: int) -> np.ndarray:
    feats = rng.standard_normal((batch, W, A, F)).astype(np.float32)
    mask = (rng.random((batch, W, A)) > 0.2).astype(np.float32)
    port = rng.standard_normal((batch, A + 3)).astype(np.float32)
    return np.concatenate([feats.reshape(batch, -1), mask.reshape(batch, -1), port], axis=1)


def _permute_assets(flat: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """The same observations with the assets in order ``perm``, cut by hand (not by ObsLayout)."""
    B = flat.shape[0]
    nf, nm = W * A * F, W * A
    feats = flat[:, :nf].reshape(B, W, A, F)[:, :, perm]
    mask = flat[:, nf:nf + nm].reshape(B, W, A)[:, :, perm]
    port = flat[:, nf + nm:]
    port = np.concatenate([port[:, :A][:, perm], port[:, A:]], axis=1)
    return np.concatenate([feats.reshape(B, -1), mask.reshape(B, -1), port], axis=1)


@pytest.mark.parametrize("cls,cross", [(AssetConvExtractor, "mean"), (AssetGRUExtractor, "mean"),
                                       (AssetConvExtractor, "attention"), (AssetGRUExtractor, "attention")])
def test_asset_extractors_are_equivariant_to_asset_order(cls, cross):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    ext = cls(observation_space("flat", W, A, F), window=W, n_assets=A, hidden=8, embed=EMBED, cross=cross).eval()
    obs = _flat_obs(rng, 6)
    perm = np.array([2, 0, 3, 1])
    with torch.no_grad():
        out = ext(torch.from_numpy(obs)).numpy()
        out_p = ext(torch.from_numpy(_permute_assets(obs, perm))).numpy()
    assert out.shape == (6, ext.features_dim) == (6, A * EMBED + EMBED + 3)
    blocks, blocks_p = out[:, :A * EMBED].reshape(6, A, EMBED), out_p[:, :A * EMBED].reshape(6, A, EMBED)
    np.testing.assert_allclose(blocks_p, blocks[:, perm], rtol=1e-5, atol=1e-6)  # per-asset blocks follow the assets
    np.testing.assert_allclose(out_p[:, A * EMBED:], out[:, A * EMBED:], rtol=1e-5, atol=1e-6)  # pooled part invariant
    # and it is not trivially constant: a different asset's window changes that asset's block
    obs2 = obs.copy()
    obs2[:, 1:W * A * F:A * F] += 1.0  # feature 0 of asset 0 on every bar
    with torch.no_grad():
        out2 = ext(torch.from_numpy(obs2)).numpy()
    assert np.abs(out2[:, :EMBED] - out[:, :EMBED]).max() > 1e-4


def test_a_layout_that_mixes_up_assets_breaks_equivariance():
    """The equivariance test can fail: an extractor cutting the vector as [A, W] instead of [W, A]
    (a wrong layout) is not equivariant."""
    torch.manual_seed(0)
    ext = AssetConvExtractor(observation_space("flat", W, A, F), window=W, n_assets=A, hidden=8, embed=EMBED).eval()
    good = ObsLayout(W, A, F)

    def bad_split(obs):
        f, m, p = good.split(obs)
        return f.reshape(f.shape[0], A, W, F).transpose(1, 2), m, p

    ext.layout = SimpleNamespace(split=bad_split)
    obs = _flat_obs(np.random.default_rng(2), 4)
    perm = np.array([1, 2, 3, 0])
    with torch.no_grad():
        out = ext(torch.from_numpy(obs)).numpy()[:, :A * EMBED].reshape(4, A, EMBED)
        out_p = ext(torch.from_numpy(_permute_assets(obs, perm))).numpy()[:, :A * EMBED].reshape(4, A, EMBED)
    assert not np.allclose(out_p, out[:, perm], atol=1e-4)


@pytest.mark.parametrize("name", sorted(EXTRACTORS))
def test_flat_and_dict_observations_give_the_same_features(name):
    torch.manual_seed(0)
    flat_space, dict_space = observation_space("flat", W, A, F), observation_space("dict", W, A, F)
    kw = {} if name == "mlp" else {"window": W, "n_assets": A, "hidden": 8, "embed": EMBED}
    torch.manual_seed(3)
    e_flat = get_extractor(name)(flat_space, **kw).eval()
    torch.manual_seed(3)
    e_dict = get_extractor(name)(dict_space, **kw).eval()
    obs = _flat_obs(np.random.default_rng(4), 3)
    nf, nm = W * A * F, W * A
    as_dict = {"features": torch.from_numpy(obs[:, :nf].reshape(3, W, A, F)),
               "mask": torch.from_numpy(obs[:, nf:nf + nm].reshape(3, W, A)), "portfolio": torch.from_numpy(obs[:, nf + nm:])}
    with torch.no_grad():
        np.testing.assert_allclose(e_flat(torch.from_numpy(obs)).numpy(), e_dict(as_dict).numpy(), rtol=1e-6)
    assert e_flat.features_dim == e_dict.features_dim


def test_flat_observation_needs_its_layout():
    space = observation_space("flat", W, A, F)
    with pytest.raises(ConfigError, match="window and n_assets"):
        AssetConvExtractor(space)
    with pytest.raises(ConfigError, match="does not fit window=3, n_assets=4"):
        AssetConvExtractor(space, window=3, n_assets=A)
    with pytest.raises(ConfigError, match="flat Box or its dict"):
        AssetGRUExtractor(spaces.Box(-1, 1, (3, 4)), window=1, n_assets=1)
    assert ObsLayout.from_space(space, W, A) == ObsLayout(W, A, F)


def test_unknown_extractor_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'asset_gru'"):
        get_extractor("asset_gur")
    with pytest.raises(ConfigError, match="cross='max'"):
        AssetConvExtractor(observation_space("dict", W, A, F), cross="max")


def test_sb3_ppo_trains_with_each_extractor_selected_by_name():
    from stable_baselines3 import PPO

    from factorgym.agents.sb3_vec import make_vec_env

    tensor = planted_market(120, n_assets=3, n_noise=1, seed=0)
    env = CryptoTradingEnv(tensor, window=6)
    obs, _ = env.reset(seed=0)
    for name in EXTRACTORS:
        venv = make_vec_env(tensor, 4, seed=0, window=6, episode_length=20)
        kw = policy_kwargs(name, venv, **({} if name == "mlp" else {"hidden": 8, "embed": 8}))
        model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, policy_kwargs=kw, seed=0, device="cpu")
        model.learn(64)
        assert isinstance(model.policy.features_extractor, EXTRACTORS[name])
        action, _ = model.predict(obs, deterministic=True)
        assert env.action_space.contains(action.astype(np.float32))
    assert isinstance(FlattenObs(env.observation_space), FlattenObs)
    assert policy_kwargs("asset_gru", env)["features_extractor_kwargs"] == {"window": 6, "n_assets": 3}


def test_module_example_runs():
    import doctest

    from factorgym.agents import extractors

    result = doctest.testmod(extractors, verbose=False)
    assert result.attempted > 0 and result.failed == 0
