"""Speed of the trading env against a bare numpy loop of the same logic, measured in the same run.

Data: 4 assets, 6 features, 20,000 hourly bars of a seeded geometric Brownian motion. The env runs
the full execution model (10 bps taker fee, 2 bps slippage, 1 bp half spread, square-root impact,
lot step, minimum notional, price step). The bare reference loops do target weights, fee on
turnover, a dot product for the return and a copy of a preallocated observation, without lot rules
or slippage. Each figure is the best of ``--repeats`` interleaved runs (the machine is shared).

Prints one JSON line per figure:
    python benchmarks/env_speed.py [--quick] [--skip-ppo]
"""

from __future__ import annotations

import os

# one thread per BLAS/OpenMP pool, set before numpy/torch load them: idle pool threads spinning on a
# 2-core machine would distort every figure
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from factorgym.data_layer.tensor import FactorTensor  # noqa: E402
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv, ExecutionConfig  # noqa: E402

T, A, F = 20_000, 4, 6
FULL = ExecutionConfig(taker_fee=0.001, slippage_bps=2.0, half_spread_bps=1.0, impact_coef=0.01,
                       lot_step=1e-5, min_notional=5.0, price_step=0.01)


def make_tensor(seed: int = 0) -> FactorTensor:
    rng = np.random.default_rng(seed)
    logret = rng.normal(0.0, 0.01, (T, A))
    close = 100.0 * np.exp(np.cumsum(logret, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    prices = np.stack([open_, np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998, close,
                       rng.lognormal(8.0, 0.5, (T, A))], axis=-1)
    feats = rng.normal(size=(T, A, F)).astype(np.float32)
    return FactorTensor.from_arrays(feats, prices, np.arange(T, dtype=np.int64) * 3_600_000,
                                    symbols=[f"S{i}/USDT" for i in range(A)])


# ---------------------------------------------------------------------- bare numpy references
def bare_loop(tensor: FactorTensor, weights: np.ndarray, window: int, fee: float = 0.001) -> float:
    """Steps/s of the simplest single-env loop (target weights, fee on turnover, dot, obs copy)."""
    close = tensor.prices[..., 3]
    rel = close[1:] / close[:-1] - 1.0
    feat = tensor.features.reshape(T, A * F)
    obs = np.zeros(window * A * F + A + 3, dtype=np.float32)
    n = len(weights)
    w = np.zeros(A)
    equity = 1.0
    t0 = time.perf_counter()
    for i in range(n):
        t = i + window - 1
        target = weights[i]
        turnover = np.abs(target - w).sum()
        equity *= 1.0 + float(target @ rel[t]) - fee * turnover
        w = target
        obs[:window * A * F] = feat[t - window + 1:t + 1].reshape(-1)
        _ = obs.copy()
    return n / (time.perf_counter() - t0)


def bare_batched(tensor: FactorTensor, weights: np.ndarray, n_envs: int, n_steps: int, fee: float = 0.001) -> float:
    """Env-steps/s of the same logic batched over ``n_envs`` with numpy (window 1)."""
    close = tensor.prices[..., 3]
    rel = close[1:] / close[:-1] - 1.0
    feat = tensor.features.reshape(T, A * F)
    rng = np.random.default_rng(1)
    t_idx = rng.integers(0, T - n_steps - 2, n_envs)
    obs = np.zeros((n_envs, A * F + A + 3), dtype=np.float32)
    w = np.zeros((n_envs, A))
    equity = np.ones(n_envs)
    t0 = time.perf_counter()
    for i in range(n_steps):
        target = weights[i]
        turnover = np.abs(target - w).sum(axis=1)
        equity *= 1.0 + np.einsum("ij,ij->i", target, rel[t_idx]) - fee * turnover
        w = target
        obs[:, :A * F] = feat[t_idx]
        _ = obs.copy()
        t_idx += 1
    return n_envs * n_steps / (time.perf_counter() - t0)


# ---------------------------------------------------------------------- env measurements
def env_loop(tensor: FactorTensor, actions: np.ndarray, window: int, make: bool = False) -> float:
    if make:
        import gymnasium

        env = gymnasium.make("factorgym/CryptoTrading-v0", tensor=tensor, window=window, execution=FULL, random_start=False)
    else:
        env = CryptoTradingEnv(tensor, window=window, execution=FULL, random_start=False)
    env.reset(seed=0)
    step = env.step
    n = min(len(actions), T - window - 1)
    t0 = time.perf_counter()
    for i in range(n):
        step(actions[i])
    return n / (time.perf_counter() - t0)


def vec_loop(tensor: FactorTensor, actions: np.ndarray, window: int, n_envs: int, n_steps: int) -> float:
    venv = CryptoTradingVectorEnv(tensor, n_envs, window=window, execution=FULL, episode_length=T - window - 1)
    venv.reset(seed=0)
    step = venv.step
    t0 = time.perf_counter()
    for i in range(n_steps):
        step(actions[i])
    return n_envs * n_steps / (time.perf_counter() - t0)


def ppo_env_share(tensor: FactorTensor, total_steps: int) -> dict:
    """Share of SB3 PPO wall time spent inside the env (MlpPolicy, n_steps 2048, 1 torch thread)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecEnvWrapper

    from factorgym.envs import make_vec_env

    torch.set_num_threads(1)

    class Timed(VecEnvWrapper):
        spent = 0.0

        def reset(self):
            t0 = time.perf_counter()
            obs = self.venv.reset()
            Timed.spent += time.perf_counter() - t0
            return obs

        def step_wait(self):
            t0 = time.perf_counter()
            res = self.venv.step_wait()
            Timed.spent += time.perf_counter() - t0
            return res

        def step_async(self, actions):
            t0 = time.perf_counter()
            self.venv.step_async(actions)
            Timed.spent += time.perf_counter() - t0

    venv = Timed(make_vec_env(tensor, 1, window=32, execution=FULL, episode_length=2048, seed=0))
    model = PPO("MlpPolicy", venv, n_steps=2048, seed=0, verbose=0, device="cpu")
    t0 = time.perf_counter()
    model.learn(total_timesteps=total_steps)
    wall = time.perf_counter() - t0
    return {"share": Timed.spent / wall, "env_s": Timed.spent, "wall_s": wall}


def emit(case: str, metric: str, value: float, goal: float | None, meets: bool | None, reference: dict) -> None:
    print(json.dumps({"bench": "env_speed", "case": case, "metric": metric, "value": round(value, 4),
                      "goal": goal, "meets_goal": meets, "reference": reference}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best is kept")
    ap.add_argument("--skip-ppo", action="store_true", help="skip the SB3 PPO env-share case")
    args = ap.parse_args(argv)
    tensor = make_tensor()
    rng = np.random.default_rng(0)
    n_single = 4_000 if args.quick else T - 40
    weights = rng.dirichlet(np.ones(A), n_single)
    actions = rng.uniform(-1, 1, (n_single, A + 1)).astype(np.float32)  # simplex mapping: A assets + cash

    # warm up (compile / load the cached kernels)
    env_loop(tensor, actions[:100], 1)
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for key, fn in (("bare_w1", lambda: bare_loop(tensor, weights, 1)),
                        ("single_w1", lambda: env_loop(tensor, actions, 1)),
                        ("single_w32", lambda: env_loop(tensor, actions, 32)),
                        ("single_w1_make", lambda: env_loop(tensor, actions, 1, make=True))):
            best[key] = max(best.get(key, 0.0), fn())
    ref = {"numpy_loop_steps_per_s": round(best["bare_w1"], 1)}
    emit("single_w1", "steps_per_s", best["single_w1"], 1.8, best["single_w1"] / best["bare_w1"] >= 1.8,
         {**ref, "ratio": round(best["single_w1"] / best["bare_w1"], 3)})
    emit("single_w32", "steps_per_s", best["single_w32"], 1.0, best["single_w32"] / best["bare_w1"] >= 1.0,
         {**ref, "ratio": round(best["single_w32"] / best["bare_w1"], 3)})
    emit("single_w1_gymnasium_make", "steps_per_s", best["single_w1_make"], None, None,
         {**ref, "ratio": round(best["single_w1_make"] / best["bare_w1"], 3), "note": "with gymnasium.make's wrappers"})

    n_envs, n_steps = 1024, (100 if args.quick else 400)
    vw = rng.dirichlet(np.ones(A), (n_steps, n_envs))
    va = rng.uniform(-1, 1, (n_steps, n_envs, A + 1)).astype(np.float32)
    vec_loop(tensor, va[:2], 1, n_envs, 2)
    vbest: dict[str, float] = {}
    for _ in range(args.repeats):
        for key, fn in (("bare_batched_w1", lambda: bare_batched(tensor, vw, n_envs, n_steps)),
                        ("vector_w1", lambda: vec_loop(tensor, va, 1, n_envs, n_steps)),
                        ("vector_w32", lambda: vec_loop(tensor, va, 32, n_envs, n_steps))):
            vbest[key] = max(vbest.get(key, 0.0), fn())
    vref = {"numpy_batched_env_steps_per_s": round(vbest["bare_batched_w1"], 1), "n_envs": n_envs}
    r = vbest["vector_w1"] / vbest["bare_batched_w1"]
    emit("vector_w1", "env_steps_per_s", vbest["vector_w1"], 0.8, r >= 0.8, {**vref, "ratio": round(r, 3)})
    emit("vector_w32", "env_steps_per_s", vbest["vector_w32"], 1_000_000, vbest["vector_w32"] >= 1_000_000,
         {**vref, "ratio": round(vbest["vector_w32"] / vbest["bare_batched_w1"], 3)})

    if not args.skip_ppo:
        res = ppo_env_share(tensor, 2048 * (1 if args.quick else 3))
        emit("sb3_ppo_env_share", "fraction_of_wall_time", res["share"], 0.05, res["share"] <= 0.05,
             {"env_s": round(res["env_s"], 3), "ppo_wall_s": round(res["wall_s"], 3), "n_steps": 2048, "window": 32})
    return 0


if __name__ == "__main__":
    sys.exit(main())
