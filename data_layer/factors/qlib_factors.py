"""Qlib adapter: Qlib expressions and Qlib's Alpha158/Alpha360 sets as ``Factor`` objects.

YAML entries (registered kinds ``qlib`` and ``qlib_set``)::

    {kind: qlib, expr: "Corr($close, Log($volume+1), 24)", name: corr_cv_24}
    {kind: qlib, expr: ["Mean($close, 5)/$close", "Std($close, 20)/$close"], name: [ma5, std20]}
    {kind: qlib_set, name: alpha158}          # optional: config: {...} for Alpha158DL.get_feature_config
    {kind: qlib_set, name: alpha360}

* Values come from Qlib's own engine: offline through ``D.features`` over a provider directory
  written from the panel (:mod:`qlib_provider`); online by evaluating the same parsed expression
  objects over a bounded window of each asset's last bars, all assets in one pass
  (:mod:`qlib_online`).
* Fields: ``$open $high $low $close $volume $vwap $factor`` (see :mod:`qlib_provider` for vwap).
* ``warmup`` = the largest left extension Qlib reports (``get_extended_window_size``), plus one
  per ``Delta`` (Qlib under-reports its ``shift(N)`` by a bar). An asset's first ``warmup`` bars
  give NaN (Qlib itself would report partial windows there).
* Refused with a :class:`ConfigError` naming the expression: any forward reach (``Ref($close, -1)``
  -- a look-ahead), expanding windows (``N=0``, ``Ref(x, 0)``: unbounded history), cross-instrument,
  resampling and point-in-time operators, unknown fields, malformed text.
* Qlib computes in float32: online rows equal offline rows after float32 within rtol = atol = 1e-5
  (not the 1e-9 of the float64 factors). ``inf`` becomes NaN.
* Missing bars follow ``base.py``: an asset's series is its available bars; rows without a bar are
  NaN; online, a NaN bar leaves the asset's window untouched.

Needs the ``qlib`` extra; without it, building a factor raises :class:`MissingExtraError`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from factorgym.data_layer.factors import qlib_provider as qp
from factorgym.data_layer.factors.base import CandlePanel, check_keys, register_factor
from factorgym.data_layer.factors.qlib_online import QlibOnlineFactor
from factorgym.errors import ConfigError

MARGIN = 16  # extra bars the online window keeps beyond the declared history
EMA_TOLERANCE = 1e-9  # online window covers an EMA until its weights fall below this
_REFUSED_OPS = {"ChangeInstrument": "reads another instrument", "TResample": "resamples the frequency",
                "P": "is a point-in-time (financial report) operator", "PRef": "is a point-in-time operator"}


# ---------------------------------------------------------------------- parsing and checks
def _namespace() -> dict[str, Any]:
    qp.ensure_qlib()  # registers Qlib's operators
    from qlib.data.base import Feature, PFeature
    from qlib.data.ops import Operators

    return {"Operators": Operators, "Feature": Feature, "PFeature": PFeature}


def parse_expression(text: str) -> tuple[Any, int, int]:
    """Parse one Qlib expression -> ``(expression object, warmup, online history)`` or raise
    :class:`ConfigError` naming it. ``history`` is the window (bars) the online path keeps."""
    from qlib.data.base import Expression
    from qlib.utils import parse_field

    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"Qlib expression must be a non-empty string, got {text!r}")
    try:
        expr = eval(parse_field(text), {"__builtins__": {}}, _namespace())  # noqa: S307 - Qlib's own parser
    except AttributeError as exc:  # "The operator [Foo] is not registered"
        raise ConfigError(f"Qlib expression {text!r}: {exc}; see qlib.data.ops for the operators") from None
    except Exception as exc:  # SyntaxError, TypeError (wrong arguments), ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"Qlib expression {text!r} is malformed ({type(exc).__name__}: {msg})") from None
    if not isinstance(expr, Expression):
        raise ConfigError(f"Qlib expression {text!r} is a constant ({expr!r}), not an expression over candle fields")
    n_delta, ema_extra = _check_tree(expr, text)
    try:
        left, right = expr.get_extended_window_size()
    except Exception as exc:
        raise ConfigError(f"Qlib expression {text!r}: cannot size its window ({exc})") from None
    if right > 0:
        raise ConfigError(
            f"Qlib expression {text!r} reads {right} bar(s) into the future (e.g. Ref(x, -1)): "
            "a look-ahead, refused for features"
        )
    if not math.isfinite(left):
        raise ConfigError(f"Qlib expression {text!r} has an unbounded window; use finite windows")
    warmup = int(left) + n_delta
    return expr, warmup, warmup + ema_extra + MARGIN


def _check_tree(root, text: str) -> tuple[int, int]:
    """Refuse what the point-in-time, bounded-window contract cannot hold; count Delta nodes and
    the extra history EMAs need."""
    from qlib.data import ops
    from qlib.data.base import Expression, Feature, PFeature

    n_delta, ema_extra, stack = 0, 0, [root]
    while stack:
        node = stack.pop()
        name = type(node).__name__
        if name in _REFUSED_OPS or isinstance(node, PFeature):
            raise ConfigError(f"Qlib expression {text!r}: {name} {_REFUSED_OPS.get(name, 'is a point-in-time feature')}; not supported")
        if isinstance(node, Feature):
            if node._name.lower() not in qp.QLIB_FIELDS:
                raise ConfigError(
                    f"Qlib expression {text!r} uses unknown field ${node._name}; "
                    f"available: {', '.join('$' + f for f in qp.QLIB_FIELDS)}"
                )
            continue
        if isinstance(node, (ops.Rolling, ops.PairRolling)):
            n = node.N
            if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, float, np.integer, np.floating)):
                raise ConfigError(f"Qlib expression {text!r}: window {n!r} of {name} must be a number")
            if isinstance(node, ops.Ref) and n < 0:
                raise ConfigError(f"Qlib expression {text!r} reads {-n} bar(s) into the future (Ref(x, {n})): a look-ahead, refused for features")
            if n == 0:
                raise ConfigError(f"Qlib expression {text!r}: {name}(..., 0) is an expanding window (unbounded history); use a finite window")
            if n < 0 or (n != int(n) and not 0 < n < 1):
                raise ConfigError(f"Qlib expression {text!r}: window {n!r} of {name} must be a positive integer (or an EMA alpha in (0, 1))")
            if isinstance(node, ops.EMA) or 0 < n < 1:
                alpha = float(n) if 0 < n < 1 else 2.0 / (float(n) + 1.0)
                ema_extra += int(math.ceil(math.log(EMA_TOLERANCE) / math.log(1.0 - alpha))) if alpha < 1 else 0
            if isinstance(node, ops.Delta):
                n_delta += 1
        for attr in ("feature", "feature_left", "feature_right", "condition"):
            child = getattr(node, attr, None)
            if isinstance(child, Expression):
                stack.append(child)
    return n_delta, ema_extra


# ---------------------------------------------------------------------- the factor
class QlibExpressionFactor:
    """One or more Qlib expressions evaluated by Qlib's engine over each asset's bars.

    ``names`` default to ``"qlib:" + expression without spaces``. ``cache_root``: where provider
    directories go (default :func:`qlib_provider.default_cache_root`).
    """

    def __init__(self, exprs: list[str] | str, names: list[str] | str | None = None,
                 cache_root: str | None = None) -> None:
        qp.require_qlib("Qlib expression factors")
        exprs = [exprs] if isinstance(exprs, str) else list(exprs)
        if not exprs:
            raise ConfigError("a qlib factor needs at least one expression (key 'expr')")
        if names is None:
            names = ["qlib:" + re.sub(r"\s+", "", e) if isinstance(e, str) else repr(e) for e in exprs]
        names = [names] if isinstance(names, str) else [str(n) for n in names]
        if len(names) != len(exprs):
            raise ConfigError(f"{len(names)} names given for {len(exprs)} Qlib expressions; give one name per expression")
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate Qlib factor names: {sorted({n for n in names if names.count(n) > 1})}")
        parsed = [parse_expression(e) for e in exprs]
        self.exprs = exprs
        self.names = names
        self.cache_root = cache_root
        self.warmup = max(p[1] for p in parsed)
        self.history = max(p[2] for p in parsed)
        self._unique = list(dict.fromkeys(exprs))  # Qlib's columns; duplicates computed once
        self._col = np.array([self._unique.index(e) for e in exprs])
        self._objs = [parsed[exprs.index(e)][0] for e in self._unique]
        self._probe()

    def _probe(self) -> None:
        """Evaluate every expression on a few synthetic bars so runtime errors name the expression."""
        inst = qp.memory_instrument_name(f"probe_{id(self)}")
        n = 8
        base = np.linspace(100.0, 101.0, n)
        qp.set_memory_instrument(inst, dict(zip(qp.QLIB_FIELDS, qp.qlib_field_arrays(base, base + 1, base - 1, base, base * 10).T)))
        try:
            for text, obj in zip(self._unique, self._objs):
                qp.clear_feature_cache()
                try:
                    obj.load(inst, 0, n - 1, "day")
                except Exception as exc:
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ConfigError(f"Qlib expression {text!r} fails to evaluate ({type(exc).__name__}: {msg})") from None
        finally:
            qp.drop_memory_instrument(inst)
            qp.clear_feature_cache()

    def __repr__(self) -> str:
        return f"QlibExpressionFactor({len(self.exprs)} expressions, warmup={self.warmup})"

    # ------------------------------------------------------------------ offline
    def compute(self, panel: CandlePanel, quote_volume=None) -> np.ndarray:
        """float64 ``[T, A, len(names)]`` via Qlib's ``D.features`` over a provider directory."""
        prov = qp.write_provider(panel, self.cache_root, quote_volume)
        qp.ensure_qlib(prov.path)
        qp.clear_feature_cache()
        from qlib.data import D

        T, A, k = panel.n_bars, panel.n_assets, len(self.names)
        out = np.full((T, A, k), np.nan)
        insts = prov.live_instruments
        if not insts:
            return out
        df = D.features(insts, self._unique, freq=prov.freq)
        if list(df.columns) != self._unique:
            df = df[self._unique]
        vals = df.to_numpy(dtype=np.float32).astype(np.float64)[:, self._col]
        self._scatter(out, df.index, vals, panel, prov)
        return out

    def _scatter(self, out: np.ndarray, index, vals: np.ndarray, panel: CandlePanel, prov: qp.ProviderDir) -> None:
        """Qlib's (instrument, datetime) rows -> grid rows of ``out``; warm-up and inf -> NaN."""
        to_asset = {inst: a for a, inst in enumerate(prov.instruments)}
        level_assets = np.array([to_asset[i] for i in index.levels[0]], dtype=np.int64)
        asset = level_assets[index.codes[0]]
        times = index.get_level_values(1).values.astype("datetime64[ms]").astype(np.int64)
        cal_idx = np.searchsorted(np.asarray(panel.timestamps, dtype=np.int64), times)
        pos = cal_idx - prov.first_rows[asset]  # position in the asset's own series of bars
        avail = np.isfinite(panel.close)
        offsets = np.concatenate([[0], np.cumsum(prov.n_bars)])
        rows_flat = np.concatenate([np.flatnonzero(avail[:, a]) for a in range(panel.n_assets)])
        if np.any(pos < 0) or np.any(pos >= prov.n_bars[asset]):
            raise RuntimeError("Qlib returned rows outside the written provider range")  # pragma: no cover
        rows = rows_flat[offsets[asset] + pos]
        vals[pos < self.warmup] = np.nan
        vals[~np.isfinite(vals)] = np.nan
        out[rows, asset, :] = vals

    # ------------------------------------------------------------------ online
    def online(self, symbols: list[str], batched: bool = True) -> QlibOnlineFactor:
        """Per-bar rows (:class:`~factorgym.data_layer.factors.qlib_online.QlibOnlineFactor`)."""
        return QlibOnlineFactor(self, symbols, batched=batched)


# ---------------------------------------------------------------------- factor sets
QLIB_SETS = ("alpha158", "alpha360")
ALPHA158_CONFIG = {  # what qlib.contrib.data.handler.Alpha158 passes (= the loader's default)
    "kbar": {},
    "price": {"windows": [0], "feature": ["OPEN", "HIGH", "LOW", "VWAP"]},
    "rolling": {},
}


def qlib_set_fields(name: str, config: dict | None = None) -> tuple[list[str], list[str]]:
    """Expressions and names of Qlib's ``alpha158`` / ``alpha360`` (from Qlib's own loaders)."""
    qp.require_qlib(f"the Qlib factor set {name!r}")
    from qlib.contrib.data.loader import Alpha158DL, Alpha360DL

    key = str(name).lower()
    if key == "alpha158":
        return Alpha158DL.get_feature_config(dict(config) if config else dict(ALPHA158_CONFIG))
    if key == "alpha360":
        if config:
            raise ConfigError("qlib_set alpha360 takes no 'config' (Qlib's Alpha360 has a fixed field list)")
        return Alpha360DL.get_feature_config()
    raise ConfigError(f"unknown Qlib factor set {name!r}: use one of {', '.join(QLIB_SETS)}")


class QlibSetFactor(QlibExpressionFactor):
    """Qlib's Alpha158 or Alpha360 field list; names are ``alpha158.KMID``, ``alpha360.CLOSE59`` ..."""

    def __init__(self, name: str, config: dict | None = None, cache_root: str | None = None) -> None:
        fields, names = qlib_set_fields(name, config)
        self.set_name = str(name).lower()
        super().__init__(list(fields), [f"{self.set_name}.{n}" for n in names], cache_root=cache_root)

    def __repr__(self) -> str:
        return f"QlibSetFactor({self.set_name!r}, {len(self.names)} fields, warmup={self.warmup})"


# ---------------------------------------------------------------------- registry
@register_factor("qlib")
def _build_qlib(config: dict[str, Any]) -> QlibExpressionFactor:
    check_keys(config, {"kind", "expr", "name", "cache_root"}, f"qlib factor {config.get('name') or config.get('expr')!r}")
    if "expr" not in config:
        raise ConfigError(f"qlib factor entry {config!r} needs 'expr' (a Qlib expression or a list of them)")
    return QlibExpressionFactor(config["expr"], config.get("name"), cache_root=config.get("cache_root"))


@register_factor("qlib_set")
def _build_qlib_set(config: dict[str, Any]) -> QlibSetFactor:
    check_keys(config, {"kind", "name", "config", "cache_root"}, f"qlib_set {config.get('name')!r}")
    if "name" not in config:
        raise ConfigError(f"qlib_set entry {config!r} needs 'name' ({', '.join(QLIB_SETS)})")
    return QlibSetFactor(config["name"], config.get("config"), cache_root=config.get("cache_root"))
