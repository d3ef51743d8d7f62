"""The engine's documented tolerances at their boundaries (envs/execution.py "Rounding rules",
envs/phases.py): an order within 1e-10 of the target is round-off (not sent), a target within
1e-12 of an untradable asset's held weight is no change (not rejected), the long-only scale keeps
a margin of 1e-12 of the cash, and a non-finite action is refused whatever the mapping (NaN alone
means "hold" in the direct mapping). Values by hand on flat prices (X 100, Y 50; cash 1000)."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.envs import ExecutionConfig

from tests._engine_rules_data import act, env, tensor

FLAT = [[100.0, 50.0]] * 4
NAN = float("nan")


@pytest.mark.parametrize("w, status", [
    (1.0 - 5e-11, "ignored_no_change"),  # order 5e-10 X <= 1e-10 x 10 X held: round-off, not sent
    (1.0 - 2e-10, "filled"),             # 2e-9 X > 1e-9: a real (tiny) sell
    (1.0, "ignored_no_change"),
])
def test_an_order_within_1e_10_of_the_position_is_round_off(w, status):
    e = env(tensor(FLAT), long_only=True)
    e.step(act(1.0, 0.0))  # 10 X, cash 0
    _, _, _, _, info = e.step(act(w, 0.0))
    assert e.order_status[0] == status
    if status == "filled":
        assert info["trades"][0]["side"] == "sell" and info["trades"][0]["quantity"] == pytest.approx(2e-9, rel=1e-4)
    else:
        assert info["trades"] == [] and info["positions"][0] == 10.0


@pytest.mark.parametrize("dw, status", [(1e-13, "ignored_no_change"), (1e-11, "rejected_untradable"),
                                        (0.0, "ignored_no_change")])
def test_an_untradable_target_within_1e_12_of_the_held_weight_is_no_change(dw, status):
    o = [[100.0, 50.0], [100.0, 50.0], [NAN, 50.0], [100.0, 50.0]]
    tradable = np.array([[1, 1], [1, 1], [0, 1], [1, 1]], bool)
    e = env(tensor(o, tradable=tradable), long_only=True)
    e.step(act(0.5, 0.0))  # 5 X: 0.5 of 1000 at its last close 100
    e.step(act(0.5 + dw, 0.0))
    assert e.order_status[0] == status


def test_the_long_only_scale_leaves_a_margin_of_1e_12_of_the_cash():
    # fee 1/1024: the buys are scaled to 1000 / cost x (1 - 1e-12): they cost 1000 (1 - 1e-12), so
    # 1000 x 1e-12 = 1e-9 of cash is left (to round-off of 1000's ulp, 1.1e-13)
    cfg = ExecutionConfig.frictionless(taker_fee=1 / 1024, max_leverage=1.0)
    e = env(tensor(FLAT), cfg, long_only=True)
    _, _, _, _, info = e.step(act(0.5, 0.5))
    assert info["cash"] == pytest.approx(1e-9, abs=5e-13)


@pytest.mark.parametrize("mapping, long_only, bad", [
    ("direct", True, (np.inf, 0.0)), ("direct", False, (-np.inf, 0.0)), ("signed", False, (np.nan, 0.0)),
    ("signed", False, (np.inf, 0.0)), ("simplex", True, (0.0, np.inf, 0.0)),
])
def test_a_non_finite_action_is_refused_and_nothing_moves(mapping, long_only, bad):
    e = env(tensor(FLAT), mapping=mapping, long_only=long_only)
    with pytest.raises(ValueError, match="not in the action space"):
        e.step(act(*bad))
    assert list(e.core.state[0, -2:]) == [0.0, 0.0] and e.core.state[0, 0] == 1000.0
    assert e.core.counters[0, 0] == 0  # still at its start bar


def test_discrete_refuses_nan():
    e = env(tensor(FLAT), action_scheme="discrete", levels=(-1.0, 0.0, 1.0), long_only=False)
    with pytest.raises(ValueError, match="not in the action space"):
        e.step(np.array([np.nan, 1.0]))
