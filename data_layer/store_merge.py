"""Merging new candles into a stored series: one row per timestamp, and no silent change of a
stored bar (see :func:`resolve_conflicts`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.timeframes import ms_to_iso
from factorgym.errors import ConfigError, DataValidationError


def _with_tradable(table: pa.Table) -> pa.Table:
    if "tradable" in table.column_names:
        return table
    return table.append_column(pa.field("tradable", pa.bool_()), pa.array(np.ones(table.num_rows, dtype=bool)))


CONFLICT_POLICIES = ("error", "replace", "keep")
_VALUE_COLUMNS = CANDLE_COLUMNS[1:]


@dataclasses.dataclass(frozen=True)
class WriteReport:
    """What one :meth:`CandleStore.merge` did: ``added`` new timestamps; overlapping bars whose values
    differed: ``replaced`` (new values won), ``kept`` (stored values stayed), ``filled`` (a stored gap
    placeholder got a real bar)."""

    added: int
    replaced: int = 0
    kept: int = 0
    filled: int = 0

    def summary(self) -> str:
        parts = [f"{self.added} new bar(s)"]
        parts += [f"{n} {what}" for n, what in ((self.replaced, "conflicting bar(s) replaced"),
                                                (self.kept, "conflicting bar(s) kept as stored"),
                                                (self.filled, "gap bar(s) filled")) if n]
        return ", ".join(parts)


def _last_per_timestamp(table: pa.Table) -> pa.Table:
    """One row per timestamp (the later row wins), sorted by timestamp."""
    ts = table.column("timestamp").to_numpy()
    order = np.argsort(ts, kind="stable")
    keep = np.ones(len(ts), dtype=bool)
    keep[:-1] = ts[order][1:] != ts[order][:-1]
    return table.take(pa.array(order[keep]))


def _bar_text(table: pa.Table, i: int) -> str:
    return " ".join(f"{c}={table.column(c)[i].as_py()!r}" for c in _VALUE_COLUMNS)


def resolve_conflicts(old: pa.Table | None, new: pa.Table, on_conflict: str, where: str) -> tuple[pa.Table, WriteReport]:
    """The rows of ``new`` to merge over ``old`` under ``on_conflict`` and the counts of what that
    does (``added`` is filled in by the caller). Raises :class:`DataValidationError` for conflicting
    bars under ``"error"``."""
    if on_conflict not in CONFLICT_POLICIES:
        raise ConfigError(f"on_conflict {on_conflict!r} is not one of {', '.join(CONFLICT_POLICIES)}")
    new = _last_per_timestamp(new)
    if old is None or old.num_rows == 0 or new.num_rows == 0:
        return new, WriteReport(0)
    _, io, jn = np.intersect1d(old.column("timestamp").to_numpy(), new.column("timestamp").to_numpy(),
                               assume_unique=True, return_indices=True)
    if not len(io):
        return new, WriteReport(0)
    same = np.ones(len(io), dtype=bool)
    for c in _VALUE_COLUMNS:
        a = old.column(c).to_numpy()[io]
        b = new.column(c).to_numpy()[jn]
        same &= (a == b) | (np.isnan(a) & np.isnan(b))

    def trad(t: pa.Table, idx: np.ndarray) -> np.ndarray:
        return t.column("tradable").to_numpy()[idx] if "tradable" in t.column_names else np.ones(len(idx), bool)

    old_real, new_real = trad(old, io), trad(new, jn)
    same &= old_real == new_real
    filled = ~same & ~old_real & new_real        # a real bar fills a stored gap placeholder
    ignored = ~same & old_real & ~new_real       # a placeholder never overwrites a real bar
    conflict = ~same & old_real & new_real
    n = int(conflict.sum())
    if n and on_conflict == "error":
        k = int(np.flatnonzero(conflict)[0])
        ts = int(old.column("timestamp")[int(io[k])].as_py())
        raise DataValidationError(
            f"{where}: {n} bar(s) already stored with different values, first {ms_to_iso(ts)} UTC: stored "
            f"{_bar_text(old, int(io[k]))}; new {_bar_text(new, int(jn[k]))}. Choose --on-conflict replace "
            f"(new values win) or keep (stored values stay)"
        )
    drop = ignored | (conflict if on_conflict == "keep" else np.zeros(len(io), bool))
    if drop.any():
        mask = np.ones(new.num_rows, dtype=bool)
        mask[jn[drop]] = False
        new = new.filter(pa.array(mask))
    return new, WriteReport(0, replaced=n if on_conflict == "replace" else 0,
                            kept=n if on_conflict == "keep" else 0, filled=int(filled.sum()))


def merge_tables(old: pa.Table | None, new: pa.Table) -> tuple[pa.Table, int]:
    """Union of ``old`` and ``new`` sorted by timestamp, one row per timestamp; on a clash the row
    from ``new`` wins (and within ``new`` the later row). Returns ``(merged, n_new_timestamps)``."""
    n_old = 0 if old is None else old.num_rows
    if old is not None and ("tradable" in old.column_names) != ("tradable" in new.column_names):
        old, new = _with_tradable(old), _with_tradable(new)
    combined = new if old is None else pa.concat_tables([old, new.select(old.column_names)])
    ts = combined.column("timestamp").to_numpy()
    order = np.argsort(ts, kind="stable")  # stable: among equal timestamps the newest stays last
    ts_sorted = ts[order]
    keep_last = np.ones(len(ts_sorted), dtype=bool)
    keep_last[:-1] = ts_sorted[1:] != ts_sorted[:-1]
    merged = combined.take(pa.array(order[keep_last]))
    return merged, merged.num_rows - n_old
