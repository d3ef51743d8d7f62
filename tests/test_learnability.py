"""Learnability, end to end: PPO finds a weak planted signal and beats buy-and-hold on held-out bars;
with the signal shuffled in time (same distribution, no information) it does not.

Market and target: :data:`factorgym.agents.custom.planted.LEARNABLE` and ``SHARPE_MARGIN``. The fast
setting is SB3 PPO with 64 envs, 32 steps each, minibatches of 2048, 4 epochs: the same optimizer
steps per env step as train's ``configs/train/ppo_fast.yaml`` (128 steps, 4 minibatches of 2048),
with window 1 and no VecNormalize; the custom PPO runs with the same numbers.
"""

from __future__ import annotations

import pytest
import torch

from factorgym.agents.custom import ppo
from factorgym.agents.custom.planted import SHARPE_MARGIN, learnability_splits, sharpe_vs_buy_and_hold
from factorgym.envs.config import ExecutionConfig

pytestmark = pytest.mark.slow  # four trainings of 200k env steps: 1-3 minutes on 2 cores

STEPS = 200_000
ENV = {"window": 1, "mapping": "simplex", "episode_length": 256, "execution": ExecutionConfig.frictionless()}


def _sb3_fast(train, seed: int = 0):
    from stable_baselines3 import PPO

    from factorgym.agents.sb3_vec import make_vec_env

    torch.set_num_threads(1)
    venv = make_vec_env(train, 64, seed=seed, **ENV)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=2048, n_epochs=4, seed=seed, device="cpu")
    return model.learn(STEPS)


def _custom(train, seed: int = 0):
    args = ppo.Args(total_timesteps=STEPS, seed=seed, window=ENV["window"], mapping=ENV["mapping"],
                    episode_length=ENV["episode_length"], env_kwargs={"execution": ENV["execution"]})
    return ppo.train(args, train).policy()


@pytest.mark.parametrize("trainer", [_sb3_fast, _custom], ids=["sb3_ppo_fast", "custom_ppo"])
def test_ppo_learns_the_planted_signal_and_not_a_shuffled_one(trainer):
    planted = learnability_splits()
    agent, bh = sharpe_vs_buy_and_hold(trainer(planted["train"]), planted["test"], **ENV)
    assert agent > bh + SHARPE_MARGIN, f"planted signal: agent Sharpe {agent:.2f} vs buy-and-hold {bh:.2f}"

    shuffled = learnability_splits(shuffle_signal=True)
    agent_s, bh_s = sharpe_vs_buy_and_hold(trainer(shuffled["train"]), shuffled["test"], **ENV)
    assert agent_s <= bh_s + SHARPE_MARGIN, f"shuffled signal: agent Sharpe {agent_s:.2f} vs buy-and-hold {bh_s:.2f}"
