"""The action mappings of envs/actions.py and envs/spaces.py (the table there) at the edges of the
action space, through CryptoTradingEnv: target weights read back as ``info["weights"]`` (position
value / equity at the close) on flat, frictionless prices (X 100, Y 50; 1000 of cash), where the
weights held after a step are the mapped target weights. Expected weights are worked from the
table by hand."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.envs import ExecutionConfig

from tests._engine_rules_data import act, env, tensor

FLAT = [[100.0, 50.0]] * 4
ONE = [[100.0]] * 4


def weights(e, a):
    _, _, _, _, info = e.step(a)
    return list(info["weights"])


# ---------------------------------------------------------------------- simplex
@pytest.mark.parametrize("a, want", [
    ((0.0, 0.0, 0.0), [1 / 3, 1 / 3]),       # (a + 1) / sum(a + 1): 1 / 3 each, a third in cash
    ((1.0, -1.0, -1.0), [1.0, 0.0]),         # all in X
    ((-1.0, -1.0, -1.0), [0.0, 0.0]),        # all -1: all cash (sum 0 -> weights 0)
    ((-1.0, -1.0, 1.0), [0.0, 0.0]),         # the cash slot alone
    ((3.0, -1.0, -5.0), [1.0, 0.0]),         # clipped to [-1, 1] first
    ((0.5, 0.0, -0.5), [1.5 / 3, 1 / 3]),    # 1.5, 1, 0.5 of 3
])
def test_simplex_weights_are_shifted_actions_over_their_sum_with_the_last_slot_cash(a, want):
    e = env(tensor(FLAT), mapping="simplex")
    assert weights(e, act(*a)) == pytest.approx(want, abs=1e-12)


def test_simplex_of_one_asset_has_two_slots():
    e = env(tensor(ONE), mapping="simplex")
    assert e.action_space.shape == (2,)
    assert weights(e, act(0.0, 0.0)) == pytest.approx([0.5], abs=1e-12)
    assert weights(e, act(1.0, -1.0)) == pytest.approx([1.0], abs=1e-12)


def test_simplex_refuses_nan():
    e = env(tensor(FLAT), mapping="simplex")
    with pytest.raises(ValueError, match="not in the action space"):
        e.step(act(np.nan, 0.0, 0.0))


# ---------------------------------------------------------------------- signed
@pytest.mark.parametrize("a, want", [
    ((0.5, -0.25), [1.0, -0.5]),     # a x max_leverage 2; gross 1.5 <= 2
    ((0.5, 0.5), [1.0, 1.0]),        # gross exactly 2 = the cap: not scaled
    ((0.5, -0.5), [1.0, -1.0]),
    ((1.0, 1.0), [1.0, 1.0]),        # gross 4 > 2: scaled by 2 / 4
    ((1.0, -0.5), [2 / 1.5, -1 / 1.5]),  # 2, -1: gross 3 -> x 2/3
    ((3.0, 0.0), [2.0, 0.0]),        # clipped to 1 first
    ((-7.0, 0.0), [-2.0, 0.0]),
    ((0.0, 0.0), [0.0, 0.0]),
])
def test_signed_weights_are_actions_times_the_leverage_with_the_gross_capped(a, want):
    e = env(tensor(FLAT), mapping="signed", cfg=ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0))
    assert weights(e, act(*a)) == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------- direct
@pytest.mark.parametrize("a, want", [
    ((-0.5, 0.5), [0.0, 0.5]),       # long-only: a negative weight is clipped to 0, the rest alone
    ((0.5, 0.5), [0.5, 0.5]),        # sum exactly 1: not scaled
    ((0.75, 0.5), [0.6, 0.4]),       # sum 1.25 > 1: scaled to 1
    ((0.0, 0.0), [0.0, 0.0]),
    ((1.0, 0.0), [1.0, 0.0]),
    ((-1.0, -1.0), [0.0, 0.0]),
])
def test_direct_long_only_clips_shorts_and_scales_the_sum_to_one(a, want):
    e = env(tensor(FLAT), long_only=True, cfg=ExecutionConfig.frictionless(max_leverage=2.0))
    assert weights(e, act(*a)) == pytest.approx(want, abs=1e-12)


def test_direct_long_only_with_leverage_below_one_invests_at_most_that_fraction():
    e = env(tensor(FLAT), long_only=True, cfg=ExecutionConfig.frictionless(max_leverage=0.5))
    assert weights(e, act(0.5, 0.5)) == pytest.approx([0.25, 0.25], abs=1e-12)  # limit min(0.5, 1): x 0.5
    e = env(tensor(FLAT), long_only=True, cfg=ExecutionConfig.frictionless(max_leverage=0.5))
    assert weights(e, act(0.25, 0.25)) == pytest.approx([0.25, 0.25], abs=1e-12)  # exactly at the limit


@pytest.mark.parametrize("a, want", [
    ((1.5, -1.0), [1.2, -0.8]),      # gross 2.5 > 2: x 0.8
    ((1.0, -1.0), [1.0, -1.0]),      # gross exactly 2
    ((-0.5, -0.25), [-0.5, -0.25]),  # shorts kept
])
def test_direct_long_short_keeps_signs_and_caps_the_gross(a, want):
    e = env(tensor(FLAT), cfg=ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0))
    assert weights(e, act(*a)) == pytest.approx(want, abs=1e-12)


def test_direct_nan_holds_that_asset_and_the_rest_is_clipped_alone():
    e = env(tensor(FLAT), long_only=True, cfg=ExecutionConfig.frictionless(max_leverage=1.0))
    e.step(act(0.5, 0.25))  # 5 X, 5 Y
    _, _, _, _, info = e.step(act(np.nan, 1.0))
    # X held at 0.5 (not an order); Y alone is 1.0 <= the limit: Y to 1.0 of the 1000 equity = 20 Y,
    # which costs 750 of the 250 cash -> scaled to the cash (long-only): X untouched at 5
    assert info["positions"][0] == 5.0 and e.order_status[0] == "ignored_no_change"
    assert info["cash"] >= 0.0 and info["positions"][1] == pytest.approx(5.0 + 250.0 / 50.0, rel=1e-9)


def test_a_target_of_exactly_zero_closes_the_whole_position_skipping_the_lot_and_the_minimums():
    # lot 0.25, min notional 300. Step 1 (E_open 1000): X 1/3 -> 3.33 rounded down to 3.25 (325 >= 300),
    # Y -1/3 -> -6.67 -> -6.5 (325); cash 1000 - 325 + 325 = 1000. Bar 2 opens X at 50: closing 3.25 X
    # is 162.5 < 300 of notional, yet a target of exactly 0 is an exact close: sell 3.25 X at 50,
    # buy back 6.5 Y at 50: cash 1000 + 162.5 - 325 = 837.5, both positions exactly 0
    data = [[100.0, 50.0], [100.0, 50.0], [50.0, 50.0], [50.0, 50.0]]
    e = env(tensor(data), cfg=ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0,
                                                           lot_step=0.25, min_notional=300.0))
    _, _, _, _, info = e.step(act(1 / 3, -1 / 3))
    assert list(info["positions"]) == [3.25, -6.5] and info["cash"] == 1000.0
    _, _, _, _, info = e.step(act(0.0, 0.0))
    assert list(info["positions"]) == [0.0, 0.0] and info["cash"] == 837.5
    assert [(t["symbol"], t["side"], t["quantity"], t["price"]) for t in info["trades"]] == \
        [("X", "sell", 3.25, 50.0), ("Y", "buy", 6.5, 50.0)]


def test_a_small_nonzero_target_is_not_an_exact_close():
    # the same book; E_open at bar 2 = 1000 + 3.25 x 50 - 6.5 x 50 = 837.5; 0.01 of it in X is 0.1675 X:
    # an order of -3.0825 X, 3.0 lots x 50 = 150 < 300 of notional: ignored; Y held (NaN)
    data = [[100.0, 50.0], [100.0, 50.0], [50.0, 50.0], [50.0, 50.0]]
    e = env(tensor(data), cfg=ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0,
                                                           lot_step=0.25, min_notional=300.0))
    e.step(act(1 / 3, -1 / 3))
    _, _, _, _, info = e.step(act(0.01, np.nan))
    assert e.order_status == ["ignored_min_notional", "ignored_no_change"] and info["trades"] == []
    assert list(info["positions"]) == [3.25, -6.5]


# ---------------------------------------------------------------------- discrete
def discrete(levels=None, long_only=None, level_size=None, cap=2.0, data=FLAT):
    return env(tensor(data), action_scheme="discrete", levels=levels, long_only=long_only, level_size=level_size,
               cfg=ExecutionConfig.frictionless(max_leverage=cap, maintenance_margin=0.0))


@pytest.mark.parametrize("a, want", [
    ((2, 0), [0.5, -0.5]),  # levels (-1, 0, 1) x level size 1 / A = 0.5
    ((1, 1), [0.0, 0.0]),
    ((0, 2), [-0.5, 0.5]),
])
def test_discrete_levels_times_the_level_size(a, want):
    e = discrete(levels=(-1.0, 0.0, 1.0))
    assert weights(e, np.array(a)) == pytest.approx(want, abs=1e-12)


def test_discrete_long_only_levels_are_capped_at_one():
    e = discrete(levels=(0.0, 1.0, 2.0), level_size=1.0)
    assert e.long_only
    assert weights(e, np.array([2, 2])) == pytest.approx([0.5, 0.5], abs=1e-12)  # 2 + 2 = 4 -> x 1/4
    e = discrete(levels=(0.0, 1.0, 2.0), level_size=0.5)
    assert weights(e, np.array([1, 1])) == pytest.approx([0.5, 0.5], abs=1e-12)  # exactly 1: kept


@pytest.mark.parametrize("a", [(3, 0), (-1, 0), (1.5, 0)])
def test_discrete_refuses_an_index_out_of_range_or_not_whole(a):
    e = discrete(levels=(-1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="not in the action space"):
        e.step(np.array(a, np.float64))


def test_discrete_of_one_asset_takes_the_top_index():
    e = discrete(levels=(0.0, 0.5, 1.0), data=ONE)
    assert weights(e, 2) == pytest.approx([1.0], abs=1e-12)  # level 1 x level size 1 / 1
    assert weights(e, 0) == pytest.approx([0.0], abs=1e-12)
