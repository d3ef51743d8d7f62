"""Tests for the survivors of session 11's mutation work (scripts/mutation.py): each holds the engine
against a value worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig


def _gap_to_zero_equity_env() -> CryptoTradingEnv:
    """X flat at 100 and untradable at bar 2; Y at 50, opening bar 2 at 100. Frictionless, leverage 2,
    no maintenance margin."""
    o = np.array([[100.0, 50.0], [100.0, 50.0], [100.0, 100.0], [100.0, 100.0]])
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    tradable = np.ones((4, 2), bool)
    tradable[2, 0] = False
    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * 3_600_000, symbols=["X", "Y"],
                                 tradable=tradable)
    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0)
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    return e


def test_a_weight_asked_of_an_untradable_asset_not_held_at_an_open_of_zero_equity_is_rejected_untradable():
    """Bar 1's open: -100% Y sells 20 Y at 50, cash 2000, X not held. Bar 2: Y opens at 100, so the
    equity at the open is 2000 - 20 x 100 = 0 exactly (the env is still live: the last close was at
    1000). The agent asks 50% X, which does not trade at bar 2: X's held weight is 0 (no units, at any
    equity), the asked 0.5 differs, so X's order reads "rejected_untradable"; Y's short is closed and
    the account is bankrupt. (phases.py:117 `equity_open >= 0.0` takes 1 / 0 = inf as the inverse
    equity there: X's held weight becomes 0 x 100 x inf = NaN, which compares unequal to nothing, and
    the order would read "ignored_no_change".)"""
    e = _gap_to_zero_equity_env()
    _, _, _, _, info = e.step(np.array([0.0, -1.0], np.float32))
    assert info["status"] == "ok" and info["cash"] == 2000.0 and list(info["positions"]) == [0.0, -20.0]
    assert info["equity"] == 1000.0
    _, _, term, _, info = e.step(np.array([0.5, -1.0], np.float32))
    assert info["status"] == "bankrupt" and term and info["equity"] == pytest.approx(0.0, abs=1e-12)
    assert list(info["positions"]) == [0.0, 0.0]
    assert e.order_status[0] == "rejected_untradable"



def test_a_long_only_account_under_one_unit_of_quote_scales_its_buys_to_its_cash():
    """Long-only, taker fee 0.1%, no slippage, initial cash 0.5 (a valid, if small, account). 100% X at
    100 plans 0.5 / 100 = 0.005 X costing 0.5 x 1.001 = 0.5005 > 0.5 cash, so the buy is scaled by
    0.5 / 0.5005 x (1 - 1e-12): 0.005 / 1.001 x (1 - 1e-12) X, and the cash stays >= 0 (step 5: cash
    never goes negative). (execution.py:212 `planned_cost > 1.0` would not scale a cost under 1: 0.005 X
    bought, cash -0.0005.)"""
    o = np.array([[100.0, 50.0]] * 3)
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((3, 2, 1)), prices, np.arange(3) * 3_600_000, symbols=["X", "Y"])
    cfg = ExecutionConfig.frictionless(taker_fee=0.001, max_leverage=1.0)
    e = CryptoTradingEnv(t, mapping="direct", long_only=True, execution=cfg, initial_cash=0.5, random_start=False)
    e.reset(options={"start": 0})
    _, _, _, _, info = e.step(np.array([1.0, 0.0], np.float32))
    qty = 0.005 / 1.001 * (1.0 - 1e-12)
    assert info["positions"][0] == pytest.approx(qty, rel=1e-12) and info["positions"][1] == 0.0
    assert 0.0 <= info["cash"] <= 1e-12
    assert info["fees"] == pytest.approx(qty * 100.0 * 0.001, rel=1e-12)


def test_a_memory_mapped_one_asset_tensor_observes_its_features(tmp_path):
    """One asset, two features, window 2: the first observation (decision bar 1) holds the feature rows
    of bars 0 and 1 as stored, [1, 2, 3, 4], also when the tensor is memory-mapped (the raw path writes
    the rows itself: F = features per bar / A = 2). (actions.py:129 `A > 1` would take F = 0 for one
    asset and leave the mapped tensor's feature rows unwritten.)"""
    feats = np.array([[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]], [[7.0, 8.0]]], np.float32)
    o = np.full((4, 1), 100.0)
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    FactorTensor.from_arrays(feats, prices, np.arange(4) * 3_600_000, symbols=["X"]).save(tmp_path / "t")
    mapped = FactorTensor.load(tmp_path / "t", mmap=True)
    e = CryptoTradingEnv(mapped, window=2, mapping="direct", random_start=False)
    obs, _ = e.reset(options={"start": 1})
    assert list(obs[:4]) == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("shape", [(4, 3), (5, 2), (4, 2, 1)])
def test_a_funding_array_of_the_wrong_shape_is_refused_naming_the_field_and_both_shapes(shape):
    """The env reads ``tensor.funding`` from any tensor object (FactorTensor checks its own at
    construction; one set afterwards, or a tensor of another class, is not): a [T, A] = [4, 2] tensor
    whose funding is [4, 3], [5, 2] or [4, 2, 1] is refused with one clear error naming the field and
    both shapes, not numpy's broadcasting error. (layouts.py:161 `funding.shape < (T, A)` lets every
    one of these shapes through: each compares greater than (4, 2) as tuples.)"""
    from factorgym.errors import DataValidationError

    o = np.full((4, 2), 100.0)
    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), np.stack([o, o, o, o, o], axis=-1), np.arange(4) * 3_600_000,
                                 symbols=["X", "Y"])
    t.funding = np.zeros(shape)
    with pytest.raises(DataValidationError, match=rf"tensor.funding must be \[T, A\] = \(4, 2\), got \({shape[0]}, "):
        CryptoTradingEnv(t, mapping="direct", random_start=False)


def test_a_negative_direct_weight_of_a_long_only_env_is_clipped_to_zero_not_sold_short():
    """Long-only, direct mapping, frictionless, X at 100 and Y at 50: the action [-0.5, 0.5] is outside
    the action space [0, 1]; the kernel clips the weights to the long-only constraints (>= 0, summing
    to <= 1): X 0 (no order: nothing held), Y 0.5 x 1000 / 50 = 10 units, cash 500. (actions.py:71
    `w == 0.0` instead of `w < 0.0` would keep X at -0.5: 5 X sold short in a long-only account.)"""
    o = np.array([[100.0, 50.0]] * 3)
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((3, 2, 1)), prices, np.arange(3) * 3_600_000, symbols=["X", "Y"])
    e = CryptoTradingEnv(t, mapping="direct", long_only=True, execution=ExecutionConfig.frictionless(max_leverage=1.0),
                         initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    _, _, _, _, info = e.step(np.array([-0.5, 0.5], np.float32))
    assert list(info["positions"]) == [0.0, 10.0] and info["cash"] == 500.0
    assert list(info["weights"]) == [0.0, 0.5] and e.order_status == ["ignored_no_change", "filled"]


def test_the_results_row_of_a_refused_step_is_zero_but_its_status():
    """The core's results row of an env that did not step is zero but for its status (kernels._finish:
    "zero for envs that did not step"; core.step: "out[:, OUT.status] < 0 marks them"). Frictionless,
    X at 100: a first step buys 5 X (cash 500, equity 1000); a second with NaN in the action is
    refused (ValueError), and the env's row of ``core.out`` then reads 0 for cash, equity, weights,
    positions and every other field, and ENV_BAD_ACTION as status; the env's state (cash 500) has
    not moved. (kernels.py:140 would leave cash -1.0 in that row.)"""
    from factorgym.envs.execution import ENV_BAD_ACTION
    from factorgym.envs.layouts import OUT, STATE

    o = np.array([[100.0, 50.0]] * 4)
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * 3_600_000, symbols=["X", "Y"])
    e = CryptoTradingEnv(t, mapping="signed", long_only=False, initial_cash=1000.0, random_start=False,
                         execution=ExecutionConfig.frictionless(max_leverage=1.0))
    e.reset(options={"start": 0})
    _, _, _, _, info = e.step(np.array([0.5, 0.0], np.float32))
    assert info["cash"] == 500.0 and list(info["positions"]) == [5.0, 0.0]
    with pytest.raises(ValueError, match="not in the action space"):
        e.step(np.array([np.nan, 0.0], np.float32))
    row = e.core.out[0].copy()
    assert row[OUT.status] == ENV_BAD_ACTION < 0
    row[OUT.status] = 0.0
    assert not row.any(), row
    assert e.core.state[0, STATE.cash] == 500.0  # (the env did not move)


def test_a_vector_envs_untradable_close_row_is_cleared_by_its_next_step_in_any_lane():
    """Two envs in one block of the vector env, frictionless, positions in untradable assets closed at
    their mark. X (100 throughout) does not trade at bar 2. Step 1: env 0 holds cash, env 1 buys 50%
    X = 5 X. Step 2 (fill bar 2): env 1's 5 X are closed at the mark, 100 (an untradable-close fill
    row). Step 3 (fill bar 3): neither env trades. The fill rows are the last step's (layouts.py: a
    rare row without a fill is all 0), so env 1's untradable-close row is zero again after step 3.
    (kernels.py:179 `u0 - np.uint64(j)` looks for a rare fill still held in the wrong env's column
    and leaves env 1's stale close in place.)"""
    from factorgym.envs import CryptoTradingVectorEnv

    o = np.array([[100.0, 50.0]] * 5)
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    tradable = np.ones((5, 2), bool)
    tradable[2, 0] = False
    t = FactorTensor.from_arrays(np.zeros((5, 2, 1)), prices, np.arange(5) * 3_600_000, symbols=["X", "Y"],
                                 tradable=tradable)
    v = CryptoTradingVectorEnv(t, 2, mapping="direct", long_only=False, initial_cash=1000.0, random_start=False,
                               execution=ExecutionConfig.frictionless(max_leverage=1.0, on_untradable="close"))
    v.reset()
    v.step(np.array([[0.0, 0.0], [0.5, 0.0]], np.float32))
    assert list(v.core.state[1, -2:]) == [5.0, 0.0]  # (env 1's positions)
    v.step(np.array([[0.0, 0.0], [0.5, 0.0]], np.float32))
    assert v.trades(1) == [{"timestamp": 2 * 3_600_000, "symbol": "X", "side": "sell", "quantity": 5.0,
                            "price": 100.0, "fee": 0.0, "slippage_cost": 0.0, "kind": "untradable_close"}]
    assert list(v.core.state[1, -2:]) == [0.0, 0.0]
    v.step(np.zeros((2, 2), np.float32))
    assert v.trades(0) == v.trades(1) == []
    assert not v.core.fills[:, 2:].any(), v.core.fills[1]  # (rows A..3A: untradable closes, liquidations)
