"""Stable-Baselines3 ``VecEnv`` adapter of :class:`CryptoTradingVectorEnv`.

It lives in the agent layer because ``factorgym.envs`` imports no SB3 (ARCHITECTURE.md); the env
layer offers the Gymnasium ``VectorEnv``, this module the SB3 view of the same kernel.

SB3 conventions: ``reset()`` returns only observations; ``step_wait`` returns float32 rewards, one
``done`` per env (terminated or truncated), and a list of per-env info dicts. A finished env is reset
in the same step; its info describes the step that finished the episode (as SB3's DummyVecEnv
does), its last observation is ``infos[i]["terminal_observation"]`` and
``infos[i]["TimeLimit.truncated"]`` is True when the episode was cut by time, not ended by the market.

Per-env infos hold :data:`INFO_KEYS` and ``weights``. Building 64 dicts per step cost more than the
kernel step itself, so an env that did not finish gets an :class:`EnvInfo`: a ``dict`` that fills
itself from the step's info arrays the first time it is read (SB3 itself only asks it for the absent
``episode``/``is_success``/``TimeLimit.truncated`` keys, which need no filling). A finished env gets
a plain dict. Batched readers take :meth:`SB3VecEnv.info_columns` (arrays over envs) instead.
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
_ROW_KEY_SET = frozenset(_ROW_KEYS)


class EnvInfo(dict):
    """Env ``i``'s info of one step, read from that step's info arrays on first use (then an ordinary
    dict: mutable, copyable, picklable, equal to the dict it stands for). Looking up a key it will
    never hold (``get("episode")``) does not fill it. Code that reads dicts only through CPython's C
    API without a Python-level access first (``json.dumps``) sees it empty: ``dict(info)`` first."""

    __slots__ = ("_columns", "_i")

    def __init__(self, columns: dict[str, np.ndarray], i: int) -> None:  # noqa: D107 (the dict stays empty)
        self._columns, self._i = columns, i

    def _fill(self) -> None:
        columns = self._columns
        if columns is not None:
            self._columns = None
            i = self._i
            dict.update(self, {k: columns[k][i].item() for k in INFO_KEYS})
            dict.__setitem__(self, "weights", columns["weights"][i])

    def __getitem__(self, key):
        self._fill()
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        if self._columns is not None and key not in _ROW_KEY_SET:
            return default
        self._fill()
        return dict.get(self, key, default)

    def __contains__(self, key) -> bool:
        if self._columns is not None:
            return key in _ROW_KEY_SET
        return dict.__contains__(self, key)

    def __setitem__(self, key, value) -> None:
        self._fill()
        dict.__setitem__(self, key, value)

    def __eq__(self, other) -> bool:
        self._fill()
        return dict.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._fill()
        return dict.__repr__(self)

    def __reduce__(self):
        self._fill()
        return dict, (dict(self),)


def _filling(name: str):
    method = getattr(dict, name)

    def wrapper(self, *args, **kwargs):
        self._fill()
        return method(self, *args, **kwargs)
    wrapper.__name__ = name
    return wrapper


for _name in ("__iter__", "__len__", "__delitem__", "__or__", "__ror__", "__ior__", "__reversed__", "keys", "values",
              "items", "copy", "pop", "popitem", "setdefault", "update"):
    setattr(EnvInfo, _name, _filling(_name))


class SB3VecEnv(VecEnv):
    """SB3 view of a :class:`CryptoTradingVectorEnv`. Per-env infos hold the scalars
    :data:`INFO_KEYS` and ``weights``; :meth:`info_columns` has the same values as arrays over envs."""

    def __init__(self, venv: CryptoTradingVectorEnv) -> None:
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._columns: dict[str, np.ndarray] = {}

    def reset(self):
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, infos = self.venv.reset(seed=seed, options=options)
        self._columns = {k: infos[k] for k in _ROW_KEYS}
        self.reset_infos = [EnvInfo(self._columns, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        columns = {k: infos[k] for k in _ROW_KEYS}
        out = [EnvInfo(columns, i) for i in range(self.num_envs)]
        if "final_info" in infos:  # SB3 convention: a finished env's info is that of its last step
            final = infos["final_info"]
            columns = {k: np.where(dones[:, None] if k == "weights" else dones, final[k], columns[k]) for k in _ROW_KEYS}
            for i in np.flatnonzero(dones).tolist():
                info = {k: columns[k][i].item() for k in INFO_KEYS}
                info["weights"] = columns["weights"][i]
                info["terminal_observation"] = infos["final_obs"][i]
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                out[i] = info
        self._columns = columns
        return obs, rewards.astype(np.float32), dones, out

    def info_columns(self) -> dict[str, np.ndarray]:
        """The last step's (or reset's) per-env infos as arrays over envs: :data:`INFO_KEYS` [N] and
        ``weights`` [N, A]; a finished env's entries are those of its last step, as in its info dict."""
        return self._columns

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
