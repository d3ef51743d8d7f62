"""RLlib PPO on the trading env with N env runners, written as a factorgym bundle.

``train_rllib(cfg)`` with a mapping like configs/rllib/ppo.yaml: starts Ray the factorgym way
(:mod:`factorgym.agents.ray_session`), registers the env (:mod:`factorgym.agents.rllib_env`, vector
entry point), trains ``iterations`` PPO iterations, exports the deterministic policy as a bundle
(:mod:`factorgym.agents.rllib_bundle`) under ``<out>/bundles/final`` and reports env-steps/s.
Needs the ``[rllib]`` extra (its own venv: ``make test-rllib``; ray[rllib] pins gymnasium 1.2.2).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from factorgym.errors import ConfigError

DEFAULTS = {"run_config": "ppo_fast", "tensor": None, "num_env_runners": 2, "num_envs_per_env_runner": 4,
            "iterations": 5, "train_batch_size": 2048, "minibatch_size": 256, "num_epochs": 4, "lr": 3.0e-4,
            "gamma": 0.99, "fcnet_hiddens": [64, 64], "seed": 0, "out": "runs/rllib_ppo", "num_cpus": None,
            "object_store_mb": 256}


def resolve(cfg: Mapping) -> dict:
    bad = [k for k in cfg if k not in DEFAULTS]
    if bad:
        import difflib

        close = difflib.get_close_matches(bad[0], list(DEFAULTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown key {bad[0]!r}{hint}; RLlib keys: {', '.join(DEFAULTS)}")
    return {**DEFAULTS, **cfg}


def train_rllib(cfg: Mapping) -> dict:
    try:
        from ray.rllib.algorithms.ppo import PPOConfig
        from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    except ImportError as exc:
        raise ConfigError(f"RLlib is not installed ({exc.name}): pip install 'factorgym[rllib]' in its own venv "
                          f"(ray[rllib] pins gymnasium 1.2.2); `make test-rllib` builds one") from None
    from factorgym.agents import rllib_env
    from factorgym.agents.bundle import PolicySpec
    from factorgym.agents.ray_session import ray_session
    from factorgym.agents.rllib_bundle import save_rllib_bundle

    c = resolve(cfg)
    out = Path(c["out"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env_config = {"run_config": c["run_config"], "tensor": c["tensor"], "part": "train"}
    probe = rllib_env.make_env(env_config)  # fail here, before Ray starts, on a bad run config or tensor
    workers = int(c["num_env_runners"])
    with ray_session(num_cpus=c["num_cpus"] or max(2, workers + 1), temp_dir=out / ".ray", object_store_mb=c["object_store_mb"]):
        name = rllib_env.register()
        config = (PPOConfig()
                  .environment(env=name, env_config=env_config)
                  .env_runners(num_env_runners=workers, num_envs_per_env_runner=int(c["num_envs_per_env_runner"]),
                               gym_env_vectorize_mode="vector_entry_point", num_cpus_per_env_runner=1)
                  .training(train_batch_size_per_learner=int(c["train_batch_size"]), minibatch_size=int(c["minibatch_size"]),
                            num_epochs=int(c["num_epochs"]), lr=float(c["lr"]), gamma=float(c["gamma"]))
                  .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(c["fcnet_hiddens"])))
                  .debugging(seed=int(c["seed"]), log_level="ERROR")
                  .reporting(metrics_num_episodes_for_smoothing=20))
        algo = config.build_algo()
        history = []
        steps0, t0 = 0, time.perf_counter()
        for i in range(int(c["iterations"])):
            r = algo.train()
            er = r.get("env_runners", {})
            steps = int(er.get("num_env_steps_sampled_lifetime", 0))
            history.append({"iteration": i + 1, "env_steps": steps, "wall_s": time.perf_counter() - t0,
                            "episode_return_mean": er.get("episode_return_mean")})
        wall = time.perf_counter() - t0
        module = algo.get_module()
        spec = PolicySpec.from_env(probe, rllib_env._parts(env_config)[1], extra={"algorithm": "RLlib PPO", "config": dict(c)})
        obs, _ = probe.reset(seed=0)
        bundle = save_rllib_bundle(out / "bundles" / "final", module, spec, probe.action_space, obs[None])
        algo.stop()
    rate = history[-1]["env_steps"] / wall if history else 0.0
    summary = {"bundle": str(bundle), "iterations": len(history), "env_steps": history[-1]["env_steps"] if history else 0,
               "wall_s": wall, "env_steps_per_s": rate, "num_env_runners": workers, "history": history}
    (out / "rllib_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
