"""Incremental online state of the built-in custom factors: O(1) per asset and bar, and bit-identical
to the offline function over the asset's whole series.

The offline functions run TA-Lib's rolling routines (SMA, SUM, STDDEV, BBANDS, MAX, MIN) over each
asset's series from its first bar. Those carry state along the series (TA-Lib 0.8's variance keeps
shifted running sums and re-centres them every ``32 x period`` bars or on cancellation), so a value's
last bits depend on bars far older than the window: a recompute over the last ``warmup + 1`` bars
differs in them. Here each asset keeps TA-Lib's own ``talib.stream`` handle of the routine, opened
on the series' first values and updated bar by bar (the same state as the batch routine: tested),
and the element-wise arithmetic around it repeats the function's, operation for operation, with
numpy's logarithms (``math.log`` may differ from ``np.log`` in the last bit). Leading NaN inputs are
skipped, as TA-Lib's Python wrapper skips them. Exact for finite inputs: a non-finite one later
(a NaN volume, a close <= 0) makes that routine NaN from then on (the batch routines' running sums
are poisoned too, though TA-Lib's variance may recover at a re-centring: rows can differ there).

Each class: ``Cls(n_assets, **params)``; ``update(bar [A, 5], has bool [A]) -> float64 [A, k]`` (rows
of assets without a bar are NaN and leave their state alone). :class:`~.custom.CustomIncremental`
masks the declared warm-up, as the offline path does.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import numpy as np

NAN = float("nan")
log = logging.getLogger(__name__)


class Rolling:
    """One series through a TA-Lib stream handle: ``add(x)`` -> the routine's output at this value
    (a float, or a tuple for several outputs), ``None`` inside its lookback."""

    __slots__ = ("name", "params", "period", "handle", "history", "poisoned")

    def __init__(self, name: str, period: int, **params: Any) -> None:
        self.name, self.period, self.params = name, int(period), {"timeperiod": int(period), **params}
        self.handle = None
        self.history: list[float] = []
        self.poisoned = False

    def add(self, x: float):
        if self.handle is not None:
            if math.isfinite(x) and not self.poisoned:
                return self.handle.update(x)
            if not self.poisoned:  # (TA-Lib's stream handles refuse a NaN)
                log.warning("online %s: a non-finite input (%r) after the series started; NaN from now on "
                            "(the batch routine's running state is poisoned too)", self.name, x)
                self.poisoned = True
            return NAN
        if not self.history and x != x:  # a leading NaN: the batch routine starts after it
            return None
        self.history.append(x)
        if len(self.history) < self.period:  # (every routine used here has a lookback of period - 1)
            return None
        from talib import stream

        self.handle = getattr(stream, self.name)(np.array(self.history), **self.params)
        self.history = []
        return self.handle.value


class _PerAsset:
    """Base: one state object per asset (``_new()``), ``_one(state, o, h, l, c, v) -> tuple`` per bar."""

    k = 1

    def __init__(self, n_assets: int, **params) -> None:
        self.params = params
        self.states = [self._new() for _ in range(n_assets)]

    def _new(self):
        raise NotImplementedError

    def update(self, bar: np.ndarray, has: np.ndarray) -> np.ndarray:
        missing = (NAN,) * self.k
        rows = [self._one(state, *row) if ok else missing
                for ok, row, state in zip(has.tolist(), bar.tolist(), self.states)]
        return np.array(rows, dtype=np.float64).reshape(len(self.states), self.k)


class LogReturnOnline:
    """``log(close_t / close_{t - periods})``, every asset at once (the factor of most sets: no
    Python loop over the assets)."""

    k = 1

    def __init__(self, n_assets: int, periods: int = 1) -> None:
        self.periods = int(periods)
        # each asset's last `periods` closes, oldest first (NaN until it has them: the ratio is NaN)
        self._closes = np.full((n_assets, self.periods), np.nan)

    def update(self, bar: np.ndarray, has: np.ndarray) -> np.ndarray:
        c, closes = bar[:, 3], self._closes
        if has.all():
            out = np.log(c / closes[:, 0])
            if self.periods > 1:
                closes[:, :-1] = closes[:, 1:]
            closes[:, -1] = c
        else:  # (assets without a bar: NaN, their closes left alone)
            out = np.full(len(c), NAN)
            out[has] = np.log(c[has] / closes[has, 0])
            if self.periods > 1:
                closes[has, :-1] = closes[has, 1:]
            closes[has, -1] = c[has]
        return out.reshape(-1, 1)


class RealizedVolOnline(_PerAsset):
    """Population standard deviation of the last ``window`` one-bar log returns (``STDDEV``)."""

    def __init__(self, n_assets: int, window: int = 24) -> None:
        self.window = int(window)
        super().__init__(n_assets)

    def _new(self):
        return {"log": None, "sd": Rolling("STDDEV", self.window, nbdev=1.0)}

    def _one(self, s, o, h, l, c, v):  # noqa: E741
        lc = float(np.log(c))
        r = NAN if s["log"] is None else lc - s["log"]
        s["log"] = lc
        sd = s["sd"].add(r)
        return (NAN if sd is None else sd,)


class VolumeZscoreOnline(_PerAsset):
    """z-score of ``log1p(volume)`` against its last ``window`` values (0 where they are all equal)."""

    def __init__(self, n_assets: int, window: int = 24) -> None:
        self.window = int(window)
        super().__init__(n_assets)

    def _new(self):
        return (Rolling("SMA", self.window), Rolling("STDDEV", self.window, nbdev=1.0))

    def _one(self, s, o, h, l, c, v):  # noqa: E741
        lv = float(np.log1p(v))
        mean, sd = s[0].add(lv), s[1].add(lv)
        if sd is None or not sd > 1e-9:  # (inside the lookback the offline where() gives 0 too)
            return (0.0,)
        return ((lv - mean) / sd,)


class BBPctbOnline(_PerAsset):
    """Bollinger %b over TA-Lib's ``BBANDS`` (SMA middle band)."""

    def __init__(self, n_assets: int, timeperiod: int = 20, nbdev: float = 2.0) -> None:
        from factorgym.data_layer.factors.custom import _check_nbdev

        _check_nbdev(nbdev)
        self.timeperiod, self.nbdev = int(timeperiod), float(nbdev)
        super().__init__(n_assets)

    def _new(self):
        return Rolling("BBANDS", self.timeperiod, nbdevup=self.nbdev, nbdevdn=self.nbdev, matype=0)

    def _one(self, s, o, h, l, c, v):  # noqa: E741
        bands = s.add(c)
        if bands is None:
            return (0.5,)
        up, _, lo = bands
        width = up - lo
        return ((c - lo) / width if width > 0 else 0.5,)


class ObvFlowOnline(_PerAsset):
    """Signed volume over ``window`` bars / volume over them (two ``SUM`` routines)."""

    def __init__(self, n_assets: int, window: int = 24) -> None:
        self.window = int(window)
        super().__init__(n_assets)

    def _new(self):
        return {"close": None, "sv": Rolling("SUM", self.window), "v": Rolling("SUM", self.window),
                "traded": Rolling("SUM", self.window)}

    def _one(self, s, o, h, l, c, v):  # noqa: E741
        prev, s["close"] = s["close"], c
        if prev is None:  # the first bar: NaN sign and volume, skipped as leading NaNs
            return (0.0,)
        d = c - prev
        sign = NAN if d != d else (1.0 if d > 0 else -1.0 if d < 0 else 0.0)
        sv, tv, traded = s["sv"].add(sign * v), s["v"].add(v), s["traded"].add(1.0 if v > 0 else 0.0)
        if tv is None or not (traded > 0 and tv > 0):
            return (0.0,)
        return (sv / tv,)


class CandleShapeOnline(_PerAsset):
    """Range, body, upper and lower shadows over the close (no state)."""

    k = 4

    def _new(self):
        return None

    def _one(self, s, o, h, l, c, v):  # noqa: E741
        return ((h - l) / c, (c - o) / c, (h - max(o, c)) / c, (min(o, c) - l) / c)


class PricePositionOnline(_PerAsset):
    """Where the close sits in the last ``window`` bars' high-low range (0.5 when flat)."""

    def __init__(self, n_assets: int, window: int = 24) -> None:
        self.window = int(window)
        super().__init__(n_assets)

    def _new(self):
        return (deque(maxlen=self.window), deque(maxlen=self.window))

    def _one(self, s, o, h, l, c, v):  # noqa: E741
        s[0].append(h)  # (a window's maximum and minimum are exact: no routine state to follow)
        s[1].append(l)
        if len(s[0]) < self.window:
            return (0.5,)
        lo = min(s[1])
        rng = max(s[0]) - lo
        return ((c - lo) / rng if rng > 0 else 0.5,)
