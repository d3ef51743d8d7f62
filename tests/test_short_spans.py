"""Honest numbers on short spans (issue 11, item 5): metrics state their span, annualised figures
of a run shorter than a year carry a dagger and a footnote, undefined values print as n/a."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs.backtest import backtest, format_metric
from factorgym.envs.baselines import format_table, run_baselines
from factorgym.envs.config import ExecutionConfig
from factorgym.envs.metrics import MIN_ANNUALISE_DAYS, compute_metrics, is_short_span
from factorgym.envs.report import write_html_report

DAY = 86_400_000
T0 = 1_704_067_200_000
FREE = ExecutionConfig.frictionless()


def _tensor(T: int, A: int, listing=None, seed: int = 0, step: int = DAY) -> FactorTensor:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.001, 0.02, (T, A)), axis=0))
    opn = close * np.exp(rng.normal(0, 0.003, (T, A)))
    prices = np.stack([opn, np.maximum(opn, close) * 1.001, np.minimum(opn, close) * 0.999, close,
                       np.full((T, A), 1e9)], axis=-1)
    tradable = np.ones((T, A), dtype=bool)
    for a, bar in (listing or {}).items():
        tradable[:bar, a] = False
        prices[:bar, a] = np.nan  # before listing: no price, never zero
    return FactorTensor.from_arrays(rng.normal(size=(T, A, 2)), prices, T0 + np.arange(T) * step,
                                    symbols=[f"C{i}/USD" for i in range(A)], tradable=tradable,
                                    meta={"timeframe": "1d"})


# ---------------------------------------------------------------- item 5: short spans
def test_metrics_state_their_span_and_flag_annualised_figures_below_a_year():
    eq = 10_000 * np.exp(np.linspace(0, 0.10, 109))  # +10.5 % over 108 days
    m = compute_metrics(eq, bars_per_year=365, timestamps=T0 + DAY * np.arange(109))
    assert m["span_days"] == pytest.approx(108) and is_short_span(m) and MIN_ANNUALISE_DAYS == 365
    assert m["cagr"] == pytest.approx(math.exp(0.10 * 365 / 108) - 1)  # the value stays, and is flagged
    assert format_metric("cagr", m["cagr"], short_span=True).endswith("\u2020")
    assert not format_metric("total_return", m["total_return"], short_span=True).endswith("\u2020")
    long = compute_metrics(eq, bars_per_year=365 / 4, timestamps=T0 + 4 * DAY * np.arange(109))
    assert long["span_days"] == pytest.approx(432) and not is_short_span(long)


def test_short_backtest_summary_and_table_carry_the_caveat():
    tensor = _tensor(109, 2)
    res = backtest(tensor, lambda obs: np.full(2, 0.5), mapping="direct", execution=FREE)
    text = res.summary()
    assert re.search(r"CAGR +-?[\d.]+%\u2020", text) and re.search(r"Sharpe +-?[\d.]+\u2020", text)
    assert "\u2020 annualised from a span of 108 days (< 365)" in text and "span" in text and "108 d" in text
    table = format_table({"p": res})
    assert "108 d" in table and table.splitlines()[-1].startswith("\u2020 annualised from a span of 108 days")
    full = backtest(_tensor(400, 2), lambda obs: np.full(2, 0.5), mapping="direct", execution=FREE)
    assert "\u2020" not in full.summary()


def test_flat_cash_sharpe_prints_n_a(tmp_path):
    res = run_baselines(_tensor(60, 2), names=("cash",), execution=FREE)["cash"]
    assert math.isnan(res.metrics["sharpe"])
    assert re.search(r"Sharpe +n/a", res.summary()) and "nan" not in res.summary()
    html = write_html_report(tmp_path / "r.html", {"cash": res}).read_text()
    assert "n/a" in html and ">nan<" not in html
