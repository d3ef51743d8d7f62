"""Online Qlib rows: all assets' windows through Qlib's operators in one pass.

:class:`QlibOnlineFactor` keeps each asset's last ``history`` bars. On an update, the windows of
the assets that got a bar form ``[H, r]`` arrays per field, and every unique sub-expression of the
factor's expressions is evaluated once, inputs first (:class:`EvalPlan`), by Qlib's own operator
code: the operator object's ``load`` is called after its inputs were put into Qlib's expression
cache (``H["f"]``, keys as ``Expression.load`` builds them) in a container chosen per class:

* ``elem`` -- element-wise numpy operators (``Add .. Ne``, ``Abs``, ``Log`` ...): one 2-D array
  (an ``ndarray`` subclass, so Qlib can set ``.name``). pandas' Series arithmetic is the same
  numpy ufunc, element by element, so the layout of the elements does not matter.
* ``wide`` -- pandas rolling/shift operators (``Mean Sum Std Max Quantile Rank IdxMax Ref Delta
  EMA Cov ...``): a DataFrame, one column per asset. pandas runs rolling windows column by column
  (``BaseWindow._apply_columnwise``) with the 1-D kernel a Series uses and fresh accumulators per
  column, so nothing crosses from one asset into the next.
* ``corr`` -- ``Corr``: Qlib's ``PairRolling`` corr on the DataFrames (pandas' pairwise-False
  path is again column by column), then Corr's own rule -- NaN where either side's rolling std
  is ~0 (``np.isclose(.., 0, atol=2e-05)``) -- with the stds from Qlib's ``Std`` operator. (Qlib's
  ``res.loc[mask] = nan`` would blank whole rows of a DataFrame, hence the mask done here.)
* ``kernel`` -- ``Slope Resi Rsquare``: Qlib's 1-D Cython kernels column by column (Rsquare
  with the same std mask).
* ``asset`` -- everything else (``If``, ``And``/``Or``/``Not``, operators with a constant side,
  unknown or user-defined classes): one Series per asset, as a one-instrument evaluation sees it.

Assets are never chained into one long Series: rolling accumulators (pandas' Kahan sums and
Welford variances, Qlib's Slope/Rsquare running sums) would carry round-off from one asset into
the next. The result equals the one-asset-at-a-time evaluation through the provider
(:func:`evaluate_per_asset`, the reference) bit for bit; :func:`verify_plan` checks that on
probe windows of very different price scales when an online factor is first built and falls back
to the reference path, with a warning, on any difference (e.g. after a pandas/Qlib upgrade).

Speed-ups beyond the batching: the plan's own copies of the expression trees cache their
``str()`` (Qlib rebuilds the whole sub-tree string on every ``load`` for the cache key). And the
common operators skip Qlib's ``load`` and pandas' object layer (:func:`_direct_kind`): an ``elem``
operator whose ``_load_internal`` is Qlib's plain ``np.<func>(left, right)`` is that ufunc call on
the arrays; ``Mean Sum Std Var Max Min`` (int N > 0), ``Cov`` and ``Corr`` call, column by column,
the very Cython kernels pandas' ``rolling(N, min_periods=1)`` calls (``roll_mean`` ... ``roll_corr``)
on the same inputs (pandas' float64 conversion with inf as NaN; ``X + 0 * Y`` masking for the pairs;
``zsqrt`` for Std). :func:`verify_plan` holds them to the per-asset bits like the rest.
"""

from __future__ import annotations

import copy
import logging
import weakref
from typing import Any

import numpy as np

from factorgym.data_layer.factors import qlib_provider as qp
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)

_FREQ = "day"  # label in cache keys only; in-memory data never reads a calendar
_BATCH = qp.memory_instrument_name("batch")
_ASSET = qp.memory_instrument_name("asset") + "_"
_CHILD_ATTRS = ("feature", "feature_left", "feature_right", "condition")


class _Block(np.ndarray):
    """A plain 2-D float array that accepts attributes (Qlib's ``load`` sets ``.name``)."""


def _modes() -> tuple[set, set]:
    from qlib.data import ops

    # (And/Or/Not stay per asset: pandas falls back to object maths where numpy refuses floats)
    elem = {ops.Abs, ops.Sign, ops.Log, ops.Power, ops.Add, ops.Sub, ops.Mul, ops.Div,
            ops.Greater, ops.Less, ops.Gt, ops.Ge, ops.Lt, ops.Le, ops.Eq, ops.Ne}
    wide = {ops.Mean, ops.Sum, ops.Std, ops.Var, ops.Skew, ops.Kurt, ops.Max, ops.Min, ops.Med,
            ops.Count, ops.Ref, ops.Delta, ops.Quantile, ops.IdxMax, ops.IdxMin, ops.Rank, ops.Mad,
            ops.WMA, ops.EMA, ops.Cov}
    return elem, wide


def _children(node) -> list:
    from qlib.data.base import Expression

    return [c for c in (getattr(node, a, None) for a in _CHILD_ATTRS) if isinstance(c, Expression)]


def _plan_mode(node, elem: set, wide: set) -> tuple[str, list]:
    """(container mode, inputs to evaluate first) of one operator node."""
    from qlib.data import ops

    kids = _children(node)
    cls = type(node)
    paired = hasattr(node, "feature_left")
    if cls in elem:
        return "elem", kids
    if len(kids) != (2 if paired else 1):  # a rolling pair with a constant side: per asset
        return "asset", kids
    if cls in wide:
        return "wide", kids
    if cls is ops.Corr:  # Corr = PairRolling corr, NaN where either side's rolling std is ~0
        return "corr", kids + [ops.Std(k, node.N) for k in kids]
    if cls in (ops.Slope, ops.Resi) and node.N > 0:  # Qlib's 1-D Cython kernels, column by column
        return "kernel", kids
    if cls is ops.Rsquare and node.N > 0:  # ... and NaN where the rolling std is ~0
        return "kernel", kids + [ops.Std(kids[0], node.N)]
    return "asset", kids


_STR_CACHED: dict[type, type] = {}


def _plain_node(cls: type, state: dict) -> Any:
    """Unpickle/copy helper of :func:`_cache_str` nodes: an instance of the plain Qlib class."""
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _cache_str(node) -> None:
    """Give ``node`` (and its inputs) a same-named subclass of its operator class whose
    ``__str__`` is computed once: Qlib rebuilds the string of the whole sub-tree for the cache key
    on every ``load``; the trees never change, so the string never changes."""
    cls = type(node)
    if cls.__dict__.get("_fg_cached_str"):
        return
    sub = _STR_CACHED.get(cls)
    if sub is None:
        def __str__(self, _base=cls.__str__):
            text = self.__dict__.get("_fg_str")
            if text is None:
                text = self._fg_str = _base(self)
            return text

        def __reduce_ex__(self, protocol, _base=cls):  # pickles (and copies) as the plain Qlib class
            return _plain_node, (_base, {k: v for k, v in self.__dict__.items() if k != "_fg_str"})

        sub = _STR_CACHED[cls] = type(cls.__name__, (cls,), {
            "__str__": __str__, "__reduce_ex__": __reduce_ex__, "_fg_cached_str": True,
            "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    for kid in _children(node):
        _cache_str(kid)
    node.__class__ = sub


_ROLL_FUNCS = ("mean", "sum", "std", "var", "max", "min")


def _direct_kind(node, base_class: type, mode: str) -> str | None:
    """How a node is computed without Qlib's ``load``: ``ufunc1``/``ufunc2`` (Qlib's own
    ``np.<func>`` call), ``roll``/``cov``/``corr`` (pandas' rolling kernels), or None (through Qlib)."""
    from qlib.data import ops

    impl = base_class._load_internal
    if mode == "elem":
        if impl is ops.NpElemOperator._load_internal:
            return "ufunc1"
        if impl is ops.NpPairOperator._load_internal:
            return "ufunc2"
        return None
    n = getattr(node, "N", None)
    if type(n) is not int or n <= 0:
        return None
    if mode == "wide" and impl is ops.Rolling._load_internal and node.func in _ROLL_FUNCS:
        return "roll"
    if mode == "wide" and impl is ops.PairRolling._load_internal and node.func == "cov":
        return "cov"
    if mode == "corr" and impl is ops.Corr._load_internal:
        return "corr"
    return None


def _window_bounds(n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """pandas' ``FixedWindowIndexer`` bounds of ``rolling(window)`` over n rows (right-closed)."""
    end = np.arange(1, n + 1, dtype=np.int64)
    return np.clip(end - window, 0, n), end


def _as_float64(x: np.ndarray) -> np.ndarray:
    """pandas' ``Rolling._prep_values``: float64, inf as NaN."""
    v = np.asarray(x, dtype=np.float64)
    inf = np.isinf(v)
    return np.where(inf, np.nan, v) if inf.any() else v


def _zsqrt(x: np.ndarray) -> np.ndarray:
    """pandas' ``zsqrt``: sqrt, 0 where the variance came out negative."""
    out = np.sqrt(x)
    neg = x < 0
    if neg.any():
        out[neg] = 0
    return out


class EvalPlan:
    """Unique sub-expressions of ``roots`` in evaluation order (inputs first), each with its
    container mode (``feature``, ``elem``, ``wide``, ``corr``, ``kernel`` or ``asset``)."""

    def __init__(self, roots: list[Any]) -> None:
        from qlib.data.base import Feature

        elem, wide = _modes()
        self.base_class: list[type] = []  # operator class before _cache_str
        self.keys: list[str] = []
        self.objs: list[Any] = []
        self.modes: list[str] = []
        self.kids: list[list[int]] = []
        self.field: list[int] = []  # QLIB_FIELDS index of feature nodes (-1 otherwise)
        index: dict[str, int] = {}
        roots = copy.deepcopy(list(roots))  # own copies: _cache_str changes their class
        for root in roots:  # iterative post-order walk; shared sub-expressions once
            stack: list[tuple[Any, tuple[str, list] | None]] = [(root, None)]
            while stack:
                node, planned = stack.pop()
                key = str(node)
                if key in index:
                    continue
                if isinstance(node, Feature):
                    mode, inputs = "feature", []
                else:
                    mode, inputs = planned or _plan_mode(node, elem, wide)
                if planned is None and inputs:
                    stack.append((node, (mode, inputs)))
                    stack.extend((c, None) for c in reversed(inputs))
                    continue
                index[key] = len(self.keys)
                self.keys.append(key)
                self.objs.append(node)
                self.kids.append([index[str(c)] for c in inputs])
                self.modes.append(mode)
                self.field.append(qp.QLIB_FIELDS.index(node._name.lower()) if mode == "feature" else -1)
                self.base_class.append(type(node))
        self.roots = [index[str(r)] for r in roots]
        self.direct = [_direct_kind(o, c, m) for o, c, m in zip(self.objs, self.base_class, self.modes)]
        self.uses_qlib = any(d is None and m not in ("feature", "kernel") for d, m in zip(self.direct, self.modes))
        self._bounds: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for obj in self.objs:  # objs are the plan's own copies (see __init__)
            _cache_str(obj)

    def evaluate(self, win: np.ndarray) -> np.ndarray:
        """``win`` float32 ``[H, r, len(QLIB_FIELDS)]`` (oldest first, NaN before an asset's first
        bar) -> float32 ``[r, len(roots)]``: each root's value at the last row."""
        import pandas as pd
        from qlib.data import ops
        from qlib.data.cache import H as cache

        kernel = {ops.Slope: ops.rolling_slope, ops.Resi: ops.rolling_resi, ops.Rsquare: ops.rolling_rsquare}

        n_rows, r = win.shape[0], win.shape[1]
        end = n_rows - 1
        mem = cache["f"] if self.uses_qlib else None
        if mem is not None:
            mem.clear()
            if mem.limited and mem.size_limit < len(self.keys) * (3 + r):  # an eviction would re-read
                mem.set_limit_size(len(self.keys) * (3 + r))  # a batch "instrument" from the provider
        vals: list[np.ndarray | None] = [None] * len(self.keys)
        placed: dict[tuple[int, str], bool] = {}
        asset_insts = [f"{_ASSET}{i}" for i in range(r)]

        def place(j: int, how: str) -> None:
            if (j, how) in placed:
                return
            placed[(j, how)] = True
            v, key = vals[j], self.keys[j]
            if how == "elem":
                mem[(key, _BATCH + "e", 0, end, _FREQ)] = v.view(_Block)
            elif how == "wide":
                mem[(key, _BATCH + "w", 0, end, _FREQ)] = pd.DataFrame(v, copy=False)
            else:
                for i in range(r):  # contiguous float arrays, as a one-instrument provider serves them
                    mem[(key, asset_insts[i], 0, end, _FREQ)] = pd.Series(np.ascontiguousarray(v[:, i]), copy=False)

        try:
            with np.errstate(all="ignore"):  # pandas' ops silence numpy warnings; so do we
                for j, mode in enumerate(self.modes):
                    if mode == "feature":
                        vals[j] = np.ascontiguousarray(win[:, :, self.field[j]])
                        continue
                    kids, obj, direct = self.kids[j], self.objs[j], self.direct[j]
                    if direct is not None:
                        vals[j] = self._direct(direct, obj, [vals[k] for k in kids], n_rows, r)
                        continue
                    if mode == "kernel":  # the operator's own Cython kernel on each column
                        x = vals[kids[0]]
                        out = np.column_stack([kernel[self.base_class[j]](np.ascontiguousarray(x[:, i]), obj.N) for i in range(r)])
                        if len(kids) == 2:
                            out[np.isclose(vals[kids[1]], 0, atol=2e-05)] = np.nan
                        vals[j] = out
                        continue
                    for k in kids[:2] if mode == "corr" else kids:
                        place(k, "wide" if mode == "corr" else mode)
                    if mode == "elem":
                        out = np.asarray(obj.load(_BATCH + "e", 0, end, _FREQ))
                    elif mode == "wide":
                        out = obj.load(_BATCH + "w", 0, end, _FREQ).to_numpy()
                    elif mode == "corr":  # Qlib's Corr, its mask taken from the two Std inputs
                        out = ops.PairRolling._load_internal(obj, _BATCH + "w", 0, end, _FREQ).to_numpy(copy=True)
                        out[np.isclose(vals[kids[2]], 0, atol=2e-05) | np.isclose(vals[kids[3]], 0, atol=2e-05)] = np.nan
                    else:
                        out = np.column_stack([obj.load(inst, 0, end, _FREQ).to_numpy() for inst in asset_insts])
                    if out.shape != (n_rows, r):
                        raise RuntimeError(f"Qlib returned shape {out.shape} for {self.keys[j]!r}, expected {(n_rows, r)}")
                    vals[j] = out
        finally:
            if mem is not None:
                mem.clear()
        return np.stack([np.asarray(vals[j][-1], dtype=np.float32) for j in self.roots], axis=-1)

    def _direct(self, kind: str, obj: Any, inputs: list[np.ndarray], n_rows: int, r: int) -> np.ndarray:
        """One node without Qlib's ``load``: what Qlib's operator and pandas compute, from the same
        arrays (see the module docstring)."""
        from pandas._libs.window import aggregations as agg
        from qlib.data.base import Expression

        if kind == "ufunc1":
            return np.asarray(getattr(np, obj.func)(inputs[0]))
        if kind == "ufunc2":
            feed = iter(inputs)
            left = next(feed) if isinstance(obj.feature_left, Expression) else obj.feature_left
            right = next(feed) if isinstance(obj.feature_right, Expression) else obj.feature_right
            return np.asarray(getattr(np, obj.func)(left, right))
        bounds = self._bounds.get((n_rows, obj.N))
        if bounds is None:
            bounds = self._bounds[(n_rows, obj.N)] = _window_bounds(n_rows, obj.N)
        start, stop = bounds
        out = np.empty((n_rows, r))
        if kind == "roll":
            x, func = inputs[0], obj.func
            for i in range(r):
                v = _as_float64(x[:, i])
                if func in ("std", "var"):
                    res = agg.roll_var(v, start, stop, 1, ddof=1)
                    out[:, i] = _zsqrt(res) if func == "std" else res
                else:
                    out[:, i] = getattr(agg, f"roll_{func}")(v, start, stop, 1)
            return out
        a, b = inputs[0], inputs[1]
        xs, ys = a + 0 * b, b + 0 * a  # pandas' prep_binary: NaN where either side is NaN
        for i in range(r):
            x, y = _as_float64(xs[:, i]), _as_float64(ys[:, i])
            out[:, i] = agg.roll_cov(x, y, start, stop, 1, ddof=1) if kind == "cov" else agg.roll_corr(x, y, start, stop, 1)
        if kind == "corr":  # Qlib's Corr: NaN where either side's rolling std is ~0
            out[np.isclose(inputs[2], 0, atol=2e-05) | np.isclose(inputs[3], 0, atol=2e-05)] = np.nan
        return out


def evaluate_per_asset(objs: list[Any], win: np.ndarray) -> np.ndarray:
    """Reference path: each asset's window served as its own in-memory instrument and every
    expression loaded through Qlib's provider machinery. Same signature as :meth:`EvalPlan.evaluate`."""
    n_rows, r = win.shape[0], win.shape[1]
    out = np.empty((r, len(objs)), dtype=np.float32)
    inst = qp.memory_instrument_name("reference")
    qp.ensure_qlib()
    try:
        for i in range(r):
            qp.set_memory_instrument(inst, {name: win[:, i, j] for j, name in enumerate(qp.QLIB_FIELDS)})
            qp.clear_feature_cache()
            for j, obj in enumerate(objs):
                out[i, j] = obj.load(inst, 0, n_rows - 1, _FREQ).to_numpy(dtype=np.float32)[-1]
    finally:
        qp.drop_memory_instrument(inst)
        qp.clear_feature_cache()
    return out


def probe_windows(n_rows: int, seed: int = 0) -> np.ndarray:
    """float32 ``[n_rows, 6, 7]`` windows meant to expose any leak between assets: prices of
    3e4, 4e-3, 2, 150, 1e-6 and 5e5 side by side, a late listing (NaN head), a flat stretch
    (zero std: Corr/Rsquare masks) and zero volume."""
    rng = np.random.default_rng(seed)
    scale = np.array([30000.0, 0.004, 2.0, 150.0, 1e-6, 5e5])
    c = scale * np.exp(np.cumsum(rng.normal(0, 0.01, (n_rows, 6)), axis=0))
    c[n_rows // 3 : n_rows // 2, 3] = c[n_rows // 3, 3]  # flat prices (std 0: Corr/Rsquare masks)
    o = np.vstack([c[:1], c[:-1]]) * (1 + rng.normal(0, 0.001, c.shape))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.004, c.shape))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.004, c.shape))
    v = rng.lognormal(3, 1, c.shape) / scale
    v[n_rows // 2 : n_rows // 2 + 12, 0] = 0.0
    win = qp.qlib_field_arrays(o, h, lo, c, v)
    win[: n_rows // 4, 2] = np.nan  # listed late: fewer bars than the window
    return win


def verify_plan(plan: EvalPlan, objs: list[Any], n_rows: int) -> list[int]:
    """Roots (indices into ``objs``) whose batched value differs from :func:`evaluate_per_asset`
    on :func:`probe_windows` in any bit (NaN == NaN)."""
    bad: set[int] = set()
    for seed in (0, 1):
        win = probe_windows(n_rows, seed)
        for take in (slice(None), slice(1, 2)):  # all assets, and a single one
            try:
                b = evaluate_per_asset(objs, win[:, take])
                a = plan.evaluate(win[:, take])
            except Exception as exc:  # e.g. an operator that needs a Series after all
                log.debug("batched Qlib evaluation failed: %r", exc)
                return list(range(len(objs)))
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            bad.update(np.flatnonzero(~same.all(axis=0)).tolist())
    return sorted(bad)


class QlibOnlineFactor:
    """Per-bar Qlib rows: each asset keeps its last ``factor.history`` bars; on update the windows
    of the assets that got a bar are evaluated together by Qlib's operators (:class:`EvalPlan`)
    and each window's last row is the asset's new row.

    Exact for bounded windows: row t of a window-w expression depends only on the last w bars
    (EMAs: on ``EMA_TOLERANCE``-sized tails). ``bar`` is float64 ``[A, 5]`` OHLCV, or ``[A, 6]``
    with quote volume last (for ``$vwap``, matching ``compute(..., quote_volume=...)``).
    ``batched=False`` evaluates asset by asset through the provider (the reference path); a
    batched plan that fails :func:`verify_plan` falls back to it for good, with a warning.
    """

    def __init__(self, factor, symbols: list[str], batched: bool = True) -> None:
        self.factor = factor
        self.symbols = list(symbols)
        self.history = int(factor.history)
        A = len(self.symbols)
        self._buf = np.full((self.history, A, len(qp.QLIB_FIELDS)), np.nan, dtype=np.float32)
        self._count = np.zeros(A, dtype=np.int64)
        qp.ensure_qlib()
        self._plan: EvalPlan | None = None
        if batched:
            plan, bad = factor_plan(factor)
            if bad:
                log.warning("batched Qlib evaluation differs from per-asset evaluation for %s; "
                            "using the per-asset path (slower)", [factor._unique[j] for j in bad[:5]])
            else:
                self._plan = plan

    def update(self, timestamp: int, bar: np.ndarray) -> np.ndarray:
        bar = np.asarray(bar, dtype=np.float64)
        A, H = len(self.symbols), self.history
        if bar.shape not in ((A, 5), (A, 6)):
            raise ConfigError(f"online bar must be [A, 5] OHLCV (or [A, 6] with quote volume) = ({A}, 5), got {bar.shape}")
        f = self.factor
        out = np.full((A, len(f.names)), np.nan)
        has = np.flatnonzero(np.isfinite(bar[:, 3]))
        if has.size == 0:
            return out
        qv = bar[has, 5] if bar.shape[1] == 6 else None
        self._buf[self._count[has] % H, has] = qp.qlib_field_arrays(*(bar[has, j] for j in range(5)), qv)
        self._count[has] += 1
        ready = has[self._count[has] > f.warmup]
        if ready.size == 0:
            return out
        steps = self._count[ready][None, :] - H + np.arange(H)[:, None]  # [H, r] bar numbers, oldest first
        win = self._buf[steps % H, ready[None, :]]  # [H, r, 7]
        win[steps < 0] = np.nan  # fewer than H bars so far: NaN pad before the first bar
        qp.ensure_qlib()
        vals = self._plan.evaluate(win) if self._plan is not None else evaluate_per_asset(f._objs, win)
        res = vals.astype(np.float64)[:, f._col]
        res[~np.isfinite(res)] = np.nan
        out[ready] = res
        return out


_PLANS: "weakref.WeakKeyDictionary[Any, tuple[EvalPlan, list[int]]]" = weakref.WeakKeyDictionary()


def factor_plan(factor) -> tuple[EvalPlan, list[int]]:
    """The factor's :class:`EvalPlan` and the roots that failed :func:`verify_plan` (over the
    factor's ``history`` rows), built and checked once per factor object."""
    got = _PLANS.get(factor)
    if got is None:
        plan = EvalPlan(factor._objs)
        got = _PLANS[factor] = (plan, verify_plan(plan, factor._objs, int(factor.history)))
    return got
