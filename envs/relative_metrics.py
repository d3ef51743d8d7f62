"""Benchmark-relative and diagnostic metrics of a backtest, in plain numpy (pandas for the tables).

Conventions (those of :mod:`factorgym.envs.metrics`): per-bar **simple** returns, risk-free 0,
``bars_per_year`` from the timeframe (365-day 24/7 year), sample standard deviations (ddof=1).

| function              | what it gives                                                          |
| --------------------- | ---------------------------------------------------------------------- |
| benchmark_returns     | per-bar returns of one symbol (``"BTC"``) or the equal-weight basket   |
| relative_metrics      | alpha and beta (OLS on the benchmark), tracking error, information     |
|                       | ratio, correlation                                                     |
| rolling_sharpe        | annualised Sharpe over a trailing window of bars                       |
| monthly_returns       | year x month table of compounded returns, with the year's total        |
| exposure_frame        | long, short, net and gross exposure (fractions of equity) per bar      |
| holding_periods       | average length in bars of each asset's holding spells                 |
| pnl_attribution       | per-asset P&L split into price, slippage, fees, borrow and funding      |

Alpha is the arithmetic per-bar intercept times ``bars_per_year`` (a rate per year, not compounded).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from factorgym.errors import ConfigError

_ZERO = 1e-12


def _returns_of_closes(close: np.ndarray) -> np.ndarray:
    """Close-to-close simple returns [T-1, A]; a non-finite or non-positive close gives 0 (flat)."""
    c = np.asarray(close, dtype=np.float64)
    prev, cur = c[:-1], c[1:]
    ok = np.isfinite(prev) & np.isfinite(cur) & (prev > 0) & (cur > 0)
    out = np.zeros_like(cur)
    np.divide(cur, prev, out=out, where=ok)
    return np.where(ok, out - 1.0, 0.0)


def benchmark_returns(tensor, start_bar: int, end_bar: int, benchmark: str = "equal_weight") -> np.ndarray:
    """Per-bar benchmark returns over tensor bars ``start_bar .. end_bar - 1`` (``end - start - 1`` values,
    aligned with a backtest's returns over the same rows).

    ``benchmark``: ``"equal_weight"`` -- the mean close-to-close return of the assets tradable at
    both bars (rebalanced every bar, no costs); or a symbol (``"BTC/USDT"``) or its base (``"BTC"``)
    -- that asset's close-to-close return (0 where it is not priced).
    """
    if not 0 <= start_bar < end_bar <= tensor.n_bars:
        raise ConfigError(f"benchmark bars {start_bar}..{end_bar} are outside the tensor's {tensor.n_bars} bars")
    close = np.asarray(tensor.prices[start_bar:end_bar, :, 3], dtype=np.float64)
    r = _returns_of_closes(close)
    if benchmark == "equal_weight":
        trad = np.asarray(tensor.tradable[start_bar:end_bar], dtype=bool)
        live = trad[:-1] & trad[1:]
        n = live.sum(axis=1)
        return np.where(n > 0, (r * live).sum(axis=1) / np.maximum(n, 1), 0.0)
    symbols = list(tensor.symbols)
    matches = [i for i, s in enumerate(symbols) if s == benchmark or s.split("/")[0] == benchmark]
    if len(matches) != 1:
        raise ConfigError(f"benchmark {benchmark!r} matches {len(matches)} of the tensor's symbols {symbols}; "
                          f"give one symbol or 'equal_weight'")
    return r[:, matches[0]]


def relative_metrics(returns, bench, bars_per_year: float) -> dict[str, float]:
    """Alpha, beta and friends of per-bar ``returns`` against per-bar ``bench`` (same length).

    * ``beta = cov(r, b) / var(b)``; ``alpha = (mean(r) - beta * mean(b)) * bars_per_year``;
    * ``tracking_error = std(r - b) * sqrt(bars_per_year)``;
    * ``information_ratio = mean(r - b) / std(r - b) * sqrt(bars_per_year)``;
    * ``correlation`` of r and b; ``excess_return`` = compounded r minus compounded b.
    nan where undefined (fewer than 2 bars, a flat benchmark for beta, no active risk for IR).
    """
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    b = np.asarray(bench, dtype=np.float64).reshape(-1)
    if r.size != b.size:
        raise ConfigError(f"returns have {r.size} bars and the benchmark {b.size}; align them first")
    nan = math.nan
    out = {"alpha": nan, "beta": nan, "tracking_error": nan, "information_ratio": nan, "correlation": nan,
           "excess_return": float(np.prod(1 + r) - np.prod(1 + b)) if r.size else nan}
    if r.size < 2:
        return out
    vb = float(np.var(b, ddof=1))
    if vb > _ZERO**2:
        beta = float(np.cov(r, b, ddof=1)[0, 1] / vb)
        out["beta"] = beta
        out["alpha"] = (float(r.mean()) - beta * float(b.mean())) * bars_per_year
        vr = float(np.var(r, ddof=1))
        if vr > _ZERO**2:
            out["correlation"] = float(np.corrcoef(r, b)[0, 1])
    active = r - b
    te = float(active.std(ddof=1))
    out["tracking_error"] = te * math.sqrt(bars_per_year)
    if te > _ZERO:
        out["information_ratio"] = float(active.mean()) / te * math.sqrt(bars_per_year)
    return out


def rolling_sharpe(returns, window: int, bars_per_year: float) -> np.ndarray:
    """Annualised Sharpe ratio of the trailing ``window`` returns at each bar [len(returns)];
    nan for the first ``window - 1`` bars and where the window is flat."""
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    if int(window) != window or window < 2:
        raise ConfigError(f"window={window!r}: expected a whole number of bars >= 2")
    out = np.full(r.size, np.nan)
    if r.size < window:
        return out
    c1 = np.concatenate([[0.0], np.cumsum(r)])
    c2 = np.concatenate([[0.0], np.cumsum(r * r)])
    s1 = c1[window:] - c1[:-window]
    s2 = c2[window:] - c2[:-window]
    mean = s1 / window
    var = np.maximum(s2 - window * mean * mean, 0.0) / (window - 1)
    sd = np.sqrt(var)
    ok = sd > _ZERO
    out[window - 1:] = np.where(ok, mean / np.where(ok, sd, 1.0), np.nan) * math.sqrt(bars_per_year)
    return out


def monthly_returns(equity, timestamps) -> pd.DataFrame:
    """Compounded return of each calendar month (UTC) as a year x month table (columns 1..12 and
    ``year``, fractions; nan where the curve has no bar). A month's return runs from the last
    equity of the previous month (the first value for the first month) to its own last equity."""
    eq = np.asarray(equity, dtype=np.float64).reshape(-1)
    ts = np.asarray(timestamps, dtype=np.int64).reshape(-1)
    if eq.size != ts.size:
        raise ConfigError(f"equity has {eq.size} values and timestamps {ts.size}")
    cols = list(range(1, 13)) + ["year"]
    if eq.size == 0:
        return pd.DataFrame(columns=cols, dtype=float)
    t = pd.DatetimeIndex(pd.to_datetime(ts, unit="ms", utc=True))
    s = pd.Series(eq, index=t)
    month_end = s.groupby([t.year, t.month]).last()
    prev = np.concatenate([[eq[0]], month_end.to_numpy()[:-1]])
    rets = month_end.to_numpy() / prev - 1.0
    table = pd.DataFrame(np.nan, index=sorted(set(t.year)), columns=cols)
    table.index.name = "year"
    for (y, m), v in zip(month_end.index, rets):
        table.loc[y, m] = v
    for y in table.index:
        row = table.loc[y, list(range(1, 13))].dropna()
        table.loc[y, "year"] = float(np.prod(1 + row.to_numpy()) - 1.0) if len(row) else np.nan
    return table


def exposure_frame(weights, timestamps=None) -> pd.DataFrame:
    """Long (sum of positive weights), short (sum of negative weights, <= 0), net and gross exposure
    per bar, as fractions of equity; indexed by UTC time when ``timestamps`` are given."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ConfigError(f"weights must be [T, A], got shape {w.shape}")
    long_, short = np.where(w > 0, w, 0.0).sum(axis=1), np.where(w < 0, w, 0.0).sum(axis=1)
    idx = None if timestamps is None else pd.DatetimeIndex(pd.to_datetime(np.asarray(timestamps), unit="ms", utc=True), name="time")
    return pd.DataFrame({"long": long_, "short": short, "net": long_ + short, "gross": long_ - short}, index=idx)


def holding_periods(positions, symbols=None) -> pd.DataFrame:
    """Holding spells per asset: maximal runs of bars with a non-zero position of one sign.

    Returns one row per asset (and ``all``) with ``spells`` (count, a spell still open at the end
    included), ``mean_bars`` (average spell length in bars; nan without spells) and ``share_held``
    (fraction of bars with a position).
    """
    q = np.asarray(positions, dtype=np.float64)
    if q.ndim != 2:
        raise ConfigError(f"positions must be [T, A], got shape {q.shape}")
    sign = np.sign(np.where(np.abs(q) > 1e-12, q, 0.0))
    names = list(symbols) if symbols is not None else [f"ASSET{i}" for i in range(q.shape[1])]
    rows, all_lengths = {}, []
    for i, name in enumerate(names):
        s = sign[:, i]
        starts = np.flatnonzero((s != 0) & (np.concatenate([[0.0], s[:-1]]) != s))
        held = np.flatnonzero(s != 0)
        lengths = []
        for k, a in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else s.size
            run = s[a:end]
            stop = np.flatnonzero(run != s[a])
            lengths.append(int(stop[0]) if stop.size else int(run.size))
        all_lengths += lengths
        rows[name] = {"spells": len(lengths), "mean_bars": float(np.mean(lengths)) if lengths else math.nan,
                      "share_held": held.size / s.size if s.size else math.nan}
    rows["all"] = {"spells": len(all_lengths), "mean_bars": float(np.mean(all_lengths)) if all_lengths else math.nan,
                   "share_held": float((sign != 0).mean()) if sign.size else math.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def pnl_attribution(result, tensor, *, borrow_rate_per_bar: float = 0.0) -> pd.DataFrame:
    """Per-asset P&L of a :class:`~factorgym.envs.backtest.BacktestResult` in quote currency.

    ``tensor`` is the one the backtest ran on (its rows ``result.info["start_bar"]`` on give the
    closes and, when the tensor has it, ``funding`` [T, A]). Columns, all quote units, signed as
    gains (costs are negative):

    * ``price``: mark-to-market P&L at the reference (open) prices: ``q_end·close_end - q_0·close_0
      - Σ side·qty·fill_price - Σ slippage_cost``;
    * ``slippage``: ``-Σ slippage_cost`` (qty x |fill - reference price|);
    * ``fees``: ``-Σ fee``;
    * ``borrow``: ``-borrow_rate_per_bar · Σ_t max(-q_t·close_t, 0)`` (short notional; pass the
      execution config's rate);
    * ``funding``: ``-Σ_t q_t·close_t·funding_t`` (positive funding = longs pay, at the close);
    * ``net``: their sum.
    A ``cash`` row holds borrow on negative cash and a ``residual`` row what the equity change holds
    beyond the assets' rows (0 up to round-off when every charge is modelled here); ``total`` is
    ``equity_end - equity_start``.
    """
    lo = int(result.info.get("start_bar", 0))
    m = len(result.equity)
    close = np.asarray(tensor.prices[lo:lo + m, :, 3], dtype=np.float64)
    q = np.asarray(result.positions, dtype=np.float64)
    value = np.where(q != 0, q * np.nan_to_num(close), 0.0)
    symbols = list(result.symbols)
    idx = {s: i for i, s in enumerate(symbols)}
    A = len(symbols)
    flow, fees, slip = np.zeros(A), np.zeros(A), np.zeros(A)
    tr = result.trades
    if len(tr):
        a = tr["symbol"].map(idx).to_numpy()
        side = np.where(tr["side"].to_numpy() == "buy", 1.0, -1.0)
        np.add.at(flow, a, -side * tr["quantity"].to_numpy(float) * tr["price"].to_numpy(float))
        np.add.at(fees, a, -tr["fee"].to_numpy(float))
        np.add.at(slip, a, -tr["slippage_cost"].to_numpy(float))
    price = value[-1] - value[0] + flow - slip
    borrow = -borrow_rate_per_bar * np.where(value[1:] < 0, -value[1:], 0.0).sum(axis=0)
    funding_arr = getattr(tensor, "funding", None)
    funding = np.zeros(A)
    if funding_arr is not None:
        f = np.asarray(funding_arr[lo:lo + m], dtype=np.float64)
        funding = -(value[1:] * np.nan_to_num(f[1:])).sum(axis=0)
    frame = pd.DataFrame({"price": price, "slippage": slip, "fees": fees, "borrow": borrow, "funding": funding}, index=symbols)
    frame["net"] = frame.sum(axis=1)
    cash = np.asarray(result.cash, dtype=np.float64)
    cash_borrow = -borrow_rate_per_bar * float(np.where(cash[1:] < 0, -cash[1:], 0.0).sum())
    total = float(result.equity[-1] - result.equity[0])
    extra = pd.DataFrame(0.0, index=["cash", "residual", "total"], columns=frame.columns)
    extra.loc["cash", ["borrow", "net"]] = cash_borrow
    extra.loc["residual", "net"] = total - float(frame["net"].sum()) - cash_borrow
    extra.loc["total", :] = frame.sum(axis=0)
    extra.loc["total", "borrow"] += cash_borrow
    extra.loc["total", "net"] = total
    return pd.concat([frame, extra])


def diagnostics(result, tensor=None, *, benchmark: str = "equal_weight", rolling_window: int | None = None,
                borrow_rate_per_bar: float = 0.0) -> dict[str, Any]:
    """Every metric of this module for one backtest: ``{"relative": {...}, "rolling_sharpe": array,
    "monthly": DataFrame, "exposure": DataFrame, "holding": DataFrame, "attribution": DataFrame}``.
    Without the ``tensor`` the backtest ran on, ``relative`` and ``attribution`` are None.
    ``rolling_window`` defaults to 30 days of bars (at least 2)."""
    from factorgym.envs.metrics import simple_returns

    bpy = float(result.info.get("bars_per_year") or 365.0)
    lo = int(result.info.get("start_bar", 0))
    r = simple_returns(result.equity)
    window = rolling_window or max(2, int(round(bpy * 30 / 365)))
    rel = None
    if tensor is not None:
        b = benchmark_returns(tensor, lo, lo + len(result.equity), benchmark)[: r.size]
        rel = {**relative_metrics(r, b, bpy), "benchmark": benchmark}
    return {
        "relative": rel,
        "rolling_sharpe": rolling_sharpe(r, window, bpy) if r.size >= window else np.full(r.size, np.nan),
        "rolling_window": window,
        "monthly": monthly_returns(result.equity, result.timestamps),
        "exposure": exposure_frame(result.weights, result.timestamps),
        "holding": holding_periods(result.positions, result.symbols),
        "attribution": None if tensor is None else pnl_attribution(result, tensor, borrow_rate_per_bar=borrow_rate_per_bar),
    }


def diagnostics_html(result, tensor=None, **kwargs) -> str:
    """The diagnostics of one backtest as an HTML fragment (tables and one figure) for the report."""
    import html as _html

    from factorgym.envs.report import _png_base64, _pyplot

    d = diagnostics(result, tensor, **kwargs)
    pct = lambda v: "" if not np.isfinite(v) else f"{100 * v:.2f}%"  # noqa: E731
    parts = ["<h3>Diagnostics</h3>"]
    if d["relative"] is not None:
        rel = d["relative"]
        parts.append(f"<p>against {_html.escape(str(rel['benchmark']))}: alpha {pct(rel['alpha'])} a year, beta {rel['beta']:.3f}, "
                     f"information ratio {rel['information_ratio']:.3f}, tracking error {pct(rel['tracking_error'])}, "
                     f"correlation {rel['correlation']:.3f}</p>")
        parts.append("<p>P&amp;L attribution (quote currency)</p>" + d["attribution"].round(2).to_html())
    parts.append("<p>Monthly returns</p>" + d["monthly"].map(pct).to_html())
    parts.append("<p>Holding spells (bars)</p>" + d["holding"].round(2).to_html())
    plt = _pyplot()
    t = pd.to_datetime(result.timestamps, unit="ms", utc=True)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 4.5), sharex=True)
    ex = d["exposure"]
    ax.fill_between(t, 0, ex["long"].to_numpy(), color="tab:green", alpha=0.4, lw=0, label="long")
    ax.fill_between(t, 0, ex["short"].to_numpy(), color="tab:red", alpha=0.4, lw=0, label="short")
    ax.plot(t, ex["net"].to_numpy(), color="black", lw=0.8, label="net")
    ax.set_ylabel("exposure")
    ax.legend(loc="upper left", fontsize="small")
    ax2.plot(t[1:], d["rolling_sharpe"], lw=0.9)
    ax2.set_ylabel(f"rolling Sharpe ({d['rolling_window']} bars)")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    fig.tight_layout()
    parts.append(f"<img alt='exposure and rolling Sharpe' src='data:image/png;base64,{_png_base64(fig)}'/>")
    return "\n".join(parts)
