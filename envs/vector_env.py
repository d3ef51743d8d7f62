"""N trading environments stepped as arrays in one kernel call.

``CryptoTradingVectorEnv`` is a ``gymnasium.vector.VectorEnv``; ``factorgym.agents.sb3_vec.make_vec_env``
wraps it as a Stable-Baselines3 ``VecEnv``. Both step through the same kernel as :class:`CryptoTradingEnv`, so the
same actions from the same start bars give the same trajectories bit for bit.

Autoreset (``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``): when env i terminates or is
truncated in ``step``, the returned ``obs[i]`` is already the first observation of its next episode
(new start drawn from the vector env's ``np_random``); the last observation of the finished
episode is ``infos["final_obs"][i]`` and its step info ``infos["final_info"]`` (masks
``infos["_final_obs"]``, ``infos["_final_info"]``), as Gymnasium's SyncVectorEnv does in this mode.
The reward, terminated and truncated of that step belong to the finished episode.

Observations are written by the kernel straight into a freshly allocated [N, obs_dim] array each
step (no copy of the feature windows is made in Python).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from factorgym.envs.layouts import INFO_SCALARS, OUT, OUT_WEIGHTS, out_shape
from factorgym.envs.spaces import split_obs
from factorgym.envs.trades import Trades
from factorgym.envs.trading_env import CryptoTradingEnv
from factorgym.errors import ConfigError

_SCALARS = tuple((key, getattr(OUT, key)) for key in INFO_SCALARS)  # info key -> results field
# the scalar infos are consecutive fields of OUT: one slice of the results' field rows gives them all
_SCALAR_ROWS = slice(min(f for _, f in _SCALARS), max(f for _, f in _SCALARS) + 1)
_SCALAR_KEYS = OUT._fields[_SCALAR_ROWS]
assert sorted(_SCALAR_KEYS) == sorted(INFO_SCALARS), "the scalar infos must be consecutive fields of OUT"


class CryptoTradingVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`CryptoTradingEnv` over one tensor, stepped in one call.

    Takes the keyword arguments of :class:`CryptoTradingEnv` (except ``render_mode``), and
    ``parallel`` (default False): step the envs on numba's threads (``prange``; opt-in, same results;
    pays off from a few hundred envs when cores are free; ``NUMBA_NUM_THREADS`` sizes the pool).
    ``reset(seed=..., options={"start": int | array[N], "end": int | array[N]})``.

    ``infos`` after ``step`` (arrays over envs): ``timestamp`` int64 [N], ``equity``, ``cash``,
    ``fees``, ``slippage_cost``, ``borrow_cost``, ``funding``, ``turnover`` float64 [N], ``weights`` and
    ``positions`` float64 [N, A], ``n_trades`` int64 [N], ``status`` int8 [N] (0 ok, 1 bankrupt,
    2 liquidated); present for every env, so no ``_key`` masks are given for them. The fills of env
    i in the last step are ``env.trades(i)`` (for an env that ended in that step: its final step's
    fills, a liquidation's included; the new episode has none yet). ``get_attr(name)`` reads an
    attribute of the env options (``window``, ``initial_cash``, ``execution``, ...) for every env, as
    Gymnasium's ``SyncVectorEnv`` does.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, tensor: Any, num_envs: int, *, parallel: bool = False, **env_kwargs: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r}; expected an integer >= 1")
        if "render_mode" in env_kwargs:
            raise ConfigError("the vector env does not render; drop render_mode")
        self._proto = proto = CryptoTradingEnv(tensor, _n_envs=int(num_envs), _parallel=bool(parallel), **env_kwargs)
        self.core = core = proto.core
        self.num_envs = int(num_envs)
        self.single_observation_space = proto.observation_space
        self.single_action_space = proto.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self._dict_obs = proto._dict_obs
        self._reward_fn = proto._reward_fn
        self._prev_equity = np.full(self.num_envs, proto.initial_cash)
        self._live = False
        # the envs reset in the last step, and their final step's fill rows, fill counts and timestamps
        self._final_fills: tuple | None = None
        A = core.n_assets
        self._cols = slice(OUT_WEIGHTS, OUT_WEIGHTS + A), slice(OUT_WEIGHTS + A, OUT_WEIGHTS + 2 * A)
        self._out_shape = out_shape(A, self.num_envs)
        self._obs_shape = (self.num_envs, core.obs_dim)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, (list, tuple)):  # (one generator for all envs: seeded by the first seed)
            seed = seed[0]
        super().reset(seed=seed)
        options = options or {}
        idx = np.arange(self.num_envs, dtype=np.int64)
        starts, ends = self._bounds(idx, options)
        obs = np.empty((self.num_envs, self.core.obs_dim), dtype=np.float32)
        self.core.reset(idx, starts, ends, obs=obs)
        self._prev_equity[:] = self._proto.initial_cash
        self._final_fills = None
        self._live = True
        return self._wrap(obs), self._infos(include_status=False)

    def step(self, actions):
        obs, results, rewards, terminated, truncated, idx, final_obs = self._advance(actions)
        infos = self._infos(results)
        if idx is not None:
            done = terminated | truncated
            infos["final_info"] = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in infos.items()}
            infos["final_obs"], infos["_final_obs"], infos["_final_info"] = final_obs, done, done.copy()
            out = self.core.out  # after the reset: the first state of the new episodes
            for key, field in _SCALARS:
                infos[key][idx] = out[idx, field]
            infos["weights"][idx] = 0.0
            infos["positions"][idx] = 0.0
            infos["timestamp"][idx] = self.core.timestamps[out[idx, OUT.bar].astype(np.int64)]
        return self._wrap(obs), rewards, terminated, truncated, infos

    def _advance(self, actions):
        """Kernel step plus same-step autoreset. Returns obs (already holding the first observation of
        reset envs), ``results`` (the step's results [N, fields], as before any reset), rewards,
        terminated, truncated, the indices of the envs that were reset (None if none) and their final
        observations (object array [N], None elsewhere)."""
        if not self._live:
            raise RuntimeError("step() before reset(); call reset() first")
        core = self.core
        obs = np.empty(self._obs_shape, dtype=np.float32)
        # a fresh results array per step: rewards and infos are its columns, owned by the caller, so
        # nothing is copied; only a step with resets copies it (the reset rewrites those envs' rows)
        self._final_fills = None
        n_done = core.step(actions, obs, np.empty(self._out_shape))
        results = core.out if n_done <= 0 else core.out.copy()  # [N, fields] (a view of the fresh array)
        if n_done < 0:
            i = int(np.argmax(results[:, OUT.status] < 0))
            raise ValueError(f"action of env {i} is not in the action space {self.single_action_space} "
                             f"(NaN, or a discrete index that is not an integer in range)")
        rewards = results[:, OUT.reward]
        if n_done == 0:  # (the usual step: no env finished)
            terminated, truncated = np.zeros((2, self.num_envs), dtype=bool)
        else:
            terminated, truncated = results[:, OUT.terminated] == 1.0, results[:, OUT.truncated] == 1.0
        if self._reward_fn is not None:
            eq = results[:, OUT.equity].copy()
            rewards = np.asarray(self._reward_fn(self._prev_equity.copy(), eq, results[:, OUT.turnover].copy(),
                                                 results[:, OUT.fees].copy(), results[:, OUT.drawdown].copy()),
                                 dtype=np.float64).reshape(self.num_envs)
            self._prev_equity[:] = eq
        if n_done == 0:
            return obs, results, rewards, terminated, truncated, None, None
        idx = np.flatnonzero(terminated | truncated).astype(np.int64)
        final_obs = np.full(self.num_envs, None, dtype=object)
        for i in idx:
            final_obs[i] = self._wrap(obs[i].copy())
        starts, ends = self._bounds(idx, {})
        # (the reset clears the fill rows: keep the final step's fills for trades(i))
        self._final_fills = (idx, core.fills[idx], results[idx, OUT.n_trades],
                             core.timestamps[results[idx, OUT.bar].astype(np.int64)])
        core.reset(idx, starts, ends, obs=obs)
        self._prev_equity[idx] = self._proto.initial_cash
        return obs, results, rewards, terminated, truncated, idx, final_obs

    def close_extras(self, **kwargs: Any) -> None:
        self._live = False

    # ------------------------------------------------------------------ helpers
    def trades(self, i: int) -> list[dict]:
        """Fills of env ``i`` in the last step (dicts as in ``CryptoTradingEnv``'s ``info["trades"]``); for an
        env that ended in that step (and was reset), the fills of its final step."""
        if self._final_fills is not None:
            idx, fills, counts, timestamps = self._final_fills
            k = int(np.searchsorted(idx, i))
            if k < len(idx) and idx[k] == i:
                return Trades(fills[k].copy(), int(counts[k]), int(timestamps[k]), self.core.symbols).to_list()
        return self.core.trades(i)

    def _wrap(self, obs: np.ndarray):
        if self._dict_obs:
            return split_obs(obs, self._proto.window, self.core.n_assets, self.core.n_features)
        return obs

    def get_attr(self, name: str) -> tuple:
        """Attribute ``name`` of the env options (e.g. ``window``, ``initial_cash``), once per env."""
        return (getattr(self._proto, name),) * self.num_envs

    def _infos(self, results: np.ndarray | None = None, include_status: bool = True) -> dict[str, Any]:
        """Gymnasium infos (arrays over envs) as views of ``results`` (a step's own results array, or a
        copy of the out array): each info a column, weights and positions [N, A] blocks."""
        core = self.core
        if results is None:
            results = core.out.copy()
        rows = results.T  # [fields, N] (a step's results: contiguous rows)
        infos: dict[str, Any] = {"timestamp": core.timestamps.take(rows[OUT.bar].astype(np.intp))}
        infos.update(zip(_SCALAR_KEYS, rows[_SCALAR_ROWS]))  # (one slice, iterated: a view per row)
        w, q = self._cols
        infos["weights"] = results[:, w]
        infos["positions"] = results[:, q]
        infos["n_trades"] = rows[OUT.n_trades].astype(np.int64)
        if include_status:
            infos["status"] = rows[OUT.status].astype(np.int8)
        return infos

    def _bounds(self, idx: np.ndarray, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Start and end bars of the next episode of envs ``idx`` (random starts from np_random)."""
        proto, core = self._proto, self.core
        lo, last, L = core.first_start, core.last_bar, proto.episode_length
        start = options.get("start")
        if start is None:
            hi = last - (L if L is not None else 1)
            starts = self.np_random.integers(lo, hi + 1, size=len(idx)) if proto.random_start else np.full(len(idx), lo)
        else:
            starts = np.broadcast_to(np.asarray(start, dtype=np.int64), (self.num_envs,))[idx]
        starts = np.asarray(starts, dtype=np.int64)
        if np.any(starts < lo) or np.any(starts > last - 1):
            raise ConfigError(f"options['start'] must be in [{lo}, {last - 1}], got {start!r}")
        end = options.get("end")
        if end is not None:
            ends = np.broadcast_to(np.asarray(end, dtype=np.int64), (self.num_envs,))[idx].copy()
        elif L is not None:
            ends = np.minimum(starts + L, last)
        else:
            ends = np.full(len(idx), last, dtype=np.int64)
        if np.any(ends <= starts) or np.any(ends > last):
            raise ConfigError(f"options['end'] must be after the start and <= {last}, got {end!r}")
        return starts, ends.astype(np.int64)
