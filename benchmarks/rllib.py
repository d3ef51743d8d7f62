"""RLlib PPO (2 env runners, vector entry point) beside SB3 PPO (factorgym's batched vector env) on
the same env, end-to-end training env-steps/s (sampling plus updates, same batch and epochs).

    .venv-rllib/bin/python benchmarks/rllib.py      # needs the [rllib] venv (make test-rllib builds it)

Prints one JSON line per figure; without RLlib installed, one line saying it skipped. Ray runs in a
loopback-only network namespace (the script re-runs itself under ``unshare -n``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

BATCH, EPOCHS, MINIBATCH, ITERS = 4096, 4, 1024, 4


def emit(case, value, **ref):
    print(json.dumps({"bench": "rllib", "case": case, "metric": "env-steps/s (training, end to end)",
                      "value": round(value, 1), "goal": None, "meets_goal": None, "reference": ref}), flush=True)


def inner() -> None:
    import numpy as np
    import yaml

    from factorgym.agents.rllib_train import train_rllib
    from factorgym.agents.train import train
    from factorgym.data_layer.tensor import FactorTensor

    root = Path(tempfile.mkdtemp(prefix="fgr-"))
    try:
        rng = np.random.default_rng(0)
        T, A = 3000, 2
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
        tdir = FactorTensor.from_arrays(rng.normal(size=(T, A, 8)), close, np.arange(T) * 3_600_000,
                                        symbols=["S0/USDT", "S1/USDT"]).save(root / "t")
        run = {"tensor": str(tdir), "window": 8, "episode_length": 256, "eval_freq": 0, "checkpoint_freq": 0,
               "torch_threads": 1, "normalize_obs": False, "policy_kwargs": {"net_arch": [64, 64]}}
        (root / "run.yaml").write_text(yaml.safe_dump(run))
        load0 = os.getloadavg()[0]
        sb3 = train({**run, "n_envs": 16, "n_steps": BATCH // 16, "batch_size": MINIBATCH, "n_epochs": EPOCHS,
                     "total_timesteps": BATCH * ITERS}, run_dir=root / "sb3")
        rl = train_rllib({"run_config": str(root / "run.yaml"), "num_env_runners": 2, "num_envs_per_env_runner": 8,
                          "iterations": ITERS, "train_batch_size": BATCH, "minibatch_size": MINIBATCH, "num_epochs": EPOCHS,
                          "fcnet_hiddens": [64, 64], "out": str(root / "rl"), "num_cpus": 3})
        ref = {"batch": BATCH, "epochs": EPOCHS, "minibatch": MINIBATCH, "iterations": ITERS, "cpus": os.cpu_count(),
               "load_avg_1m_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)]}
        emit("SB3 PPO, CryptoTradingVectorEnv x16, 1 process", sb3.env_steps_per_s, **ref)
        emit("RLlib PPO, 2 env runners x 8 envs (SyncVectorEnv), learner in the driver", rl["env_steps_per_s"],
             per_iteration=[round(h["wall_s"], 2) for h in rl["history"]], **ref)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    try:
        import ray.rllib  # noqa: F401
    except ImportError:
        print(json.dumps({"bench": "rllib", "skipped": "ray[rllib] is not installed here; run it with .venv-rllib/bin/python"}))
        return 0
    if "--inner" in sys.argv:
        inner()
        return 0
    from _ray_netns import rerun_in_netns

    return rerun_in_netns(__file__)

if __name__ == "__main__":
    sys.exit(main())
