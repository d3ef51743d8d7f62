"""Stable-Baselines3 ``VecEnv`` adapter of :class:`CryptoTradingVectorEnv`.

It lives in the agent layer because ``factorgym.envs`` imports no SB3 (ARCHITECTURE.md); the env
layer offers the Gymnasium ``VectorEnv``, this module the SB3 view of the same kernel.

SB3 conventions: ``reset()`` returns only observations; ``step_wait`` returns float32 rewards, one
``done`` per env (terminated or truncated), and a list of per-env info dicts. A finished env is reset
in the same step; its info describes the step that finished the episode (as SB3's DummyVecEnv
does), its last observation is ``infos[i]["terminal_observation"]`` and
``infos[i]["TimeLimit.truncated"]`` is True when the episode was cut by time, not ended by the market.

Per step the adapter calls the vector env's kernel-plus-autoreset directly and builds the per-env
dicts from one ``.tolist()`` of the step's result block (no Gymnasium info arrays in between).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from factorgym.envs import execution as ex
from factorgym.envs.vector_env import CryptoTradingVectorEnv

_INFO_KEYS = ("timestamp", "equity", "cash", "fees", "slippage_cost", "borrow_cost", "turnover")
_COLS = [ex.O_T, ex.O_EQUITY, ex.O_CASH, ex.O_FEES, ex.O_SLIP, ex.O_BORROW, ex.O_TURNOVER]  # same order


class SB3VecEnv(VecEnv):
    """SB3 view of a :class:`CryptoTradingVectorEnv`. Per-env infos hold the scalars
    (timestamp, equity, cash, fees, slippage_cost, borrow_cost, turnover) and ``weights``."""

    def __init__(self, venv: CryptoTradingVectorEnv) -> None:
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._ts = venv.core.timestamps.tolist()

    def reset(self):
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, _ = self.venv.reset(seed=seed, options=options)
        self.reset_infos = self._split(self.venv.core.out.copy())
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, blk, rewards, terminated, truncated, idx, final_obs = self.venv._advance(self._actions)
        out = self._split(blk)
        if idx is not None:
            for i in idx.tolist():
                out[i]["terminal_observation"] = final_obs[i]
                out[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return self.venv._wrap(obs), rewards.astype(np.float32), terminated | truncated, out

    def _split(self, blk: np.ndarray) -> list[dict[str, Any]]:
        """Per-env info dicts from the step's results [N, fields] (one ``.tolist()``; weights are views)."""
        A = self.venv.core.n_assets
        ts = self._ts
        rows = blk[:, _COLS].tolist()
        weights = blk[:, ex.O_W:ex.O_W + A]  # views: blk is a results array that only this step hands out
        return [{"timestamp": ts[int(r[0])], "equity": r[1], "cash": r[2], "fees": r[3], "slippage_cost": r[4],
                 "borrow_cost": r[5], "turnover": r[6], "weights": weights[i]} for i, r in enumerate(rows)]

    def close(self) -> None:
        self.venv.close()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        # one generator drives every env's start bar: seeding env 0 seeds them all
        self._seeds = [seed] + [None] * (self.num_envs - 1)
        return self._seeds

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv._proto, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"the {self.num_envs} envs share one core; set {attr_name!r} when creating them")

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        if method_name == "trades":
            return [self.venv.trades(i) for i in self._get_indices(indices)]
        raise AttributeError(f"env_method({method_name!r}) is not supported by the batched env")

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_vec_env(tensor: Any, n_envs: int = 1, *, seed: int | None = None, **env_kwargs: Any) -> SB3VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` trading envs over ``tensor`` (one kernel call per step).

    Takes the keyword arguments of :class:`~factorgym.envs.CryptoTradingEnv`. For the Gymnasium
    vector API use :class:`~factorgym.envs.CryptoTradingVectorEnv` directly.
    """
    venv = SB3VecEnv(CryptoTradingVectorEnv(tensor, n_envs, **env_kwargs))
    if seed is not None:
        venv.seed(seed)
    return venv
