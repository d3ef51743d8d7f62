"""``CryptoTradingEnv``: a strict, multi-asset Gymnasium env over a FactorTensor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from factorgym.envs import execution as ex
from factorgym.envs.config import ExecutionConfig, RewardConfig
from factorgym.envs.core import F32, F64, PortfolioCore
from factorgym.envs.layouts import COUNTER, INFO_SCALARS, OUT, OUT_WEIGHTS, STATE
from factorgym.envs.trades import Trades
from factorgym.envs.spaces import action_space, observation_space, resolve_scheme, split_obs
from factorgym.errors import ConfigError

_ndarray, _empty = np.ndarray, np.empty
_F32, _F64 = F32, F64
_STATUS = {float(k): v for k, v in ex.ENV_STATUS.items()}  # keyed by the float the results row holds
# the results fields of the info scalars, by name: step() builds its info as one dict display (a third
# of the time of dict(zip(...)) on a ~5 us step); that display names the keys in this order
_EQUITY, _CASH, _FEES, _SLIPPAGE, _BORROW, _FUNDING, _TURNOVER = (getattr(OUT, key) for key in INFO_SCALARS)
assert INFO_SCALARS == ("equity", "cash", "fees", "slippage_cost", "borrow_cost", "funding", "turnover"), \
    "update the info display in CryptoTradingEnv.step"

#: ``reward_fn(prev_equity, equity, turnover, fees, drawdown) -> float``; equities and fees in quote
#: units, turnover and drawdown as fractions. The vector env passes float64 arrays [N] instead.
RewardFn = Callable[[Any, Any, Any, Any, Any], Any]


def resolve_reward(reward: str | RewardConfig | RewardFn) -> tuple[RewardConfig, RewardFn | None]:
    if isinstance(reward, RewardConfig):
        return reward, None
    if isinstance(reward, str):
        return RewardConfig(kind=reward), None
    if callable(reward):
        return RewardConfig(), reward
    raise ConfigError(f"reward={reward!r}; expected a reward name, a RewardConfig or a callable")


class CryptoTradingEnv(gym.Env):
    """Trade A crypto assets of a FactorTensor bar by bar, with fees, slippage and lot rules.

    ## Description
    At the close of bar t the agent sees the last ``window`` feature rows and its portfolio, and
    chooses target weights. Orders fill at the open of bar t+1 (never at a price already seen),
    sells before buys, with per-symbol taker fees, slippage (fixed bps + half spread + impact
    growing with participation in the bar's volume), lot steps rounded down and minimum order
    sizes; the book is then marked to the close of bar t+1. Long-only cash never goes negative.
    The exact order of operations and rounding rules are in :mod:`factorgym.envs.execution`.

    ## Action Space
    ``action_scheme="weights"`` (float32 Box) with ``mapping`` ``"simplex"`` (long-only, A+1 values
    in [-1, 1], last = cash), ``"signed"`` (long/short, A values in [-1, 1] times max_leverage) or
    ``"direct"`` (the action is the target weight vector, clipped to the constraints); or
    ``"discrete"``: one index per asset into ``levels`` (MultiDiscrete; Discrete when A = 1). Target
    weights are fractions of equity. See :mod:`factorgym.envs.spaces` for the table.

    ## Observation Space
    ``observation="flat"``: float32 Box of length W*A*F + W*A + A + 3 = features [W, A, F] (0 where
    untradable), tradable mask [W, A], then portfolio: weight per asset, cash / equity,
    equity / initial cash, drawdown. ``"dict"``: the same blocks under ``features``, ``mask``,
    ``portfolio``. Bounds are (-inf, inf) except the mask, in [0, 1].

    ## Rewards
    ``"log_return"`` (default): log(E_t+1 / E_t) of equity; ``"differential_sharpe"`` (Moody &
    Saffell, EMA rate ``sharpe_eta``); ``"drawdown_penalty"``: log return - lambda x drawdown;
    ``"turnover_penalty"``: log return - lambda x turnover; or a callable
    ``reward_fn(prev_equity, equity, turnover, fees, drawdown) -> float``. See ``RewardConfig``.

    ## Starting State
    All cash (``initial_cash``, quote units), no positions, at decision bar ``options["start"]``
    or, with ``random_start``, a bar drawn from ``self.np_random`` in [window - 1, T - 1 - L]
    (L = episode_length, or 1 when None).

    ## Episode End
    Terminated when equity <= 0 (status "bankrupt") or on liquidation (long/short, equity below
    maintenance_margin x gross exposure). Truncated when the episode reaches its end bar:
    start + episode_length, or the tensor's last bar when episode_length is None.

    ## Arguments
    | argument       | default        | meaning                                                    |
    | -------------- | -------------- | ---------------------------------------------------------- |
    | tensor         | (required)     | FactorTensor (or anything with its fields)                 |
    | window         | 1              | feature rows per observation, bars                         |
    | action_scheme  | "weights"      | "weights" or "discrete"                                    |
    | mapping        | "simplex"      | weights mapping: "simplex", "signed", "direct"             |
    | long_only      | None           | inferred from mapping/levels; True/False to force          |
    | levels         | None           | discrete target levels; (0, 1) long-only, else (-1, 0, 1)  |
    | level_size     | None           | weight per level unit; 1 / A by default                    |
    | reward         | "log_return"   | name, RewardConfig or callable                             |
    | execution      | ExecutionConfig() | fees, slippage, lot rules, leverage, borrow          |
    | episode_length | None           | steps per episode; None = to the end of the data           |
    | random_start   | True           | draw the start bar from np_random on reset                 |
    | initial_cash   | 10_000.0       | quote currency                                             |
    | observation    | "flat"         | "flat" or "dict"                                           |

    ``info`` after each step: ``timestamp`` (int ms, open time of the bar the step ended on),
    ``equity``, ``cash``, ``weights`` [A], ``positions`` [A] (base units), ``fees``,
    ``slippage_cost``, ``borrow_cost``, ``funding`` (quote units; funding paid, negative when
    received), ``turnover`` (fraction of equity),
    ``trades`` (a :class:`Trades` sequence of dicts), ``status`` ("ok", "bankrupt", "liquidated").

    ## Version History
    * v0: initial version.

    Example:
        >>> import numpy as np
        >>> from factorgym.data_layer.tensor import FactorTensor
        >>> rng = np.random.default_rng(0)
        >>> close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (50, 2)), axis=0))
        >>> t = FactorTensor.from_arrays(rng.normal(size=(50, 2, 3)), close, np.arange(50) * 3_600_000)
        >>> env = CryptoTradingEnv(t, window=4)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (37,)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> sorted(info)[:4]
        ['borrow_cost', 'cash', 'equity', 'fees']
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, tensor: Any, window: int = 1, action_scheme: str = "weights", reward: str | RewardConfig | RewardFn = "log_return",
                 execution: ExecutionConfig | None = None, episode_length: int | None = None, initial_cash: float = 10_000.0,
                 observation: str = "flat", mapping: str = "simplex", long_only: bool | None = None,
                 levels: Sequence[float] | None = None, level_size: float | None = None, random_start: bool = True,
                 render_mode: str | None = None, _n_envs: int = 1, _parallel: bool = False) -> None:
        execution = execution if execution is not None else ExecutionConfig()
        if not isinstance(execution, ExecutionConfig):
            raise ConfigError(f"execution must be an ExecutionConfig, got {type(execution).__name__}")
        A = tensor.features.shape[1] if hasattr(tensor, "features") and getattr(tensor.features, "ndim", 0) == 3 else 1
        scheme, self.long_only, lv = resolve_scheme(action_scheme, mapping, long_only, levels, A, execution.max_leverage)
        reward_cfg, self._reward_fn = resolve_reward(reward)
        size = (1.0 / A) if level_size is None else float(level_size)
        self._core = core = PortfolioCore(tensor, _n_envs, window=window, scheme=scheme, execution=execution, reward=reward_cfg,
                                          initial_cash=float(initial_cash), long_only=self.long_only, levels=lv, level_size=size,
                                          parallel=_parallel)
        T = core.n_bars
        if episode_length is not None and not (isinstance(episode_length, (int, np.integer)) and 1 <= episode_length <= T - window):
            raise ConfigError(f"episode_length={episode_length!r}; expected an integer in [1, {T - window}] "
                              f"(bars after the first full window of {window})")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode={render_mode!r}; expected None or one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.window, self.episode_length, self.random_start = int(window), episode_length, bool(random_start)
        self.initial_cash, self.execution, self.reward_config, self.scheme = float(initial_cash), execution, reward_cfg, scheme
        self.tensor_symbols = core.symbols
        self.levels, self.level_size = lv, size  # (discrete scheme: target levels and the weight per level)
        self.action_space = action_space(scheme, self.long_only, A, lv, execution.max_leverage)
        self.observation_space = observation_space(observation, window, A, core.n_features)
        self._dict_obs = observation == "dict"
        # fast-path handles into the core's buffers (one env: row 0); see step()
        self._act_row = core.act  # float64 [K]: converted actions (N = 1)
        self._act_shape = self._act_row.shape
        self._scalar_action = isinstance(self.action_space, gym.spaces.Discrete)
        self._obs_dim = core.obs_dim
        self._results = core.out[0, :OUT_WEIGHTS]
        self._w = core.out[0, OUT_WEIGHTS:OUT_WEIGHTS + A]
        self._q = core.out[0, OUT_WEIGHTS + A:OUT_WEIGHTS + 2 * A]
        self._fills = core.fills[0]
        self._ts = core.timestamps.tolist()
        # (the field-major results array itself: the compiled entry points do not check layouts)
        kargs = (core.prices, core.data, core.config, core.work, core.dims, core._out)
        self._kargs = kargs
        self._step32, self._step64 = partial(self._first_step, _F32), partial(self._first_step, _F64)
        self._done = True
        self._prev_equity = float(initial_cash)
        self._bounds: tuple = (None, None)  # (start, end and their one-env index arrays of the last episode)

    def _first_step(self, dtype, action, obs):
        """Compile the entry point for this action dtype on first use, then step straight into it."""
        fn = partial(self._core.step32 if dtype is _F32 else self._core.step64, *self._kargs)
        if dtype is _F32:
            self._step32 = fn
        else:
            self._step64 = fn
        return fn(action, obs)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        start, end = self._episode_bounds(options or {})
        obs = np.empty(self._obs_dim, dtype=np.float32)
        self._start_episode(start, end, obs)
        A = self._core.n_assets
        info = {"timestamp": self._ts[start], **dict.fromkeys(INFO_SCALARS, 0.0), "equity": self.initial_cash,
                "cash": self.initial_cash, "weights": np.zeros(A), "positions": np.zeros(A), "trades": [],
                "status": "ok", "start": start, "end": end}
        return self._wrap(obs), info

    def _start_episode(self, start: int, end: int, obs: np.ndarray) -> None:
        """The core of :meth:`reset` for bounds already checked, first observation into ``obs``: the
        live loop's shadow env restarts here every bar (no Gymnasium seeding, no info dict)."""
        bounds = self._bounds
        if bounds[0] != start or bounds[1] != end:  # (the shadow restarts at the same bounds every bar)
            bounds = self._bounds = (start, end, np.zeros(1, dtype=np.int64), np.array([start], dtype=np.int64),
                                     np.array([end], dtype=np.int64))
        core = self._core
        if obs.__class__ is _ndarray and obs.dtype is _F32 and obs.ndim == 1 and obs.flags.c_contiguous \
                and obs.shape[0] == self._obs_dim:  # (the core's own checks, known to hold: its compiled call)
            core._reset(bounds[2], bounds[3], bounds[4], core.prices, core.data, core.config, core.work, obs, core._out)
        else:
            core.reset(bounds[2], bounds[3], bounds[4], obs)
        self._done = False
        self._prev_equity = self.initial_cash

    def step(self, action):
        # The hot path (~2 us): one compiled call on 8 arguments, one .tolist() of the stats row, copies
        # of weights and positions, the fills copied only when there are any; the observation is
        # written by the kernel straight into the fresh array that is returned.
        if self._done:
            raise RuntimeError("step() called on a finished (or never reset) episode; call reset() first")
        obs = _empty(self._obs_dim, _F32)
        if action.__class__ is _ndarray and action.ndim == 1 and action.dtype is _F32:
            self._step32(action, obs)
        elif action.__class__ is _ndarray and action.ndim == 1 and action.dtype is _F64:
            self._step64(action, obs)
        else:
            self._step64(self._to_action(action), obs)
        row = self._results.tolist()
        status = row[OUT.status]
        if status < 0:
            self._bad_action(action, status)
        ts = self._ts[int(row[OUT.bar])]
        reward = row[OUT.reward]
        if self._reward_fn is not None:
            equity = row[OUT.equity]
            reward = float(self._reward_fn(self._prev_equity, equity, row[OUT.turnover], row[OUT.fees], row[OUT.drawdown]))
            self._prev_equity = equity
        terminated = row[OUT.terminated] == 1.0
        truncated = row[OUT.truncated] == 1.0
        self._done = terminated or truncated
        n_trades = row[OUT.n_trades]
        info = {"equity": row[_EQUITY], "cash": row[_CASH], "fees": row[_FEES], "slippage_cost": row[_SLIPPAGE],
                "borrow_cost": row[_BORROW], "funding": row[_FUNDING], "turnover": row[_TURNOVER], "timestamp": ts,
                "weights": self._w.copy(), "positions": self._q.copy(),
                "trades": Trades(self._fills.copy(), int(n_trades), ts, self.tensor_symbols) if n_trades else [],
                "status": _STATUS[status]}
        if self._dict_obs:
            obs = self._wrap(obs)
        return obs, reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        c = self._core
        t = int(c.counters[0, COUNTER.bar])
        w = ", ".join(f"{s}={x:+.3f}" for s, x in zip(c.symbols, c.out[0, OUT_WEIGHTS:OUT_WEIGHTS + c.n_assets]))
        return (f"bar {t} ts={self._ts[t]} equity={c.state[0, STATE.equity]:.2f} cash={c.state[0, STATE.cash]:.2f} "
                f"weights[{w}]")

    # ------------------------------------------------------------------ helpers
    @property
    def core(self) -> PortfolioCore:
        """The execution core (N = 1) this env steps; read-only use."""
        return self._core

    @property
    def order_status(self) -> list[str]:
        """Status of each asset's order in the last step ("filled", "ignored_min_notional", ...)."""
        return self._core.order_status(0)

    def _wrap(self, obs: np.ndarray):
        if self._dict_obs:
            return split_obs(obs, self.window, self._core.n_assets, self._core.n_features)
        return obs

    def _bad_action(self, action, status: float) -> None:
        if status == ex.ENV_BAD_SHAPE:
            raise ValueError(f"action {action!r} has shape {np.shape(action)}; the action space {self.action_space} "
                             f"expects {self.action_space.shape or '()'}")
        raise ValueError(f"action {action!r} is not in the action space {self.action_space} (NaN, or a discrete "
                         f"index that is not an integer in range)")

    def _to_action(self, action) -> np.ndarray:
        """Any array-like action as the float64 [K] buffer the kernel reads (slow path)."""
        arr = np.asarray(action)
        if self._scalar_action and arr.size == 1:
            arr = arr.reshape(1)
        if arr.shape != self._act_shape or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"action {action!r} has shape {arr.shape}; the action space {self.action_space} "
                             f"expects {self.action_space.shape or '()'}")
        self._act_row[:] = arr
        return self._act_row

    def _episode_bounds(self, options: dict[str, Any]) -> tuple[int, int]:
        core = self._core
        lo, last = core.first_start, core.last_bar
        L = self.episode_length
        start = options.get("start")
        if start is None:
            hi = last - (L if L is not None else 1)
            start = int(self.np_random.integers(lo, hi + 1)) if self.random_start else lo
        start = int(start)
        if not lo <= start <= last - 1:
            raise ConfigError(f"options['start']={start} is outside [{lo}, {last - 1}]: the first decision bar needs "
                              f"{self.window} feature rows before it and one bar after it to fill at")
        end = options.get("end")
        end = min(start + L, last) if end is None and L is not None else (last if end is None else int(end))
        if not start < end <= last:
            raise ConfigError(f"options['end']={end} must be in ({start}, {last}] (the bar the episode is truncated at)")
        return start, end
