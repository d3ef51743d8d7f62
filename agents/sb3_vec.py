"""Stable-Baselines3 ``VecEnv`` adapter of :class:`CryptoTradingVectorEnv`.

It lives in the agent layer because ``factorgym.envs`` imports no SB3 (ARCHITECTURE.md); the env
layer offers the Gymnasium ``VectorEnv``, this module the SB3 view of the same kernel.

SB3 conventions: ``reset()`` returns only observations; ``step_wait`` returns float32 rewards, one
``done`` per env (terminated or truncated), and a list of per-env info dicts. A finished env is reset
in the same step; its info describes the step that finished the episode (as SB3's DummyVecEnv
does), its last observation is ``infos[i]["terminal_observation"]`` and
``infos[i]["TimeLimit.truncated"]`` is True when the episode was cut by time, not ended by the market.

The adapter uses only the vector env's public API: per step it calls ``step`` and builds the per-env
dicts from one ``.tolist()`` of the info columns (those of ``final_info`` for the envs that finished).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from factorgym.envs.layouts import INFO_SCALARS
from factorgym.envs.vector_env import CryptoTradingVectorEnv

#: the per-env info keys (and ``weights``)
INFO_KEYS = ("timestamp", *INFO_SCALARS)
_ROW_KEYS = (*INFO_KEYS, "weights")


class SB3VecEnv(VecEnv):
    """SB3 view of a :class:`CryptoTradingVectorEnv`. Per-env infos hold the scalars
    :data:`INFO_KEYS` and ``weights``."""

    def __init__(self, venv: CryptoTradingVectorEnv) -> None:
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, infos = self.venv.reset(seed=seed, options=options)
        self.reset_infos = _split(infos)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        out = _split(infos)
        if "final_info" in infos:  # SB3 convention: a finished env's info is that of its last step
            final = _split(infos["final_info"])
            for i in np.flatnonzero(dones).tolist():
                out[i] = final[i]
                out[i]["terminal_observation"] = infos["final_obs"][i]
                out[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, out

    def close(self) -> None:
        self.venv.close()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        # one generator drives every env's start bar: seeding env 0 seeds them all
        self._seeds = [seed] + [None] * (self.num_envs - 1)
        return self._seeds

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        values = self.venv.get_attr(attr_name)
        return [values[i] for i in self._get_indices(indices)]

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


def _split(infos: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-env info dicts from the vector env's info arrays: one ``.tolist()`` per column (ints stay
    ints, floats floats) and ``weights`` as views of the env's array; half the cost of stacking the
    columns first, which matters at 64 envs (this is most of the adapter's step time)."""
    columns = [infos[key].tolist() for key in INFO_KEYS]
    columns.append(list(infos["weights"]))
    return [dict(zip(_ROW_KEYS, row)) for row in zip(*columns)]
