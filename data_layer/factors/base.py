"""The ``Factor`` port: candles of several assets in, a ``[T, A, k]`` block of feature values out.

Contract (every adapter -- TA-Lib, Qlib, custom -- implements it the same way):

* :class:`CandlePanel` holds OHLCV of ``A`` assets aligned on one time grid (float64 ``[T, A]``
  per field). ``NaN`` close means "this asset has no bar here" (not listed yet, missing bar,
  delisted).
* ``Factor.compute(panel)`` returns float64 ``[T, A, len(names)]``. Row ``t`` uses candles at rows
  ``<= t`` only (point in time). **Missing bars**: a factor treats an asset's series as the
  sequence of its *available* bars (rows with a finite close), computes over that compacted
  series and scatters the result back; rows without a bar get ``NaN``. :func:`available_rows`
  and :func:`scatter` do the bookkeeping. This makes the offline path and the online path (which
  simply never sees the missing bar) agree, and a gap never gets filled from the future.
* ``Factor.warmup``: bars of an asset's own history before its first valid output (rows earlier
  than that may be ``NaN``). The tensor builder drops the first ``max(warmup)`` grid rows and marks
  each asset untradable until it has ``max(warmup)`` bars of its own history.
* ``Factor.online(symbols)`` returns an :class:`OnlineFactor`; ``update(timestamp, bar)`` takes the
  newly closed bar (float64 ``[A, 5]`` OHLCV; a NaN row = that asset has no bar, which must leave
  its state untouched and yields NaN) and returns float64 ``[A, k]`` equal (max abs diff <= 1e-9)
  to ``compute(panel)[t]`` over the same history.

Factors are built from config dicts through a registry: ``register_factor("talib")`` decorates a
builder ``(config dict) -> Factor``; :func:`factor_from_config` dispatches on ``config["kind"]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from factorgym.errors import ConfigError

log = logging.getLogger(__name__)

FIELDS = ("open", "high", "low", "close", "volume")


@dataclasses.dataclass(frozen=True)
class CandlePanel:
    """Aligned candles of several assets on one time grid.

    ``timestamps`` int64 ``[T]`` bar open time (UTC ms); ``open .. volume`` float64 ``[T, A]``,
    ``NaN`` where an asset has no bar; ``symbols`` one per asset; ``timeframe`` e.g. ``"1h"``.
    """

    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    symbols: list[str]
    timeframe: str = "1h"
    # per-asset contiguous series, filled on first use by asset_series() (not part of equality)
    _series: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        T = len(self.timestamps)
        A = len(self.symbols)
        for f in FIELDS:
            a = getattr(self, f)
            if a.shape != (T, A):
                raise ConfigError(f"CandlePanel.{f} must be [T, A] = {(T, A)}, got {a.shape}")

    @classmethod
    def from_arrays(cls, timestamps, ohlcv, symbols: list[str], timeframe: str = "1h") -> "CandlePanel":
        """From ``ohlcv`` float ``[T, A, 5]`` (open, high, low, close, volume)."""
        arr = np.asarray(ohlcv, dtype=np.float64)
        if arr.ndim == 2:  # single asset [T, 5]
            arr = arr[:, None, :]
        return cls(
            np.asarray(timestamps, dtype=np.int64),
            *(np.ascontiguousarray(arr[:, :, k]) for k in range(5)),
            symbols=list(symbols),
            timeframe=timeframe,
        )

    @property
    def n_bars(self) -> int:
        return int(len(self.timestamps))

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    def field(self, name: str) -> np.ndarray:
        """One of ``open, high, low, close, volume`` as ``[T, A]``."""
        if name not in FIELDS:
            raise ConfigError(f"unknown candle field {name!r}: use one of {', '.join(FIELDS)}")
        return getattr(self, name)

    def ohlcv(self) -> np.ndarray:
        """Stacked float64 ``[T, A, 5]``."""
        return np.stack([getattr(self, f) for f in FIELDS], axis=-1)

    def slice(self, start: int, stop: int) -> "CandlePanel":
        """Rows ``start:stop`` (views)."""
        return CandlePanel(
            self.timestamps[start:stop], *(getattr(self, f)[start:stop] for f in FIELDS),
            symbols=list(self.symbols), timeframe=self.timeframe,
        )

    def select(self, assets: list[int]) -> "CandlePanel":
        """Columns ``assets`` (copies)."""
        return CandlePanel(
            self.timestamps, *(np.ascontiguousarray(getattr(self, f)[:, assets]) for f in FIELDS),
            symbols=[self.symbols[a] for a in assets], timeframe=self.timeframe,
        )

    def available(self) -> np.ndarray:
        """bool ``[T, A]``: the asset has a bar (finite close) at that row."""
        return np.isfinite(self.close)


@runtime_checkable
class OnlineFactor(Protocol):
    """Stateful per-bar path of one factor over fixed assets."""

    def update(self, timestamp: int, bar: np.ndarray) -> np.ndarray:
        """``bar`` float64 ``[A, 5]`` of the newly closed bar -> float64 ``[A, k]``."""
        ...


@runtime_checkable
class Factor(Protocol):
    """One factor definition producing ``len(names)`` features per asset."""

    names: list[str]
    warmup: int

    def compute(self, panel: CandlePanel) -> np.ndarray:
        """float64 ``[T, A, len(names)]``; row t uses rows <= t only."""
        ...

    def online(self, symbols: list[str]) -> OnlineFactor:
        ...


# ---------------------------------------------------------------------- missing-bar helpers
def available_rows(panel: CandlePanel, asset: int) -> np.ndarray:
    """Row indices (int64, increasing) where ``asset`` has a bar (finite close); cached on the panel."""
    rows = panel._series.get(("rows", asset))
    if rows is None:
        rows = np.flatnonzero(np.isfinite(panel.close[:, asset]))
        rows.flags.writeable = False
        panel._series[("rows", asset)] = rows
    return rows


def asset_series(panel: CandlePanel, asset: int, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Contiguous float64 OHLCV arrays of one asset over its available bars (``rows``).

    Cached on the panel (one copy per asset, shared by every factor); treat them as read-only.
    """
    if rows is None:
        rows = available_rows(panel, asset)
    key = (asset, len(rows))
    cached = panel._series.get(key)
    if cached is not None:
        return cached
    if len(rows) == panel.n_bars:  # common case: no missing bars -> a contiguous copy
        out = {f: np.ascontiguousarray(getattr(panel, f)[:, asset]) for f in FIELDS}
    else:
        out = {f: getattr(panel, f)[rows, asset] for f in FIELDS}
    for v in out.values():
        v.flags.writeable = False
    panel._series[key] = out
    return out


def scatter(out: np.ndarray, asset: int, rows: np.ndarray, values: np.ndarray) -> None:
    """Write compacted per-asset ``values`` ``[n, k]`` (or ``[n]``) back to ``out[rows, asset]``."""
    if values.ndim == 1:
        values = values[:, None]
    if len(rows) == out.shape[0]:
        out[:, asset, :] = values
    else:
        out[rows, asset, :] = values


def compute_per_asset(panel: CandlePanel, k: int, series_fn) -> np.ndarray:
    """float64 ``[T, A, k]``: ``series_fn(asset, series)`` on each asset's contiguous available bars
    (``[n, k]`` back), scattered to the panel's rows; NaN on bars the asset does not have."""
    out = np.full((panel.n_bars, panel.n_assets, k), np.nan)
    for a in range(panel.n_assets):  # per asset: the library runs in C over the whole series
        rows = available_rows(panel, a)
        if len(rows):
            scatter(out, a, rows, series_fn(a, asset_series(panel, a, rows)))
    return out


class WindowRecompute:
    """Generic :class:`OnlineFactor`: keep the last ``window`` bars per asset and recompute.

    Exact for factors whose row ``t`` depends only on the last ``window`` bars of the asset's own
    history (custom factors with a declared warm-up: ``window = warmup + 1``). Each asset's buffer
    advances only when it has a bar, matching the compacted offline series.
    """

    def __init__(self, factor: Factor, symbols: list[str], window: int, timeframe: str = "1h") -> None:
        if window < 1:
            raise ConfigError(f"online window must be >= 1 bar, got {window}")
        self.factor = factor
        self.symbols = list(symbols)
        self.window = int(window)
        self.timeframe = timeframe
        A = len(self.symbols)
        self._buf = np.full((self.window, A, 5), np.nan)  # ring per asset
        self._count = np.zeros(A, dtype=np.int64)
        self._k = len(factor.names)

    def update(self, timestamp: int, bar: np.ndarray) -> np.ndarray:
        bar = np.asarray(bar, dtype=np.float64)
        A = len(self.symbols)
        out = np.full((A, self._k), np.nan)
        has = np.isfinite(bar[:, 3])
        for a in np.flatnonzero(has):
            self._buf[self._count[a] % self.window, a] = bar[a]
            self._count[a] += 1
            n = int(min(self._count[a], self.window))
            idx = (np.arange(self._count[a] - n, self._count[a]) % self.window)
            hist = self._buf[idx, a][:, None, :]  # [n, 1, 5] chronological
            panel = CandlePanel.from_arrays(np.arange(n, dtype=np.int64), hist, [self.symbols[a]], self.timeframe)
            out[a] = self.factor.compute(panel)[-1, 0]
        return out


# ---------------------------------------------------------------------- registry
FactorBuilder = Callable[[dict[str, Any]], Factor]
_REGISTRY: dict[str, FactorBuilder] = {}
# kinds whose builder lives in a module imported on first use (keeps TA-Lib/Qlib imports lazy)
_LAZY_MODULES = {"talib": "talib_factors", "custom": "custom"}


def check_keys(config: dict[str, Any], allowed: set[str], what: str) -> None:
    """Refuse a factor entry with a key its kind does not take (a typo must not be ignored)."""
    from factorgym.config_keys import check_keys as _check

    _check(config, allowed, what)


def register_factor(kind: str) -> Callable[[FactorBuilder], FactorBuilder]:
    """Decorator: register a builder ``(config dict) -> Factor`` under ``kind``.

    ``config`` is the YAML mapping (``{kind: talib, name: RSI, params: {...}}``). Re-registering a
    kind replaces it with a warning (like qlib's ``OpsWrapper.register``).
    """

    def deco(builder: FactorBuilder) -> FactorBuilder:
        if kind in _REGISTRY and _REGISTRY[kind] is not builder:
            log.warning("factor kind %r is registered again; the new builder %r replaces the old one", kind, builder)
        _REGISTRY[kind] = builder
        return builder

    return deco


def registered_kinds() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _load_all() -> None:
    pkg = __name__.rsplit(".", 1)[0]
    for mod in _LAZY_MODULES.values():
        importlib.import_module(f"{pkg}.{mod}")
    _load_qlib_modules()


def _load_qlib_modules() -> None:
    """Import the ``qlib_*`` adapter modules of this package (they register qlib kinds).

    A module that fails on a missing optional dependency is skipped here; the builder is what
    raises :class:`MissingExtraError` when a qlib factor is actually requested.
    """
    pkg = importlib.import_module(__name__.rsplit(".", 1)[0])
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("qlib"):
            try:
                importlib.import_module(f"{pkg.__name__}.{info.name}")
            except ImportError as exc:  # pragma: no cover - depends on the qlib extra
                log.debug("qlib adapter module %s not importable: %s", info.name, exc)


def factor_from_config(config: dict[str, Any]) -> Factor:
    """Build a factor from one YAML entry; ``config["kind"]`` selects the registered builder."""
    if not isinstance(config, dict):
        raise ConfigError(f"a factor entry must be a mapping with a 'kind' key, got {config!r}")
    kind = config.get("kind")
    if not kind:
        raise ConfigError(f"factor entry {config!r} has no 'kind' (use talib, custom, qlib, qlib_set)")
    if kind not in _REGISTRY:
        pkg = __name__.rsplit(".", 1)[0]
        if kind in _LAZY_MODULES:
            importlib.import_module(f"{pkg}.{_LAZY_MODULES[kind]}")
        else:
            _load_qlib_modules()
    if kind not in _REGISTRY and kind.startswith("qlib"):
        from factorgym.errors import MissingExtraError

        raise MissingExtraError("pyqlib", "qlib", f"factor kind {kind!r}")
    if kind not in _REGISTRY:
        known = ", ".join(sorted(set(_REGISTRY) | set(_LAZY_MODULES)))
        raise ConfigError(f"factor kind {kind!r} is not known (entry {config!r}); known kinds: {known}")
    return _REGISTRY[kind](config)
