"""The step's documented rules (envs/execution.py "Order of operations", envs/phases.py,
envs/kernels.py, envs/layouts.py) through CryptoTradingEnv / CryptoTradingVectorEnv /
PortfolioCore: sells before buys, the long-only scaling, order statuses, fees per symbol and side,
borrow and funding per bar, equity / peak / drawdown / turnover per step, bankruptcy at exactly 0
equity, truncation at exactly the end bar, the reward variants on 2-3 bars, the observation layout
against hand-built arrays, autoreset rows and envs that do not step. Every expected value is worked
by hand (comments) or by a few lines of plain Python here, never read back from the kernel."""

from __future__ import annotations

import math
import types

import numba
import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv, ExecutionConfig, RewardConfig
from factorgym.envs import execution as ex
from factorgym.envs.core import PortfolioCore
from factorgym.envs.intrinsics import sqrt_nb
from factorgym.errors import DataValidationError

from tests._engine_rules_data import HOUR, act, env, tensor

FLAT = [[100.0, 50.0]] * 4
NAN = float("nan")
LS = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0)


def trades(info):
    return [(t["symbol"], t["side"], t["kind"], t["quantity"], t["price"]) for t in info["trades"]]


# ---------------------------------------------------------------------- sells before buys, long-only scaling
def test_sells_fill_before_buys_so_a_long_only_rotation_needs_no_spare_cash():
    # all in X (10 at 100, cash 0), then all in Y: selling 10 X pays exactly for 20 Y at 50; bought
    # first, the buy would find no cash and be scaled to nothing
    e = env(tensor(FLAT), long_only=True)
    _, _, _, _, info = e.step(act(1.0, 0.0))
    assert list(info["positions"]) == [10.0, 0.0] and info["cash"] == 0.0
    _, _, _, _, info = e.step(act(0.0, 1.0))
    assert trades(info) == [("X", "sell", "order", 10.0, 100.0), ("Y", "buy", "order", 20.0, 50.0)]
    assert list(info["positions"]) == [0.0, 20.0] and info["cash"] == 0.0
    assert info["turnover"] == 2.0  # (1000 + 1000) / 1000 at the open


def test_long_only_buys_that_exceed_the_cash_with_their_fee_are_scaled_to_it():
    # 100% X, fee 1/1024: 10 X would cost 1000 x 1025/1024 > 1000: every buy x 1000 / (1000 x 1025/1024)
    # x (1 - 1e-12) = 1024/1025 (1 - 1e-12): 9.990243902 X; the cash left is 1000 x 1e-12, never < 0
    cfg = ExecutionConfig.frictionless(taker_fee=1 / 1024, max_leverage=1.0)
    e = env(tensor(FLAT), cfg, long_only=True)
    _, _, _, _, info = e.step(act(1.0, 0.0))
    assert info["positions"][0] == pytest.approx(10 * 1024 / 1025, rel=1e-11)
    assert 0.0 <= info["cash"] <= 1e-8 and e.order_status == ["filled", "ignored_no_change"]


def test_long_only_scaling_holds_for_a_cash_below_one_quote_unit():
    # initial cash 0.5: the planned cost 0.5 x 1025/1024 exceeds the cash though it is below 1;
    # scaled: 0.005 x 1024/1025 X, cash >= 0 (unscaled it would be 0.5 - 0.5 x 1025/1024 < 0)
    cfg = ExecutionConfig.frictionless(taker_fee=1 / 1024, max_leverage=1.0)
    e = env(tensor(FLAT), cfg, long_only=True, initial_cash=0.5)
    _, _, _, _, info = e.step(act(1.0, 0.0))
    assert info["positions"][0] == pytest.approx(0.005 * 1024 / 1025, rel=1e-11)
    assert 0.0 <= info["cash"] <= 1e-11


def test_long_only_buys_in_two_assets_are_scaled_by_the_same_factor():
    # X 0.5, Y 0.5 of 1000 with fee 1/1024: 5 X + 10 Y cost 1000 x 1025/1024 -> both x 1024/1025
    cfg = ExecutionConfig.frictionless(taker_fee=1 / 1024, max_leverage=1.0)
    e = env(tensor(FLAT), cfg, long_only=True)
    _, _, _, _, info = e.step(act(0.5, 0.5))
    k = 1024 / 1025
    assert list(info["positions"]) == pytest.approx([5 * k, 10 * k], rel=1e-11)
    assert info["fees"] == pytest.approx(1000 * k / 1024, rel=1e-11) and info["cash"] >= 0.0


# ---------------------------------------------------------------------- fees by symbol and side
@pytest.mark.parametrize("side, fx, fy", [("taker", 1 / 1024, 1 / 512), ("maker", 1 / 4096, 1 / 2048)])
def test_fees_are_per_symbol_and_taken_from_the_side_in_use(side, fx, fy):
    cfg = ExecutionConfig.frictionless(taker_fee={"X": 1 / 1024, "Y": 1 / 512},
                                       maker_fee={"X": 1 / 4096, "Y": 1 / 2048}, fee_side=side, max_leverage=2.0)
    e = env(tensor(FLAT), cfg)
    _, _, _, _, info = e.step(act(0.5, -0.5))  # buy 5 X (500), sell 10 Y (500)
    assert [t["fee"] for t in info["trades"]] == [500 * fy, 500 * fx]  # (the sell first)
    assert info["fees"] == 500 * fx + 500 * fy
    assert info["cash"] == 1000.0 - 500 - 500 * fx + 500 - 500 * fy


# ---------------------------------------------------------------------- order statuses
def test_an_unchanged_target_sends_no_order():
    # the same weights again on unchanged prices, and 100% X held while X moves (target = held)
    e = env(tensor([[100.0, 50.0], [100.0, 50.0], [100.0, 50.0], [125.0, 50.0], [125.0, 50.0]]), long_only=True)
    e.step(act(0.5, 0.25))
    _, _, _, _, info = e.step(act(0.5, 0.25))
    assert e.order_status == ["ignored_no_change", "ignored_no_change"]
    assert info["trades"] == [] and info["fees"] == 0.0 and info["turnover"] == 0.0
    e = env(tensor([[100.0, 50.0], [100.0, 50.0], [125.0, 50.0], [80.0, 50.0]]), long_only=True)
    e.step(act(1.0, 0.0))
    for _ in range(2):  # X opens at 125, then 80: the target 1.0 x E_open / open is the 10 held
        _, _, _, _, info = e.step(act(1.0, 0.0))
        assert e.order_status == ["ignored_no_change", "ignored_no_change"] and info["trades"] == []


@pytest.mark.parametrize("cfg, a, want", [
    (dict(lot_step=1.0), (0.05, 0.0), "ignored_lot"),               # 0.5 X: no whole lot
    (dict(min_amount=1.0), (0.05, 0.0), "ignored_min_amount"),      # 0.5 X < 1
    (dict(min_amount=0.5), (0.05, 0.0), "filled"),                  # exactly the minimum amount
    (dict(min_notional=50.0), (0.05, 0.0), "filled"),               # 0.5 x 100 = 50: exactly the minimum
    (dict(min_notional=50.5), (0.05, 0.0), "ignored_min_notional"),
])
def test_each_order_reports_its_status(cfg, a, want):
    e = env(tensor(FLAT), ExecutionConfig.frictionless(max_leverage=1.0, **cfg), long_only=True)
    e.step(act(*a))
    assert e.order_status == [want, "ignored_no_change"]


@pytest.mark.parametrize("policy", ["freeze", "close"])
def test_an_asset_that_stops_trading_is_rejected_and_frozen_or_closed_at_its_last_close_with_the_fee(policy):
    # 5 X bought at 100, X closes bar 1 at 110 and does not trade at bar 2; fee 1/1024, slippage 1/8
    o = [[100.0, 50.0], [100.0, 50.0], [NAN, 50.0], [120.0, 50.0]]
    c = [[100.0, 50.0], [110.0, 50.0], [NAN, 50.0], [120.0, 50.0]]
    tradable = np.array([[1, 1], [1, 1], [0, 1], [1, 1]], bool)
    cfg = ExecutionConfig.frictionless(taker_fee=1 / 1024, slippage_bps=1250.0, max_leverage=1.0,
                                       on_untradable=policy)
    e = env(tensor(o, c, tradable=tradable), cfg, long_only=True)
    _, _, _, _, info = e.step(act(0.5, 0.0))  # buy 5 X at 112.5 (1/8 slippage): 562.5 + fee 562.5/1024
    q, cash = 5.0, 1000.0 - 562.5 - 562.5 / 1024
    assert info["positions"][0] == q and info["cash"] == cash
    _, _, _, _, info = e.step(act(0.25, 0.0))
    assert e.order_status[0] == "rejected_untradable"
    if policy == "freeze":
        assert info["trades"] == [] and info["positions"][0] == q and info["equity"] == pytest.approx(cash + q * 110.0)
    else:  # sold at the last close 110, no slippage, the fee on 110 q
        assert trades(info) == [("X", "sell", "untradable_close", q, 110.0)]
        assert info["fees"] == pytest.approx(q * 110.0 / 1024, rel=1e-12) and info["slippage_cost"] == 0.0
        assert info["cash"] == pytest.approx(cash + q * 110.0 * 1023 / 1024, rel=1e-12) and info["positions"][0] == 0.0


def test_an_untradable_asset_whose_target_is_the_held_weight_is_no_change_not_rejected():
    o = [[100.0, 50.0], [100.0, 50.0], [NAN, 50.0], [100.0, 50.0]]
    tradable = np.array([[1, 1], [1, 1], [0, 1], [1, 1]], bool)
    e = env(tensor(o, tradable=tradable), long_only=True)
    e.step(act(0.5, 0.0))
    e.step(act(0.5, 0.0))  # X at its last close 100 is still 0.5 of the 1000 equity
    assert e.order_status == ["ignored_no_change", "ignored_no_change"]


# ---------------------------------------------------------------------- borrow and funding
@pytest.mark.parametrize("w, cash, short", [
    ((0.5, 0.0), 500.0, 0.0),         # no short, no borrowed cash: nothing
    ((1.5, 0.0), -500.0, 0.0),        # 1500 of X on 1000: 500 of cash borrowed
    ((1.0, -1.0), 1000.0, 1000.0),    # 20 Y short = 1000 of short notional at the close
    ((1.5, -0.25), -250.0, 250.0),    # 250 borrowed cash + 250 short notional
    ((1.5, -0.5), 0.0, 500.0),        # cash exactly 0 after the fills: only the short
])
def test_borrow_is_paid_each_bar_on_short_notional_plus_borrowed_cash(w, cash, short):
    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0, borrow_rate_per_bar=1 / 1024)
    e = env(tensor(FLAT), cfg)
    _, _, _, _, info = e.step(act(*w))
    borrow = (short + max(-cash, 0.0)) / 1024
    assert info["borrow_cost"] == borrow and info["cash"] == cash - borrow
    # held over the next bar: charged again, on the cash now borrowed (the first charge included)
    cash -= borrow
    borrow = (short + max(-cash, 0.0)) / 1024
    _, _, _, _, info = e.step(act(NAN, NAN))
    assert info["borrow_cost"] == pytest.approx(borrow, rel=1e-15)
    assert info["cash"] == pytest.approx(cash - borrow, rel=1e-15)


def test_funding_longs_pay_and_shorts_receive_on_the_close_notional():
    # bar 1: X 1/1024, Y 1/512. 5 X long at close 100 pays 500/1024; 10 Y short at 50 receives 500/512
    funding = np.zeros((4, 2))
    funding[1] = [1 / 1024, 1 / 512]
    e = env(tensor(FLAT, funding=funding), LS)
    _, _, _, _, info = e.step(act(0.5, -0.5))
    assert info["funding"] == 500 / 1024 - 1000 / 1024
    assert info["cash"] == 1000.0 + 500 / 1024 and info["equity"] == 1000.0 + 500 / 1024
    _, _, _, _, info = e.step(act(NAN, NAN))  # no funding on bar 2
    assert info["funding"] == 0.0


@pytest.mark.parametrize("shape", [(4, 3), (5, 2), (3, 2), (4,)])
def test_a_funding_array_of_another_shape_than_the_prices_is_refused(shape):
    t = tensor(FLAT)
    duck = types.SimpleNamespace(features=t.features, prices=t.prices, timestamps=t.timestamps,
                                 tradable=t.tradable, symbols=t.symbols, funding=np.zeros(shape))
    with pytest.raises(DataValidationError, match=r"tensor.funding must be \[T, A\]"):
        CryptoTradingEnv(duck, mapping="direct", long_only=False, execution=LS)


# ---------------------------------------------------------------------- equity, peak, drawdown, rewards
RISE_FALL = ([[100.0, 50.0], [100.0, 50.0], [120.0, 50.0], [90.0, 50.0]],   # opens
             [[100.0, 50.0], [120.0, 50.0], [90.0, 50.0], [110.0, 50.0]])   # closes
EQUITY = [1200.0, 900.0, 1100.0]  # 10 X held over closes 120, 90, 110
DRAWDOWN = [0.0, 0.25, 1 - 1100 / 1200]  # peak 1200 from step 1


def run(reward, n=3):
    e = env(tensor(*RISE_FALL), long_only=True, reward=reward)
    out = [e.step(act(1.0, 0.0)) for _ in range(n)]
    return e, out


def test_equity_peak_and_drawdown_per_step_in_the_observation_and_the_info():
    _, out = run("log_return")
    for (obs, reward, term, trunc, info), eq, dd in zip(out, EQUITY, DRAWDOWN):
        assert info["equity"] == eq and info["cash"] == 0.0
        # portfolio tail: weights [1, 0], cash / E 0, E / initial, drawdown 1 - E / peak
        np.testing.assert_allclose(obs[-5:], np.array([1.0, 0.0, 0.0, eq / 1000, dd], np.float32), rtol=1e-7, atol=1e-7)
    assert [o[1] for o in out] == pytest.approx([math.log(1.2), math.log(0.75), math.log(1100 / 900)], abs=1e-12)


def test_the_drawdown_penalty_reward_is_the_log_return_less_lambda_times_the_drawdown_after_the_step():
    _, out = run(RewardConfig(kind="drawdown_penalty", drawdown_penalty=0.5))
    want = [math.log(1.2) - 0.0, math.log(0.75) - 0.5 * 0.25, math.log(1100 / 900) - 0.5 * (1 - 1100 / 1200)]
    assert [o[1] for o in out] == pytest.approx(want, abs=1e-12)


def test_the_turnover_penalty_reward_is_the_log_return_less_lambda_times_the_turnover():
    _, out = run(RewardConfig(kind="turnover_penalty", turnover_penalty=0.25))
    # step 1 trades 1000 of 1000 at the open (turnover 1), the others nothing
    assert [o[1] for o in out] == pytest.approx([math.log(1.2) - 0.25, math.log(0.75), math.log(1100 / 900)], abs=1e-12)
    assert [o[4]["turnover"] for o in out] == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("eta, scale", [(0.5, 1.0), (0.1, 2.0)])
def test_the_differential_sharpe_reward_follows_moody_and_saffell(eta, scale):
    _, out = run(RewardConfig(kind="differential_sharpe", sharpe_eta=eta, scale=scale))
    # D_t = (B dA - A dB / 2) / (B - A^2)^1.5 with the EMAs A, B of r, r^2 before the step
    # (0 while B - A^2 <= 1e-12, as on the first step); dA = r - A, dB = r^2 - B
    A = B = 0.0
    prev, want = 1000.0, []
    for eq in EQUITY:
        r = eq / prev - 1
        var = B - A * A
        want.append(scale * ((B * (r - A) - 0.5 * A * (r * r - B)) / var ** 1.5 if var > 1e-12 else 0.0))
        A, B, prev = A + eta * (r - A), B + eta * (r * r - B), eq
    assert want[0] == 0.0 and [o[1] for o in out] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_a_reset_restarts_the_differential_sharpe_statistics():
    e, _ = run(RewardConfig(kind="differential_sharpe", sharpe_eta=0.5), n=2)
    e.reset(options={"start": 0})
    assert e.step(act(1.0, 0.0))[1] == 0.0  # the EMAs start again at 0: no variance, reward 0


def test_a_reward_scale_multiplies_the_log_return_rewards():
    _, out = run(RewardConfig(kind="drawdown_penalty", drawdown_penalty=0.5, scale=-3.0))
    assert out[1][1] == pytest.approx(-3.0 * (math.log(0.75) - 0.125), abs=1e-12)


# ---------------------------------------------------------------------- termination and truncation
@pytest.mark.parametrize("close, status, equity", [(100.0, "bankrupt", 0.0), (99.75, "ok", 5.0)])
def test_bankruptcy_is_at_exactly_zero_equity(close, status, equity):
    # short 20 X at 50 (cash 2000, no maintenance margin): X trades up to `close` at bar 2;
    # equity 2000 - 20 x close: exactly 0 is bankrupt (E <= 0), 5 is not
    o = [[50.0, 50.0], [50.0, 50.0], [50.0, 50.0], [50.0, 50.0]]
    c = [[50.0, 50.0], [50.0, 50.0], [close, 50.0], [close, 50.0]]
    e = env(tensor(o, c), LS)
    e.step(act(-1.0, 0.0))
    obs, reward, term, trunc, info = e.step(act(NAN, NAN))
    assert info["status"] == status and term == (status == "bankrupt") and not trunc
    assert info["equity"] == equity
    # weights are value / equity, 0 where the equity is not > 0; drawdown from the peak 1000 (bar 1)
    w = -20 * close / equity if equity > 0 else 0.0
    cash_w = 2000 / equity if equity > 0 else 0.0
    assert list(info["weights"]) == pytest.approx([w, 0.0], rel=1e-12)
    np.testing.assert_allclose(obs[-5:], np.array([w, 0.0, cash_w, equity / 1000, 1 - equity / 1000], np.float32),
                               rtol=1e-6)
    # the log return's ratio is floored at 1e-12: log(1e-12) on bankruptcy
    assert reward == pytest.approx(math.log(max(equity / 1000, 1e-12)), abs=1e-9)
    if term:
        with pytest.raises(RuntimeError, match="reset"):
            e.step(act(NAN, NAN))


@pytest.mark.parametrize("options, steps", [({"start": 0, "end": 3}, 3), ({"start": 1, "end": 2}, 1),
                                            ({"start": 0}, 4)])
def test_an_episode_is_truncated_on_exactly_its_end_bar(options, steps):
    e = CryptoTradingEnv(tensor([[100.0, 50.0]] * 5), mapping="direct", long_only=True, random_start=False,
                         execution=LS)
    _, info = e.reset(options=options)
    flags = []
    for _ in range(steps):
        _, _, term, trunc, info = e.step(act(0.5, 0.5))
        flags.append((term, trunc))
    assert flags == [(False, False)] * (steps - 1) + [(False, True)]
    assert info["timestamp"] == (options.get("start", 0) + steps) * HOUR  # the end bar (4 = the last by default)


def test_episode_length_sets_the_end_bar():
    e = CryptoTradingEnv(tensor([[100.0, 50.0]] * 6), mapping="direct", long_only=True, random_start=False,
                         execution=LS, episode_length=2, initial_cash=1000.0)
    _, info = e.reset(options={"start": 1})
    assert (info["start"], info["end"]) == (1, 3)
    assert [e.step(act(0.5, 0.5))[3] for _ in range(2)] == [False, True]


# ---------------------------------------------------------------------- the observation layout
FEATS = np.array([[[100 * t + 10 * a + k + 1 for k in range(2)] for a in range(2)] for t in range(5)], np.float32)
OBS_OPEN = [[100.0, 50.0], [NAN, 50.0], [100.0, 50.0], [100.0, 50.0], [100.0, 50.0]]
OBS_CLOSE = [[100.0, 50.0], [NAN, 50.0], [100.0, 50.0], [120.0, 50.0], [120.0, 50.0]]
OBS_TRADABLE = np.array([[1, 1], [0, 1], [1, 1], [1, 1], [1, 1]], bool)


def obs_tensor():
    f = FEATS.copy()
    f[2, 1, 1] = np.nan  # a non-finite feature on a tradable bar
    f[1, 0, :] = 999.0   # features of an untradable bar: observed as 0
    return tensor(OBS_OPEN, OBS_CLOSE, tradable=OBS_TRADABLE, features=f)


def hand_obs(bar, portfolio, window=2):
    """features [W, A, F] of bars bar-W+1..bar (0 where untradable or not finite), mask [W, A], portfolio."""
    rows = FEATS[bar - window + 1:bar + 1].copy()
    mask = OBS_TRADABLE[bar - window + 1:bar + 1].astype(np.float32)
    rows[mask == 0] = 0.0
    if bar - window + 1 <= 2 <= bar:
        rows[2 - (bar - window + 1), 1, 1] = 0.0
    return np.concatenate([rows.ravel(), mask.ravel(), np.asarray(portfolio, np.float32)])


def test_the_flat_observation_is_features_then_mask_then_weights_cash_equity_ratio_drawdown():
    e = CryptoTradingEnv(obs_tensor(), window=2, mapping="direct", long_only=True, random_start=False, execution=LS)
    obs, _ = e.reset(options={"start": 2})
    np.testing.assert_array_equal(obs, hand_obs(2, [0, 0, 1, 1, 0]))
    # buy 5 X at 100 and 5 Y at 50 (bar 3's open), cash 250; close: X 120 -> E = 250 + 600 + 250 = 1100
    obs, *_ = e.step(act(0.5, 0.25))
    np.testing.assert_allclose(obs, hand_obs(3, [600 / 1100, 250 / 1100, 250 / 1100, 1.1, 0.0]), rtol=1e-7)
    d = CryptoTradingEnv(obs_tensor(), window=2, mapping="direct", long_only=True, random_start=False, execution=LS,
                         observation="dict")
    obs, _ = d.reset(options={"start": 2})
    flat = hand_obs(2, [0, 0, 1, 1, 0])
    np.testing.assert_array_equal(obs["features"], flat[:8].reshape(2, 2, 2))
    np.testing.assert_array_equal(obs["mask"], flat[8:12].reshape(2, 2))
    np.testing.assert_array_equal(obs["portfolio"], flat[12:])


@pytest.mark.parametrize("window", [1, 3])
def test_the_window_takes_the_last_w_bars_up_to_the_decision_bar(window):
    e = CryptoTradingEnv(obs_tensor(), window=window, mapping="direct", long_only=True, random_start=False,
                         execution=LS)
    obs, _ = e.reset(options={"start": 3})
    np.testing.assert_array_equal(obs, hand_obs(3, [0, 0, 1, 1, 0], window))
    assert obs.shape == (window * 2 * 2 + window * 2 + 2 + 3,)


def test_a_memory_mapped_one_asset_tensor_is_observed_as_its_sanitised_rows(tmp_path):
    # one asset, 3 features; bar 1 untradable, a NaN and an inf on tradable bars: all observed as 0
    f = np.arange(15, dtype=np.float32).reshape(5, 1, 3) + 1
    f[2, 0, 1], f[3, 0, 2] = np.nan, np.inf
    np.save(tmp_path / "f.npy", f)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    o = [[100.0], [NAN], [100.0], [100.0], [100.0]]
    tradable = np.array([[1], [0], [1], [1], [1]], bool)
    t = FactorTensor.from_arrays(mapped, np.stack([np.array(o)] * 4 + [np.full((5, 1), 1e3)], -1),
                                 np.arange(5) * HOUR, symbols=["X"], tradable=tradable)
    e = CryptoTradingEnv(t, window=3, mapping="direct", long_only=True, random_start=False, execution=LS)
    assert e.core.raw_features
    want = f[1:4, 0].copy()
    want[0] = 0.0                   # bar 1 untradable
    want[1, 1] = want[2, 2] = 0.0   # NaN, inf
    obs, _ = e.reset(options={"start": 3})
    np.testing.assert_array_equal(obs[:9], want.ravel())
    np.testing.assert_array_equal(obs[9:12], [0.0, 1.0, 1.0])
    obs, *_ = e.step(act(1.0))  # bar 4: rows 2..4
    want = f[2:5, 0].copy()
    want[0, 1] = want[1, 2] = 0.0
    np.testing.assert_array_equal(obs[:9], want.ravel())


# ---------------------------------------------------------------------- vector env autoreset
VEC_CLOSE = [[100.0, 50.0], [100.0, 50.0], [110.0, 55.0], [90.0, 60.0], [100.0, 50.0], [100.0, 40.0]]


def vec_tensor():  # each bar opens at the previous close
    return tensor([VEC_CLOSE[0]] + VEC_CLOSE[:-1], VEC_CLOSE, features=FEATS[[0, 1, 2, 3, 4, 0]])


def vec_hand_obs(bar):
    rows = vec_tensor().features[bar - 1:bar + 1]
    return np.concatenate([rows.ravel(), np.ones(4, np.float32), np.array([0, 0, 1, 1, 0], np.float32)])


def test_autoreset_rows_are_the_first_observation_and_info_of_a_reset_at_the_new_start():
    # 3 envs from bar 1, truncated at bars 2, 3, 4; without random starts each new episode starts at
    # the first full window (bar 1) and ends episode_length = 2 bars later (bar 3)
    v = CryptoTradingVectorEnv(vec_tensor(), 3, window=2, mapping="direct", long_only=True, random_start=False,
                               execution=LS, episode_length=2, initial_cash=1000.0)
    obs, infos = v.reset(options={"start": 1, "end": np.array([2, 3, 4])})
    for i in range(3):
        np.testing.assert_array_equal(obs[i], vec_hand_obs(1))
    a = np.array([[0.5, 0.25]] * 3)
    single = CryptoTradingEnv(vec_tensor(), window=2, mapping="direct", long_only=True, random_start=False,
                              initial_cash=1000.0, execution=LS)
    single.reset(options={"start": 1, "end": 2})
    s_obs, s_reward, _, s_trunc, s_info = single.step(a[0])
    obs, rewards, term, trunc, infos = v.step(a)
    assert list(trunc) == [True, False, False] and not term.any()
    # the finished episode's reward, final observation and final info
    assert rewards[0] == s_reward and s_trunc
    np.testing.assert_array_equal(infos["final_obs"][0], s_obs)
    assert infos["final_info"]["equity"][0] == s_info["equity"] and infos["_final_obs"].tolist() == [True, False, False]
    # the new episode's first observation and info: a reset at bar 1
    np.testing.assert_array_equal(obs[0], vec_hand_obs(1))
    assert infos["timestamp"][0] == 1 * HOUR
    for key in ("equity", "cash"):
        assert infos[key][0] == 1000.0
    for key in ("fees", "slippage_cost", "borrow_cost", "funding", "turnover"):
        assert infos[key][0] == 0.0
    assert list(infos["weights"][0]) == [0.0, 0.0] and list(infos["positions"][0]) == [0.0, 0.0]
    # the others stepped on: bar 2, 10 % up for X (5 X), Y 55 (5 Y): 250 + 550 + 275 = 1075
    assert list(infos["equity"][1:]) == [1075.0, 1075.0] and list(infos["timestamp"][1:]) == [2 * HOUR] * 2
    # the restarted env then runs as a single env from bar 1 to bar 3
    single.reset(options={"start": 1, "end": 3})
    for _ in range(2):
        s = single.step(a[0])
        obs, rewards, term, trunc, infos = v.step(a)
        np.testing.assert_array_equal(infos["final_obs"][0] if trunc[0] else obs[0], s[0])
        assert rewards[0] == s[1] and trunc[0] == s[3]
    # by hand: bar 2 fills 5 X at 100, 5 Y at 50 (cash 250; E 1075 at 110 / 55); bar 3 opens at 110 / 55
    # (E_open 1075): X to 0.5 x 1075 / 110, Y to 0.25 x 1075 / 55, cash 0.25 x 1075; closes 90 / 60
    want = 0.25 * 1075 + 0.5 * 1075 / 110 * 90 + 0.25 * 1075 / 55 * 60
    assert trunc[0] and infos["final_info"]["equity"][0] == pytest.approx(want, rel=1e-12)


def test_random_autoreset_starts_are_in_range_and_observed_as_their_bar():
    v = CryptoTradingVectorEnv(vec_tensor(), 4, window=2, mapping="direct", long_only=True, random_start=True,
                               execution=LS, episode_length=1)
    v.reset(seed=7)
    seen = set()
    for _ in range(6):
        obs, _, _, trunc, infos = v.step(np.full((4, 2), 0.25))
        assert trunc.all()  # one-bar episodes: every env restarts every step
        for i in range(4):
            bar = int(infos["timestamp"][i] // HOUR)
            assert 1 <= bar <= 4  # [window - 1, T - 1 - L]
            np.testing.assert_array_equal(obs[i], vec_hand_obs(bar))
            seen.add(bar)
    assert len(seen) > 1


# ---------------------------------------------------------------------- envs that do not step
def core(n):
    return PortfolioCore(vec_tensor(), n, window=2, scheme="signed", execution=LS, reward=RewardConfig(),
                         initial_cash=1000.0, long_only=False)


def test_an_env_that_is_done_keeps_its_observation_and_state_and_reports_zeros():
    c = core(2)
    c.reset(np.array([0]), np.array([1]), np.array([4]))  # env 1 never started: done
    obs = np.full((2, c.obs_dim), 7.0, np.float32)
    assert c.step(np.array([[0.25, 0.0], [0.5, 0.5]]), obs) == 0
    assert (obs[1] == 7.0).all()  # not written
    np.testing.assert_array_equal(c.out[1], 0.0)
    assert c.state[1, 0] == 0.0 and c.counters[1, 2] == 1  # (never reset: cash 0, done)
    # env 0 stepped: 0.25 x 2 = 0.5 of 1000 in X at 100 -> 5 X; X closes at 110
    assert c.state[0, -2:].tolist() == [5.0, 0.0] and c.out[0, 1] == 1050.0
    np.testing.assert_array_equal(obs[0, :8], vec_tensor().features[1:3].ravel())


def test_an_env_with_a_malformed_action_does_not_move_and_the_others_step():
    c = core(2)
    c.reset(np.array([0, 1]), np.array([1, 1]), np.array([4, 4]))
    obs = np.full((2, c.obs_dim), 7.0, np.float32)
    assert c.step(np.array([[0.25, 0.0], [NAN, 0.5]]), obs) == -1
    assert c.out[1, 11] == ex.ENV_BAD_ACTION and (obs[1] == 7.0).all()
    assert c.state[1, 0] == 1000.0 and c.state[1, -2:].tolist() == [0.0, 0.0] and c.counters[1, 0] == 1
    assert c.state[0, -2:].tolist() == [5.0, 0.0] and c.counters[0, 0] == 2


# ---------------------------------------------------------------------- intrinsics
def test_sqrt_nb_is_llvms_sqrt_of_a_float64_and_refuses_other_types():
    @numba.njit
    def root(x):
        return sqrt_nb(x)

    assert root(0.25) == 0.5 and root(2.0) == math.sqrt(2.0) and root(0.0) == 0.0
    for x in (np.float32(0.25), np.int64(4)):
        with pytest.raises(numba.core.errors.TypingError):
            numba.njit(lambda y: sqrt_nb(y))(x)


@pytest.mark.parametrize("n", [1, 9, 17])
def test_each_env_of_a_batch_over_block_boundaries_trades_its_own_action(n):
    # env k holds k / 32 of its 1000 in X (bought at 100) and 1/2 - k / 64 in Y (at 50); X closes at
    # 110, Y at 40: equity 1000 + 100 k / 32 - 200 (1/2 - k / 64) = 900 + 6.25 k, by hand per env
    t = tensor([[100.0, 50.0], [100.0, 50.0], [110.0, 40.0]], close=[[100.0, 50.0], [110.0, 40.0], [110.0, 40.0]])
    v = CryptoTradingVectorEnv(t, n, window=1, mapping="direct", long_only=True, random_start=False, execution=LS,
                               initial_cash=1000.0)
    v.reset(options={"start": 0})
    k = np.arange(n)
    _, rewards, _, _, infos = v.step(np.stack([k / 32, 0.5 - k / 64], axis=1))
    np.testing.assert_allclose(infos["equity"], 900.0 + 6.25 * k, rtol=1e-12)
    np.testing.assert_allclose(infos["positions"], np.stack([k / 32 * 10, (0.5 - k / 64) * 20], axis=1), rtol=1e-12)
    np.testing.assert_allclose(rewards, np.log((900.0 + 6.25 * k) / 1000), rtol=1e-12)
    assert infos["n_trades"].tolist() == [1 if i == 0 else 2 for i in k]


@pytest.mark.parametrize("units", [1.0, 2.0])
def test_an_untradable_close_of_exactly_one_unit_is_in_the_steps_trades(units):
    # hold exactly 1 (or 2) X bought at 100 (weight 0.1 / 0.2 of 1000, frictionless); X does not trade
    # at bar 2: closed at its last close 100, a sell of exactly that many units (its fill row's
    # quantity is -1.0: the kernel's store of the rare fill rows must keep it)
    o = [[100.0, 50.0], [100.0, 50.0], [NAN, 50.0], [100.0, 50.0]]
    tradable = np.array([[1, 1], [1, 1], [0, 1], [1, 1]], bool)
    cfg = ExecutionConfig.frictionless(max_leverage=1.0, on_untradable="close")
    e = env(tensor(o, tradable=tradable), cfg, long_only=True)
    _, _, _, _, info = e.step(act(units / 10, 0.0))
    assert info["positions"][0] == units
    _, _, _, _, info = e.step(act(units / 10, 0.0))
    assert [(t["symbol"], t["side"], t["kind"], t["quantity"], t["price"]) for t in info["trades"]] == \
        [("X", "sell", "untradable_close", units, 100.0)]
    assert info["positions"][0] == 0.0 and info["cash"] == 1000.0
