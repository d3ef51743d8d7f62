"""Trading metrics for TensorBoard, validation backtests, checkpoints and the progress bar.

* :class:`TradingEpisodeMonitor` (a VecEnv wrapper, below ``VecNormalize`` so it sees raw infos)
  accumulates per-episode trading metrics (from the SB3 adapter's ``info_columns()`` arrays when it
  wraps one, so no per-env dict is filled); :class:`RolloutMetricsCallback` logs their mean over the
  last 100 episodes under ``rollout/`` (return, Sharpe, max drawdown, turnover, fees, exposure).
* :class:`ValidationCallback` backtests the current deterministic policy on the validation split
  every ``eval_freq`` env steps and logs ``eval/`` (equity, Sharpe, max drawdown, turnover, fees,
  exposure, mean weight per asset, so a collapse to one side shows), then hands the result to a hook
  (best-bundle saving, the progress bar).
* :class:`EveryNSteps` calls a function every N env steps (checkpoints).
* :class:`ProgressCallback`: a tqdm bar with env-steps/s and the latest validation Sharpe.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper

EPISODE_KEYS = ("return", "sharpe", "max_drawdown", "turnover", "fees", "exposure", "length")


class TradingEpisodeMonitor(VecEnvWrapper):
    """Per-episode trading metrics of every env, from the step infos (equity, fees, turnover, weights).

    ``episodes`` holds the last ``maxlen`` finished episodes as dicts of :data:`EPISODE_KEYS`:
    return = final / initial equity - 1; Sharpe of the per-bar simple returns annualised with
    ``bars_per_year``; max drawdown; turnover and fees summed over the episode (fraction of equity,
    quote units); exposure = mean gross weight sum |w|; length in bars."""

    def __init__(self, venv: Any, initial_cash: float, bars_per_year: float, maxlen: int = 100) -> None:
        super().__init__(venv)
        self.initial_cash, self.bpy = float(initial_cash), float(bars_per_year)
        self.episodes: deque[dict[str, float]] = deque(maxlen=maxlen)
        self.n_finished = 0
        from factorgym.agents.sb3_vec import SB3VecEnv

        self._source = find_wrapper(venv, SB3VecEnv)
        self._zero()

    def _zero(self, idx: Any = slice(None)) -> None:
        n = self.num_envs
        if not hasattr(self, "_eq"):
            self._eq, self._peak = np.empty(n), np.empty(n)
            self._s1, self._s2, self._dd, self._to, self._fee, self._ex, self._len = (np.empty(n) for _ in range(7))
        self._eq[idx] = self._peak[idx] = self.initial_cash
        for a in (self._s1, self._s2, self._dd, self._to, self._fee, self._ex, self._len):
            a[idx] = 0.0

    def reset(self):
        self._zero()
        return self.venv.reset()

    def _columns(self, infos: list[dict]) -> dict[str, np.ndarray]:
        """equity, turnover, fees [N] and weights [N, A] of the step: from the SB3 adapter's arrays when
        it is below (no per-env dicts read), else from the info dicts."""
        if self._source is not None:
            return self._source.info_columns()
        n = len(infos)
        return {k: np.fromiter((d[k] for d in infos), float, n) for k in ("equity", "turnover", "fees")} | {
            "weights": np.stack([d["weights"] for d in infos])}

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        cols = self._columns(infos)
        eq = np.array(cols["equity"], dtype=float)  # a copy: _zero writes into it
        r = eq / self._eq - 1.0
        self._eq = eq
        np.maximum(self._peak, eq, out=self._peak)
        np.maximum(self._dd, 1.0 - eq / self._peak, out=self._dd)
        self._s1 += r
        self._s2 += r * r
        self._to += cols["turnover"]
        self._fee += cols["fees"]
        self._ex += np.abs(cols["weights"]).sum(axis=1)
        self._len += 1
        if dones.any():
            for i in np.flatnonzero(dones).tolist():
                k = self._len[i]
                mean = self._s1[i] / k
                var = max(self._s2[i] / k - mean * mean, 0.0) * k / max(k - 1, 1)
                sharpe = mean / math.sqrt(var) * math.sqrt(self.bpy) if var > 1e-18 else 0.0
                self.episodes.append({"return": eq[i] / self.initial_cash - 1.0, "sharpe": sharpe,
                                      "max_drawdown": self._dd[i], "turnover": self._to[i], "fees": self._fee[i],
                                      "exposure": self._ex[i] / k, "length": k})
                self.n_finished += 1
            self._zero(dones)
        return obs, rewards, dones, infos


def find_wrapper(venv: Any, cls: type) -> Any:
    while venv is not None and not isinstance(venv, cls):
        venv = getattr(venv, "venv", None)
    return venv


class RolloutMetricsCallback(BaseCallback):
    """Logs the :class:`TradingEpisodeMonitor` episode means under ``rollout/ep_<metric>_mean``."""

    def __init__(self, monitor: TradingEpisodeMonitor) -> None:
        super().__init__()
        self.monitor = monitor
        self._seen = 0

    def _log(self) -> None:
        eps = self.monitor.episodes
        if not eps or self.monitor.n_finished == self._seen:
            return
        self._seen = self.monitor.n_finished
        for key in EPISODE_KEYS[:-1]:  # SB3 logs the length itself (ep_len_mean)
            self.logger.record(f"rollout/ep_{key}_mean", float(np.mean([e[key] for e in eps])))

    def _on_rollout_end(self) -> None:
        self._log()

    def _on_step(self) -> bool:
        if self.model.__class__.__name__ in ("SAC", "TD3", "DDPG", "DQN", "TQC"):
            self._log()  # off-policy algorithms dump their logs by episode count, not rollouts
        return True


def eval_scalars(result: Any) -> dict[str, float]:
    """The ``eval/`` scalars of a validation :class:`~factorgym.envs.backtest.BacktestResult`."""
    m = result.metrics
    out = {"eval/equity": float(result.equity[-1]), "eval/total_return": m.get("total_return", math.nan),
           "eval/sharpe": m.get("sharpe", math.nan), "eval/max_drawdown": m.get("max_drawdown", math.nan),
           "eval/turnover": m.get("turnover", math.nan), "eval/fees": m.get("fees", math.nan),
           "eval/exposure": m.get("exposure", math.nan), "eval/n_trades": m.get("n_trades", math.nan)}
    mean_w = np.asarray(result.weights).mean(axis=0) if len(result.weights) else np.zeros(len(result.symbols))
    for sym, w in zip(result.symbols, mean_w.tolist()):
        out[f"eval/weight/{sym}"] = w
    return {k: float(v) for k, v in out.items()}


class ValidationCallback(BaseCallback):
    """Every ``eval_freq`` env steps (and at the end): ``evaluate() -> BacktestResult``, log ``eval/``,
    then ``on_result(num_timesteps, scalars, result)``."""

    def __init__(self, evaluate: Callable[[], Any], eval_freq: int, on_result: Callable[[int, dict, Any], None],
                 next_at: int | None = None) -> None:
        super().__init__()
        self.evaluate, self.eval_freq, self.on_result = evaluate, int(eval_freq), on_result
        self.next_at = next_at
        self.last_at = -1

    def _on_training_start(self) -> None:
        if self.next_at is None:
            self.next_at = self.num_timesteps + self.eval_freq if self.eval_freq else None

    def run(self) -> dict:
        result = self.evaluate()
        scalars = eval_scalars(result)
        for k, v in scalars.items():
            self.logger.record(k, v)
        self.logger.dump(self.num_timesteps)
        self.last_at = self.num_timesteps
        self.on_result(self.num_timesteps, scalars, result)
        return scalars

    def _on_step(self) -> bool:
        if self.next_at is not None and self.num_timesteps >= self.next_at:
            while self.next_at <= self.num_timesteps:
                self.next_at += self.eval_freq
            self.run()
        return True

    def _on_training_end(self) -> None:
        if self.last_at != self.num_timesteps:
            self.run()


class EveryNSteps(BaseCallback):
    """Calls ``fn(num_timesteps)`` each time another ``n`` env steps have passed."""

    def __init__(self, n: int, fn: Callable[[int], None]) -> None:
        super().__init__()
        self.n, self.fn, self.next_at = int(n), fn, None

    def _on_training_start(self) -> None:
        self.next_at = self.num_timesteps + self.n

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            while self.next_at <= self.num_timesteps:
                self.next_at += self.n
            self.fn(self.num_timesteps)
        return True


class ProgressCallback(BaseCallback):
    """A tqdm bar over env steps with env-steps/s and the latest validation Sharpe."""

    def __init__(self, total: int, start: int = 0) -> None:
        super().__init__()
        self.total, self.start = int(total), int(start)
        self.sharpe = math.nan
        self.bar = None

    def _on_training_start(self) -> None:
        from factorgym.progress import progress_bar  # a bar on a terminal, log lines elsewhere

        self.bar = progress_bar(total=self.total, initial=self.num_timesteps, unit="step", desc="train")
        self._t0, self._n0, self._shown = time.perf_counter(), self.num_timesteps, self.num_timesteps

    def set_sharpe(self, value: float) -> None:
        self.sharpe = float(value)

    def _on_step(self) -> bool:
        n = self.num_timesteps
        if n - self._shown >= 1000 or n >= self.total:
            self.bar.update(n - self._shown)
            self._shown = n
            rate = (n - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
            self.bar.set_postfix_str(f"{rate:,.0f} env-steps/s, val Sharpe {self.sharpe:.2f}", refresh=False)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.update(self.num_timesteps - self._shown)
            self.bar.close()
