"""``PortfolioCore``: the arrays of N environments over one tensor, and the calls into the kernels.

The single env is a core with N = 1, the vector env a core with N = n_envs, and the backtest drives
the single env; all of them execute through :func:`factorgym.envs.kernels.step_batch_nb`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

from factorgym.envs import execution as ex
from factorgym.envs.config import ExecutionConfig, RewardConfig, resolve_per_symbol
from factorgym.envs.kernels import reset_batch_nb, step_batch_nb, step_batch_par_nb
from factorgym.envs.layouts import (
    CONFIG, COUNTER, INFO_SCALARS, N_FILL, OUT, OUT_WEIGHTS, RULE, block_size, inverse, out_shape,
    price_records, work_offsets, work_shape,
)
from factorgym.envs.trades import Trades
from factorgym.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

SCHEMES = {"simplex": ex.SCHEME_SIMPLEX, "signed": ex.SCHEME_SIGNED, "direct": ex.SCHEME_DIRECT,
           "discrete": ex.SCHEME_DISCRETE}
REWARDS = {"log_return": ex.REWARD_LOG, "differential_sharpe": ex.REWARD_SHARPE,
           "drawdown_penalty": ex.REWARD_DRAWDOWN, "turnover_penalty": ex.REWARD_TURNOVER}


ACT_ARG = 6  # position of ``act`` in the step kernels' arguments (prices, data, config, work, dims, out, act, obs)


def _fast(dispatcher, *args, act_dtype=None):
    """The compiled entry point of ``dispatcher`` for exactly these argument types.

    Calling it skips numba's per-call type dispatch (~0.8 us of a ~3 us env step). Safe because
    every array we pass later has the dtype, dimensions and layout given here: ours are allocated
    once (observation buffers: fresh C-contiguous float32 [N x obs_dim]), and actions are checked
    for dtype and made 1-D first by every caller (``PortfolioCore.step`` reshapes, the env's ``step``
    tests ``ndim``: a compiled entry point does not check the dimensions of what it is handed); the
    kernel checks the length; any strides are fine: layout 'A'. ``act_dtype`` replaces the type of
    ``act`` by a 1-D 'A' array.
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


_RECORDS: list[tuple[tuple, np.ndarray]] = []  # (weak references to the inputs, their records), newest last


def shared_price_records(tensor: Any, tradable: np.ndarray) -> np.ndarray:
    """:func:`price_records` of ``tensor``, one copy for every env over the same read-only arrays
    (a memory-mapped tensor: its price records are the env's largest array in memory). Arrays
    that can be written are not shared (they could change between two envs)."""
    inputs = (tensor.prices, tensor.tradable, getattr(tensor, "funding", None))
    if not all(a is None or (isinstance(a, np.ndarray) and not a.flags.writeable) for a in inputs):
        records = price_records(tensor, tradable)
        records.flags.writeable = False  # (read-only either way: one compiled kernel for both)
        return records
    _RECORDS[:] = [(refs, r) for refs, r in _RECORDS if all(ref() is not None for ref in refs if ref is not None)]
    for refs, records in _RECORDS:
        if all((ref() if ref is not None else None) is a for ref, a in zip(refs, inputs)):
            return records
    records = price_records(tensor, tradable)
    records.flags.writeable = False
    _RECORDS.append((tuple(None if a is None else weakref.ref(a) for a in inputs), records))
    del _RECORDS[:-4]  # (a few tensors at a time)
    return records


def is_mapped(a: np.ndarray) -> bool:
    """True if ``a`` is (a view of) a memory map: its pages are read from the file on demand."""
    while a is not None:
        if isinstance(a, np.memmap) or not isinstance(a, np.ndarray):  # (np.load maps over an mmap.mmap)
            return True
        a = a.base
    return False


def feature_rows(features: np.ndarray, tradable: np.ndarray) -> tuple[np.ndarray, bool]:
    """The kernels' ``data``: the feature rows [T, A, F] flat and read-only, and whether they are raw.

    A memory-mapped tensor is used as it is (no copy: it may be larger than memory); the kernels
    then observe non-finite values and untradable rows as 0 window by window. An in-memory tensor
    is sanitised once here (a copy, as fast to observe as a plain row copy). Both give the same
    observations bit for bit.
    """
    feats = np.asarray(features)
    if feats.dtype == F32 and is_mapped(feats):
        if not feats.flags.c_contiguous:
            log.info("the memory-mapped features are not contiguous (a sliced asset axis?); copying them into memory")
            feats = np.ascontiguousarray(feats)
        else:
            rows = feats.reshape(-1)
            rows.flags.writeable = False  # (one compiled kernel for maps and copies: both read-only)
            return rows, True
    feats = np.asarray(feats, dtype=np.float32)
    finite = np.isfinite(feats)
    n_bad = int((~finite & tradable[..., None]).sum())
    if n_bad:
        log.warning("%d feature values are NaN/inf on tradable bars; they are observed as 0", n_bad)
    rows = np.where(finite & tradable[..., None], feats, np.float32(0)).reshape(-1)
    rows.flags.writeable = False
    return rows, False


class PortfolioCore:
    """State and static arrays of ``n_envs`` environments trading one tensor.

    The kernels' arrays (layouts named in :mod:`factorgym.envs.layouts`): ``prices`` float64
    [T, A, len(PRICE)], ``data`` float32 feature rows (see :func:`feature_rows`), ``config`` float64 (``CONFIG``
    scalars, per-symbol ``RULE``s, levels), ``work`` float64 [width, L] (the state of every env,
    field-major), ``out`` float64 [fields, L] (the last step's results), ``obs`` float32
    [N x obs_dim]. Views by meaning, env n in row n: ``state`` [N, len(STATE) + A] (``STATE`` then
    positions), ``out`` [N, len(OUT) + 3A], ``fills`` [N, 3A, len(FILL)]; ``counters`` is an int64
    [N, len(COUNTER)] snapshot (bar, end bar, done, steps).

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

        tradable = np.ascontiguousarray(tensor.tradable, dtype=bool)
        self.tradable = tradable
        self.prices = shared_price_records(tensor, tradable)
        self.data, self.raw_features = feature_rows(tensor.features, tradable)
        per = resolve_per_symbol(execution, self.symbols, getattr(tensor, "meta", None))
        self.market = per
        rules = {"fee": per["fee"], "lot_step": per["lot_step"], "inv_lot_step": inverse(per["lot_step"]),
                 "min_amount": per["min_amount"], "min_notional": per["min_notional"], "price_step": per["price_step"],
                 "inv_price_step": inverse(per["price_step"])}
        levels = np.asarray(levels, dtype=np.float64)
        self.action_dim = A + 1 if scheme == "simplex" else A
        settings = {
            "fixed_slippage": (execution.slippage_bps + execution.half_spread_bps) / 1e4,
            "impact": execution.impact_coef, "impact_exponent": execution.impact_exponent,
            "borrow_rate": execution.borrow_rate_per_bar, "max_leverage": execution.max_leverage,
            "maintenance_margin": execution.maintenance_margin, "initial_cash": initial_cash,
            "long_only": float(long_only), "close_untradable": float(execution.on_untradable == "close"),
            "scheme": SCHEMES[scheme], "reward": REWARDS[reward.kind], "drawdown_penalty": reward.drawdown_penalty,
            "turnover_penalty": reward.turnover_penalty, "sharpe_eta": reward.sharpe_eta, "reward_scale": reward.scale,
            "window": window, "level_size": level_size, "n_levels": len(levels),
            "raw_features": float(self.raw_features),
        }
        self.config = np.concatenate([[settings[name] for name in CONFIG._fields],
                                      np.stack([rules[name] for name in RULE._fields]).reshape(-1), levels])

        N = self.n_envs
        self.obs_dim = window * A * F + window * A + A + 3
        counters, fills, _ = work_offsets(A)
        self.work = np.zeros(work_shape(A, N))  # state, field-major (see layouts.py)
        self.work[counters + COUNTER.done] = 1.0  # nothing may step before a reset (nor ever, in padding columns)
        self._counters = counters
        self.state = self.work[:counters, :N].T  # [N, STATE + positions]
        self._out = np.zeros(out_shape(A, N))  # the last step's results, field-major
        self.out = self._out[:, :N].T  # ... read as [N, fields]
        self.fills = np.reshape(self.work[fills:, :N].T, (N, 3 * A, N_FILL), copy=False)
        self.act = np.zeros(N * self.action_dim)  # flat [N x K], row-major
        self.obs = np.zeros(N * self.obs_dim, dtype=np.float32)  # flat [N x obs_dim]
        self.parallel = bool(parallel)
        kernel = step_batch_par_nb if self.parallel else step_batch_nb
        # the kernels' compile-time A and block size (tuple lengths; nothing else of the shape is in the
        # kernels' types: every env of A assets and one action dtype runs one compiled kernel)
        self.dims = ((0,) * A, (0,) * block_size(N))
        args = (self.prices, self.data, self.config, self.work, self.dims, self._out, self.act, self.obs)
        self._kernel, self._kernel_args, self._entries = kernel, args, {}
        idx = np.zeros(0, dtype=np.int64)
        self._reset = _fast(reset_batch_nb, idx, idx, idx, self.prices, self.data, self.config, self.work, self.obs,
                            self._out)

    @property
    def counters(self) -> np.ndarray:
        """int64 [N, len(COUNTER)] snapshot of each env's decision bar, end bar, done flag and steps."""
        return self.work[self._counters:self._counters + len(COUNTER), :self.n_envs].T.astype(np.int64)

    def info_scalars(self, n: int) -> dict[str, float]:
        """Env n's scalar results of the last step by info key (equity, cash, fees, ...)."""
        row = self.out[n]
        return {key: float(row[getattr(OUT, key)]) for key in INFO_SCALARS}

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
        self._reset(idx, starts, ends, self.prices, self.data, self.config, self.work, self._flat_obs(obs), self._out)

    def step(self, act: np.ndarray | None = None, obs: np.ndarray | None = None, out: np.ndarray | None = None) -> int:
        """Advance every live env one bar; return how many finished (terminated or truncated), or -1
        if an action was malformed (those envs did not move; ``out[:, OUT.status]`` < 0 marks them).

        ``out``: a fresh float64 C-contiguous array of shape ``out_shape(A, N)`` for the results;
        ``self.out`` then becomes its [N, fields] view (the vector env hands out its columns as
        infos without copying them). Default: the current results array, overwritten.

        ``act``: actions [N, K] or flat [N x K] (default ``self.act``); float32/float64 are used as
        they are, anything else is converted to float64. Observations are written into ``obs``
        (a C-contiguous float32 [N, obs_dim] or [N x obs_dim] array) or ``self.obs``.
        """
        # (identity tests of the dtypes and classes: this runs every step, and == on dtypes is slow)
        a = self.act if act is None else act
        if a.__class__ is not np.ndarray or (a.dtype is not F32 and a.dtype is not F64):
            a = np.asarray(a)
            if a.dtype != F32 and a.dtype != F64:
                a = a.astype(np.float64)
        if a.ndim != 1:
            a = a.reshape(-1)
        if a.shape[0] != self.act.shape[0]:
            raise ValueError(f"actions have {a.shape[0]} values; expected n_envs x action_dim = {self.act.shape[0]}")
        if out is not None:
            if out.__class__ is not np.ndarray or out.dtype != F64 or not out.flags.c_contiguous \
                    or out.shape != self._out.shape:
                raise ValueError(f"out must be a C-contiguous float64 array of shape {self._out.shape}")
            self._out, self.out = out, out[:, :self.n_envs].T
        fn = self._entries.get(a.dtype) or self._entry(a.dtype)
        return fn(self.prices, self.data, self.config, self.work, self.dims, self._out, a, self._flat_obs(obs))

    # The float64 and float32 action entry points, each compiled on first use: most users step with
    # one dtype only, and every compile of these kernels costs seconds.
    def _entry(self, dtype: np.dtype):
        fn = self._entries.get(dtype)
        if fn is None:
            fn = self._entries[dtype] = _fast(self._kernel, *self._kernel_args, act_dtype=dtype)
        return fn

    @property
    def step64(self):
        return self._entry(F64)

    @property
    def step32(self):
        return self._entry(F32)

    def _flat_obs(self, obs: np.ndarray | None) -> np.ndarray:
        if obs is None:
            return self.obs
        if obs.__class__ is not np.ndarray or (obs.dtype is not F32 and obs.dtype != F32) \
                or not obs.flags.c_contiguous or obs.size != self.obs.size:
            raise ValueError(f"observation buffer must be C-contiguous float32 with {self.obs.size} values")
        return obs.reshape(-1)

    # ------------------------------------------------------------------ reading results
    def trades(self, n: int) -> list[dict]:
        """Fills of env ``n`` in the last step as dicts (timestamp, symbol, side, quantity, price, fee,
        slippage_cost, kind)."""
        k = int(self.out[n, OUT.n_trades])
        return Trades(self.fills[n].copy(), k, int(self.timestamps[int(self.out[n, OUT.bar])]), self.symbols).to_list()

    def order_status(self, n: int) -> list[str]:
        """Status name of each asset's order in env ``n``'s last step."""
        A = self.n_assets
        return [ex.ORDER_STATUS[int(c)] for c in self.out[n, OUT_WEIGHTS + 2 * A: OUT_WEIGHTS + 3 * A]]
