"""Baseline policies, run_baselines, the table, and `factorgym backtest-baselines`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from factorgym.envs.backtest import backtest
from factorgym.envs.baselines import (
    BASELINE_NAMES, BuyAndHoldPolicy, CashPolicy, EqualWeightPolicy, RandomPolicy, format_table,
    make_baseline, run_baselines,
)
from factorgym.envs.config import ExecutionConfig
from factorgym.errors import ConfigError
from test_backtest import FEES, make_tensor

FREE = ExecutionConfig.frictionless()
EXPECTED = list(BASELINE_NAMES)


def run(tensor, policy, execution=FREE, **kw):
    return backtest(tensor, policy, mapping="direct", execution=execution, **kw)


def test_cash_is_flat_even_with_fees():
    res = run(make_tensor(A=3), CashPolicy(3), execution=ExecutionConfig())
    assert (res.equity == 10_000).all() and (res.cash == 10_000).all()
    assert len(res.trades) == 0 and not res.weights.any()
    assert res.metrics["total_return"] == 0 and res.metrics["max_drawdown"] == 0 and res.metrics["fees"] == 0


def test_buy_and_hold_zero_cost_equals_price_ratio():
    tensor = make_tensor(A=3, seed=2)
    res = run(tensor, BuyAndHoldPolicy(3))
    p = tensor.prices
    # 1/3 of the cash in each asset at the open of bar 1, then held: value = sum_i E/3 * close_t / open_1
    expect = 10_000 / 3 * (p[1:, :, 3] / p[1, :, 0]).sum(axis=1)
    np.testing.assert_allclose(res.equity[1:], expect, rtol=1e-9)
    assert len(res.trades) == 3 and (res.trades["time"] == res.trades["time"].iloc[0]).all()
    np.testing.assert_array_equal(res.positions[1:], np.broadcast_to(res.positions[1], res.positions[1:].shape))


def test_buy_and_hold_with_fee_is_hand_computable():
    tensor = make_tensor(A=1, seed=3)
    res = run(tensor, BuyAndHoldPolicy(1), execution=FEES)
    p = tensor.prices
    qty = 10_000 / (p[1, 0, 0] * 1.001)  # cash = qty x open x (1 + fee)
    assert res.positions[-1, 0] == pytest.approx(qty, rel=1e-9)
    assert res.equity[-1] == pytest.approx(qty * p[-1, 0, 3], rel=1e-9)
    assert res.metrics["fees"] == pytest.approx(qty * p[1, 0, 0] * 0.001, rel=1e-9)


def test_equal_weight_rebalances_to_one_over_a_at_each_fill():
    tensor = make_tensor(A=3, seed=5)
    res = run(tensor, EqualWeightPolicy(3))
    held_at_open = res.positions[1:] * tensor.prices[1:, :, 0]  # value of each holding at the fill price
    mean = held_at_open.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(held_at_open, np.broadcast_to(mean, held_at_open.shape), rtol=1e-9)
    assert res.metrics["exposure"] > 0.99


def test_equal_weight_every_n_bars_trades_only_then():
    tensor = make_tensor(A=2, seed=6)
    res = run(tensor, EqualWeightPolicy(2, rebalance_every=10), execution=FEES)
    rows = np.searchsorted(res.timestamps, res.trades["time"].dt.as_unit("ms").astype("int64").to_numpy())
    assert set(rows) == set(range(1, len(res.timestamps), 10))  # decisions at calls 0, 10, ... fill one bar later
    every = run(tensor, EqualWeightPolicy(2, rebalance_every=1), execution=FEES)
    assert every.metrics["fees"] > res.metrics["fees"]


def test_random_is_seeded_and_long_only():
    tensor = make_tensor(A=3)
    a = run(tensor, RandomPolicy(3, seed=1), execution=FEES)
    b = run(tensor, RandomPolicy(3, seed=1), execution=FEES)
    c = run(tensor, RandomPolicy(3, seed=2), execution=FEES)
    assert a.equity.tobytes() == b.equity.tobytes() and a.trades.equals(b.trades)
    assert a.equity.tobytes() != c.equity.tobytes()
    pol = RandomPolicy(4, seed=0)
    obs = {"mask": np.ones((1, 4)), "portfolio": np.zeros(7)}
    w = np.array([pol(obs) for _ in range(200)])
    assert (w >= 0).all() and (w.sum(axis=1) <= 1 + 1e-12).all() and np.unique(w.round(12), axis=0).shape[0] == 200
    pol.reset()
    np.testing.assert_array_equal(pol(obs), w[0])  # reset replays the same draws


def test_run_baselines_and_table():
    tensor = make_tensor(A=2)
    results = run_baselines(tensor, execution=FEES, seed=3)
    assert list(results) == EXPECTED
    assert results["cash"].metrics["total_return"] == 0
    for r in results.values():
        np.testing.assert_array_equal(r.timestamps, tensor.timestamps)
    table = format_table(results)
    lines = table.splitlines()
    assert "Sharpe" in lines[0] and len(lines) == 3 + len(EXPECTED)  # + the short-span footnote
    assert [ln.split()[0] for ln in lines[2:-1]] == EXPECTED
    assert lines[-1].startswith("\u2020 annualised from a span of 5 days (< 365)")


def test_docstring_examples_run():
    import doctest
    import importlib

    # the package attribute factorgym.envs.backtest is the function; the module is reached by name
    bt = importlib.import_module("factorgym.envs.backtest")
    bl = importlib.import_module("factorgym.envs.baselines")

    for mod in (bt, bl):
        r = doctest.testmod(mod)
        assert r.attempted > 0 and r.failed == 0, mod.__name__


def test_constructor_errors():
    with pytest.raises(ConfigError, match="unknown"):
        make_baseline("momentum", 2)
    with pytest.raises(ConfigError, match="n_assets"):
        CashPolicy(0)
    with pytest.raises(ConfigError, match="rebalance_every"):
        EqualWeightPolicy(2, rebalance_every=0)


@pytest.fixture
def tensor_dir(tmp_path):
    return make_tensor(A=2, T=200).save(tmp_path / "tensor")


def test_cli_end_to_end(tensor_dir, tmp_path, subprocess_env):
    report = tmp_path / "report.html"
    out = subprocess.run(
        [sys.executable, "-m", "factorgym", "backtest-baselines", "--tensor", str(tensor_dir), "--json",
         "--fee-bps", "5", "--report", str(report), "--start", "2024-01-02"],
        capture_output=True, text=True, env=subprocess_env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert list(data) == EXPECTED
    assert data["cash"]["total_return"] == 0.0 and data["cash"]["sharpe"] is None  # nan -> null
    assert data["equal_weight"]["n_bars"] == 200 - 24 - 1  # starts at 2024-01-02 00:00 = bar 24
    html = report.read_text()
    assert "equal_weight" in html and "data:image/png;base64," in html


def test_cli_table_and_errors(tensor_dir, capsys):
    from factorgym.cli import main

    assert main(["backtest-baselines", "--tensor", str(tensor_dir), "--baselines", "cash,random", "--frictionless"]) == 0
    out = capsys.readouterr().out
    assert "cash" in out and "random" in out and "Sharpe" in out and "buy_and_hold" not in out
    assert main(["backtest-baselines", "--tensor", str(tensor_dir / "nope")]) == 1
    err = capsys.readouterr().err
    assert "meta.json" in err and "Traceback" not in err
    assert main(["backtest-baselines", "--tensor", str(tensor_dir), "--baselines", "cash,momentum"]) == 1
    assert "momentum" in capsys.readouterr().err
    assert main(["backtest-baselines", "--tensor", str(tensor_dir), "--fee-bps", "-3"]) == 1
