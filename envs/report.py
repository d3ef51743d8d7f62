"""Plots and the self-contained HTML report of backtest results (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import pandas as pd

from factorgym.envs.backtest import METRIC_FORMATS, BacktestResult, format_metric


def plot_result(r: BacktestResult, path: str | Path | None = None):
    """Equity, drawdown and weights of one run in three panels; PNG to ``path`` if given."""
    plt = _pyplot()
    t = pd.to_datetime(r.timestamps, unit="ms", utc=True)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 1.5]})
    axes[0].plot(t, r.equity, lw=1.2)
    axes[0].set_ylabel("equity")
    axes[0].set_title(f"{r.name}: total return {format_metric('total_return', r.metrics.get('total_return', math.nan))}, "
                      f"Sharpe {format_metric('sharpe', r.metrics.get('sharpe', math.nan))}")
    axes[1].fill_between(t, -100 * r.drawdown, 0, color="tab:red", alpha=0.4, lw=0)
    axes[1].set_ylabel("drawdown %")
    if r.weights.size:
        axes[2].stackplot(t, *[r.weights[:, i] for i in range(r.weights.shape[1])], labels=r.symbols)
        axes[2].legend(loc="upper left", fontsize="small", ncol=min(4, len(r.symbols)))
    axes[2].set_ylabel("weights")
    for ax in axes:
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


def _comparison_figure(results: dict[str, BacktestResult]):
    """All runs' equity (as a multiple of the start) and drawdown on one figure."""
    fig, (ax, ax_dd) = _pyplot().subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    for name, r in results.items():
        t = pd.to_datetime(r.timestamps, unit="ms", utc=True)
        ax.plot(t, r.equity / r.equity[0], lw=1.1, label=name)
        ax_dd.plot(t, -100 * r.drawdown, lw=0.9)
    ax.set_ylabel("equity / start")
    ax.legend(loc="upper left", fontsize="small")
    ax_dd.set_ylabel("drawdown %")
    for a in (ax, ax_dd):
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def metrics_frame(results: dict[str, BacktestResult]) -> pd.DataFrame:
    """Metrics of several runs as display strings: one row per run, one column per metric label."""
    rows = {name: {label: format_metric(k, r.metrics.get(k, math.nan)) for k, (label, _) in METRIC_FORMATS.items()}
            for name, r in results.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def write_html_report(path: str | Path, results: dict[str, BacktestResult], max_trades: int = 500, tensor=None) -> Path:
    """One HTML file for one or several runs: metrics table, then per run its plot and trade log; given
    the ``tensor`` the runs were backtested on, also each run's diagnostics (``envs/relative_metrics.py``:
    alpha/beta, P&L attribution, monthly returns, holding spells, exposure and rolling Sharpe)."""
    from factorgym.envs.relative_metrics import diagnostics_html

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>factorgym backtest</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>",
        "<h1>factorgym backtest</h1>",
    ]
    first = next(iter(results.values()), None)
    if first is not None and len(first.timestamps):
        from factorgym.data_layer.timeframes import ms_to_iso

        parts.append(f"<p>{html.escape(', '.join(first.symbols))} &middot; {html.escape(first.timeframe)} &middot; "
                     f"{ms_to_iso(int(first.timestamps[0]))} .. {ms_to_iso(int(first.timestamps[-1]))} "
                     f"&middot; {len(first.timestamps)} bars. Sharpe/Sortino on simple per-bar returns, "
                     f"risk-free 0, annualised for a 24/7 market (365 days).</p>")
    parts += ["<h2>Metrics</h2>", metrics_frame(results).to_html(escape=True)]
    if len(results) > 1:
        parts.append(f"<img alt='equity and drawdown of every run' src='data:image/png;base64,{_png_base64(_comparison_figure(results))}'/>")
    for name, r in results.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(f"<img alt='{html.escape(name)} equity, drawdown and weights' src='data:image/png;base64,{_png_base64(r.plot())}'/>")
        n = len(r.trades)
        parts.append(f"<h3>Trades ({n}{', first ' + str(max_trades) + ' shown' if n > max_trades else ''})</h3>")
        parts.append(r.trades.head(max_trades).to_html(index=False, escape=True) if n else "<p>no trades</p>")
        if tensor is not None:
            parts.append(diagnostics_html(r, tensor))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------- running
