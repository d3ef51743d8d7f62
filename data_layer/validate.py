"""Candle validation: every import and every download passes through :func:`validate_candles`.

Rules, in the order they are checked (vectorised, no Python loop over rows):

=====================  ==========================================================================
rule                   outcome
=====================  ==========================================================================
columns                ``timestamp, open, high, low, close, volume`` present, else hard error
numbers                timestamps integral; prices/volume numeric; NaN or inf anywhere: hard error
order                  rows not in time order: stable sort (repair, reported)
duplicates             identical duplicate rows: keep one (repair); same timestamp with different
                       values: hard error naming both rows
grid                   ``timestamp % timeframe == 0`` (weekly and longer bars may share any whole-day
                       phase, e.g. Monday-open weeks); off-grid: hard error
future                 a bar opening at or after ``now_ms``: hard error (a clock/unit bug, never
                       real data); the bar still forming (``ts <= now < ts + tf``): dropped (repair)
prices                 open/high/low/close > 0, else hard error
OHLC                   ``low <= min(open, close)``, ``high >= max(open, close)``; volume >= 0
jumps                  ``|log(close_t / close_prev)| > jump_threshold``: warning (not an error:
                       real crashes happen; the user decides)
gaps                   listed in the report; policy ``mark`` inserts each missing grid bar with
                       open=high=low=close=previous close, volume 0, ``tradable=False``; ``drop``
                       leaves them absent. Never back-filled from a later bar.
=====================  ==========================================================================

Rows are named in messages by the frame's index label: a loader that sets the index to file line
numbers (index name ``"line"``) gets ``line 123``; a default index gives ``row 5`` (0-based).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from factorgym.data_layer.candles import CANDLE_COLUMNS, PRICE_COLUMNS
from factorgym.data_layer.timeframes import grid_phase, ms_to_iso, timeframe_to_ms
from factorgym.errors import ConfigError, DataValidationError

GAP_POLICIES = ("mark", "drop")
_MAX_LISTED = 5  # examples listed per warning


@dataclasses.dataclass
class ValidationReport:
    """What validation found and did. Times are UTC ms; ``gaps`` holds (first missing ts, n bars)."""

    name: str
    timeframe: str
    rows: int
    first: int | None
    last: int | None
    gaps: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    repairs: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def missing_bars(self) -> int:
        return int(sum(n for _, n in self.gaps))

    def summary(self, repaired: str = "repaired") -> str:
        """Readable multi-line report; ``repaired`` is the word before each repair (``factorgym
        validate`` says ``would repair`` when it writes nothing)."""
        lines = [
            f"{self.name} [{self.timeframe}]: {self.rows} bars, "
            f"{ms_to_iso(self.first)} .. {ms_to_iso(self.last)} UTC",
            f"  gaps: {len(self.gaps)} ({self.missing_bars} missing bars)",
        ]
        for ts, n in self.gaps[:_MAX_LISTED]:
            lines.append(f"    from {ms_to_iso(ts)}: {n} bar(s)")
        if len(self.gaps) > _MAX_LISTED:
            lines.append(f"    ... {len(self.gaps) - _MAX_LISTED} more")
        lines += [f"  {repaired}: {r}" for r in self.repairs]
        lines += [f"  warning: {w}" for w in self.warnings]
        if not self.repairs and not self.warnings and not self.gaps:
            lines.append("  ok: no repairs, no warnings")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["gaps"] = [[int(t), int(n)] for t, n in self.gaps]
        return d


def _label(index: pd.Index, pos: int) -> str:
    """How a message names row ``pos``: ``line 12`` when the loader set file lines, else ``row 5``."""
    kind = index.name if index.name in ("line", "row") else "row"
    if isinstance(index, pd.RangeIndex) and index.name is None:
        return f"row {pos}"
    return f"{kind} {index[pos]}"


def _iso(ms: int) -> str:
    """``ms_to_iso`` that survives absurd values (a wrong unit can put a bar in year 55969)."""
    try:
        return ms_to_iso(int(ms))
    except (ValueError, OverflowError, NotImplementedError):
        return "out of range"


def _at(ts: int) -> str:
    return f"timestamp {int(ts)} ({_iso(ts)} UTC)"


def _fail(name: str, where: str, rule: str, detail: str) -> DataValidationError:
    return DataValidationError(f"{name}: {where}: {rule}: {detail}")


def _coerce(candles: pd.DataFrame, name: str) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """Columns as numpy: int64 timestamps, float64 values; clear errors for text and NaN/inf."""
    missing = [c for c in CANDLE_COLUMNS if c not in candles.columns]
    if missing:
        raise DataValidationError(
            f"{name}: missing column(s) {missing}: a candle frame needs {CANDLE_COLUMNS}"
        )
    idx = candles.index
    values: dict[str, np.ndarray] = {}
    for col in CANDLE_COLUMNS[1:]:
        s = candles[col]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            num = pd.to_numeric(s, errors="coerce")
            bad = np.flatnonzero(num.isna().to_numpy() & s.notna().to_numpy())
            if len(bad):
                p = int(bad[0])
                raise _fail(name, _label(idx, p), f"column {col!r}", f"value {s.iloc[p]!r} is not a number")
            s = num
        values[col] = s.to_numpy(dtype=np.float64, na_value=np.nan)
    ts_col = candles["timestamp"]
    if isinstance(ts_col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(ts_col):
        if isinstance(ts_col.dtype, pd.DatetimeTZDtype):
            ts_col = ts_col.dt.tz_convert("UTC").dt.tz_localize(None)
        nat = np.flatnonzero(ts_col.isna().to_numpy())
        if len(nat):
            raise _fail(name, _label(idx, int(nat[0])), "column 'timestamp'", "missing time (NaT)")
        ts = ts_col.dt.as_unit("ms").to_numpy().astype(np.int64)
    else:
        tsf = pd.to_numeric(ts_col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(tsf) | (tsf != np.round(tsf)))
        if len(bad):
            p = int(bad[0])
            raise _fail(name, _label(idx, p), "column 'timestamp'",
                        f"value {ts_col.iloc[p]!r} is not an integer UTC millisecond time")
        if pd.api.types.is_integer_dtype(ts_col):
            ts = ts_col.to_numpy(dtype=np.int64)
        else:
            ts = tsf.astype(np.int64)
    stacked = np.column_stack([values[c] for c in CANDLE_COLUMNS[1:]]) if len(ts) else np.empty((0, 5))
    nonfinite = ~np.isfinite(stacked)
    if nonfinite.any():
        p, c = (int(v) for v in np.argwhere(nonfinite)[0])
        col = CANDLE_COLUMNS[1 + c]
        what = "NaN (missing value)" if np.isnan(stacked[p, c]) else f"{stacked[p, c]} (infinite)"
        raise _fail(name, f"{_label(idx, p)} ({_at(ts[p])})", f"column {col!r} must be finite",
                    f"got {what}; {int(nonfinite.any(axis=1).sum())} row(s) affected")
    tradable = None
    if "tradable" in candles.columns:
        tradable = candles["tradable"].fillna(True).to_numpy(dtype=bool)
    return ts, values, tradable


def _check_values(name, idx, order, ts, v) -> None:
    """Hard rules on prices and volume; ``order`` maps sorted position -> input position."""
    o, h, l, c, vol = (v[k] for k in CANDLE_COLUMNS[1:])
    prices = np.column_stack([o, h, l, c])
    bad = np.flatnonzero((prices <= 0).any(axis=1))
    if len(bad):
        p = int(bad[0])
        col = PRICE_COLUMNS[int(np.argmax(prices[p] <= 0))]
        raise _fail(name, f"{_label(idx, int(order[p]))} ({_at(ts[p])})", "prices must be > 0",
                    f"{col}={prices[p][PRICE_COLUMNS.index(col)]}; {len(bad)} row(s) affected")
    rules = [
        (h < l, "high >= low", lambda p: f"high={h[p]} < low={l[p]}"),
        (l > np.minimum(o, c), "low <= open and low <= close", lambda p: f"low={l[p]}, open={o[p]}, close={c[p]}"),
        (h < np.maximum(o, c), "high >= open and high >= close", lambda p: f"high={h[p]}, open={o[p]}, close={c[p]}"),
        (vol < 0, "volume >= 0", lambda p: f"volume={vol[p]}"),
    ]
    for mask, rule, detail in rules:
        bad = np.flatnonzero(mask)
        if len(bad):
            p = int(bad[0])
            raise _fail(name, f"{_label(idx, int(order[p]))} ({_at(ts[p])})", f"OHLC rule {rule} broken",
                        f"{detail(p)}; {len(bad)} row(s) affected")


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start positions and lengths of the True runs of a bool array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return starts, ends - starts


def validate_candles(
    candles: pd.DataFrame,
    timeframe: str,
    *,
    name: str,
    gap_policy: str = "mark",
    now_ms: int | None = None,
    jump_threshold: float = 0.5,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check ``candles`` against the rules in the module docstring and return a clean copy.

    Args:
        candles: frame with :data:`CANDLE_COLUMNS` (``timestamp`` int64 UTC ms of the bar open, or
            datetime64), optionally a bool ``tradable`` column (False rows count as marked gaps).
        timeframe: ccxt timeframe (``1h``) the timestamps must sit on.
        name: file or ``source:symbol`` named in every message.
        gap_policy: ``mark`` or ``drop`` (see module docstring).
        now_ms: the present, UTC ms (default: the wall clock). Bars not closed by then are refused.
        jump_threshold: warn when ``|log(close_t/close_prev)|`` exceeds this (0.5 = a 39%/65% move).

    Returns:
        ``(frame, report)``: sorted unique rows with int64 ``timestamp`` and float64 values; under
        ``mark`` a ``tradable`` bool column is added (False on inserted gap bars).

    Raises:
        DataValidationError: naming ``name``, the row/timestamp and the rule broken.
    """
    if gap_policy not in GAP_POLICIES:
        raise ConfigError(f"gap policy {gap_policy!r} is not one of {GAP_POLICIES}")
    tf_ms = timeframe_to_ms(timeframe)
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    ts, v, tradable = _coerce(candles, name)
    idx = candles.index
    repairs: list[str] = []
    warnings: list[str] = []

    order = np.arange(len(ts))
    if len(ts) > 1 and (np.diff(ts) < 0).any():
        order = np.argsort(ts, kind="stable")
        d = np.diff(ts)
        n_up = int((d > 0).sum())
        how = ("newest first" + (f", {n_up} step(s) out of place" if n_up else "")
               if (d < 0).sum() > 0.9 * len(d) else f"out of order, {int((d < 0).sum())} step(s) backwards")
        repairs.append(f"sorted {len(ts)} rows into time order (input was {how})")
        ts = ts[order]
        v = {k: a[order] for k, a in v.items()}
        tradable = None if tradable is None else tradable[order]

    # Duplicates: identical rows collapse; conflicting rows are an error naming both.
    if len(ts) > 1:
        same = np.flatnonzero(ts[1:] == ts[:-1])
        if len(same):
            mat = np.column_stack([v[k] for k in CANDLE_COLUMNS[1:]])
            differ = (mat[same] != mat[same + 1]).any(axis=1)
            if differ.any():
                p = int(same[int(np.argmax(differ))])
                cols = [CANDLE_COLUMNS[1 + i] for i in np.flatnonzero(mat[p] != mat[p + 1])]
                raise _fail(
                    name, f"{_label(idx, int(order[p]))} and {_label(idx, int(order[p + 1]))} ({_at(ts[p])})",
                    "duplicate timestamp with different values",
                    f"{cols[0]}={mat[p][CANDLE_COLUMNS.index(cols[0]) - 1]} vs "
                    f"{mat[p + 1][CANDLE_COLUMNS.index(cols[0]) - 1]}; keep one of them in the source",
                )
            keep = np.ones(len(ts), dtype=bool)
            keep[same + 1] = False
            repairs.append(f"dropped {len(same)} exact duplicate row(s), first at {ms_to_iso(ts[same[0]])}")
            ts, order = ts[keep], order[keep]
            v = {k: a[keep] for k, a in v.items()}
            tradable = None if tradable is None else tradable[keep]

    # Grid: bars open at multiples of the timeframe (weeks etc. may carry a whole-day phase).
    if len(ts):
        phase = grid_phase(int(ts[0]), tf_ms)
        off = np.flatnonzero((ts - phase) % tf_ms != 0)
        if len(off):
            p = int(off[0])
            raise _fail(name, f"{_label(idx, int(order[p]))} ({_at(ts[p])})", f"timestamp off the {timeframe} grid",
                        f"bars must open at multiples of {timeframe} since 1970-01-01 UTC; "
                        f"{len(off)} row(s) affected (wrong --timeframe or --tz?)")

    # Future: a bar opening after now is a bug; the bar still forming is dropped.
    if len(ts):
        future = np.flatnonzero(ts > now)
        if len(future):
            p = int(future[0])
            raise _fail(name, f"{_label(idx, int(order[p]))} ({_at(ts[p])})", "timestamp in the future",
                        f"bar opens after now ({ms_to_iso(now)} UTC); {len(future)} row(s) affected "
                        f"(wrong time unit or time zone?)")
        forming = ts + tf_ms > now
        if forming.any():
            repairs.append(f"dropped the bar still forming at {ms_to_iso(int(ts[forming][0]))} (closes after now)")
            keep = ~forming
            ts, order = ts[keep], order[keep]
            v = {k: a[keep] for k, a in v.items()}
            tradable = None if tradable is None else tradable[keep]

    _check_values(name, idx, order, ts, v)

    close = v["close"]
    if len(ts) > 1:
        lr = np.abs(np.diff(np.log(close)))
        jumps = np.flatnonzero(lr > jump_threshold)
        if len(jumps):
            ex = ", ".join(f"{ms_to_iso(ts[j + 1])} ({close[j]:g} -> {close[j + 1]:g})" for j in jumps[:_MAX_LISTED])
            warnings.append(f"{len(jumps)} extreme close-to-close jump(s) |log return| > {jump_threshold:g}: {ex}")

    # Gaps between consecutive bars (plus bars previously marked as gaps, tradable=False).
    gaps: list[tuple[int, int]] = []
    if len(ts) > 1:
        step = np.diff(ts) // tf_ms
        gpos = np.flatnonzero(step > 1)
        missing_start = ts[gpos] + tf_ms
        missing_n = step[gpos] - 1
        gaps = [(int(a), int(b)) for a, b in zip(missing_start, missing_n)]
    if tradable is not None and (~tradable).any():
        starts, lengths = _runs(~tradable)
        gaps = sorted(gaps + [(int(ts[s]), int(n)) for s, n in zip(starts, lengths)])

    out = pd.DataFrame({"timestamp": ts, **{k: v[k] for k in CANDLE_COLUMNS[1:]}})
    if tradable is not None:
        out["tradable"] = tradable
    if gap_policy == "mark":
        if "tradable" not in out.columns:
            out["tradable"] = np.ones(len(out), dtype=bool)
        if len(ts) > 1 and len(gpos):
            n_new = int(missing_n.sum())
            # position of each inserted bar's previous real bar, and its offset within the gap
            prev = np.repeat(gpos, missing_n)
            k = np.arange(n_new) - np.repeat(np.cumsum(missing_n) - missing_n, missing_n) + 1
            fill_close = close[prev]
            ins = pd.DataFrame({
                "timestamp": ts[prev] + k * tf_ms,
                "open": fill_close, "high": fill_close, "low": fill_close, "close": fill_close,
                "volume": np.zeros(n_new), "tradable": np.zeros(n_new, dtype=bool),
            })
            out = pd.concat([out, ins], ignore_index=True).sort_values("timestamp", kind="stable")
            out = out.reset_index(drop=True)
            repairs.append(f"marked {n_new} missing bar(s) in {len(gpos)} gap(s) as untradable "
                           f"(previous close carried, volume 0)")
    out["timestamp"] = out["timestamp"].astype(np.int64)
    report = ValidationReport(
        name=name, timeframe=timeframe, rows=len(out),
        first=int(out["timestamp"].iloc[0]) if len(out) else None,
        last=int(out["timestamp"].iloc[-1]) if len(out) else None,
        gaps=gaps, repairs=repairs, warnings=warnings,
    )
    return out, report
