"""Custom factors: plain numpy functions over one asset's candles, with a declared warm-up.

A custom function takes one asset's contiguous float64 series (its available bars, oldest first)
and returns ``[n]`` or ``[n, k]``::

    @custom_factor("log_return", warmup=lambda p: p.get("periods", 1))
    def log_return(open, high, low, close, volume, periods=1):
        ...

Row ``i`` of the result must depend on rows ``i - warmup .. i`` only: the online path recomputes
over the last ``warmup + 1`` bars, and :meth:`CustomFactor.compute` checks this once on the first
asset (a function that reads the future or further back than declared is refused). A function
registered with ``online=`` (the built-ins: ``custom_online.py``) keeps incremental state instead:
O(1) a bar, and bit-identical to the offline rows (a recompute may differ from TA-Lib's running
sums in the last bits).

YAML: ``{kind: custom, name: log_return, params: {periods: 24}}`` for a registered function, or
``{kind: custom, func: "my_pkg.my_mod:my_factor", warmup: 20, outputs: [a, b]}`` for any importable
one (``warmup`` is required there unless the function was decorated).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from factorgym.data_layer.factors.base import (
    FIELDS,
    CandlePanel,
    check_keys,
    compute_per_asset,
    register_factor,
)
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomSpec:
    """A registered custom function: ``warmup`` is an int or ``params -> int``."""

    name: str
    func: Callable[..., np.ndarray]
    warmup: int | Callable[[dict[str, Any]], int]
    outputs: tuple[str, ...] | None = None
    #: incremental online state, ``online(n_assets, **params)`` (``custom_online.py``); None: the online
    #: path recomputes the function over each asset's last ``warmup + 1`` bars
    online: Callable[..., Any] | None = None


_CUSTOM: dict[str, CustomSpec] = {}
_ALLOWED_KEYS = {"kind", "name", "func", "warmup", "params", "outputs", "alias"}


def custom_factor(name: str | None = None, *, warmup: int | Callable[[dict[str, Any]], int],
                  outputs: list[str] | None = None, online: Callable[..., Any] | None = None):
    """Decorator registering ``func`` as a custom factor (``warmup`` in bars, maybe from params;
    ``online``: its incremental state class, see ``custom_online.py``)."""

    def deco(func):
        key = name or func.__name__
        if key in _CUSTOM and _CUSTOM[key].func is not func:
            log.warning("custom factor %r is registered again; %r replaces it", key, func)
        _CUSTOM[key] = CustomSpec(key, func, warmup, tuple(outputs) if outputs else None, online)
        func.factorgym_spec = _CUSTOM[key]
        return func

    return deco


def registered_custom() -> list[str]:
    return sorted(_CUSTOM)


def _fmt(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


class CustomFactor:
    """A custom function bound to parameters; implements the ``Factor`` protocol."""

    def __init__(self, spec: CustomSpec, params: dict[str, Any] | None = None,
                 outputs: list[str] | None = None, alias: str | None = None) -> None:
        self.spec = spec
        self.params = dict(params or {})
        _check_params(spec, self.params)
        w = spec.warmup(self.params) if callable(spec.warmup) else spec.warmup
        if not isinstance(w, (int, np.integer)) or isinstance(w, bool) or w < 0:
            raise ConfigError(f"custom factor {spec.name!r}: warmup must be a whole number of bars >= 0, got {w!r}")
        self.warmup = int(w)
        outs = list(outputs or spec.outputs or [])
        prefix = alias or "_".join([spec.name, *(_fmt(v) for v in self.params.values())])
        self.names = [f"{prefix}.{o}" for o in outs] if outs else [prefix]
        self._checked = False

    def compute_series(self, s: dict[str, np.ndarray]) -> np.ndarray:
        """Run the function on one asset's series -> float64 ``[n, k]`` (validated shape)."""
        n = len(s["close"])
        try:
            res = self.spec.func(*(s[f] for f in FIELDS), **self.params)
        except ConfigError:  # (the function's own one-line message about its params)
            raise
        except Exception as exc:
            raise ConfigError(f"custom factor {self.spec.name!r} failed with params {self.params}: {exc!r}") from exc
        res = np.asarray(res, dtype=np.float64)
        if not res.flags.writeable:  # e.g. pandas' read-only views under copy-on-write
            res = res.copy()
        if res.ndim == 1:
            res = res[:, None]
        if res.shape != (n, len(self.names)):
            raise ConfigError(
                f"custom factor {self.spec.name!r} returned shape {res.shape}; expected {(n, len(self.names))} "
                f"(one row per input bar, one column per output {self.names})"
            )
        return res

    def _self_check(self, s: dict[str, np.ndarray], full: np.ndarray) -> None:
        """Refuse a function that looks ahead or reaches further back than its declared warm-up."""
        n = len(s["close"])
        w = self.warmup + 1
        for r in sorted({min(n - 1, w - 1 + k) for k in (0, 3, 2 * w + 5)}):
            if r < 0:
                continue
            prefix = self.compute_series({f: v[: r + 1] for f, v in s.items()})
            if not _close(prefix[: r + 1], full[: r + 1]):
                raise ConfigError(
                    f"custom factor {self.spec.name!r} looks ahead: its rows <= {r} change when later bars "
                    f"are removed; a feature at bar t may use bars <= t only"
                )
            lo = max(0, r - self.warmup)
            window = self.compute_series({f: v[lo : r + 1] for f, v in s.items()})
            if not _close(window[-1:], full[r : r + 1]):
                raise ConfigError(
                    f"custom factor {self.spec.name!r}: row {r} needs more than the declared warmup="
                    f"{self.warmup} bars of history; declare a larger warmup"
                )
        self._checked = True

    def compute(self, panel: CandlePanel) -> np.ndarray:
        def one(a: int, s: dict[str, np.ndarray]) -> np.ndarray:
            vals = self.compute_series(s)
            vals[: self.warmup] = np.nan  # inside the declared warm-up: not valid by contract
            if not self._checked:
                self._self_check(s, vals)
            return vals

        return compute_per_asset(panel, len(self.names), one)

    def online(self, symbols: list[str]) -> "CustomOnline | CustomIncremental":
        if self.spec.online is not None:
            return CustomIncremental(self, symbols)
        return CustomOnline(self, symbols)

    def __repr__(self) -> str:
        return f"CustomFactor({self.names}, warmup={self.warmup})"


def _check_params(spec: CustomSpec, params: dict[str, Any]) -> None:
    """A parameter the function does not take is a config error (a typo must not be ignored)."""
    try:
        sig = inspect.signature(spec.func)
    except (TypeError, ValueError):  # builtins without a signature: the call itself will tell
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    taken = [n for n, p in sig.parameters.items() if n not in FIELDS
             and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    check_keys(params, taken, f"custom factor {spec.name!r} params")


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    # rows inside the warm-up are masked to NaN offline and may hold anything in a raw recompute
    fa, fb = np.isfinite(a), np.isfinite(b)
    both = fa & fb
    return bool(np.allclose(a[both], b[both], rtol=1e-9, atol=1e-12)) and bool(np.all(fa[..., :] | ~fb))


class CustomOnline:
    """Recompute over the last ``warmup + 1`` bars of each asset (buffer of 2x, shifted when full)."""

    def __init__(self, factor: CustomFactor, symbols: list[str]) -> None:
        self.factor = factor
        self.window = factor.warmup + 1
        A = len(symbols)
        self._buf = np.empty((A, 5, 2 * self.window))
        self._end = np.zeros(A, dtype=np.int64)  # write position per asset
        self._seen = np.zeros(A, dtype=np.int64)  # bars seen per asset
        self._k = len(factor.names)

    def update(self, timestamp: int, bar: np.ndarray) -> np.ndarray:
        bar = np.asarray(bar, dtype=np.float64)
        out = np.full((bar.shape[0], self._k), np.nan)
        w = self.window
        for a in np.flatnonzero(np.isfinite(bar[:, 3])):
            e = self._end[a]
            if e == 2 * w:  # keep the last w-1 bars, contiguous, at the front
                self._buf[a, :, : w - 1] = self._buf[a, :, e - w + 1 : e]
                e = w - 1
            self._buf[a, :, e] = bar[a]
            e += 1
            self._end[a] = e
            self._seen[a] += 1
            if self._seen[a] <= self.factor.warmup:
                continue
            lo = max(0, e - w)
            res = self.factor.compute_series({f: self._buf[a, j, lo:e] for j, f in enumerate(FIELDS)})
            out[a] = res[-1]
        return out


class CustomIncremental:
    """The spec's incremental state (``custom_online.py``), rows inside the declared warm-up masked."""

    def __init__(self, factor: CustomFactor, symbols: list[str]) -> None:
        self.factor = factor
        self._state = factor.spec.online(len(symbols), **factor.params)
        self._seen = np.zeros(len(symbols), dtype=np.int64)
        self._warming = True

    def update(self, timestamp: int, bar: np.ndarray) -> np.ndarray:
        bar = np.asarray(bar, dtype=np.float64)
        has = np.isfinite(bar[:, 3])
        out = self._state.update(bar, has)
        if self._warming:  # (until every asset is past the declared warm-up)
            self._seen += has
            warm = self._seen <= self.factor.warmup
            out[warm] = np.nan
            self._warming = bool(warm.any())
        return out


# ---------------------------------------------------------------------- built-in, scale-free
# Rolling sums, means and extremes go through TA-Lib's C routines (O(n), not O(n * window)).


from factorgym.data_layer.factors import custom_online as _inc  # noqa: E402 - (pure numpy: no cycle)


def _talib():
    import talib

    return talib


@custom_factor("log_return", warmup=lambda p: int(p.get("periods", 1)), online=_inc.LogReturnOnline)
def log_return(open, high, low, close, volume, periods=1):
    """log(close_t / close_{t-periods})."""
    out = np.full(len(close), np.nan)
    out[periods:] = np.log(close[periods:] / close[:-periods])
    return out


@custom_factor("realized_vol", warmup=lambda p: int(p.get("window", 24)), online=_inc.RealizedVolOnline)
def realized_vol(open, high, low, close, volume, window=24):
    """Standard deviation (population) of the last ``window`` one-bar log returns, per bar."""
    r = np.concatenate([[np.nan], np.diff(np.log(close))])
    return _talib().STDDEV(r, timeperiod=window, nbdev=1.0)


@custom_factor("volume_zscore", warmup=lambda p: int(p.get("window", 24)) - 1, online=_inc.VolumeZscoreOnline)
def volume_zscore(open, high, low, close, volume, window=24):
    """z-score of log(1 + volume) against its last ``window`` bars (0 where they are all equal)."""
    ta = _talib()
    lv = np.log1p(volume)
    mean = ta.SMA(lv, timeperiod=window)
    sd = ta.STDDEV(lv, timeperiod=window, nbdev=1.0)
    return np.where(sd > 1e-9, (lv - mean) / np.where(sd > 1e-9, sd, 1.0), 0.0)


def _check_nbdev(nbdev: Any) -> None:
    """Band widths in standard deviations must be > 0 (TA-Lib takes a negative one and swaps the bands:
    every %b would read 0.5)."""
    if isinstance(nbdev, bool) or not isinstance(nbdev, (int, float, np.integer, np.floating)) or not nbdev > 0:
        raise ConfigError(f"bb_pctb: nbdev={nbdev!r}; expected a number of standard deviations > 0")


@custom_factor("bb_pctb", warmup=lambda p: int(p.get("timeperiod", 20)) - 1, online=_inc.BBPctbOnline)
def bb_pctb(open, high, low, close, volume, timeperiod=20, nbdev=2.0):
    """Bollinger %b: (close - lower) / (upper - lower), 0.5 when the bands collapse."""
    _check_nbdev(nbdev)
    up, _, lo = _talib().BBANDS(close, timeperiod=timeperiod, nbdevup=nbdev, nbdevdn=nbdev, matype=0)
    width = up - lo
    return np.where(width > 0, (close - lo) / np.where(width > 0, width, 1.0), 0.5)


@custom_factor("obv_flow", warmup=lambda p: int(p.get("window", 24)), online=_inc.ObvFlowOnline)
def obv_flow(open, high, low, close, volume, window=24):
    """OBV change over ``window`` bars / volume over them: signed volume share in [-1, 1]."""
    ta = _talib()
    sign = np.concatenate([[np.nan], np.sign(np.diff(close))])
    win_sv = ta.SUM(sign * volume, timeperiod=window)
    win_v = ta.SUM(np.concatenate([[np.nan], volume[1:]]), timeperiod=window)
    # bars with volume in the window: a running sum of 0/1 is exact, while SUM(volume) keeps a ~1e-13
    # residue once the volume has left a window of zero-volume bars (0.0 there, not residue / residue)
    traded = ta.SUM(np.concatenate([[np.nan], (volume[1:] > 0).astype(np.float64)]), timeperiod=window)
    return np.where((traded > 0) & (win_v > 0), win_sv / np.where(win_v > 0, win_v, 1.0), 0.0)


@custom_factor("candle_shape", warmup=0, outputs=["range", "body", "upper_shadow", "lower_shadow"], online=_inc.CandleShapeOnline)
def candle_shape(open, high, low, close, volume):
    """(high-low)/close, (close-open)/close, upper and lower shadows / close."""
    return np.column_stack([
        (high - low) / close,
        (close - open) / close,
        (high - np.maximum(open, close)) / close,
        (np.minimum(open, close) - low) / close,
    ])


@custom_factor("price_position", warmup=lambda p: int(p.get("window", 24)) - 1, online=_inc.PricePositionOnline)
def price_position(open, high, low, close, volume, window=24):
    """Where the close sits in the last ``window`` bars' high-low range, in [0, 1] (0.5 if flat)."""
    ta = _talib()
    hi = ta.MAX(high, timeperiod=window)
    lo = ta.MIN(low, timeperiod=window)
    rng = hi - lo
    return np.where(rng > 0, (close - lo) / np.where(rng > 0, rng, 1.0), 0.5)


def _import_func(ref: str) -> Callable[..., np.ndarray]:
    mod, sep, attr = str(ref).partition(":")
    if not sep or not mod or not attr:
        raise ConfigError(f"custom factor func {ref!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(mod)
    except ImportError as exc:
        raise ConfigError(f"custom factor func {ref!r}: cannot import module {mod!r} ({exc})") from exc
    func = module
    for part in attr.split("."):
        func = getattr(func, part, None)
        if func is None:
            raise ConfigError(f"custom factor func {ref!r}: module {mod!r} has no attribute {attr!r}")
    if not callable(func):
        raise ConfigError(f"custom factor func {ref!r} is not callable")
    return func


def _config_warmup(value: Any) -> Any:
    """A config's ``warmup`` as given (``CustomFactor`` refuses anything but a whole number of bars
    >= 0 in one line); a whole float (``3.0``) is that number. Never truncated: 2.5 is not 2."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@register_factor("custom")
def _build(config: dict[str, Any]) -> CustomFactor:
    check_keys(config, _ALLOWED_KEYS, f"custom factor {config.get('name') or config.get('func')!r}")
    if config.get("func"):
        func = _import_func(config["func"])
        spec = getattr(func, "factorgym_spec", None)
        if "warmup" in config:
            spec = CustomSpec(config.get("name") or func.__name__, func, _config_warmup(config["warmup"]),
                              spec.outputs if spec else None, spec.online if spec else None)
        elif spec is None:
            raise ConfigError(f"custom factor func {config['func']!r} needs 'warmup' (bars of history it reads)")
    else:
        name = config.get("name")
        if name not in _CUSTOM:
            raise ConfigError(
                f"custom factor {name!r} is not registered; registered: {registered_custom()}; "
                f"or give func: 'module:function' and warmup"
            )
        spec = _CUSTOM[name]
        if "warmup" in config:
            spec = CustomSpec(spec.name, spec.func, _config_warmup(config["warmup"]), spec.outputs, spec.online)
    return CustomFactor(spec, config.get("params"), config.get("outputs"), config.get("alias"))
