"""Training speed and what it buys: SB3 PPO fast vs default settings, the custom PPO vs SB3, the env's
share of wall time, and the wall time to learn the planted signal. References measured in the same run.

Market: :data:`factorgym.agents.custom.planted.LEARNABLE` (2 assets, 1 signal + 1 noise feature,
8,000 hourly bars; window 1, simplex weights, frictionless, episodes of 256 bars), train 75% / test 25%.

Settings:
* **fast**: 64 envs x 32 steps per rollout, minibatches of 2048, 4 epochs (MLP 64-64, separate
  actor and critic): the optimizer steps per env step of train's ``ppo_fast`` preset (which takes
  128 steps per env and 4 minibatches); the custom PPO runs with the same numbers.
* **default**: SB3's PPO defaults: 1 env, n_steps 2048, batch 64, 10 epochs.

Figures (one JSON line each; env-steps/s are the best of ``--repeats`` interleaved runs):
* ``sb3_fast_vs_default``: SB3 fast env-steps/s; goal >= 10x SB3 default.
* ``custom_vs_sb3``: custom PPO env-steps/s at the fast settings; goal >= 1.2x SB3.
* ``custom_vs_sb3_equal_time``: test-split Sharpe of each after ``--seconds`` of training; goal: the
  custom PPO's >= SB3's (one seed each: a noisy figure; the reference gives both and buy-and-hold's).
* ``env_share_fast``: share of SB3 fast training wall time spent in the env; goal <= 5%.
* ``time_to_target``: wall time (training only) for SB3 fast to beat buy-and-hold's test Sharpe by
  ``SHARPE_MARGIN``, checked every 16 rollouts; no goal (the reference holds steps and Sharpes).
* ``torch_threads``: env-steps/s with 2 torch threads / with 1, per algorithm; no goal.

SB3 default runs 2 rollouts of 2048 (each followed by its 10 epochs); the fast runs stop at
131,072 steps or after 30 s (15 s with 2 threads, run once after the others). The speed goals compare
1-thread runs. On a shared, loaded machine every figure drops, 2 threads most of all.

    python benchmarks/train.py [--quick] [--repeats N] [--seconds S]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import factorgym  # noqa: E402,F401  (first: it silences the legacy gym's banner that SB3 would trigger)
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.vec_env import VecEnvWrapper  # noqa: E402

from factorgym.agents.custom import ppo  # noqa: E402
from factorgym.agents.custom.planted import SHARPE_MARGIN, learnability_splits, sharpe_vs_buy_and_hold  # noqa: E402
from factorgym.agents.sb3_vec import make_vec_env  # noqa: E402
from factorgym.envs.config import ExecutionConfig  # noqa: E402

ENV = {"window": 1, "mapping": "simplex", "episode_length": 256, "execution": ExecutionConfig.frictionless()}
FAST = {"n_envs": 64, "n_steps": 32, "batch_size": 2048, "n_epochs": 4}
DEFAULT = {"n_envs": 1, "n_steps": 2048, "batch_size": 64, "n_epochs": 10}


class TimedEnv(VecEnvWrapper):
    """Adds up the seconds spent inside the wrapped env's reset and step."""

    def __init__(self, venv) -> None:
        super().__init__(venv)
        self.spent = 0.0

    def reset(self):
        t0 = time.perf_counter()
        obs = self.venv.reset()
        self.spent += time.perf_counter() - t0
        return obs

    def step_async(self, actions) -> None:
        t0 = time.perf_counter()
        self.venv.step_async(actions)
        self.spent += time.perf_counter() - t0

    def step_wait(self):
        t0 = time.perf_counter()
        out = self.venv.step_wait()
        self.spent += time.perf_counter() - t0
        return out


class StopAfter(BaseCallback):
    """Stops SB3's ``learn`` once ``seconds`` of wall time have passed (checked every step)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.t0 = seconds, 0.0

    def _on_training_start(self) -> None:
        self.t0 = time.perf_counter()

    def _on_step(self) -> bool:
        return time.perf_counter() - self.t0 < self.seconds


def sb3_model(train, settings: dict, seed: int = 0) -> PPO:
    venv = TimedEnv(make_vec_env(train, settings["n_envs"], seed=seed, **ENV))
    return PPO("MlpPolicy", venv, n_steps=settings["n_steps"], batch_size=settings["batch_size"],
               n_epochs=settings["n_epochs"], seed=seed, device="cpu")


def sb3_run(train, settings: dict, steps: int, threads: int, seconds: float = float("inf")) -> dict:
    torch.set_num_threads(threads)
    model = sb3_model(train, settings)
    t0 = time.perf_counter()
    model.learn(steps, callback=StopAfter(seconds))
    wall = time.perf_counter() - t0
    return {"sps": model.num_timesteps / wall, "wall": wall, "env_s": model.env.spent, "model": model}


def custom_args(steps: int, threads: int, seconds: float = float("inf")) -> ppo.Args:
    return ppo.Args(total_timesteps=steps, num_envs=FAST["n_envs"], num_steps=FAST["n_steps"],
                    minibatch_size=FAST["batch_size"], update_epochs=FAST["n_epochs"], torch_threads=threads,
                    max_seconds=seconds, window=ENV["window"], mapping=ENV["mapping"],
                    episode_length=ENV["episode_length"], env_kwargs={"execution": ENV["execution"]})


def custom_run(train, steps: int, threads: int, seconds: float = float("inf")) -> dict:
    res = ppo.train(custom_args(steps, threads, seconds), train)
    return {"sps": res.env_steps / res.seconds, "wall": res.seconds, "env_s": res.env_seconds, "policy": res.policy()}


def emit(case: str, metric: str, value: float, goal: float | None, meets: bool | None, reference: dict) -> None:
    print(json.dumps({"bench": "train", "case": case, "metric": metric, "value": round(value, 4),
                      "goal": None if goal is None else round(goal, 4), "meets_goal": meets, "reference": reference}),
          flush=True)


def time_to_target(parts: dict, chunk: int, max_steps: int) -> dict:
    """SB3 fast, trained in chunks; after each, the test-split Sharpe gap (evaluation not timed)."""
    torch.set_num_threads(1)
    model = sb3_model(parts["train"], FAST)
    wall, agent, bh = 0.0, float("nan"), float("nan")
    while model.num_timesteps < max_steps:
        t0 = time.perf_counter()
        model.learn(chunk, reset_num_timesteps=False)
        wall += time.perf_counter() - t0
        agent, bh = sharpe_vs_buy_and_hold(model, parts["test"], **ENV)
        if agent > bh + SHARPE_MARGIN:
            return {"reached": True, "wall": wall, "steps": model.num_timesteps, "agent": agent, "bh": bh}
    return {"reached": False, "wall": wall, "steps": model.num_timesteps, "agent": agent, "bh": bh}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and seconds (a smoke run; figures are rough)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of the speed runs; the best is kept")
    ap.add_argument("--seconds", type=float, default=20.0, help="training wall time of the equal-time comparison")
    args = ap.parse_args(argv)
    fast_steps, default_steps = (32_768, 4096) if args.quick else (131_072, 4096)
    seconds = min(args.seconds, 5.0) if args.quick else args.seconds
    cap = 10.0 if args.quick else 30.0  # a speed run stops after the rollout+update that crosses this
    parts = learnability_splits()
    train = parts["train"]
    custom_run(train, 4096, 1)  # warm-up: numba's compiled kernels from the disk cache, torch's first calls

    runs = {"sb3_default": lambda: sb3_run(train, DEFAULT, default_steps, 1),
            "sb3_fast_1": lambda: sb3_run(train, FAST, fast_steps, 1, cap),
            "custom_1": lambda: custom_run(train, fast_steps, 1, cap)}
    best: dict[str, dict] = {}
    for repeat in range(max(1, args.repeats) + 1):  # the 2-thread runs last: they load both cores
        for name, fn in (runs.items() if repeat < max(1, args.repeats) else
                         (("sb3_fast_2", lambda: sb3_run(train, FAST, fast_steps, 2, cap / 2)),
                          ("custom_2", lambda: custom_run(train, fast_steps, 2, cap / 2)))):
            r = fn()
            if name not in best or r["sps"] > best[name]["sps"]:
                best[name] = r
    sps = {k: v["sps"] for k, v in best.items()}
    sb3_fast, custom = sps["sb3_fast_1"], sps["custom_1"]  # 1 torch thread each (2 is slower here: see torch_threads_*)
    ref = {k: round(v) for k, v in sps.items()}
    emit("sb3_fast_vs_default", "env_steps_per_s", sb3_fast, 10 * sps["sb3_default"], sb3_fast >= 10 * sps["sb3_default"],
         {**ref, "ratio": round(sb3_fast / sps["sb3_default"], 2), "goal_ratio": 10, "fast": FAST, "default": DEFAULT})
    emit("custom_vs_sb3", "env_steps_per_s", custom, 1.2 * sb3_fast, custom >= 1.2 * sb3_fast,
         {**ref, "ratio": round(custom / sb3_fast, 2), "goal_ratio": 1.2, "settings": FAST})
    fast1 = best["sb3_fast_1"]
    share = fast1["env_s"] / fast1["wall"]
    emit("env_share_fast", "fraction_of_wall_time", share, 0.05, share <= 0.05,
         {"env_s": round(fast1["env_s"], 3), "wall_s": round(fast1["wall"], 3), "algorithm": "sb3_ppo",
          "custom_ppo_share": round(best["custom_1"]["env_s"] / best["custom_1"]["wall"], 4)})
    for algo, one, two in (("sb3_ppo", "sb3_fast_1", "sb3_fast_2"), ("custom_ppo", "custom_1", "custom_2")):
        emit(f"torch_threads_{algo}", "speedup_2_threads_over_1", sps[two] / sps[one], None, None,
             {"sps_1_thread": round(sps[one]), "sps_2_threads": round(sps[two])})

    s = sb3_run(train, FAST, 10**9, 1, seconds)
    c = custom_run(train, 10**9, 1, seconds)
    s_sharpe, bh = sharpe_vs_buy_and_hold(s["model"], parts["test"], **ENV)
    c_sharpe, _ = sharpe_vs_buy_and_hold(c["policy"], parts["test"], **ENV)
    emit("custom_vs_sb3_equal_time", "test_sharpe", c_sharpe, s_sharpe, c_sharpe >= s_sharpe,
         {"sb3_sharpe": round(s_sharpe, 3), "buy_and_hold_sharpe": round(bh, 3), "seconds": seconds,
          "sb3_steps": round(s["sps"] * s["wall"]), "custom_steps": round(c["sps"] * c["wall"])})

    t = time_to_target(parts, 16 * 2048, 16 * 2048 * (8 if args.quick else 24))
    emit("time_to_target", "seconds", t["wall"] if t["reached"] else float("inf"), None, None,
         {"reached": t["reached"], "env_steps": t["steps"], "agent_sharpe": round(t["agent"], 3),
          "buy_and_hold_sharpe": round(t["bh"], 3), "margin": SHARPE_MARGIN, "settings": FAST})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
