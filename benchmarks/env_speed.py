"""Speed of the trading env against bare numpy loops of the same logic, measured in the same run.

Data: 4 assets, 6 features, 20,000 hourly bars of a seeded geometric Brownian motion. The env runs
the full execution model (10 bps taker fee, 2 bps slippage, 1 bp half spread, square-root impact,
lot step, minimum notional, price step), simplex action mapping, log-return reward.

The reference (the issue's "bare numpy loop of the same env logic without lot rules or slippage")
is :func:`bare_loop` / :func:`bare_batched`. Per step, for each env, it does what the env does
except lot rules, minimums, slippage/impact and the order bookkeeping (status codes, fill records,
info dict):

1. holdings drift from the close of bar t to the open of bar t+1 (values x open/close);
2. equity at the open = cash + holdings;
3. target values = target weights x equity at the open (weights given, drawn up front);
4. fee = per-asset fee rate x |target - held value| (fee on turnover), paid from cash;
5. holdings drift from the open to the close of bar t+1; equity at the close = cash + holdings
   (the dot products);
6. reward = log(equity / previous equity); running peak for the drawdown;
7. observation: features and tradable mask of bar t+1 copied into a preallocated float32 buffer,
   then weights, cash weight, equity / initial cash, drawdown written into it; a copy is returned.

The growth factors (open/close, close/open) and the concatenated feature+mask rows are computed
once before the timed loop, as the env does in its constructor. Cash is a fifth slot of the
holdings vector so that one dot product gives the equity and one division the weights and the
cash weight. Window 1 only (the ratio goals are multiples of the window-1 loop; each line's ``goal``
is that multiple times the reference measured in the same run, in the unit of ``value``, and
``reference["goal_ratio"]`` the multiple).

The issue's own list (target weights, fee on turnover, dot product, observation copy) is also run
as it was first written, as :func:`minimal_loop` / :func:`minimal_batched`: fee on the turnover
against the previous *target* (no drift), one close-to-close return, features only in the
observation, no portfolio part, no reward. Its figures are printed in each line's ``reference``
as ``minimal_*`` for comparison; the goals use the faithful loop.

Funding: the vector env at window 1, long/short (signed mapping, 2x), over the same tensor without
and with a funding rate per bar (``vector_w1_signed_funding_off`` / ``_on``; goal: on >= 0.9x off).

Each figure is the best of ``--repeats`` interleaved runs (the machine is shared); each line's
``reference`` also gives ``load_1min`` (the load average when it was printed) and
``openblas_env_dropped``: the OpenBLAS tuning variables (``OPENBLAS_CORETYPE``, ``OPENBLAS_L2_SIZE``)
this script removed from its own environment before numpy loaded OpenBLAS (a core type forced for
another machine slows the numpy reference), with the values they had.

Prints one JSON line per figure:
    python benchmarks/env_speed.py [--quick] [--skip-ppo] [--repeats N]
"""

from __future__ import annotations

import os

# one thread per BLAS/OpenMP pool, set before numpy/torch load them: idle pool threads spinning on a
# 2-core machine would distort every figure
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# OpenBLAS reads these when it loads: drop them for this measurement only (named in every line)
OPENBLAS_DROPPED = {_var: os.environ.pop(_var) for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                    if _var in os.environ}

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from factorgym.data_layer.tensor import FactorTensor  # noqa: E402
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv, ExecutionConfig  # noqa: E402

T, A, F = 20_000, 4, 6
FULL = ExecutionConfig(taker_fee=0.001, slippage_bps=2.0, half_spread_bps=1.0, impact_coef=0.01,
                       lot_step=1e-5, min_notional=5.0, price_step=0.01)


def make_tensor(seed: int = 0, funding: bool = False) -> FactorTensor:
    """The benchmark's tensor; ``funding``: with a per-bar funding rate (a perpetual swap's)."""
    rng = np.random.default_rng(seed)
    logret = rng.normal(0.0, 0.01, (T, A))
    close = 100.0 * np.exp(np.cumsum(logret, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    prices = np.stack([open_, np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998, close,
                       rng.lognormal(8.0, 0.5, (T, A))], axis=-1)
    feats = rng.normal(size=(T, A, F)).astype(np.float32)
    rates = np.random.default_rng(seed + 1).normal(1e-5, 1e-4, (T, A)) if funding else None
    return FactorTensor.from_arrays(feats, prices, np.arange(T, dtype=np.int64) * 3_600_000,
                                    symbols=[f"S{i}/USDT" for i in range(A)], funding=rates)


# ---------------------------------------------------------------------- bare numpy references
def _reference_arrays(tensor: FactorTensor, fee: float):
    """Per-bar growth factors (cash slot = 1), feature+mask rows and per-slot fee rates."""
    p = np.asarray(tensor.prices, dtype=np.float64)
    one = np.ones((T - 1, 1))
    gap = np.hstack([p[1:, :, 0] / p[:-1, :, 3], one])  # row t: close[t] -> open[t+1]
    intra = np.hstack([p[1:, :, 3] / p[1:, :, 0], one])  # row t: open[t+1] -> close[t+1]
    rows = np.concatenate([tensor.features.reshape(T, A * F), tensor.tradable.astype(np.float32)], axis=1)
    fees = np.append(np.full(A, fee), 0.0)  # no fee on the cash slot
    return gap, intra, rows, fees


def bare_loop(tensor: FactorTensor, weights: np.ndarray, fee: float = 0.001, init: float = 10_000.0) -> float:
    """Steps/s of the faithful single-env reference at window 1 (see the module docstring)."""
    gap, intra, rows, fees = _reference_arrays(tensor, fee)
    tw = np.hstack([weights, 1.0 - weights.sum(axis=1, keepdims=True)])  # target weights + cash slot
    nf = rows.shape[1]
    obs = np.zeros(nf + A + 3, dtype=np.float32)
    port = obs[nf:nf + A + 1]  # weights and cash weight
    ones = np.ones(A + 1)
    v = np.zeros(A + 1)  # holdings value per asset, cash last (quote units)
    v[A] = init
    equity = peak = init
    n = len(weights)
    t0 = time.perf_counter()
    for t in range(n):  # decision at the close of bar t, fill at the open of t+1
        v *= gap[t]  # 1. drift to the open
        tv = tw[t] * (v @ ones)  # 2.-3. equity at the open -> target values
        fee_paid = np.abs(tv - v) @ fees  # 4. fee on turnover
        v = tv * intra[t]  # 5. drift to the close
        v[A] -= fee_paid
        e = v @ ones
        reward = math.log(e / equity)  # 6. reward, peak
        equity = e
        if e > peak:
            peak = e
        obs[:nf] = rows[t + 1]  # 7. observation of bar t+1
        np.divide(v, e, out=port)
        obs[-2] = e / init
        obs[-1] = 1.0 - e / peak
        _ = obs.copy(), reward
    return n / (time.perf_counter() - t0)


def bare_batched(tensor: FactorTensor, weights: np.ndarray, n_envs: int, n_steps: int, fee: float = 0.001,
                 init: float = 10_000.0) -> float:
    """Env-steps/s of the same logic batched over ``n_envs`` with numpy (window 1, random starts)."""
    gap, intra, rows, fees = _reference_arrays(tensor, fee)
    tw = np.concatenate([weights, 1.0 - weights.sum(axis=2, keepdims=True)], axis=2)
    nf = rows.shape[1]
    obs = np.zeros((n_envs, nf + A + 3), dtype=np.float32)
    port = obs[:, nf:nf + A + 1]
    ones = np.ones(A + 1)
    t_idx = np.random.default_rng(1).integers(0, T - n_steps - 2, n_envs)
    v = np.zeros((n_envs, A + 1))
    v[:, A] = init
    equity = np.full(n_envs, init)
    peak = equity.copy()
    t0 = time.perf_counter()
    for i in range(n_steps):
        v *= gap[t_idx]  # 1.
        tv = tw[i] * (v @ ones)[:, None]  # 2.-3.
        fee_paid = np.abs(tv - v) @ fees  # 4.
        v = tv * intra[t_idx]  # 5.
        v[:, A] -= fee_paid
        e = v @ ones
        reward = np.log(e / equity)  # 6.
        equity = e
        np.maximum(peak, e, out=peak)
        obs[:, :nf] = rows[t_idx + 1]  # 7.
        np.divide(v, e[:, None], out=port)
        obs[:, -2] = e / init
        obs[:, -1] = 1.0 - e / peak
        _ = obs.copy(), reward
        t_idx += 1
    return n_envs * n_steps / (time.perf_counter() - t0)


def minimal_loop(tensor: FactorTensor, weights: np.ndarray, fee: float = 0.001) -> float:
    """The first reference: target weights, fee on turnover vs the last target, dot, obs copy."""
    close = tensor.prices[..., 3]
    rel = close[1:] / close[:-1] - 1.0
    feat = tensor.features.reshape(T, A * F)
    obs = np.zeros(A * F + A + 3, dtype=np.float32)
    n = len(weights)
    w = np.zeros(A)
    equity = 1.0
    t0 = time.perf_counter()
    for t in range(n):
        target = weights[t]
        turnover = np.abs(target - w).sum()
        equity *= 1.0 + float(target @ rel[t]) - fee * turnover
        w = target
        obs[:A * F] = feat[t]
        _ = obs.copy()
    return n / (time.perf_counter() - t0)


def minimal_batched(tensor: FactorTensor, weights: np.ndarray, n_envs: int, n_steps: int, fee: float = 0.001) -> float:
    """:func:`minimal_loop` batched over ``n_envs``."""
    close = tensor.prices[..., 3]
    rel = close[1:] / close[:-1] - 1.0
    feat = tensor.features.reshape(T, A * F)
    t_idx = np.random.default_rng(1).integers(0, T - n_steps - 2, n_envs)
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


def vec_loop(tensor: FactorTensor, actions: np.ndarray, window: int, n_envs: int, n_steps: int,
             parallel: bool = False, **env_kwargs) -> float:
    """Env-steps/s of the vector env. Episodes of T / 2 bars from random start bars, as in training
    and as :func:`bare_batched` draws them: every env reads its own bars (with one shared start the
    bar rows would sit in L1 for all envs, ~10% faster); no episode ends within the timed steps."""
    venv = CryptoTradingVectorEnv(tensor, n_envs, window=window, execution=env_kwargs.pop("execution", FULL),
                                  episode_length=T // 2, parallel=parallel, **env_kwargs)
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

    from factorgym.agents.sb3_vec import make_vec_env

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
    """One JSON line; ``goal`` is in the unit of ``value`` (or None when the figure has no goal)."""
    reference = {**reference, "load_1min": round(os.getloadavg()[0], 2), "openblas_env_dropped": OPENBLAS_DROPPED}
    print(json.dumps({"bench": "env_speed", "case": case, "metric": metric, "value": round(value, 4),
                      "goal": None if goal is None else round(goal, 4), "meets_goal": meets, "reference": reference}),
          flush=True)


def emit_ratio(case: str, metric: str, value: float, ratio_goal: float, ref_value: float, reference: dict) -> None:
    """A figure whose goal is ``ratio_goal`` x a reference measured in the same run: ``goal`` is that
    product (same unit as ``value``) and ``reference["goal_ratio"]`` the ratio."""
    goal = ratio_goal * ref_value
    emit(case, metric, value, goal, value >= goal, {**reference, "goal_ratio": ratio_goal})


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
        for key, fn in (("bare_w1", lambda: bare_loop(tensor, weights)),
                        ("minimal_w1", lambda: minimal_loop(tensor, weights)),
                        ("single_w1", lambda: env_loop(tensor, actions, 1)),
                        ("single_w32", lambda: env_loop(tensor, actions, 32)),
                        ("single_w1_make", lambda: env_loop(tensor, actions, 1, make=True))):
            best[key] = max(best.get(key, 0.0), fn())

    def ref(value: float, extra: dict | None = None) -> dict:
        return {"numpy_loop_steps_per_s": round(best["bare_w1"], 1), "ratio": round(value / best["bare_w1"], 3),
                "minimal_loop_steps_per_s": round(best["minimal_w1"], 1),
                "minimal_ratio": round(value / best["minimal_w1"], 3), **(extra or {})}

    emit_ratio("single_w1", "steps_per_s", best["single_w1"], 1.8, best["bare_w1"], ref(best["single_w1"]))
    emit_ratio("single_w32", "steps_per_s", best["single_w32"], 1.0, best["bare_w1"], ref(best["single_w32"]))
    emit("single_w1_gymnasium_make", "steps_per_s", best["single_w1_make"], None, None,
         ref(best["single_w1_make"], {"note": "with gymnasium.make's wrappers (order enforcing, passive checker)"}))

    n_envs, n_steps = 1024, (100 if args.quick else 400)
    vw = rng.dirichlet(np.ones(A), (n_steps, n_envs))
    va = rng.uniform(-1, 1, (n_steps, n_envs, A + 1)).astype(np.float32)
    vec_loop(tensor, va[:2], 1, n_envs, 2)
    vec_loop(tensor, va[:2], 1, n_envs, 2, parallel=True)
    vbest: dict[str, float] = {}
    for _ in range(args.repeats):
        for key, fn in (("bare_batched_w1", lambda: bare_batched(tensor, vw, n_envs, n_steps)),
                        ("minimal_batched_w1", lambda: minimal_batched(tensor, vw, n_envs, n_steps)),
                        ("vector_w1", lambda: vec_loop(tensor, va, 1, n_envs, n_steps)),
                        ("vector_w32", lambda: vec_loop(tensor, va, 32, n_envs, n_steps)),
                        ("vector_w1_parallel", lambda: vec_loop(tensor, va, 1, n_envs, n_steps, parallel=True)),
                        ("vector_w32_parallel", lambda: vec_loop(tensor, va, 32, n_envs, n_steps, parallel=True))):
            vbest[key] = max(vbest.get(key, 0.0), fn())

    def vref(value: float, extra: dict | None = None) -> dict:
        return {"numpy_batched_env_steps_per_s": round(vbest["bare_batched_w1"], 1),
                "ratio": round(value / vbest["bare_batched_w1"], 3),
                "minimal_batched_env_steps_per_s": round(vbest["minimal_batched_w1"], 1),
                "minimal_ratio": round(value / vbest["minimal_batched_w1"], 3), "n_envs": n_envs, **(extra or {})}

    emit_ratio("vector_w1", "env_steps_per_s", vbest["vector_w1"], 0.8, vbest["bare_batched_w1"],
               vref(vbest["vector_w1"]))
    emit("vector_w32", "env_steps_per_s", vbest["vector_w32"], 1_000_000, vbest["vector_w32"] >= 1_000_000,
         vref(vbest["vector_w32"]))
    threads = {"parallel": True, "numba_threads": numba.get_num_threads(), "note": "opt-in; goals use the default"}
    emit("vector_w1_parallel", "env_steps_per_s", vbest["vector_w1_parallel"], None, None,
         vref(vbest["vector_w1_parallel"], threads))
    emit("vector_w32_parallel", "env_steps_per_s", vbest["vector_w32_parallel"], None, None,
         vref(vbest["vector_w32_parallel"], threads))

    # funding on and off: long/short (signed mapping, 2x leverage, borrow), the same tensor with and
    # without a funding rate per bar
    funded = make_tensor(funding=True)
    perp = dict(mapping="signed", execution=dataclasses.replace(FULL, max_leverage=2.0, borrow_rate_per_bar=1e-6))
    sa = np.ascontiguousarray(va[..., :A])
    for tens in (tensor, funded):
        vec_loop(tens, sa[:2], 1, n_envs, 2, **dict(perp))
    fbest: dict[str, float] = {}
    for _ in range(args.repeats):
        for key, tens in (("off", tensor), ("on", funded)):
            fbest[key] = max(fbest.get(key, 0.0), vec_loop(tens, sa, 1, n_envs, n_steps, **dict(perp)))
    emit("vector_w1_signed_funding_off", "env_steps_per_s", fbest["off"], None, None, vref(fbest["off"]))
    emit_ratio("vector_w1_signed_funding_on", "env_steps_per_s", fbest["on"], 0.9, fbest["off"],
               vref(fbest["on"], {"funding_off_env_steps_per_s": round(fbest["off"], 1)}))

    if not args.skip_ppo:
        res = ppo_env_share(tensor, 2048 * (1 if args.quick else 3))
        emit("sb3_ppo_env_share", "fraction_of_wall_time", res["share"], 0.05, res["share"] <= 0.05,
             {"env_s": round(res["env_s"], 3), "ppo_wall_s": round(res["wall_s"], 3), "n_steps": 2048, "window": 32})
    return 0


if __name__ == "__main__":
    sys.exit(main())
