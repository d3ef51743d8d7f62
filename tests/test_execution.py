"""Execution and accounting: fills, rounding, a hand-computed example, invariants (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig
from factorgym.envs import execution as ex

HOUR = 3_600_000


def tensor_from(open_, close, volume=None, tradable=None, features=None, symbols=None) -> FactorTensor:
    open_, close = np.asarray(open_, float), np.asarray(close, float)
    T, A = close.shape
    volume = np.full((T, A), 1000.0) if volume is None else np.asarray(volume, float)
    prices = np.stack([open_, np.maximum(open_, close), np.minimum(open_, close), close, volume], axis=-1)
    feats = np.zeros((T, A, 1), np.float32) if features is None else features
    return FactorTensor.from_arrays(feats, prices, np.arange(T) * HOUR, symbols=symbols, tradable=tradable)


# ---------------------------------------------------------------------- fill_order_nb
def test_fill_rounds_quantity_down_to_the_lot_and_absorbs_round_off():
    status, q, p, fee, slip = ex.fill_order_nb(0.3, 10.0, 0.0, 0.001, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, False)
    assert status == ex.FILLED and q == pytest.approx(0.3)  # 0.3 / 0.1 = 2.9999999999999996 -> 3 lots
    status, q, *_ = ex.fill_order_nb(0.2999, 10.0, 0.0, 0.001, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, False)
    assert q == pytest.approx(0.2)


def test_fill_statuses_for_tiny_orders():
    args = (10.0, 0.0, 0.001, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, False)
    assert ex.fill_order_nb(0.05, *args)[0] == ex.IGNORED_LOT
    assert ex.fill_order_nb(0.0, *args)[0] == ex.IGNORED_NO_CHANGE
    assert ex.fill_order_nb(0.5, 10.0, 0.0, 0.001, 0.1, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, False)[0] == ex.IGNORED_MIN_AMOUNT
    assert ex.fill_order_nb(0.5, 10.0, 0.0, 0.001, 0.1, 0.0, 5.01, 0.0, 0.0, 0.0, 0.5, False)[0] == ex.IGNORED_MIN_NOTIONAL
    # exact closes ignore lots and minimums
    assert ex.fill_order_nb(-0.05, 10.0, 0.0, 0.001, 0.1, 1.0, 100.0, 0.0, 0.0, 0.0, 0.5, True)[:2] == (ex.FILLED, 0.05)


def test_fill_price_slippage_impact_and_precision():
    # buy 4 units, open 100, 5 bps fixed, impact 0.1 * sqrt(4 / 400) = 0.01
    status, q, p, fee, slip = ex.fill_order_nb(4.0, 100.0, 400.0, 0.002, 0.0, 0.0, 0.0, 0.0, 5e-4, 0.1, 0.5, False)
    assert p == pytest.approx(100.0 * (1 + 5e-4 + 0.01), abs=1e-12)
    assert fee == pytest.approx(4 * p * 0.002, abs=1e-12) and slip == pytest.approx(4 * (p - 100.0), abs=1e-12)
    # linear impact exponent; zero volume means no impact term
    assert ex.fill_order_nb(4.0, 100.0, 400.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 1.0, False)[2] == pytest.approx(100.1)  # 0.1 x 4 / 400
    assert ex.fill_order_nb(4.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.5, False)[2] == 100.0
    # price precision against the trader: buys round up, sells round down
    assert ex.fill_order_nb(1.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 3e-4, 0.0, 0.5, False)[2] == pytest.approx(100.05)
    assert ex.fill_order_nb(-1.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 3e-4, 0.0, 0.5, False)[2] == pytest.approx(99.95)


# ---------------------------------------------------------------------- hand-computed example
OPEN = [[100, 50], [101, 50.5], [103, 51], [105, 49], [99, 48], [97, 52]]
CLOSE = [[100, 50], [102, 51], [104, 50], [100, 48], [98, 50], [96, 53]]
ACTIONS = [[0.5, 0.3], [0.2, 0.6], [0.2, 0.61], [0.7, 0.3], [0.0, 0.5]]
FEE, SLIP, LOT, MIN_NOTIONAL = 0.001, 0.001, [0.01, 0.1], [0.0, 30.0]


def hand_env() -> CryptoTradingEnv:
    cfg = ExecutionConfig(taker_fee=FEE, slippage_bps=10.0, half_spread_bps=0.0, impact_coef=0.0,
                          lot_step={"X": 0.01, "Y": 0.1}, min_notional={"X": 0.0, "Y": 30.0}, price_step=0.0)
    t = tensor_from(OPEN, CLOSE, symbols=["X", "Y"])
    return CryptoTradingEnv(t, window=1, mapping="direct", execution=cfg, initial_cash=1000.0, random_start=False)


def reference_run():
    """Plain-Python statement of the rules (sells first, lots down, min notional, cash scaling)."""
    cash, q, e_prev, rows = 1000.0, [0.0, 0.0], 1000.0, []
    for k, w in enumerate(ACTIONS):
        o, c = OPEN[k + 1], CLOSE[k + 1]
        e_open = cash + q[0] * o[0] + q[1] * o[1]
        d = [(w[i] * e_open / o[i] - q[i]) if w[i] != 0 else -q[i] for i in range(2)]
        fees = 0.0
        for i in range(2):  # sells
            if d[i] < 0:
                qty = -d[i] if w[i] == 0 else math.floor(-d[i] / LOT[i] + 1e-9) * LOT[i]
                if qty > 0 and (w[i] == 0 or qty * o[i] >= MIN_NOTIONAL[i]):
                    p = o[i] * (1 - SLIP)
                    cash += qty * p - qty * p * FEE
                    fees += qty * p * FEE
                    q[i] -= qty
        plan = {}
        for i in range(2):  # buys at full size
            if d[i] > 0:
                qty = math.floor(d[i] / LOT[i] + 1e-9) * LOT[i]
                if qty > 0 and qty * o[i] >= MIN_NOTIONAL[i]:
                    plan[i] = qty
        cost = sum(qty * o[i] * (1 + SLIP) * (1 + FEE) for i, qty in plan.items())
        k_scale = cash / cost * (1 - 1e-12) if cost > cash else 1.0
        for i, qty in plan.items():
            if k_scale < 1:
                qty = math.floor(qty * k_scale / LOT[i] + 1e-9) * LOT[i]
                if qty <= 0 or qty * o[i] < MIN_NOTIONAL[i]:
                    continue
            p = o[i] * (1 + SLIP)
            cash -= qty * p * (1 + FEE)
            fees += qty * p * FEE
            q[i] += qty
        e = cash + q[0] * c[0] + q[1] * c[1]
        rows.append((cash, list(q), e, math.log(e / e_prev), fees))
        e_prev = e
    return rows


def test_hand_computed_five_bars_match_to_1e9():
    env = hand_env()
    env.reset(options={"start": 0})
    # step 1 by hand: E_open = 1000; X: 0.5 * 1000 / 101 = 4.9504.. -> 4.95 lots of 0.01, bought at
    # 101 * 1.001 = 101.101; Y: 0.3 * 1000 / 50.5 = 5.9405.. -> 5.9, at 50.5505; cash pays both plus 10 bps fee
    cash1 = 1000 - 4.95 * 101.101 * 1.001 - 5.9 * 50.5505 * 1.001
    equity1 = cash1 + 4.95 * 102 + 5.9 * 51
    _, reward, _, _, info = env.step(np.array(ACTIONS[0]))
    assert info["positions"] == pytest.approx([4.95, 5.9], abs=1e-12)
    assert info["cash"] == pytest.approx(cash1, abs=1e-9) and info["equity"] == pytest.approx(equity1, abs=1e-9)
    assert reward == pytest.approx(math.log(equity1 / 1000), abs=1e-12)
    assert info["fees"] == pytest.approx((4.95 * 101.101 + 5.9 * 50.5505) * 0.001, abs=1e-12)
    assert [t["side"] for t in info["trades"]] == ["buy", "buy"]
    ref = reference_run()
    assert ref[0][0] == pytest.approx(cash1, abs=1e-9)
    statuses = []
    for k in range(1, 5):
        _, reward, terminated, truncated, info = env.step(np.array(ACTIONS[k]))
        cash, q, e, r, fees = ref[k]
        assert info["cash"] == pytest.approx(cash, abs=1e-9), k
        assert info["positions"] == pytest.approx(q, abs=1e-9), k
        assert info["equity"] == pytest.approx(e, abs=1e-9), k
        assert reward == pytest.approx(r, abs=1e-9), k
        assert info["fees"] == pytest.approx(fees, abs=1e-9), k
        assert info["cash"] >= 0
        statuses.append(env.order_status)
    assert truncated and not terminated
    assert statuses[1][1] == "ignored_min_notional"  # step 3: Y would move by 0.5 units = 24.5 USDT < 30
    assert statuses[3][0] == "filled" and info["positions"][0] == 0.0  # exact close, no dust


def test_sells_fill_before_buys_and_long_only_buys_are_scaled_to_cash():
    env = hand_env()
    env.reset(options={"start": 0})
    env.step(np.array(ACTIONS[0]))
    _, _, _, _, info = env.step(np.array([0.2, 0.6]))
    assert [t["side"] for t in info["trades"]] == ["sell", "buy"]
    _, _, _, _, info = env.step(np.array([0.7, 0.3]))
    _, _, _, _, info = env.step(np.array([1.0, 1.0]))  # asks for 200%: clipped to 100%, then fees need scaling
    assert info["cash"] >= 0.0
    assert info["weights"].sum() <= 1.0 + 1e-12


# ---------------------------------------------------------------------- invariants (hypothesis)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), fee=st.sampled_from([0.0, 0.001, 0.0075]), lot=st.sampled_from([0.0, 0.01, 1.0]),
       mapping=st.sampled_from(["simplex", "signed"]),
       actions=st.lists(st.lists(st.floats(-1, 1, width=32), min_size=4, max_size=4), min_size=38, max_size=38))
def test_equity_is_cash_plus_marked_positions_and_fees_are_nonnegative(seed, fee, lot, mapping, actions):
    rng = np.random.default_rng(seed)
    T, A = 40, 3
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.03, (T, A)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, (T, A)))
    tradable = rng.random((T, A)) > 0.1
    tradable[:2] = True
    t = tensor_from(open_, close, rng.uniform(10, 500, (T, A)), tradable=tradable)
    cfg = ExecutionConfig(taker_fee=fee, slippage_bps=3.0, impact_coef=0.02, lot_step=lot, min_notional=1.0,
                          borrow_rate_per_bar=1e-4, max_leverage=2.0, maintenance_margin=0.05)
    env = CryptoTradingEnv(t, window=2, mapping=mapping, execution=cfg, random_start=False)
    env.reset(seed=seed)
    mark = t.prices[..., 3].copy()
    for j in range(1, T):  # last tradable close carried forward
        mark[j] = np.where(tradable[j], mark[j], mark[j - 1])
    K = env.action_space.shape[0]
    for a in actions:  # drawn by hypothesis: a failure replays and shrinks
        _, r, terminated, truncated, info = env.step(np.asarray(a[:K], dtype=np.float32))
        k = env.core.ist[0, ex.I_T]
        assert info["equity"] == pytest.approx(info["cash"] + float(info["positions"] @ mark[k]), rel=1e-12, abs=1e-9)
        assert info["fees"] >= 0 and info["slippage_cost"] >= 0 and info["borrow_cost"] >= 0
        assert sum(tr["fee"] for tr in info["trades"]) == pytest.approx(info["fees"], abs=1e-12)
        if mapping == "simplex":
            assert info["cash"] >= 0 and np.all(info["positions"] >= 0)
        if lot > 0:
            lots = info["positions"] / lot
            assert np.allclose(lots, np.round(lots), atol=1e-6)
        if terminated or truncated:
            break


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_zero_cost_buy_and_hold_equity_is_the_price_ratio(seed):
    rng = np.random.default_rng(seed)
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.05, (30, 1)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.01, (30, 1)))
    env = CryptoTradingEnv(tensor_from(open_, close), window=1, mapping="direct", execution=ExecutionConfig.frictionless(),
                           random_start=False, initial_cash=1000.0)
    env.reset()
    _, _, _, _, info = env.step(np.array([1.0]))
    assert info["equity"] == pytest.approx(1000 * close[1, 0] / open_[1, 0], rel=1e-12)
    for k in range(2, 30):
        _, _, _, _, info = env.step(np.array([1.0]))
        assert info["trades"] == [] or info["turnover"] < 1e-12
        assert info["equity"] == pytest.approx(1000 * close[k, 0] / open_[1, 0], rel=1e-10)


def test_round_trip_costs_about_twice_the_fee():
    flat = [[100.0]] * 4
    env = CryptoTradingEnv(tensor_from(flat, flat), window=1, mapping="direct", initial_cash=1000.0, random_start=False,
                           execution=ExecutionConfig.frictionless(taker_fee=0.001))
    env.reset()
    env.step(np.array([1.0]))
    _, _, _, _, info = env.step(np.array([0.0]))
    assert 1000 - info["equity"] == pytest.approx(2 * 0.001 * 1000, rel=2e-3)
    assert info["positions"][0] == 0.0 and info["cash"] == info["equity"]


# ---------------------------------------------------------------------- untradable, borrow, liquidation
def test_untradable_assets_are_frozen_or_closed_at_their_last_close():
    open_ = [[10, 10], [10, 10], [11, 10], [99, 10], [13, 10]]
    close = [[10, 10], [10, 10], [12, 10], [99, 10], [14, 10]]
    tradable = np.ones((5, 2), bool)
    tradable[3, 0] = False
    t = tensor_from(open_, close, tradable=tradable)
    for policy in ("freeze", "close"):
        env = CryptoTradingEnv(t, window=1, mapping="direct", random_start=False,
                               execution=ExecutionConfig.frictionless(on_untradable=policy))
        env.reset()
        env.step(np.array([0.5, 0.5]))
        env.step(np.array([0.5, 0.5]))
        q0 = env.core.st[0, ex.S_QTY]
        _, _, _, _, info = env.step(np.array([0.0, 0.5]))  # asset 0 does not trade on bar 3
        if policy == "freeze":
            assert env.order_status[0] == "rejected_untradable"
            assert info["positions"][0] == q0
            assert info["equity"] == pytest.approx(info["cash"] + q0 * 12 + info["positions"][1] * 10)  # last close 12, not 99
        else:
            assert info["positions"][0] == 0.0
            assert info["trades"][-1]["kind"] == "untradable_close" and info["trades"][-1]["price"] == 12


def test_shorts_pay_borrow_and_liquidation_terminates():
    flat = [[100.0]] * 6
    cfg = ExecutionConfig.frictionless(borrow_rate_per_bar=0.001)
    env = CryptoTradingEnv(tensor_from(flat, flat), window=1, mapping="signed", initial_cash=1000.0, random_start=False, execution=cfg)
    env.reset()
    _, _, _, _, info = env.step(np.array([-1.0]))
    assert info["positions"][0] == pytest.approx(-10.0)
    assert info["borrow_cost"] == pytest.approx(0.001 * 1000) and info["equity"] == pytest.approx(999.0)
    open_, close = [[100.0]] * 5, [[100.0], [100.0], [100.0], [130.0], [130.0]]
    cfg = ExecutionConfig.frictionless(max_leverage=3.0, maintenance_margin=0.1)
    env = CryptoTradingEnv(tensor_from(open_, close), window=1, mapping="signed", initial_cash=1000.0, random_start=False, execution=cfg)
    env.reset()
    env.step(np.array([-1.0]))  # short 3x equity: 30 units
    env.step(np.array([-1.0]))
    _, _, terminated, truncated, info = env.step(np.array([-1.0]))
    # close 130: equity 1000 - 30 x 30 = 100 < 10% of the 3,900 gross -> closed at the close
    assert terminated and not truncated and info["status"] == "liquidated"
    assert info["positions"][0] == 0.0 and info["trades"][-1]["kind"] == "liquidation"
    assert info["equity"] == pytest.approx(100.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0.0]))


def test_direct_mapping_nan_means_hold():
    close = [[10.0, 20.0], [10.0, 20.0], [12.0, 18.0], [15.0, 30.0], [15.0, 30.0]]
    env = CryptoTradingEnv(tensor_from(close, close), window=1, mapping="direct", random_start=False,
                           execution=ExecutionConfig.frictionless())
    env.reset()
    _, _, _, _, info = env.step(np.array([0.5, 0.5]))
    q = info["positions"].copy()
    _, _, _, _, info = env.step(np.array([np.nan, 0.2]))  # hold asset 0 (its weight drifted), trade asset 1
    assert info["positions"][0] == q[0] and env.order_status[0] == "ignored_no_change"
    assert info["weights"][1] == pytest.approx(0.2)
    _, _, _, _, info = env.step(np.array([np.nan, np.nan]))
    assert info["trades"] == []
    with pytest.raises(ValueError, match="action space"):
        env.step(np.array([np.inf, 0.0]))


def test_fill_rows_lists_fills_in_fill_order():
    """Fixed rows (kind x A + asset) come out as sells, buys, untradable closes, liquidations."""
    from factorgym.envs.core import fill_rows

    A = 3
    block = np.zeros((3 * A, ex.N_FILL_COLS))
    block[0] = [2.0, 10.0, 0.1, 0.01]  # order: buy asset 0
    block[1] = [-1.0, 20.0, 0.2, 0.02]  # order: sell asset 1
    block[2] = [-3.0, 30.0, 0.3, 0.03]  # order: sell asset 2
    block[A + 0] = [-4.0, 40.0, 0.4, 0.0]  # untradable close of asset 0
    block[2 * A + 1] = [5.0, 50.0, 0.5, 0.05]  # liquidation (short cover) of asset 1
    rows = fill_rows(block)
    assert rows[:, 0].tolist() == [1, 2, 0, 0, 1]  # assets
    assert rows[:, 1].tolist() == [-1, -1, 1, -1, 1]  # sides
    assert rows[:, 2].tolist() == [1.0, 3.0, 2.0, 4.0, 5.0]  # quantities
    assert rows[:, 6].tolist() == [0, 0, 0, 1, 2]  # kinds
    assert rows[:, 3:6].tolist()[2] == [10.0, 0.1, 0.01]
