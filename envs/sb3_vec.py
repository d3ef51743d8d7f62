"""Stable-Baselines3 ``VecEnv`` adapter of :class:`CryptoTradingVectorEnv` (imports SB3; loaded lazily).

SB3 conventions: ``reset()`` returns only observations; ``step_wait`` returns float32 rewards, one
``done`` per env (terminated or truncated), and a list of per-env info dicts. A finished env is reset
in the same step; its last observation is ``infos[i]["terminal_observation"]`` and
``infos[i]["TimeLimit.truncated"]`` is True when the episode was cut by time, not ended by the market.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from factorgym.envs.vector_env import CryptoTradingVectorEnv

_INFO_KEYS = ("timestamp", "equity", "cash", "fees", "slippage_cost", "borrow_cost", "turnover")


class SB3VecEnv(VecEnv):
    """SB3 view of a :class:`CryptoTradingVectorEnv`. Per-env infos hold the scalars
    (timestamp, equity, cash, fees, slippage_cost, borrow_cost, turnover) and ``weights``."""

    def __init__(self, venv: CryptoTradingVectorEnv) -> None:
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, infos = self.venv.reset(seed=seed, options=options)
        self.reset_infos = self._split(infos)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        out = self._split(infos)
        if dones.any():
            final = infos["final_obs"]
            for i in np.flatnonzero(dones):
                out[i]["terminal_observation"] = final[i]
                out[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, out

    def _split(self, infos: dict[str, Any]) -> list[dict[str, Any]]:
        cols = [infos[k].tolist() for k in _INFO_KEYS]
        weights = infos["weights"]
        return [dict(zip(_INFO_KEYS, vals), weights=weights[i]) for i, vals in enumerate(zip(*cols))]

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
