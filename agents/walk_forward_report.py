"""A whole walk-forward evaluation: folds x seeds, the baselines on the same test blocks, the ledger,
the deflated Sharpe ratio and PBO, and one folder with ``report.html``, ``metrics.json``,
``oos_returns.npz`` and each fold's run directory (``folds/fold<i>_seed<s>/``).

Figures (Sharpe ratios annualised for the report, per-bar inside DSR and PBO):

* per seed, the fold test returns stitched in time order; the agent's **mean out-of-sample Sharpe**
  is the mean over seeds of the stitched series' Sharpe ratios, with a 95 % circular block-bootstrap
  interval over bars (all seeds resampled on the same bars);
* each baseline runs once per fold on the same blocks, with the same execution config;
* **DSR** of that mean per-bar Sharpe ratio over the stitched bars, with the seeds' mean skewness
  and kurtosis, counting every trial (config x seed) the ledger holds for this data and factor set,
  and the variance of their Sharpe ratios;
* **PBO** by CSCV over those trials' returns on the bars they share.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factorgym.agents import stats as st
from factorgym.agents.ledger import Ledger
from factorgym.agents.walk_forward import FoldPlan, plan_folds, run_folds
from factorgym.data_layer.tensor import FactorTensor
from factorgym.data_layer.timeframes import ms_to_iso, timeframe_to_ms
from factorgym.envs import metrics as mx
from factorgym.envs.baselines import BASELINE_NAMES, run_baselines
from factorgym.envs.relative_metrics import benchmark_returns, monthly_returns, relative_metrics


@dataclass
class Evaluation:
    """The outcome: ``summary`` is what ``metrics.json`` holds; ``agent_returns`` [T, S] per seed."""

    out_dir: Path
    timestamps: np.ndarray
    agent_returns: np.ndarray
    baseline_returns: dict[str, np.ndarray]
    rows: list[dict]
    summary: dict[str, Any]

    @property
    def report_path(self) -> Path:
        return self.out_dir / "report.html"


def _j(v):
    """JSON-safe: nan -> null, ±inf -> "inf"/"-inf", numpy scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _j(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_j(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if math.isnan(f) else ("inf" if f == math.inf else "-inf" if f == -math.inf else f)
    return v


def _curve_stats(r: np.ndarray, bpy: float, n_boot: int, seed: int = 0) -> dict[str, float]:
    """Sharpe (mean over columns, annualised) with its block-bootstrap CI, and the mean column's curve stats."""
    R = r if r.ndim == 2 else r[:, None]
    sharpes = [mx.sharpe(R[:, j], bpy) for j in range(R.shape[1])]
    lo, hi = st.block_bootstrap_ci(R, n_boot=n_boot, seed=seed)
    eq = np.concatenate([[1.0], np.cumprod(1.0 + R.mean(axis=1))])
    return {"sharpe": float(np.mean(sharpes)), "sharpe_ci_low": lo * math.sqrt(bpy), "sharpe_ci_high": hi * math.sqrt(bpy),
            "sharpe_per_seed": sharpes, "total_return": float(eq[-1] - 1.0), "max_drawdown": mx.max_drawdown(eq)}


def _pbo(ledger: Ledger, key: dict) -> dict[str, Any]:
    common, M, keys = ledger.returns_matrix(**key)
    n = M.shape[1] if M.ndim == 2 else 0
    out = {"pbo": None, "n_trials": n, "n_bars": int(common.size), "n_blocks": None, "n_splits": None}
    blocks = [s for s in range(16, 1, -2) if common.size // s >= 2]
    if n < 2 or not blocks:
        out["reason"] = "needs at least 2 trials sharing at least 4 bars"
        return out
    res = st.probability_of_backtest_overfitting(M, n_blocks=blocks[0])
    out.update(pbo=res.pbo, n_blocks=res.n_blocks, n_splits=res.n_splits, prob_oos_loss=res.prob_oos_loss)
    return out


def evaluate(tensor: FactorTensor, trainer, *, n_folds: int, out_dir: str | Path, runs_dir: str | Path = "runs",
             seeds=(0,), test_bars: int | None = None, val_bars: int | None = None, embargo: int = 0,
             scheme: str = "expanding", train_bars: int | None = None, normalise: str = "none",
             baselines=BASELINE_NAMES, benchmark: str = "equal_weight", study: str | None = None,
             n_boot: int = 2000) -> Evaluation:
    """Run the walk-forward, record every fold and seed in the ledger, write the report folder.

    ``test_bars`` defaults to ``n_bars // (n_folds + 2)``, ``val_bars`` to half of it.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    T = tensor.n_bars
    test_bars = int(test_bars or T // (n_folds + 2))
    val_bars = int(val_bars or max(2, test_bars // 2))
    plans = plan_folds(T, n_folds, test_bars, val_bars=val_bars, embargo=embargo, scheme=scheme, train_bars=train_bars)
    seeds = [int(s) for s in seeds]
    study = study or out.name
    ledger = Ledger(runs_dir)
    key = {"data_hash": tensor.meta.get("data_hash") or tensor.content_hash()[:16],
           "factor_set_hash": tensor.meta.get("factor_set_hash")}

    def record(row):
        res = row["result"]
        ledger.record(kind="fold", config=trainer.config, seed=row["seed"], study=study, fold=row["fold"],
                      run_dir=row["run_dir"], metrics={**res.metrics, **{f"val_{k}": v for k, v in row["model"].validation.items()}},
                      returns=row["returns"], timestamps=row["timestamps"], **key)

    rows = run_folds(tensor, trainer, plans, seeds, out, normalise=normalise, on_fold=record)
    bpy = mx.bars_per_year_from_ms(timeframe_to_ms(tensor.timeframe))
    ts = np.concatenate([r["timestamps"] for r in rows if r["seed"] == seeds[0]])
    R = np.column_stack([np.concatenate([r["returns"] for r in rows if r["seed"] == s]) for s in seeds])
    execution = rows[0]["model"].env_kwargs.get("execution")
    base: dict[str, list[np.ndarray]] = {name: [] for name in baselines}
    bench = []
    for plan in plans:
        lo, hi = plan.test
        res = run_baselines(tensor.slice_bars(lo - 1, hi), names=tuple(baselines), execution=execution)
        for name, r in res.items():
            rr = np.concatenate([mx.simple_returns(r.equity), np.zeros(hi - lo)])[: hi - lo]
            base[name].append(rr)
            ledger.record(kind="baseline", config={"baseline": name, "execution": str(execution)}, study=study, fold=plan.index,
                          returns=rr, timestamps=tensor.timestamps[lo:hi], **key)
        bench.append(benchmark_returns(tensor, lo - 1, hi, benchmark))
    base_r = {k: np.concatenate(v) for k, v in base.items()}
    bench_r = np.concatenate(bench)

    moments = [st.sample_moments(R[:, j]) for j in range(R.shape[1])]
    sr_pp = float(np.mean([m[0] for m in moments]))
    skew, kurt = float(np.mean([m[1] for m in moments])), float(np.mean([m[2] for m in moments]))
    trials = ledger.trial_stats(**key)
    dsr = {"dsr": None, "psr": None, "n_trials": trials.n_trials, "sr_variance_per_bar": trials.sr_variance,
           "sharpe_per_bar": sr_pp, "skew": skew, "kurtosis": kurt, "n_obs": int(R.shape[0]),
           "expected_max_sharpe_per_bar": st.expected_max_sharpe(max(trials.n_trials, 1), trials.sr_variance)}
    if math.isfinite(sr_pp):
        dsr["dsr"] = st.deflated_sharpe_ratio(sr_pp, R.shape[0], max(trials.n_trials, 1), trials.sr_variance, skew, kurt)
        dsr["psr"] = st.probabilistic_sharpe_ratio(sr_pp, R.shape[0], 0.0, skew, kurt)
        dsr["min_track_record_bars"] = st.minimum_track_record_length(sr_pp, 0.0, skew, kurt)
    train_s = float(sum(r["train_seconds"] for r in rows))
    summary = {
        "study": study, "ledger": str(ledger.path), **key,
        "settings": {"folds": n_folds, "scheme": scheme, "embargo": embargo, "seeds": seeds, "test_bars": test_bars,
                     "val_bars": val_bars, "train_bars": train_bars, "normalise": normalise, "benchmark": benchmark,
                     "timeframe": tensor.timeframe, "symbols": list(tensor.symbols), "bars_per_year": bpy},
        "trainer_config": trainer.config,
        "agent": {**_curve_stats(R, bpy, n_boot), **relative_metrics(R.mean(axis=1), bench_r, bpy)},
        "baselines": {k: _curve_stats(v, bpy, n_boot) for k, v in base_r.items()},
        "dsr": dsr, "pbo": _pbo(ledger, key),
        "folds": [_row_summary(r) for r in rows],
    }
    np.savez(out / "oos_returns.npz", timestamps=ts, agent=R, seeds=np.array(seeds), **{f"baseline_{k}": v for k, v in base_r.items()})
    ev = Evaluation(out, ts, R, base_r, rows, summary)
    summary["timings"] = _timings(t_start, train_s, n_folds, len(rows))
    write_report(ev, tensor)
    summary["timings"] = _timings(t_start, train_s, n_folds, len(rows))  # the report's own time included
    (out / "metrics.json").write_text(json.dumps(_j(summary), indent=2), encoding="utf-8")
    return ev


def _timings(t_start: float, train_s: float, n_folds: int, n_runs: int) -> dict[str, float]:
    wall = time.perf_counter() - t_start
    return {"wall_seconds": wall, "train_seconds": train_s, "evaluation_overhead_seconds": wall - train_s,
            "evaluation_overhead_fraction": (wall - train_s) / wall if wall > 0 else math.nan,
            "seconds_per_fold": wall / n_folds, "train_seconds_per_run": train_s / max(n_runs, 1)}


def _row_summary(r: dict) -> dict[str, Any]:
    p: FoldPlan = r["plan"]
    ts = r["result"].timestamps
    m = r["result"].metrics
    return {"fold": r["fold"], "seed": r["seed"], "train_rows": list(p.train), "validation_rows": list(p.validation),
            "test_rows": list(p.test), "test_start": ms_to_iso(int(r["timestamps"][0])), "test_end": ms_to_iso(int(ts[-1])),
            "checkpoint": r["model"].checkpoint, "validation": r["model"].validation,
            "test": {k: m.get(k) for k in ("sharpe", "total_return", "max_drawdown", "n_trades", "fees")},
            "train_seconds": r["train_seconds"], "test_seconds": r["test_seconds"], "run_dir": str(r["run_dir"])}


def _rel(path: str, root: Path) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def _g(v) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.4g}"


def _fmt(v, kind="num") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-" if v is None or math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{100 * v:.2f}%" if kind == "pct" else f"{v:.3f}" if kind == "num" else f"{int(v)}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _equity_svg(ev: Evaluation, width: int = 900, height: int = 380) -> str:
    """The stitched out-of-sample equity (each seed, their mean, every baseline) as inline SVG, with
    the folds' test starts as dotted lines: no plotting library, a few kB, sharp at any zoom."""
    import pandas as pd

    seeds = ev.summary["settings"]["seeds"]
    curves = [(f"agent seed {s}", np.cumprod(1 + ev.agent_returns[:, j]), _COLOURS[j % 10], 0.8, "")
              for j, s in enumerate(seeds)]
    curves.append(("agent, mean of seeds", np.cumprod(1 + ev.agent_returns.mean(axis=1)), "black", 2.0, ""))
    curves += [(name, np.cumprod(1 + r), _COLOURS[(len(seeds) + k) % 10], 1.0, "5,3")
               for k, (name, r) in enumerate(ev.baseline_returns.items())]
    n = len(ev.timestamps)
    lo = min(float(np.nanmin(c)) for _, c, *_ in curves)
    hi = max(float(np.nanmax(c)) for _, c, *_ in curves)
    lo, hi = (lo - 0.01, hi + 0.01) if hi - lo < 1e-9 else (lo, hi)
    L, R, T, B = 60, 10, 10, 30
    fx = lambda i: L + (width - L - R) * i / max(n - 1, 1)  # noqa: E731
    fy = lambda v: T + (height - T - B) * (hi - v) / (hi - lo)  # noqa: E731
    step = max(1, n // 1500)  # at most ~1500 points a curve
    idx = np.unique(np.r_[np.arange(0, n, step), n - 1])
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='11' font-family='sans-serif'>",
           f"<rect x='{L}' y='{T}' width='{width - L - R}' height='{height - T - B}' fill='none' stroke='#999'/>"]
    for v in np.linspace(lo, hi, 5):
        out.append(f"<text x='{L - 4}' y='{fy(v) + 4:.1f}' text-anchor='end'>{v:.3g}</text>"
                   f"<line x1='{L}' x2='{width - R}' y1='{fy(v):.1f}' y2='{fy(v):.1f}' stroke='#eee'/>")
    ts = pd.to_datetime(ev.timestamps[[0, -1]], unit="ms", utc=True)
    out += [f"<text x='{L}' y='{height - 10}'>{ts[0]:%Y-%m-%d}</text>",
            f"<text x='{width - R}' y='{height - 10}' text-anchor='end'>{ts[1]:%Y-%m-%d}</text>"]
    i = 0
    for row in (r for r in ev.summary["folds"] if r["seed"] == seeds[0]):  # the test blocks, stitched in order
        if i:
            out.append(f"<line x1='{fx(i):.1f}' x2='{fx(i):.1f}' y1='{T}' y2='{height - B}' stroke='grey' stroke-dasharray='2,3'/>")
        i += row["test_rows"][1] - row["test_rows"][0]
    for k, (name, c, colour, lw, dash) in enumerate(curves):
        pts = " ".join(f"{fx(i):.1f},{fy(c[i]):.1f}" for i in idx if np.isfinite(c[i]))
        out.append(f"<polyline fill='none' stroke='{colour}' stroke-width='{lw}' stroke-dasharray='{dash}' points='{pts}'/>"
                   f"<text x='{L + 8}' y='{T + 14 * (k + 1)}' fill='{colour}'>{html.escape(name)}</text>")
    out.append(f"<text transform='translate(14,{height / 2:.0f}) rotate(-90)' text-anchor='middle'>"
               "stitched out-of-sample equity / start</text></svg>")
    return "".join(out)


def write_report(ev: Evaluation, tensor: FactorTensor) -> Path:
    """``report.html``: headline table, DSR and PBO with their trial counts, relative metrics,
    the stitched equity, the per-fold/per-seed table, monthly returns, timings."""
    s = ev.summary
    cfg = s["settings"]
    a, d, p = s["agent"], s["dsr"], s["pbo"]
    head = ["policy", "mean OOS Sharpe", "95% CI (block bootstrap)", "total return", "max drawdown"]
    rows = [["agent"] + [_fmt(a["sharpe"]), f"{_fmt(a['sharpe_ci_low'])} .. {_fmt(a['sharpe_ci_high'])}",
                         _fmt(a["total_return"], "pct"), _fmt(a["max_drawdown"], "pct")]]
    rows += [[k, _fmt(b["sharpe"]), f"{_fmt(b['sharpe_ci_low'])} .. {_fmt(b['sharpe_ci_high'])}", _fmt(b["total_return"], "pct"),
              _fmt(b["max_drawdown"], "pct")] for k, b in s["baselines"].items()]
    fold_rows = [[f["fold"], f["seed"], f"{f['train_rows'][0]}..{f['train_rows'][1]}", f"{f['validation_rows'][0]}..{f['validation_rows'][1]}",
                  f"{f['test_start']} .. {f['test_end']}", f["checkpoint"] or "-", _fmt(f["validation"].get("sharpe")),
                  _fmt(f["test"]["sharpe"]), _fmt(f["test"]["total_return"], "pct"), _fmt(f["test"]["max_drawdown"], "pct"),
                  _fmt(f["test"]["n_trades"], "int"), f"{f['train_seconds']:.1f}", _rel(f["run_dir"], ev.out_dir)]
                 for f in s["folds"]]
    monthly = monthly_returns(np.concatenate([[1.0], np.cumprod(1 + ev.agent_returns.mean(axis=1))]),
                              np.concatenate([[ev.timestamps[0] - 1], ev.timestamps]))
    tm = s["timings"]
    pbo_text = (f"PBO = <b>{_fmt(p['pbo'])}</b> by CSCV over <b>{p['n_trials']} trials</b> (config x seed) sharing "
                f"{p['n_bars']} bars, {p['n_blocks']} blocks, {p['n_splits']} splits" if p["pbo"] is not None
                else f"PBO not computed: {p.get('reason')} ({p['n_trials']} trials, {p['n_bars']} shared bars)")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>factorgym walk-forward</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:0.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>",
        f"<h1>Walk-forward evaluation: {html.escape(s['study'])}</h1>",
        f"<p>{html.escape(', '.join(cfg['symbols']))} &middot; {cfg['timeframe']} &middot; {cfg['folds']} folds ({cfg['scheme']}), "
        f"{len(cfg['seeds'])} seeds, test blocks of {cfg['test_bars']} bars, validation {cfg['val_bars']} bars, embargo "
        f"{cfg['embargo']} bars, per-fold normalisation: {cfg['normalise']}. Sharpe ratios annualised ({cfg['bars_per_year']:.0f} bars "
        f"a year), simple returns, risk-free 0; each fold starts from the initial cash.</p>",
        "<h2>Out of sample</h2>", _table(head, rows),
        "<h2>Overfitting statistics</h2>",
        f"<p>DSR = <b>{_fmt(d['dsr'])}</b> for the mean per-bar Sharpe {_g(d['sharpe_per_bar'])} over {d['n_obs']} bars, "
        f"counting <b>{d['n_trials']} trials</b> (config x seed) in the ledger for this data and factor set, variance of their "
        f"per-bar Sharpe ratios {_g(d['sr_variance_per_bar'])} (expected maximum by luck {_g(d['expected_max_sharpe_per_bar'])}); "
        f"PSR(0) = {_fmt(d['psr'])}; skew {_fmt(d['skew'])}, kurtosis {_fmt(d['kurtosis'])}.</p>",
        f"<p>{pbo_text}.</p>",
        "<h2>Against the benchmark</h2>",
        _table(["benchmark", "alpha /yr", "beta", "information ratio", "tracking error", "correlation"],
               [[cfg["benchmark"], _fmt(a["alpha"], "pct"), _fmt(a["beta"]), _fmt(a["information_ratio"]),
                 _fmt(a["tracking_error"], "pct"), _fmt(a["correlation"])]]),
        _equity_svg(ev),
        "<h2>Folds and seeds</h2>",
        _table(["fold", "seed", "train rows", "validation rows", "test", "checkpoint", "val Sharpe", "test Sharpe",
                "test return", "test max DD", "trades", "train s", "run dir"], fold_rows),
        "<h2>Monthly returns (mean of seeds, stitched)</h2>",
        monthly.map(lambda v: "" if not math.isfinite(v) else f"{100 * v:.1f}%").to_html(),
        f"<h2>Timings</h2><p>wall {tm['wall_seconds']:.1f} s, training {tm['train_seconds']:.1f} s, evaluation beyond training "
        f"{tm['evaluation_overhead_seconds']:.1f} s; ledger: {html.escape(s['ledger'])}.</p>",
        "</body></html>",
    ]
    path = ev.report_path
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
