"""RLlib PPO with 2 env runners (vector entry point) trains a few iterations inside the loopback-only
namespace and writes a bundle that factorgym's backtest reads. Needs the [rllib] extra, which lives in
its own venv (`make test-rllib`); elsewhere this file skips."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

NO_RLLIB = "the [rllib] extra is not installed here (make test-rllib builds its venv)"
if importlib.util.find_spec("tree") is None:  # dm_tree, an [rllib] dependency: skip without importing Ray (~8 s)
    pytest.skip(NO_RLLIB, allow_module_level=True)
pytest.importorskip("ray.rllib", reason=NO_RLLIB)

from _netns import ray_env, require_netns, run_in_netns  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_rllib_ppo_two_env_runners_to_a_bundle_that_backtests(tmp_path):
    require_netns()
    from factorgym.agents.bundle import load_policy
    from factorgym.agents.policy_backtest import backtest_policy
    from factorgym.agents.train import build_config, load_tensor, make_splits
    from factorgym.data_layer.tensor import FactorTensor

    rng = np.random.default_rng(0)
    T, A = 300, 2
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    tdir = FactorTensor.from_arrays(rng.normal(size=(T, A, 3)), close, np.arange(T) * 3_600_000,
                                    symbols=["S0/USDT", "S1/USDT"]).save(tmp_path / "t")
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"tensor": str(tdir), "window": 4, "episode_length": 32}))
    out = tmp_path / "rl"
    t0 = time.perf_counter()
    p = run_in_netns([sys.executable, REPO / "scripts" / "rllib_ppo.py", "--config", REPO / "configs" / "rllib" / "ppo.yaml",
                      "--set", f"run_config={run}", "--set", "num_env_runners=2", "--set", "num_envs_per_env_runner=2",
                      "--set", "iterations=3", "--set", "train_batch_size=256", "--set", "minibatch_size=64",
                      "--set", "fcnet_hiddens=[16]", "--set", f"out={out}"], env=ray_env(), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"RLlib PPO: {summary['env_steps']} env steps in {summary['wall_s']:.1f} s "
          f"({summary['env_steps_per_s']:.0f} env-steps/s, 2 env runners); whole command {time.perf_counter() - t0:.0f} s")
    assert summary["iterations"] == 3 and summary["env_steps"] >= 3 * 256 and summary["num_env_runners"] == 2

    cfg = build_config(str(run))
    tensor, _ = load_tensor(cfg)
    policy = load_policy(summary["bundle"], tensor=tensor)
    assert type(policy).__name__ == "TorchScriptPolicy"
    test = make_splits(tensor, cfg)["test"]
    res = backtest_policy(policy, test, name="rllib")
    assert np.isfinite(res.equity).all() and len(res.equity) > 10
    assert not any(out.glob(".ray")), "Ray's session files were left in the run folder"
