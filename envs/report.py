"""Plots and the self-contained HTML report of backtest results (matplotlib, Agg backend).

What a reader gets: a table of contents; the metrics table (``n/a`` for undefined values, a dagger
and a footnote on annualised figures of runs shorter than a year); what each baseline does; one
figure comparing every run, where each run has its own line style and marker and runs whose curves
coincide are named as such in the legend; then one collapsible section per run with its plot
(a panel is drawn only when it has something to show: no drawdown panel for a curve that never
fell, no weights panel for a run that never held anything) and its trade log.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from factorgym.envs.backtest import METRIC_FORMATS, BacktestResult, format_metric, span_note
from factorgym.envs.metrics import is_short_span

_STYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _fmt(r: BacktestResult, key: str) -> str:
    return format_metric(key, r.metrics.get(key, math.nan), short_span=is_short_span(r.metrics))


def plot_result(r: BacktestResult, path: str | Path | None = None):
    """Equity, then drawdown and weights when they are not all zero; PNG to ``path`` if given."""
    plt = _pyplot()
    t = pd.to_datetime(r.timestamps, unit="ms", utc=True)
    has_dd = bool(np.any(r.drawdown > 0))
    has_w = bool(r.weights.size and np.any(r.weights != 0))
    ratios = [3] + [1.2] * has_dd + [1.5] * has_w
    fig, axes = plt.subplots(len(ratios), 1, figsize=(10, 2 + 2 * len(ratios)), sharex=True,
                             gridspec_kw={"height_ratios": ratios}, squeeze=False)
    axes = list(axes[:, 0])
    ax = axes.pop(0)
    ax.plot(t, r.equity, lw=1.2)
    ax.set_ylabel("equity")
    title = f"{r.name}: total return {_fmt(r, 'total_return')}, Sharpe {_fmt(r, 'sharpe')}"
    if not has_dd and not has_w:
        title += " (never invested: no drawdown, no weights)"
    elif not has_dd:
        title += " (no drawdown)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if has_dd:
        ax = axes.pop(0)
        ax.fill_between(t, -100 * r.drawdown, 0, color="tab:red", alpha=0.4, lw=0)
        ax.set_ylabel("drawdown %")
        ax.grid(alpha=0.3)
    if has_w:
        ax = axes.pop(0)
        ax.stackplot(t, *[r.weights[:, i] for i in range(r.weights.shape[1])], labels=r.symbols)
        ax.legend(loc="upper left", fontsize="small", ncol=min(4, len(r.symbols)))
        ax.set_ylabel("weights")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _png_base64(fig) -> str:
    """The figure as base64 PNG text (the figure is closed)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def coinciding(results: dict[str, BacktestResult]) -> dict[str, str]:
    """``{name: earlier name}`` for each run whose equity curve equals an earlier run's (rtol 1e-9)."""
    out: dict[str, str] = {}
    names = list(results)
    for i, a in enumerate(names):
        for b in names[:i]:
            ea, eb = results[a].equity, results[b].equity
            if b not in out and ea.shape == eb.shape and np.allclose(ea / ea[0], eb / eb[0], rtol=1e-9, atol=0):
                out[a] = b
                break
    return out


def _comparison_figure(results: dict[str, BacktestResult]):
    """All runs' equity (as a multiple of the start) and drawdown on one figure; each run its own
    line style and marker, and a run that coincides with another says so in the legend."""
    same = coinciding(results)
    fig, (ax, ax_dd) = _pyplot().subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    for k, (name, r) in enumerate(results.items()):
        t = pd.to_datetime(r.timestamps, unit="ms", utc=True)
        style = dict(ls=_STYLES[k % len(_STYLES)], marker=_MARKERS[k % len(_MARKERS)],
                     markevery=max(1, len(t) // 12), ms=4, lw=1.2 if k == 0 else 1.0)
        label = name + (f" (same curve as {same[name]})" if name in same else "")
        (line,) = ax.plot(t, r.equity / r.equity[0], label=label, **style)
        ax_dd.plot(t, -100 * r.drawdown, color=line.get_color(), **style)
    ax.set_ylabel("equity / start")
    ax.legend(loc="upper left", fontsize="small")
    ax_dd.set_ylabel("drawdown %")
    for a in (ax, ax_dd):
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def metrics_frame(results: dict[str, BacktestResult]) -> pd.DataFrame:
    """Metrics of several runs as display strings: one row per run, one column per metric label."""
    rows = {name: {label: _fmt(r, k) for k, (label, _) in METRIC_FORMATS.items()} for name, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def _anchor(name: str) -> str:
    return "run-" + "".join(c if c.isalnum() else "-" for c in name)


def write_html_report(path: str | Path, results: dict[str, BacktestResult], max_trades: int = 500, tensor=None) -> Path:
    """One HTML file for one or several runs (see the module docstring for what it holds); given the
    ``tensor`` the runs were backtested on, also each run's diagnostics (``envs/relative_metrics.py``:
    alpha/beta, P&L attribution, monthly returns, holding spells, exposure and rolling Sharpe)."""
    from factorgym.envs.relative_metrics import diagnostics_html

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>factorgym backtest</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}summary{cursor:pointer;font-size:1.3em;"
        "font-weight:bold;margin:1em 0 .5em}nav li{margin:.2em 0}.note{color:#555}</style></head><body>",
        "<h1>factorgym backtest</h1>",
    ]
    first = next(iter(results.values()), None)
    if first is not None and len(first.timestamps):
        from factorgym.data_layer.timeframes import ms_to_iso

        parts.append(f"<p>{html.escape(', '.join(first.symbols))} &middot; {html.escape(first.timeframe)} &middot; "
                     f"{ms_to_iso(int(first.timestamps[0]))} .. {ms_to_iso(int(first.timestamps[-1]))} "
                     f"&middot; {len(first.timestamps)} bars ({_fmt(first, 'span_days')}). Sharpe/Sortino on simple "
                     f"per-bar returns, risk-free 0, annualised for a 24/7 market (365 days); n/a = undefined "
                     f"(e.g. the Sharpe of a flat cash line).</p>")
    notes = {name: r.info["baseline"] for name, r in results.items() if r.info.get("baseline")}
    toc = [("metrics", "Metrics")] + ([("baselines", "What the baselines do")] if notes else [])
    toc += [("comparison", "All runs compared")] if len(results) > 1 else []
    toc += [(_anchor(name), f"{name}: plot and trades") for name in results]
    parts.append("<nav><h2>Contents</h2><ul>" + "".join(f"<li><a href='#{a}'>{html.escape(t)}</a></li>" for a, t in toc)
                 + "</ul></nav>")
    parts += ["<h2 id='metrics'>Metrics</h2>", metrics_frame(results).to_html(escape=True)]
    note = span_note([r.metrics for r in results.values()])
    if note:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    if notes:
        parts.append("<h2 id='baselines'>What the baselines do</h2><ul>" + "".join(
            f"<li><b>{html.escape(n)}</b>: {html.escape(t)}</li>" for n, t in notes.items()) + "</ul>"
            "<p class='note'>An asset counts as listed from the first bar it is tradable; nothing about later "
            "listings is known before they happen.</p>")
    if len(results) > 1:
        same = coinciding(results)
        parts.append("<h2 id='comparison'>All runs compared</h2>")
        if same:
            parts.append("<p class='note'>Coinciding curves: " + html.escape(
                "; ".join(f"{a} = {b}" for a, b in same.items())) + " (drawn with different line styles).</p>")
        parts.append(f"<img alt='equity and drawdown of every run' src='data:image/png;base64,"
                     f"{_png_base64(_comparison_figure(results))}'/>")
    for name, r in results.items():
        parts.append(f"<details id='{_anchor(name)}'{' open' if len(results) == 1 else ''}>"
                     f"<summary>{html.escape(name)}</summary>")
        parts.append(f"<img alt='{html.escape(name)} equity, drawdown and weights' src='data:image/png;base64,{_png_base64(r.plot())}'/>")
        n = len(r.trades)
        parts.append(f"<h3>Trades ({n}{', first ' + str(max_trades) + ' shown' if n > max_trades else ''})</h3>")
        parts.append(r.trades.head(max_trades).to_html(index=False, escape=True) if n else "<p>no trades</p>")
        if tensor is not None:
            parts.append(diagnostics_html(r, tensor))
        parts.append("</details>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
