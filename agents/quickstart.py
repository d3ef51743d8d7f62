"""The main job on the shipped sample data, end to end and offline.

It grows with the project; today it covers data -> factors -> environment -> baselines:

1. load the shipped real candles (Bitfinex BTC/USD 1h; Bitstamp BTC, ETH, LTC 1d) into a store
   under ``out/store`` and print the validation summary;
2. build a point-in-time factor tensor for each (``configs/factors/build_sample_*.yaml``) and save it
   under ``out/tensors/``;
3. split each in time (70 % train, 15 % validation, 15 % test, with an embargo) and backtest the
   baselines (cash, buy-and-hold, equal weight, random) on the test split through the trading env,
   printing their metrics and writing ``out/report_<name>.html``.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

# (name, packaged build config, embargo in bars between splits)
JOBS = (
    ("bitfinex_btcusd_1h", "factors/build_sample_bitfinex.yaml", 24),
    ("bitstamp_usd_1d", "factors/build_sample_bitstamp.yaml", 7),
)


def packaged_config(rel: str) -> Path:
    """Path of a YAML shipped in ``factorgym.configs`` (works from a wheel as well as a checkout)."""
    return Path(str(resources.files("factorgym.configs").joinpath(rel)))


def run_quickstart(out: str | Path = "runs/quickstart", config: str | Path | None = None, progress: bool = True) -> str:
    """Run the job; returns the text summary it also logs. ``config`` replaces the packaged build configs."""
    from factorgym.data_layer.build import build_from_config
    from factorgym.data_layer.sample import load_sample_into_store
    from factorgym.data_layer.splits import split_fractions
    from factorgym.data_layer.store import CandleStore
    from factorgym.envs.report import write_html_report
    from factorgym.envs.baselines import format_table, run_baselines

    out = Path(out)
    store = CandleStore(out / "store")
    loaded = load_sample_into_store(store)
    lines = [f"store {store.root}: {len(loaded)} series loaded from the shipped samples"]
    for e in store.entries():
        lines.append(f"  {e.source:16s} {e.symbol:8s} {e.timeframe:3s} {e.rows:6d} bars, {e.n_gaps} missing")

    jobs = [(Path(config).stem, Path(config), 24)] if config else [(n, packaged_config(c), emb) for n, c, emb in JOBS]
    for name, cfg, embargo in jobs:
        tensor = build_from_config(cfg, store=store, progress=progress)
        saved = tensor.save(out / "tensors" / name)
        parts = split_fractions(tensor, (0.7, 0.15, 0.15), embargo=embargo)
        test = parts["test"]
        results = run_baselines(test)
        report = write_html_report(out / f"report_{name}.html", results)
        untradable = 1.0 - float(tensor.tradable.mean())
        lines += [
            "",
            f"== {name}: tensor {tensor.n_bars} bars x {tensor.n_assets} assets x {tensor.n_features} features "
            f"({untradable:.1%} untradable) saved to {saved}",
            f"   baselines on the test split ({test.n_bars} bars, embargo {embargo}):",
            format_table(results),
            f"   report: {report}",
        ]
    summary = "\n".join(lines)
    log.debug(summary)
    return summary
