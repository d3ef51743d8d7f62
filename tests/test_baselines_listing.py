"""Baselines say what they do when assets list late (issue 11, item 6): buy-and-hold buys the
tradable basket, then each newcomer at its listing; equal weight holds 1/k of the k listed assets."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.envs.baselines import BASELINE_NOTES, run_baselines
from test_short_spans import FREE, _tensor


# ---------------------------------------------------------------- item 6: baselines and late listings
def _value_at_fill(res, tensor, row):
    return np.nan_to_num(res.positions[row] * tensor.prices[row, :, 0])  # no price before listing


def test_buy_and_hold_buys_the_tradable_basket_then_each_newcomer_at_listing():
    tensor = _tensor(150, 3, listing={1: 50, 2: 100})
    res = run_baselines(tensor, names=("buy_and_hold",), execution=FREE)["buy_and_hold"]
    # bar 1: everything in C0 (the only tradable asset), not 1/3 of it with 2/3 idle cash
    v1 = _value_at_fill(res, tensor, 1)
    assert v1[0] == pytest.approx(10_000, rel=1e-9) and v1[1:].sum() == 0
    # C1 lists at bar 50: decided at its close, filled at 51's open with 1/2 of equity; C0 gives up the rest
    v51 = _value_at_fill(res, tensor, 51)
    assert v51[1] == pytest.approx(v51.sum() / 2, rel=1e-9) and v51[2] == 0
    # C2 lists at bar 100: 1/3 of equity; C0 and C1 keep their relative (drifted) proportions
    v101 = _value_at_fill(res, tensor, 101)
    assert v101[2] == pytest.approx(v101.sum() / 3, rel=1e-9)
    seen = res.positions[100] * tensor.prices[100, :, 3]  # the weights the policy saw at the decision
    assert v101[0] / v101[1] == pytest.approx(seen[0] / seen[1], rel=1e-6)  # float32 observation
    # and it never trades otherwise
    rows = sorted(set(np.searchsorted(res.timestamps, res.trades["time"].dt.as_unit("ms").astype("int64"))))
    assert rows == [1, 51, 101]
    assert res.info["baseline"] == BASELINE_NOTES["buy_and_hold"] and "listing" in res.info["baseline"]


def test_equal_weight_holds_one_over_the_listed_count():
    tensor = _tensor(150, 3, listing={1: 50, 2: 100})
    res = run_baselines(tensor, names=("equal_weight",), execution=FREE, rebalance_every=30)["equal_weight"]
    for row, k in ((1, 1), (51, 2), (101, 3), (121, 3)):  # 51 and 101: off-schedule rebalances at listing
        v = _value_at_fill(res, tensor, row)
        np.testing.assert_allclose(v[:k], v.sum() / k, rtol=1e-9)
        assert (v[k:] == 0).all()


def test_baselines_work_on_the_flat_and_the_dict_observation():
    tensor = _tensor(120, 3, listing={2: 60})
    flat = run_baselines(tensor, names=("buy_and_hold",), execution=FREE, window=4)["buy_and_hold"]
    dct = run_baselines(tensor, names=("buy_and_hold",), execution=FREE, window=4,
                        env_kwargs={"observation": "dict"})["buy_and_hold"]
    np.testing.assert_array_equal(flat.equity, dct.equity)
