"""Training speed and what it buys: SB3 PPO with the ``ppo_fast`` preset vs SB3's default settings, the
custom PPO vs SB3, the env's share of wall time, and the wall time to learn the planted signal.
References measured in the same run.

Market: :data:`factorgym.agents.custom.planted.LEARNABLE` (2 assets, 1 signal + 1 noise feature,
8,000 hourly bars, frictionless), cut as the preset's ``split`` (70/15/15, embargo 24 bars).

Settings:
* **fast**: ``configs/train/ppo_fast.yaml`` as ``train()`` resolves it (64 envs x 128 steps per
  rollout, minibatches of 2048, 4 epochs, MLP 64-64 tanh, window 16, VecNormalize on observations),
  on the env stack ``train()`` builds (:func:`factorgym.agents.train.make_training_env`); the custom
  PPO runs with the same numbers (and its own observation normaliser).
* **default**: SB3's PPO defaults (1 env, n_steps 2048, batch 64, 10 epochs) on the same env.
* **learn**: the fast preset with ``window: 1``, as in tests/test_learnability.py (the planted signal
  is one bar deep; at window 16 the preset had not found it after 400k env steps), for the two
  figures about learning: the equal-time Sharpe comparison and the time to the target.

Figures (one JSON line each; env-steps/s are the best of ``--repeats`` interleaved runs):
* ``sb3_fast_vs_default``: SB3 fast env-steps/s; goal >= 10x SB3 default.
* ``custom_vs_sb3``: custom PPO env-steps/s at the fast settings; goal >= 1.2x SB3.
* ``custom_vs_sb3_equal_time`` (learn): test-split Sharpe after ``--seconds`` of training, ``--seeds`` seeds
  each (runs interleaved); goal: the custom PPO's mean >= SB3's mean (per-seed values, spread and
  buy-and-hold's in the reference).
* ``env_share_fast``: seconds SB3's ``step_async``/``step_wait``/``reset`` spend in the SB3 adapter
  (the kernel's ``CryptoTradingVectorEnv.step`` plus the adapter's per-env infos) over SB3 fast
  training wall time; goal <= 5%. The reference splits it (kernel alone) and gives the share with
  the wrappers ``train()`` adds above it (VecMonitor, trading-episode monitor, VecNormalize).
* ``time_to_target`` (learn): wall time (training only) for SB3 fast to beat buy-and-hold's test Sharpe by
  ``SHARPE_MARGIN``, checked every 4 rollouts (32,768 steps); no goal (the reference holds steps and Sharpes).
* ``torch_threads``: env-steps/s with 2 torch threads / with 1, per algorithm; no goal.

SB3 default runs 2 rollouts of 2048 (each followed by its 10 epochs); the fast runs stop at
131,072 steps or after 30 s (15 s with 2 threads, run once after the others). The speed goals compare
1-thread runs. On a shared, loaded machine every figure drops, 2 threads most of all.

    python benchmarks/train.py [--quick] [--repeats N] [--seconds S] [--seeds K]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import factorgym  # noqa: E402,F401  (first: it silences the legacy gym's banner that SB3 would trigger)
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.vec_env import VecEnvWrapper  # noqa: E402

from factorgym.agents import config as C  # noqa: E402
from factorgym.agents.custom import ppo  # noqa: E402
from factorgym.agents.custom.planted import LEARNABLE, SHARPE_MARGIN, planted_market, sharpe_vs_buy_and_hold  # noqa: E402
from factorgym.agents.train import IN_MEMORY, build_config, env_kwargs, make_splits, make_training_env  # noqa: E402
from factorgym.envs.config import ExecutionConfig  # noqa: E402

PRESET = build_config("ppo_fast", overrides={"tensor": IN_MEMORY,
                                             "execution": dataclasses.asdict(ExecutionConfig.frictionless())})
LEARN = {**PRESET, "window": 1}  # the learnability test's preset: the planted signal is one bar deep
FAST = {k: PRESET[k] for k in ("n_envs", "n_steps", "batch_size", "n_epochs")}
DEFAULT = {"n_envs": 1, "n_steps": 2048, "batch_size": 64, "n_epochs": 10}
ENV = env_kwargs(PRESET)  # the preset's training env (window 16, simplex, log return, 256-bar episodes)
BT = {"window": LEARN["window"], "mapping": LEARN["mapping"]}  # the backtests' env (frictionless, whole split)


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


class TimedKernel:
    """Stands in for the adapter's ``CryptoTradingVectorEnv``, adding up the seconds of its ``step``."""

    def __init__(self, venv) -> None:
        self._venv, self.spent = venv, 0.0

    def step(self, actions):
        t0 = time.perf_counter()
        out = self._venv.step(actions)
        self.spent += time.perf_counter() - t0
        return out

    def __getattr__(self, name):
        return getattr(self._venv, name)


class StopAfter(BaseCallback):
    """Stops SB3's ``learn`` once ``seconds`` of wall time have passed (checked every step)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.t0 = seconds, 0.0

    def _on_training_start(self) -> None:
        self.t0 = time.perf_counter()

    def _on_step(self) -> bool:
        return time.perf_counter() - self.t0 < self.seconds


def sb3_model(train, settings: dict, seed: int = 0, preset: dict = PRESET) -> PPO:
    """SB3 PPO with the preset's hyperparameters and ``settings`` on the env stack train() builds; the
    adapter is timed (``model.timers``: adapter, kernel, everything the model steps)."""
    timers = {}

    def wrap(adapter):
        adapter.venv = timers["kernel"] = TimedKernel(adapter.venv)
        timers["adapter"] = TimedEnv(adapter)
        return timers["adapter"]

    cfg = {**preset, "n_envs": settings["n_envs"], "seed": seed}
    venv = timers["stack"] = TimedEnv(make_training_env(cfg, train, wrap_adapter=wrap))
    kw = {**C.algorithm_kwargs(cfg, n_assets=train.n_assets), **{k: settings[k] for k in ("n_steps", "batch_size", "n_epochs")}}
    model = PPO(C.policy_name(cfg), venv, seed=seed, device="cpu", **kw)
    model.timers = timers
    return model


def sb3_run(train, settings: dict, steps: int, threads: int, seconds: float = float("inf"), seed: int = 0,
            preset: dict = PRESET) -> dict:
    torch.set_num_threads(threads)
    model = sb3_model(train, settings, seed, preset)
    t0 = time.perf_counter()
    model.learn(steps, callback=StopAfter(seconds))
    wall = time.perf_counter() - t0
    return {"sps": model.num_timesteps / wall, "wall": wall, "model": model,
            **{f"{k}_s": v.spent for k, v in model.timers.items()}}


def sb3_policy(model):
    """The model as a ``Policy`` with its VecNormalize statistics (what a saved bundle would act with)."""
    from factorgym.agents.bundle import PolicySpec
    from factorgym.agents.sb3_policy import SB3Policy, vecnormalize_stats

    venv = model.get_env()
    return SB3Policy(model, PolicySpec.from_env(venv, PARTS["train"], obs_normaliser=vecnormalize_stats(venv)))


def custom_args(steps: int, threads: int, seconds: float = float("inf"), seed: int = 0, p: dict = PRESET) -> ppo.Args:
    return ppo.Args(total_timesteps=steps, num_envs=FAST["n_envs"], num_steps=FAST["n_steps"],
                    minibatch_size=FAST["batch_size"], update_epochs=FAST["n_epochs"], torch_threads=threads,
                    max_seconds=seconds, window=p["window"], mapping=p["mapping"], reward=p["reward"],
                    episode_length=p["episode_length"], learning_rate=p["learning_rate"], gamma=p["gamma"],
                    gae_lambda=p["gae_lambda"], clip_coef=p["clip_range"], ent_coef=p["ent_coef"],
                    norm_obs=p["normalize_obs"], seed=seed,
                    env_kwargs={"execution": ENV["execution"]})


def custom_run(train, steps: int, threads: int, seconds: float = float("inf"), seed: int = 0,
               preset: dict = PRESET) -> dict:
    res = ppo.train(custom_args(steps, threads, seconds, seed, preset), train)
    return {"sps": res.env_steps / res.seconds, "wall": res.seconds, "env_s": res.env_seconds, "policy": res.policy()}


def emit(case: str, metric: str, value: float, goal: float | None, meets: bool | None, reference: dict) -> None:
    print(json.dumps({"bench": "train", "case": case, "metric": metric, "value": round(value, 4),
                      "goal": None if goal is None else round(goal, 4), "meets_goal": meets, "reference": reference}),
          flush=True)


def time_to_target(parts: dict, chunk: int, max_steps: int) -> dict:
    """SB3 fast, trained in chunks; after each, the test-split Sharpe gap (evaluation not timed)."""
    torch.set_num_threads(1)
    model = sb3_model(parts["train"], FAST, preset=LEARN)
    wall, agent, bh = 0.0, float("nan"), float("nan")
    while model.num_timesteps < max_steps:
        t0 = time.perf_counter()
        model.learn(chunk, reset_num_timesteps=False)
        wall += time.perf_counter() - t0
        agent, bh = sharpe_vs_buy_and_hold(sb3_policy(model), parts["test"], **BT)
        if agent > bh + SHARPE_MARGIN:
            return {"reached": True, "wall": wall, "steps": model.num_timesteps, "agent": agent, "bh": bh}
    return {"reached": False, "wall": wall, "steps": model.num_timesteps, "agent": agent, "bh": bh}


def spread(xs: list[float]) -> dict:
    return {"mean": round(statistics.fmean(xs), 3), "std": round(statistics.stdev(xs), 3) if len(xs) > 1 else 0.0,
            "min": round(min(xs), 3), "max": round(max(xs), 3), "values": [round(x, 3) for x in xs]}


PARTS = make_splits(planted_market(**LEARNABLE), PRESET)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, seconds and seeds (a smoke run; figures are rough)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of the speed runs; the best is kept")
    ap.add_argument("--seconds", type=float, default=60.0, help="training wall time of the equal-time comparison")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per algorithm in the equal-time comparison")
    ap.add_argument("--skip", nargs="*", default=[], choices=("speed", "equal_time", "target"),
                    help="figure groups to leave out")
    args = ap.parse_args(argv)
    fast_steps, default_steps = (32_768, 4096) if args.quick else (131_072, 4096)
    seconds = min(args.seconds, 5.0) if args.quick else args.seconds
    n_seeds = min(args.seeds, 2) if args.quick else args.seeds
    cap = 10.0 if args.quick else 30.0  # a speed run stops after the rollout+update that crosses this
    parts, train = PARTS, PARTS["train"]
    custom_run(train, 8192, 1)  # warm-up: numba's compiled kernels from the disk cache, torch's first calls

    if "speed" not in args.skip:
        speed(train, args.repeats, fast_steps, default_steps, cap)
    if "equal_time" not in args.skip:
        sharpes: dict[str, list[float]] = {"sb3": [], "custom": []}
        steps: dict[str, list[int]] = {"sb3": [], "custom": []}
        bh = float("nan")
        for seed in range(n_seeds):  # interleaved, so load changes hit both alike
            s = sb3_run(train, FAST, 10**9, 1, seconds, seed, LEARN)
            c = custom_run(train, 10**9, 1, seconds, seed, LEARN)
            s_sharpe, bh = sharpe_vs_buy_and_hold(sb3_policy(s["model"]), parts["test"], **BT)
            c_sharpe, _ = sharpe_vs_buy_and_hold(c["policy"], parts["test"], **BT)
            sharpes["sb3"].append(s_sharpe), sharpes["custom"].append(c_sharpe)
            steps["sb3"].append(round(s["sps"] * s["wall"])), steps["custom"].append(round(c["sps"] * c["wall"]))
        cm, sm = statistics.fmean(sharpes["custom"]), statistics.fmean(sharpes["sb3"])
        emit("custom_vs_sb3_equal_time", "mean_test_sharpe", cm, sm, cm >= sm,
             {"seeds": n_seeds, "seconds": seconds, "custom": spread(sharpes["custom"]), "sb3": spread(sharpes["sb3"]),
              "buy_and_hold_sharpe": round(bh, 3), "custom_steps": steps["custom"], "sb3_steps": steps["sb3"]})
    if "target" not in args.skip:
        chunk = 4 * FAST["n_envs"] * FAST["n_steps"]
        t = time_to_target(parts, chunk, chunk * (8 if args.quick else 24))
        emit("time_to_target", "seconds", t["wall"] if t["reached"] else float("inf"), None, None,
             {"reached": t["reached"], "env_steps": t["steps"], "agent_sharpe": round(t["agent"], 3),
              "buy_and_hold_sharpe": round(t["bh"], 3), "margin": SHARPE_MARGIN, "preset": "ppo_fast", "settings": FAST})
    return 0


def speed(train, repeats: int, fast_steps: int, default_steps: int, cap: float) -> None:
    runs = {"sb3_default": lambda: sb3_run(train, DEFAULT, default_steps, 1),
            "sb3_fast_1": lambda: sb3_run(train, FAST, fast_steps, 1, cap),
            "custom_1": lambda: custom_run(train, fast_steps, 1, cap)}
    best: dict[str, dict] = {}
    for repeat in range(max(1, repeats) + 1):  # the 2-thread runs last: they load both cores
        for name, fn in (runs.items() if repeat < max(1, repeats) else
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
    f = best["sb3_fast_1"]
    share = f["adapter_s"] / f["wall"]
    emit("env_share_fast", "fraction_of_wall_time", share, 0.05, share <= 0.05,
         {"counted": "SB3 adapter: kernel step + per-env infos", "env_s": round(f["adapter_s"], 3),
          "kernel_s": round(f["kernel_s"], 3), "wall_s": round(f["wall"], 3), "algorithm": "sb3_ppo",
          "share_with_wrappers": round(f["stack_s"] / f["wall"], 4),
          "wrappers": "VecMonitor, TradingEpisodeMonitor, VecNormalize",
          "custom_ppo_share": round(best["custom_1"]["env_s"] / best["custom_1"]["wall"], 4)})
    for algo, one, two in (("sb3_ppo", "sb3_fast_1", "sb3_fast_2"), ("custom_ppo", "custom_1", "custom_2")):
        emit(f"torch_threads_{algo}", "speedup_2_threads_over_1", sps[two] / sps[one], None, None,
             {"sps_1_thread": round(sps[one]), "sps_2_threads": round(sps[two])})


if __name__ == "__main__":
    raise SystemExit(main())
