"""The single-file PPO: advantages against a hand computation, the normaliser against numpy, a tiny
training run whose bundle loads and backtests through the same code, determinism, the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from factorgym.agents.bundle import load_policy, read_bundle
from factorgym.agents.custom import ppo, ppo_cli
from factorgym.agents.custom.planted import planted_market
from factorgym.agents.policy_backtest import backtest_policy, backtest_run
from factorgym.data_layer.splits import split_fractions
from factorgym.envs.config import ExecutionConfig
from factorgym.errors import ConfigError

TINY = dict(total_timesteps=512, num_envs=8, num_steps=16, minibatch_size=64, update_epochs=2, episode_length=12)


def _returns_by_hand(r, v, boot, ended, next_v, gamma):
    """lambda = 1: discounted rewards to the episode's end, plus gamma^k x (V(final obs) on
    truncation, 0 on termination, V(next obs) at the rollout's end); walked forward per env."""
    T, N = r.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            g, disc, k = 0.0, 1.0, t
            while True:
                g += disc * r[k, i]
                disc *= gamma
                if ended[k, i]:
                    g += disc * boot[k, i]
                    break
                if k == T - 1:
                    g += disc * next_v[i]
                    break
                k += 1
            out[t, i] = g
    return out


def test_advantages_bootstrap_truncation_and_cut_at_termination():
    rng = np.random.default_rng(0)
    T, N, gamma = 7, 3, 0.9
    r, v = rng.normal(size=(T, N)), rng.normal(size=(T, N))
    ended = np.zeros((T, N))
    boot = np.zeros((T, N))
    ended[2, 0], boot[2, 0] = 1, 5.0      # env 0: truncated at step 2, V(final obs) = 5
    ended[4, 1] = 1                       # env 1: terminated at step 4 (nothing after it)
    ended[[1, 5], 2], boot[5, 2] = 1, -2.0  # env 2: terminated at 1, truncated at 5
    next_v = rng.normal(size=N)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    adv = ppo.advantages(t(r), t(v), t(boot), t(ended), t(next_v), gamma, 1.0).numpy()
    np.testing.assert_allclose(adv + v, _returns_by_hand(r, v, boot, ended, next_v, gamma), rtol=1e-12)
    # lambda = 0: one-step TD errors
    adv0 = ppo.advantages(t(r), t(v), t(boot), t(ended), t(next_v), gamma, 0.0).numpy()
    v_next = np.vstack([v[1:], next_v[None]]) * (1 - ended) + boot * ended
    np.testing.assert_allclose(adv0, r + gamma * v_next - v, rtol=1e-12)


def test_running_norm_matches_numpy_over_all_batches_and_leaves_the_rest_alone():
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=(n, 6)) for n in (5, 40, 17)]
    norm = ppo.RunningNorm(4, clip=100.0)
    for b in batches:
        norm.update(b)
    allx = np.concatenate(batches)[:, :4]
    np.testing.assert_allclose(norm.mean, allx.mean(0), rtol=1e-4)
    np.testing.assert_allclose(norm.var, allx.var(0), rtol=1e-3)
    obs = rng.normal(size=(2, 6)).astype(np.float32)
    z = norm(obs)
    np.testing.assert_allclose(z[:, :4], (obs[:, :4] - allx.mean(0)) / allx.std(0), rtol=1e-3, atol=1e-4)
    assert np.array_equal(z[:, 4:], obs[:, 4:])  # mask and portfolio pass through
    back = ppo.RunningNorm.from_state(norm.state())
    assert np.array_equal(back(obs), z)


@pytest.fixture(scope="module")
def market():
    tensor = planted_market(400, n_assets=2, n_noise=1, strength=0.2, seed=3)
    return tensor, split_fractions(tensor, (0.75, 0.25))


def test_tiny_run_writes_a_bundle_that_loads_and_backtests_through_the_same_code(market, tmp_path):
    tensor, parts = market
    ex = ExecutionConfig.frictionless()
    args = ppo.Args(**TINY, window=3, env_kwargs={"execution": ex})
    result = ppo.train(args, parts["train"])
    assert result.env_steps == 512 and len(result.history) == 4
    path = ppo.save(result, tmp_path / "ppo.bundle", tensor)
    root, kind, spec = read_bundle(path)
    assert kind == "factorgym-ppo" and spec.window == 3 and spec.execution["taker_fee"] == 0.0
    assert spec.obs_normaliser["mean"] == result.norm.mean.tolist()  # the normaliser travels with the model
    policy = load_policy(path, tensor=parts["validation"])
    assert isinstance(policy, ppo.PPOPolicy) and policy.spec.symbols == tensor.symbols
    obs = np.random.default_rng(0).normal(size=(5, result.venv.single_observation_space.shape[0])).astype(np.float32)
    np.testing.assert_array_equal(policy(obs), result.policy()(obs))  # the loaded model acts as the trained one
    np.testing.assert_allclose(np.stack([policy(o) for o in obs]), policy(obs), atol=1e-6)  # one obs or a batch
    res = backtest_policy(policy, parts["validation"], name="ppo")  # what `factorgym backtest --run` does
    assert res.info["status"] == "ok" and len(res.equity) == parts["validation"].n_bars - 2
    with pytest.raises(ConfigError, match="observation of length 11; the policy was trained on 23"):
        policy(np.zeros(11, dtype=np.float32))
    # the normaliser matters: the same weights without it act differently
    raw = ppo.PPOPolicy(policy.net, ppo.RunningNorm(0, enabled=False), policy.low, policy.high)
    assert not np.allclose(raw(obs * 50), policy(obs * 50))


def test_same_seed_same_weights_other_seed_other_weights(market):
    train = market[1]["train"]
    a, b, c = (ppo.train(ppo.Args(**TINY, seed=s), train) for s in (5, 5, 6))
    sa, sb, sc = (r.net.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert [h["policy_loss"] for h in a.history] == [h["policy_loss"] for h in b.history]


def test_extractor_by_name_and_refusals(market):
    train = market[1]["train"]
    r = ppo.train(ppo.Args(**{**TINY, "total_timesteps": 128}, window=4, extractor="asset_conv"), train)
    assert type(r.net.extractor).__name__ == "AssetConvExtractor"
    with pytest.raises(ConfigError, match="minibatch_size=48 must divide"):
        ppo.train(ppo.Args(**{**TINY, "minibatch_size": 48}), train)
    with pytest.raises(ConfigError, match="action_scheme='weights'"):
        ppo.train(ppo.Args(**TINY, env_kwargs={"action_scheme": "discrete"}), train)


def test_cli_help_documents_every_field_and_main_trains_and_saves(market, tmp_path, capsys):
    docs = ppo_cli.field_docs(ppo.Args)
    assert set(docs) == {f.name for f in dataclasses.fields(ppo.Args)}
    with pytest.raises(SystemExit):
        ppo_cli.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, doc in docs.items():
        if name != "env_kwargs":
            assert "--" + name.replace("_", "-") in text and " ".join(doc.split())[:30] in text
    args = ppo_cli.parse_args(["--hidden", "16", "16", "--no-norm-obs", "--target-kl", "0.05"])
    assert args.hidden == (16, 16) and args.norm_obs is False and args.target_kl == 0.05
    tensor = market[0]
    tensor.save(tmp_path / "t")
    out = tmp_path / "b"
    assert ppo_cli.main(["--tensor", str(tmp_path / "t"), "--total-timesteps", "256", "--num-envs", "8", "--num-steps", "16",
                     "--minibatch-size", "128", "--episode-length", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "buy_and_hold" in printed and "ppo" in printed and "bundle:" in printed
    assert load_policy(out).spec.extra["args"]["total_timesteps"] == 256
    results, files = backtest_run(out, tensor_dir=tmp_path / "t", split="test")  # `factorgym backtest --run`
    assert results["agent"].info["status"] == "ok" and "buy_and_hold" in results and files["report"].is_file()
