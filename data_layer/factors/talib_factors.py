"""TA-Lib adapter: any TA-Lib function by name, offline in C over each asset's series, online
through ``talib.stream`` handles (O(1) per bar, bit-identical to the batch output).

YAML entry::

    {kind: talib, name: MACD, params: {fastperiod: 12}, outputs: [macdhist],
     inputs: {price: open}, scale: close, alias: macd_fast}

* ``name``: TA-Lib function (``talib.get_functions()``), case-insensitive.
* ``params``: the function's parameters; unspecified ones keep TA-Lib's defaults.
* ``outputs``: subset of the function's outputs (default: all; multi-output functions expand to
  ``NAME_params.output``, e.g. ``MACD_12_26_9.macdsignal``).
* ``inputs``: override input mapping (``{price: open}``, ``{prices: [high, low, close]}``) to the
  candle fields open, high, low, close, volume.
* ``scale``: make a price-scaled output scale-free: ``close`` (value / close) or ``rel_close``
  (value / close - 1). The online path applies the same element-wise arithmetic.
* ``alias``: replaces the ``NAME_params`` prefix of the output names.
* ``cross_sectional`` / ``normalise``: handled by the factor set for every kind (``factor_set.py``).
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import numpy as np

from factorgym.data_layer.factors.base import (
    FIELDS,
    CandlePanel,
    check_keys,
    compute_per_asset,
    register_factor,
)
from factorgym.errors import ConfigError, MissingExtraError

SCALES = ("none", "close", "rel_close")
_ALLOWED_KEYS = {"kind", "name", "params", "outputs", "inputs", "scale", "alias"}


def _talib():
    try:
        import talib
        from talib import abstract, stream
    except ImportError as exc:  # pragma: no cover - ta-lib is a core dependency
        raise MissingExtraError("ta-lib", "all", "TA-Lib factors") from exc
    return talib, abstract, stream


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class TalibFactor:
    """One TA-Lib function with fixed parameters; see the module docstring for the options."""

    def __init__(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        inputs: dict[str, Any] | None = None,
        scale: str = "none",
        alias: str | None = None,
    ) -> None:
        talib, abstract, _ = _talib()
        fname = str(name).upper()
        known = talib.get_functions()
        if fname not in known:
            near = difflib.get_close_matches(fname, known, n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; see talib.get_functions()"
            raise ConfigError(f"unknown TA-Lib function {name!r}{hint}")
        fn = abstract.Function(fname)
        defaults = dict(fn.info["parameters"])
        params = dict(params or {})
        bad = sorted(set(params) - set(defaults))
        if bad:
            raise ConfigError(f"TA-Lib {fname} has no parameter {bad[0]!r}; its parameters are {list(defaults) or 'none'}")
        for k, v in params.items():  # keep TA-Lib's types: int periods stay int
            if isinstance(defaults[k], int) and not isinstance(defaults[k], bool):
                if not float(v).is_integer():
                    raise ConfigError(f"TA-Lib {fname} parameter {k!r} must be an integer, got {v!r}")
                params[k] = int(v)
            else:
                params[k] = float(v)
        try:
            fn.set_parameters(**params)
            lookback = int(fn.lookback)
        except Exception as exc:  # TA-Lib rejects out-of-range parameters here
            raise ConfigError(f"TA-Lib {fname} rejects parameters {params}: {exc}") from exc
        self.func_name = fname
        self.params = {**defaults, **params}
        self.input_fields = self._resolve_inputs(fname, dict(fn.info["input_names"]), inputs or {})
        all_outputs = list(fn.info["output_names"])
        outputs = list(outputs) if outputs else all_outputs
        for o in outputs:
            if o not in all_outputs:
                raise ConfigError(f"TA-Lib {fname} has no output {o!r}; its outputs are {all_outputs}")
        self.output_index = [all_outputs.index(o) for o in outputs]
        self._every_output = self.output_index == list(range(len(all_outputs)))  # (no selection to make)
        self.multi = len(all_outputs) > 1
        if scale not in SCALES:
            raise ConfigError(f"TA-Lib {fname}: scale {scale!r} is not one of {SCALES}")
        self.scale = scale
        prefix = alias or "_".join([fname, *(_fmt(v) for v in self.params.values())])
        suffix = {"none": "", "close": "/close", "rel_close": "/close-1"}[scale]
        self.names = [(f"{prefix}.{o}" if self.multi else prefix) + suffix for o in outputs]
        self.warmup = lookback
        self._batch = getattr(talib, fname)

    @staticmethod
    def _resolve_inputs(fname: str, spec: dict[str, Any], override: dict[str, Any]) -> list[str]:
        """Flatten TA-Lib's input mapping (e.g. ``{prices: [high, low, close]}``) into candle fields."""
        bad = sorted(set(override) - set(spec))
        if bad:
            raise ConfigError(f"TA-Lib {fname} has no input {bad[0]!r}; its inputs are {dict(spec)}")
        spec = {**spec, **override}
        fields: list[str] = []
        for key, val in spec.items():
            vals = val if isinstance(val, (list, tuple)) else [val]
            for v in vals:
                if v not in FIELDS:
                    raise ConfigError(
                        f"TA-Lib {fname} input {key!r} maps to {v!r}, which is not a candle field; "
                        f"set inputs: {{{key}: <one of {', '.join(FIELDS)}>}}"
                    )
                fields.append(v)
        return fields

    # ------------------------------------------------------------------ offline
    def _post(self, values: np.ndarray, close: np.ndarray) -> np.ndarray:
        """Select outputs and apply ``scale``: ``values`` [n, k_all] -> [n, k]."""
        out = values if self._every_output else values[:, self.output_index]
        if self.scale == "close":
            out = out / close[:, None]
        elif self.scale == "rel_close":
            out = out / close[:, None] - 1.0
        return out

    def compute_series(self, series: dict[str, np.ndarray]) -> np.ndarray:
        """All outputs for one asset's contiguous series -> float64 ``[n, k]``."""
        args = [series[f] for f in self.input_fields]
        res = self._batch(*args, **self.params)
        res = np.column_stack(res) if isinstance(res, (tuple, list)) else np.asarray(res)[:, None]
        res = res.astype(np.float64)  # integer outputs (CDL*, *INDEX) report 0 in the warm-up:
        res[: self.warmup] = np.nan  # mark those rows as not valid, as the float ones are
        return self._post(res, series["close"])

    def compute(self, panel: CandlePanel) -> np.ndarray:
        def one(a: int, series: dict[str, np.ndarray]) -> np.ndarray:
            try:
                return self.compute_series(series)
            except Exception as exc:
                raise ConfigError(f"TA-Lib {self.func_name} failed on {panel.symbols[a]}: {exc}") from exc

        return compute_per_asset(panel, len(self.names), one)

    def online(self, symbols: list[str]) -> "TalibOnline":
        return TalibOnline(self, symbols)

    def __repr__(self) -> str:
        return f"TalibFactor({self.names}, warmup={self.warmup})"


class TalibOnline:
    """``talib.stream`` handle per asset; bars are buffered until the handle can open."""

    def __init__(self, factor: TalibFactor, symbols: list[str]) -> None:
        _, _, stream = _talib()
        self.factor = factor
        self.symbols = list(symbols)
        self._open = getattr(stream, factor.func_name)
        self._handles: list[Any] = [None] * len(self.symbols)
        self._history: list[list[np.ndarray]] = [[] for _ in self.symbols]
        self._fields = [FIELDS.index(f) for f in factor.input_fields]
        self._k = len(factor.names)

    def update(self, timestamp: int, bar: np.ndarray) -> np.ndarray:
        bar = np.asarray(bar, dtype=np.float64)
        got: list[int] = []
        vals: list[tuple] = []
        fields = bar[:, self._fields].tolist()
        for a, close in enumerate(bar[:, 3].tolist()):
            if not math.isfinite(close):
                continue  # (no bar for this asset)
            inputs = fields[a]
            h = self._handles[a]
            if h is not None:
                value = h.update(*inputs)
            else:
                self._history[a].append(inputs)
                hist = np.asarray(self._history[a])
                try:
                    h = self._open(*(np.ascontiguousarray(hist[:, j]) for j in range(hist.shape[1])),
                                   **self.factor.params)
                except Exception as exc:  # not enough history yet ("not yet", per talib.stream's docs)
                    if type(exc).__name__ != "InsufficientHistory":
                        raise
                    continue
                self._handles[a] = h
                self._history[a] = []
                value = h.value
            got.append(a)
            vals.append(value if isinstance(value, tuple) else (value,))
        # outputs and scale of every asset's value at once (the offline path's _post)
        if len(got) == len(self.symbols):
            return self.factor._post(np.array(vals, dtype=np.float64), bar[:, 3])
        out = np.full((len(self.symbols), self._k), np.nan)
        if got:
            out[got] = self.factor._post(np.asarray(vals, dtype=np.float64), bar[got, 3])
        return out


@register_factor("talib")
def _build(config: dict[str, Any]) -> TalibFactor:
    check_keys(config, _ALLOWED_KEYS, f"talib factor {config.get('name')!r}")
    if not config.get("name"):
        raise ConfigError(f"talib factor entry {config!r} needs 'name' (a TA-Lib function such as RSI)")
    return TalibFactor(
        config["name"], config.get("params"), config.get("outputs"), config.get("inputs"),
        config.get("scale", "none") or "none", config.get("alias"),
    )
