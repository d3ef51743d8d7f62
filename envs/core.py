"""``PortfolioCore``: the arrays of N environments over one tensor, and the calls into the kernels.

The single env is a core with N = 1, the vector env a core with N = n_envs, and the backtest drives
the single env; all of them execute through :func:`factorgym.envs.kernels.step_batch_nb`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

from factorgym.envs import execution as ex
from factorgym.envs.config import ExecutionConfig, RewardConfig, resolve_per_symbol
from factorgym.envs.kernels import reset_batch_nb, step_batch_nb, step_batch_par_nb
from factorgym.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

SCHEMES = {"simplex": ex.SCHEME_SIMPLEX, "signed": ex.SCHEME_SIGNED, "direct": ex.SCHEME_DIRECT,
           "discrete": ex.SCHEME_DISCRETE}
REWARDS = {"log_return": ex.REWARD_LOG, "differential_sharpe": ex.REWARD_SHARPE,
           "drawdown_penalty": ex.REWARD_DRAWDOWN, "turnover_penalty": ex.REWARD_TURNOVER}


ACT_ARG = 6  # position of ``act`` in the step kernels' arguments (px, data, par, work, dims, out, act, obs)


def _fast(dispatcher, *args, act_dtype=None):
    """The compiled entry point of ``dispatcher`` for exactly these argument types.

    Calling it skips numba's per-call type dispatch (~0.8 us of a ~3 us env step). Safe because
    every array we pass later has the dtype, dimensions and layout given here: ours are allocated
    once (observation buffers: fresh C-contiguous float32 [N x obs_dim]), and actions are checked
    for dtype first (numba's unboxing checks the dimensions; the kernel checks the length; any
    strides are fine: layout 'A'). ``act_dtype`` replaces the type of ``act`` by a 1-D 'A' array.
    """
    sig = [numba.typeof(a) for a in args]
    if act_dtype is not None:
        sig[ACT_ARG] = numba.types.Array(numba.from_dtype(np.dtype(act_dtype)), 1, "A")
    try:
        return dispatcher.compile(tuple(sig))
    except Exception:  # pragma: no cover - numba internals changed: fall back to normal dispatch
        return dispatcher


F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)


def check_tensor(tensor: Any) -> None:
    """Raise a one-line error if ``tensor`` is not a well-formed FactorTensor for trading."""
    for name in ("features", "prices", "timestamps", "tradable", "symbols"):
        if not hasattr(tensor, name):
            raise DataValidationError(
                f"the env needs a FactorTensor (features, prices, timestamps, tradable, symbols); "
                f"got {type(tensor).__name__} without `{name}` -- build one with FactorTensor.from_arrays(...)")
    f, p, ts, m = tensor.features, tensor.prices, tensor.timestamps, tensor.tradable
    if getattr(f, "ndim", 0) != 3:
        raise DataValidationError(f"tensor.features must be [T, A, F], got shape {getattr(f, 'shape', None)}")
    T, A, _ = f.shape
    if getattr(p, "shape", None) != (T, A, 5):
        raise DataValidationError(f"tensor.prices must be [T, A, 5] = {(T, A, 5)}, got {getattr(p, 'shape', None)}")
    if getattr(ts, "shape", None) != (T,) or getattr(m, "shape", None) != (T, A):
        raise DataValidationError(f"tensor.timestamps must be [{T}] and tradable [{T}, {A}]; got "
                                  f"{getattr(ts, 'shape', None)} and {getattr(m, 'shape', None)}")
    if len(tensor.symbols) != A:
        raise DataValidationError(f"tensor has {A} assets but {len(tensor.symbols)} symbols")
    m = np.asarray(m, dtype=bool)
    o, c, v = (np.asarray(p[..., k], dtype=np.float64) for k in (0, 3, 4))
    for name, arr, ok in (("open", o, lambda x: np.isfinite(x) & (x > 0)), ("close", c, lambda x: np.isfinite(x) & (x > 0)),
                          ("volume", v, lambda x: np.isfinite(x) & (x >= 0))):
        bad = m & ~ok(arr)
        if bad.any():
            t, a = np.argwhere(bad)[0]
            raise DataValidationError(
                f"{tensor.symbols[a]}: {name} is {float(arr[t, a])} at row {t} (timestamp {int(ts[t])}) on a bar marked "
                f"tradable; prices must be finite and positive on tradable bars (mark the bar untradable instead)")


class PortfolioCore:
    """State and static arrays of ``n_envs`` environments trading one tensor.

    The kernels' arrays (layouts in :mod:`factorgym.envs.execution`): ``px`` float64 [T, A, 4],
    ``data`` float32 (features then mask), ``par`` float64 (scalars, levels, per-symbol rules),
    ``work`` float64 [width, L] (the state of every env, field-major), ``out`` float64 [fields, L]
    (the last step's results), ``obs`` float32 [N x obs_dim]. Views by meaning, env n in row n:
    ``st`` [N, S_QTY + A], ``out`` [N, O_W + 3A], ``fills`` [N, 3A, 4]; ``ist`` is an int64 [N, 4]
    snapshot (bar, end bar, done, steps).

    ``parallel=True`` steps the envs on numba's threads (``prange``; set ``NUMBA_NUM_THREADS`` to
    size the pool). Off by default: one thread is faster below a few hundred envs, and trainers
    usually keep the other cores busy. Results are identical either way.
    """

    def __init__(self, tensor: Any, n_envs: int, *, window: int, scheme: str, execution: ExecutionConfig,
                 reward: RewardConfig, initial_cash: float, long_only: bool,
                 levels: Sequence[float] = (), level_size: float = 1.0, parallel: bool = False) -> None:
        check_tensor(tensor)
        T, A, F = tensor.features.shape
        if not isinstance(window, (int, np.integer)) or window < 1:
            raise ConfigError(f"window={window!r}; expected an integer >= 1 (bars of features per observation)")
        if window + 1 > T:
            raise ConfigError(f"window={window} needs at least {window + 1} bars (window rows plus one bar to fill at); "
                              f"the tensor has {T}")
        if not (np.isfinite(initial_cash) and initial_cash > 0):
            raise ConfigError(f"initial_cash={initial_cash!r}; expected a positive number (quote currency)")
        if long_only and execution.max_leverage < 1.0:
            log.info("long-only with max_leverage=%s < 1: at most that fraction of equity is invested", execution.max_leverage)
        self.n_envs, self.n_bars, self.n_assets, self.n_features, self.window = int(n_envs), T, A, F, int(window)
        self.symbols = list(tensor.symbols)
        self.timestamps = np.ascontiguousarray(tensor.timestamps, dtype=np.int64)
        self.long_only = bool(long_only)
        self.scheme = scheme

        prices = np.asarray(tensor.prices, dtype=np.float64)
        tradable = np.ascontiguousarray(tensor.tradable, dtype=bool)
        self.tradable = tradable
        close = np.where(tradable, prices[..., 3], np.nan)
        mark = _ffill(close)  # last tradable close, carried forward; 0 before the first listing
        inv_volume = ex.inverse(np.where(tradable, prices[..., 4], 0.0))  # P_INV_VOLUME: 0 = no impact term
        self.px = np.ascontiguousarray(np.stack([np.where(tradable, prices[..., 0], mark), mark, inv_volume,
                                                 tradable.astype(np.float64)], axis=-1))
        feats = np.asarray(tensor.features, dtype=np.float32)
        finite = np.isfinite(feats)
        n_bad = int((~finite & tradable[..., None]).sum())
        if n_bad:
            log.warning("%d feature values are NaN/inf on tradable bars; they are observed as 0", n_bad)
        self.data = np.concatenate([np.where(finite & tradable[..., None], feats, np.float32(0)).reshape(-1),
                                    tradable.astype(np.float32).reshape(-1)])

        per = resolve_per_symbol(execution, self.symbols, getattr(tensor, "meta", None))
        self.market = per
        mkt = np.stack([per["fee"], per["lot_step"], per["min_amount"], per["min_notional"], per["price_step"],
                        ex.inverse(per["lot_step"]), ex.inverse(per["price_step"])])  # M_* rows
        levels = np.asarray(levels, dtype=np.float64)
        self.action_dim = A + 1 if scheme == "simplex" else A
        par = np.zeros(ex.C_MKT + mkt.size + len(levels))
        par[ex.C_FIXED_SLIP] = (execution.slippage_bps + execution.half_spread_bps) / 1e4
        par[ex.C_IMPACT] = execution.impact_coef
        par[ex.C_IMPACT_EXP] = execution.impact_exponent
        par[ex.C_BORROW] = execution.borrow_rate_per_bar
        par[ex.C_MAX_LEV] = execution.max_leverage
        par[ex.C_MAINT] = execution.maintenance_margin
        par[ex.C_INIT_CASH] = initial_cash
        par[ex.C_LONG_ONLY] = 1.0 if long_only else 0.0
        par[ex.C_CLOSE_UNTRADABLE] = 1.0 if execution.on_untradable == "close" else 0.0
        par[ex.C_SCHEME] = SCHEMES[scheme]
        par[ex.C_REWARD] = REWARDS[reward.kind]
        par[ex.C_DD_PEN] = reward.drawdown_penalty
        par[ex.C_TO_PEN] = reward.turnover_penalty
        par[ex.C_ETA] = reward.sharpe_eta
        par[ex.C_SCALE] = reward.scale
        par[ex.C_WINDOW] = window
        par[ex.C_LEVEL_SIZE] = level_size
        par[ex.C_N_LEVELS] = len(levels)
        par[ex.C_MKT:ex.C_MKT + mkt.size] = mkt.reshape(-1)
        par[ex.C_MKT + mkt.size:] = levels
        self.par = par

        N = self.n_envs
        self.obs_dim = window * A * F + window * A + A + 3
        wi, wf, _ = ex.work_offsets(A)
        self.work = np.zeros(ex.work_shape(A, N))  # state, field-major (see execution.py)
        self.work[wi + ex.I_DONE] = 1.0  # nothing may step before a reset (nor ever, in padding columns)
        self._wi = wi
        self.st = self.work[:wi, :N].T  # [N, S_QTY + A]
        self._out = np.zeros(ex.out_shape(A, N))  # the last step's results, field-major
        self.out = self._out[:, :N].T  # ... read as [N, fields]
        self.fills = np.reshape(self.work[wf:, :N].T, (N, 3 * A, ex.N_FILL_COLS), copy=False)
        self.act = np.zeros(N * self.action_dim)  # flat [N x K], row-major
        self.obs = np.zeros(N * self.obs_dim, dtype=np.float32)  # flat [N x obs_dim]
        self.parallel = bool(parallel)
        kernel = step_batch_par_nb if self.parallel else step_batch_nb
        # the kernels' compile-time A, K and block size (tuple lengths)
        self.dims = ((0,) * A, (0,) * self.action_dim, (0,) * ex.block_size(N))
        args = (self.px, self.data, self.par, self.work, self.dims, self._out, self.act, self.obs)
        self.step64 = _fast(kernel, *args, act_dtype=np.float64)
        self.step32 = _fast(kernel, *args, act_dtype=np.float32)
        idx = np.zeros(0, dtype=np.int64)
        self._reset = _fast(reset_batch_nb, idx, idx, idx, self.px, self.data, self.par, self.work, self.obs, self._out)

    @property
    def ist(self) -> np.ndarray:
        """int64 [N, 4] snapshot of each env's decision bar, end bar, done flag and steps (I_*)."""
        return self.work[self._wi:self._wi + ex.N_IST, :self.n_envs].T.astype(np.int64)

    # ------------------------------------------------------------------ ranges
    @property
    def first_start(self) -> int:
        """Earliest decision bar: the first with a full window of features."""
        return self.window - 1

    @property
    def last_bar(self) -> int:
        return self.n_bars - 1

    # ------------------------------------------------------------------ kernels
    def reset(self, idx: np.ndarray, starts: np.ndarray, ends: np.ndarray, obs: np.ndarray | None = None) -> None:
        """Start envs ``idx`` at decision bars ``starts``, truncating at bars ``ends``; their first
        observations go to rows ``idx`` of ``obs`` (float32 [N x obs_dim] or [N, obs_dim], C order;
        default ``self.obs``); their rows of ``self.out`` are reset."""
        idx, starts, ends = (np.ascontiguousarray(x, dtype=np.int64) for x in (idx, starts, ends))
        self._reset(idx, starts, ends, self.px, self.data, self.par, self.work, self._flat_obs(obs), self._out)

    def step(self, act: np.ndarray | None = None, obs: np.ndarray | None = None, out: np.ndarray | None = None) -> int:
        """Advance every live env one bar; return how many finished (terminated or truncated), or -1
        if an action was malformed (those envs did not move; ``out[:, O_STATUS]`` < 0 marks them).

        ``out``: a fresh float64 C-contiguous array of shape ``out_shape(A, N)`` for the results;
        ``self.out`` then becomes its [N, fields] view (the vector env hands out its columns as
        infos without copying them). Default: the current results array, overwritten.

        ``act``: actions [N, K] or flat [N x K] (default ``self.act``); float32/float64 are used as
        they are, anything else is converted to float64. Observations are written into ``obs``
        (a C-contiguous float32 [N, obs_dim] or [N x obs_dim] array) or ``self.obs``.
        """
        a = self.act if act is None else act
        if type(a) is not np.ndarray or a.dtype not in (F32, F64) or a.ndim != 1:
            a = np.asarray(a)
            a = (a if a.dtype in (F32, F64) else a.astype(np.float64)).reshape(-1)
        if a.shape[0] != self.act.shape[0]:
            raise ValueError(f"actions have {a.shape[0]} values; expected n_envs x action_dim = {self.act.shape[0]}")
        if out is not None:
            if out.dtype != F64 or not out.flags.c_contiguous or out.shape != self._out.shape:
                raise ValueError(f"out must be a C-contiguous float64 array of shape {self._out.shape}")
            self._out, self.out = out, out[:, :self.n_envs].T
        fn = self.step32 if a.dtype == F32 else self.step64
        return fn(self.px, self.data, self.par, self.work, self.dims, self._out, a, self._flat_obs(obs))

    def _flat_obs(self, obs: np.ndarray | None) -> np.ndarray:
        if obs is None:
            return self.obs
        if obs.dtype != F32 or not obs.flags.c_contiguous or obs.size != self.obs.size:
            raise ValueError(f"observation buffer must be C-contiguous float32 with {self.obs.size} values")
        return obs.reshape(-1)

    # ------------------------------------------------------------------ reading results
    def trades(self, n: int) -> list[dict]:
        """Fills of env ``n`` in the last step as dicts (timestamp, symbol, side, quantity, price, fee,
        slippage_cost, kind)."""
        k = int(self.out[n, ex.O_NFILLS])
        return Trades(self.fills[n].copy(), k, int(self.timestamps[int(self.out[n, ex.O_T])]), self.symbols).to_list()

    def order_status(self, n: int) -> list[str]:
        """Status name of each asset's order in env ``n``'s last step."""
        A = self.n_assets
        return [ex.ORDER_STATUS[int(c)] for c in self.out[n, ex.O_W + 2 * A: ex.O_W + 3 * A]]


_KINDS = ("order", "untradable_close", "liquidation")


def fill_rows(block: np.ndarray) -> np.ndarray:
    """The fills of one step as rows (asset, side +-1, quantity, price, fee, slippage_cost, kind code),
    in fill order: order sells, order buys, untradable closes, liquidations, each in asset order.

    ``block``: an env's fills block [3A, 4] (row kind x A + asset, ``F_*`` columns, quantity signed,
    0 = no fill), as the kernels write it."""
    A = block.shape[0] // 3
    q = block[:, ex.F_QTY]
    rows = np.flatnonzero(q)
    kind = rows // A
    rows = rows[np.argsort(2 * kind + ((kind == 0) & (q[rows] > 0)), kind="stable")]
    out = np.empty((len(rows), 7))
    out[:, 0] = rows % A
    out[:, 1] = np.sign(q[rows])
    out[:, 2] = np.abs(q[rows])
    out[:, 3] = block[rows, ex.F_PRICE]
    out[:, 4] = block[rows, ex.F_FEE]
    out[:, 5] = block[rows, ex.F_SLIP]
    out[:, 6] = rows // A
    return out


class Trades(Sequence):
    """The fills of one step: a read-only sequence of dicts, built only when read.

    Each dict: ``timestamp`` (int ms of the fill bar's open), ``symbol``, ``side`` ("buy"/"sell"),
    ``quantity`` (base units), ``price`` (fill price), ``fee`` and ``slippage_cost`` (quote units),
    ``kind`` ("order", "untradable_close", "liquidation"). ``.array`` holds the raw rows
    (asset, side +-1, quantity, price, fee, slippage_cost, kind code; see :func:`fill_rows`);
    ``list(trades)`` gives a list. Built lazily because a step that trades every asset would
    otherwise spend more time making dicts than executing.
    """

    __slots__ = ("_block", "_rows", "_n", "_ts", "_symbols")

    def __init__(self, block: np.ndarray, n: int, timestamp: int, symbols: list[str]) -> None:
        self._block = block  # an owned copy of the env's fills block, with n fills
        self._rows: np.ndarray | None = None
        self._n = n
        self._ts = timestamp
        self._symbols = symbols

    @property
    def array(self) -> np.ndarray:
        if self._rows is None:
            self._rows = fill_rows(self._block)
        return self._rows

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError("trade index out of range")
        a, side, q, p, fee, sc, kind = self.array[i % self._n].tolist()
        return {"timestamp": self._ts, "symbol": self._symbols[int(a)], "side": "buy" if side > 0 else "sell",
                "quantity": q, "price": p, "fee": fee, "slippage_cost": sc, "kind": _KINDS[int(kind)]}

    def to_list(self) -> list[dict]:
        return [self[i] for i in range(self._n)]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Trades, list, tuple)):
            return self.to_list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Trades({self.to_list()!r})"


def _ffill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs along axis 0 (only the past is used); leading NaNs become 0."""
    T = a.shape[0]
    idx = np.where(np.isfinite(a), np.arange(T)[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = np.take_along_axis(a, idx, axis=0)
    return np.where(np.isfinite(out), out, 0.0)
