"""Time splits of a :class:`FactorTensor`: train / validation / test ranges with an embargo, and
walk-forward folds. Splits are views (no copy; memory maps stay maps).

The embargo drops ``embargo`` bars at the start of every split that follows another, so features
or rewards spanning the boundary (rolling windows, multi-bar returns) cannot tie the splits.
A tensor normalised with ``method: train`` records its fit range; a later split that starts before
the end of that range would have been normalised with its own bars, and is refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from factorgym.data_layer.tensor import FactorTensor
from factorgym.data_layer.timeframes import ms_to_iso, to_utc_ms
from factorgym.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Fold:
    """One walk-forward fold: ``train`` then, ``embargo`` bars later, ``test``; bar index ranges too."""

    index: int
    train: FactorTensor
    test: FactorTensor
    train_rows: tuple[int, int]
    test_rows: tuple[int, int]


def as_ms(when: Any) -> int | None:
    """Integers are UTC milliseconds (the tensor's unit); anything else goes through ``to_utc_ms``."""
    if isinstance(when, (int, np.integer)) and not isinstance(when, bool):
        return int(when)
    return to_utc_ms(when)


def _row(tensor: FactorTensor, when: Any, default: int) -> int:
    ms = as_ms(when)
    return default if ms is None else int(np.searchsorted(np.asarray(tensor.timestamps), ms, side="left"))


def _check_fit_range(tensor: FactorTensor, name: str, first_row: int) -> None:
    norm = tensor.meta.get("normalisation") or {}
    if norm.get("method") != "train" or first_row >= tensor.n_bars:
        return
    fit_end = norm.get("fit_end")
    ts = int(tensor.timestamps[first_row])
    if fit_end is not None and ts < int(fit_end):
        raise ConfigError(
            f"the {name} split starts at {ms_to_iso(ts)}, before the end of the normalisation fit range "
            f"({ms_to_iso(int(fit_end))}): its statistics saw {name} bars; rebuild with normalise.fit_end <= {ms_to_iso(ts)}"
        )


def split(
    tensor: FactorTensor,
    train: tuple[Any, Any],
    validation: tuple[Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
    embargo: int = 0,
) -> dict[str, FactorTensor]:
    """Split by time ranges ``(start, end)`` (dates or UTC ms, half-open, None = open end).

    Ranges must be in order and not overlap. Each split after the first loses its first
    ``embargo`` bars (counted from the end of the previous split when they touch).
    """
    if embargo < 0:
        raise ConfigError(f"embargo must be >= 0 bars, got {embargo}")
    parts = [("train", train), ("validation", validation), ("test", test)]
    out: dict[str, FactorTensor] = {}
    prev_end: int | None = None
    for name, rng in parts:
        if rng is None:
            continue
        if not isinstance(rng, (tuple, list)) or len(rng) != 2:
            raise ConfigError(f"{name} range must be (start, end), got {rng!r}")
        lo = _row(tensor, rng[0], 0 if prev_end is None else prev_end)
        hi = _row(tensor, rng[1], tensor.n_bars)
        if prev_end is not None:
            if lo < prev_end:
                raise ConfigError(f"{name} range starts before the previous split ends (row {lo} < {prev_end}); ranges must not overlap")
            lo = max(lo, prev_end + embargo)
            if name != "train":
                _check_fit_range(tensor, name, lo)
        elif name != "train":
            _check_fit_range(tensor, name, lo)
        if hi <= lo:
            raise ConfigError(f"{name} range {rng!r} holds no bars after the embargo ({embargo}) in this tensor")
        out[name] = tensor.slice_bars(lo, hi)
        out[name].meta["split"] = {"name": name, "rows": [lo, hi], "embargo": embargo}
        prev_end = hi
    if "train" not in out:
        raise ConfigError("a train range is required")
    return out


def split_fractions(tensor: FactorTensor, fractions: tuple[float, ...] = (0.7, 0.15, 0.15), embargo: int = 0) -> dict[str, FactorTensor]:
    """Split by bar fractions (train, validation[, test]); see :func:`split`."""
    if not 2 <= len(fractions) <= 3 or any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ConfigError(f"fractions must be 2 or 3 positive numbers summing to <= 1, got {fractions}")
    ts = np.asarray(tensor.timestamps)
    bounds = np.round(np.cumsum((0.0,) + tuple(fractions)) * tensor.n_bars).astype(int)
    edge = [int(ts[b]) if b < len(ts) else None for b in bounds]
    ranges = [(edge[i], edge[i + 1]) for i in range(len(fractions))]
    return split(tensor, *ranges, embargo=embargo)


def walk_forward(
    tensor: FactorTensor,
    n_folds: int,
    test_bars: int,
    train_bars: int | None = None,
    embargo: int = 0,
) -> list[Fold]:
    """Folds whose test windows tile the last ``n_folds * test_bars`` bars in time order.

    Fold ``i`` trains on the bars before its test window minus ``embargo`` -- all of them
    (expanding, ``train_bars=None``) or the last ``train_bars`` (rolling).
    """
    if n_folds < 1 or test_bars < 1 or embargo < 0 or (train_bars is not None and train_bars < 1):
        raise ConfigError(f"walk_forward needs n_folds >= 1, test_bars >= 1, embargo >= 0, train_bars >= 1 or None; "
                          f"got {n_folds}, {test_bars}, {embargo}, {train_bars}")
    T = tensor.n_bars
    first_test = T - n_folds * test_bars
    if first_test - embargo < 1:
        raise ConfigError(f"{n_folds} folds of {test_bars} test bars plus embargo {embargo} need more than the tensor's {T} bars")
    folds = []
    for i in range(n_folds):
        t0 = first_test + i * test_bars
        tr_hi = t0 - embargo
        tr_lo = 0 if train_bars is None else max(0, tr_hi - train_bars)
        _check_fit_range(tensor, f"fold {i} test", t0)
        folds.append(Fold(i, tensor.slice_bars(tr_lo, tr_hi), tensor.slice_bars(t0, t0 + test_bars), (tr_lo, tr_hi), (t0, t0 + test_bars)))
    return folds
