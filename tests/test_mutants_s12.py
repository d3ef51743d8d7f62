"""Tests for the survivors of session 12's mutation samples (scripts/mutation.py): each holds the engine
against a value worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig

HOUR = 3_600_000


def _flat(levels: list[float], T: int = 4, tradable: np.ndarray | None = None) -> FactorTensor:
    """Assets flat at ``levels`` (open = high = low = close), volume 1000."""
    o = np.array([levels] * T)
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    return FactorTensor.from_arrays(np.zeros((T, len(levels), 1)), prices, np.arange(T) * HOUR,
                                    symbols=["X", "Y", "Z"][: len(levels)], tradable=tradable)


def test_asking_the_held_weight_of_an_untradable_asset_is_no_change_not_a_rejection():
    """X at 100, Y at 50, Z at 20; frictionless, cash 1000, direct weights. Step 1 buys 50% Y = 10 Y at
    50 (cash 500). Y does not trade at bar 2. Asking 50% Y again there: Y's held weight at the open is
    10 x 50 / 1000 = 0.5 exactly, the asked weight, so its order reads "ignored_no_change"; asking 25%
    reads "rejected_untradable"; nothing moves either way, and Y trades again at bar 3.
    (phases.py:130 `mark - i` reads Y's held weight from Z's open, 10 x 20 / 1000 = 0.2, and rejects
    the unchanged 50%; with two assets that row is Y's own open, the mark on an untradable bar.)"""
    tradable = np.ones((4, 3), bool)
    tradable[2, 1] = False
    e, other = (CryptoTradingEnv(_flat([100.0, 50.0, 20.0], tradable=tradable), mapping="direct", long_only=False,
                                 initial_cash=1000.0, random_start=False,
                                 execution=ExecutionConfig.frictionless(max_leverage=1.0)) for _ in range(2))
    for env in (e, other):
        env.reset(options={"start": 0})
        _, _, _, _, info = env.step(np.array([0.0, 0.5, 0.0], np.float32))
        assert list(info["positions"]) == [0.0, 10.0, 0.0] and info["cash"] == 500.0
    _, _, _, _, info = other.step(np.array([0.0, 0.25, 0.0], np.float32))
    assert other.order_status == ["ignored_no_change", "rejected_untradable", "ignored_no_change"]
    assert list(info["positions"]) == [0.0, 10.0, 0.0] and info["cash"] == 500.0
    _, _, _, _, info = e.step(np.array([0.0, 0.5, 0.0], np.float32))
    assert e.order_status == ["ignored_no_change"] * 3
    assert list(info["positions"]) == [0.0, 10.0, 0.0] and info["cash"] == 500.0 and info["equity"] == 1000.0
    _, _, _, _, info = e.step(np.array([0.0, 0.25, 0.0], np.float32))  # (bar 3: Y trades again)
    assert e.order_status[1] == "filled" and list(info["positions"]) == [0.0, 5.0, 0.0]


def test_every_price_record_starts_a_cache_line():
    """layouts.price_records promises 64-byte aligned records (one PRICE record, 8 float64, per cache
    line: the kernels' prefetch and the step's one-line reads rely on it). Over many allocations of
    several shapes (numpy itself aligns to 16 bytes only) the array starts on a 64-byte boundary, holds
    its T x A x 8 values and owns no other memory's view. (layouts.py:167 `align: int = 63` or 65: the
    zeros are the same, but they start anywhere.)"""
    from factorgym.envs.layouts import PRICE, price_records

    addresses = set()
    for T in range(3, 23):
        for A in (1, 2, 3):
            rec = price_records(_flat([100.0, 50.0, 20.0][:A], T=T), np.ones((T, A), bool))
            assert rec.shape == (T, A, len(PRICE)) and rec.flags.c_contiguous
            assert rec.ctypes.data % 64 == 0, (T, A, rec.ctypes.data % 64)
            addresses.add(rec.ctypes.data % 4096)
    assert len(addresses) > 1  # (not one recycled block)


def test_turnover_at_an_open_of_zero_equity_is_zero_not_infinite():
    """Turnover is the traded value over the equity at the open of the fill bar, and 0 where that
    equity is not positive (tests/reference_model.py: ``traded / e_open if e_open > 0 else 0``). The
    gap of test_mutants_s11 (a short of 20 Y at 50 opening at 100: equity at the open 2000 - 2000 = 0
    exactly) closes the short, 2,000 of quote traded: turnover 0. (kernels.py:144 `equity_open > -1.0`
    takes 1 / 0 = inf as the inverse equity there: turnover inf.)"""
    from test_mutants_s11 import _gap_to_zero_equity_env

    e = _gap_to_zero_equity_env()
    _, _, _, _, info = e.step(np.array([0.0, -1.0], np.float32))
    assert info["turnover"] == 1.0  # (1000 of Y sold at an open of 1000)
    _, _, term, _, info = e.step(np.array([0.0, -1.0], np.float32))
    assert term and info["status"] == "bankrupt" and list(info["positions"]) == [0.0, 0.0]
    assert info["turnover"] == 0.0


def test_the_results_row_of_a_refused_step_is_zero_but_its_status_with_the_sharpe_reward():
    """As test_mutants_s11's refused-step test, with the differential Sharpe reward, whose reward row
    the Sharpe loop writes itself (not _log_rewards): a refused step's row is 0 but for its status,
    the reward included. (kernels.py:114 `select_nb(live, ..., 1.0)` gives a refused env reward 1.)"""
    from factorgym.envs.execution import ENV_BAD_ACTION
    from factorgym.envs.layouts import OUT

    e = CryptoTradingEnv(_flat([100.0, 50.0]), mapping="signed", long_only=False, initial_cash=1000.0,
                         random_start=False, reward="differential_sharpe",
                         execution=ExecutionConfig.frictionless(max_leverage=1.0))
    e.reset(options={"start": 0})
    e.step(np.array([0.5, 0.0], np.float32))
    with pytest.raises(ValueError, match="not in the action space"):
        e.step(np.array([np.nan, 0.0], np.float32))
    row = e.core.out[0].copy()
    assert row[OUT.status] == ENV_BAD_ACTION
    row[OUT.status] = 0.0
    assert not row.any(), row


def test_closing_everything_at_a_loss_beyond_the_equity_is_bankrupt_not_liquidated():
    """Leverage 2, no maintenance margin, taker fee 0.1%. Bar 1 sells 20 Y short at 50 (fee 1: cash
    1999, equity 999). Y opens bar 2 at 99.9: equity at the open 1999 - 1998 = 1 > 0, no breach. The
    agent closes the short: 20 Y bought at 99.9 for 1998 plus a fee of 1.998, so the cash (= the equity,
    nothing held) is 1999 - 1999.998 = -0.998: bankrupt. No position is left, so nothing is in breach of
    the margin and nothing is liquidated. (phases.py:279 `gross >= 0.0` flags the empty book as breached
    at the close: status "liquidated".)"""
    o = np.array([[100.0, 50.0], [100.0, 50.0], [100.0, 99.9], [100.0, 99.9]])
    prices = np.stack([o, o, o, o, np.full(o.shape, 1e9)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * HOUR, symbols=["X", "Y"])
    cfg = ExecutionConfig.frictionless(taker_fee=0.001, max_leverage=2.0, maintenance_margin=0.0)
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    _, _, _, _, info = e.step(np.array([0.0, -1.0], np.float32))
    assert list(info["positions"]) == [0.0, -20.0] and info["cash"] == pytest.approx(1999.0, abs=1e-9)
    _, _, term, _, info = e.step(np.array([0.0, 0.0], np.float32))
    assert list(info["positions"]) == [0.0, 0.0] and [tr["kind"] for tr in info["trades"]] == ["order"]
    assert info["equity"] == pytest.approx(-0.998, abs=1e-9) and info["cash"] == info["equity"]
    assert term and info["status"] == "bankrupt"


def test_a_long_only_account_has_no_margin_check_whatever_its_maintenance_margin():
    """Long-only accounts borrow nothing, so the margin checks (intrabar and at the close) are for
    margin accounts only (phases.settle_phases_nb; tests/reference_model.py: ``not long_only and ...``).
    A maintenance margin of 1.5 (valid: any finite value >= 0) on a long-only account holding 100% X
    (equity 1000 = its gross exposure, under 1.5 x 1000) liquidates nothing: status ok, X kept.
    (phases.py:250 `long_only < 0.0` reads every account as a margin account at the close: the
    long-only book is liquidated.)"""
    e = CryptoTradingEnv(_flat([100.0, 50.0]), mapping="direct", long_only=True, initial_cash=1000.0,
                         random_start=False,
                         execution=ExecutionConfig.frictionless(max_leverage=1.0, maintenance_margin=1.5))
    e.reset(options={"start": 0})
    for kinds in (["order"], []):  # (buys 10 X, then holds them)
        _, _, term, _, info = e.step(np.array([1.0, 0.0], np.float32))
        assert not term and info["status"] == "ok" and list(info["positions"]) == [10.0, 0.0]
        assert info["equity"] == 1000.0 and [tr["kind"] for tr in info["trades"]] == kinds
