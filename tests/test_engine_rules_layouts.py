"""The documented layouts of envs/layouts.py: the ``PRICE`` records of a tensor (untradable bars at
the last close, adverse extremes that include the open and the close, 1 / volume or 0, funding
only where tradable), the column count of the state arrays, ``inverse``, and the rare fill rows
(untradable close, liquidation) that must read as zeros once their step has passed. Values by hand."""

from __future__ import annotations

import types

import numpy as np
import pytest

from factorgym.envs import ExecutionConfig, RewardConfig
from factorgym.envs.core import PortfolioCore
from factorgym.envs.layouts import PRICE, columns, inverse, price_records

from tests._engine_rules_data import HOUR, act, env, tensor

NAN = float("nan")


def duck(o, h, lo, c, v, tradable, funding=None):
    prices = np.stack([np.asarray(x, float) for x in (o, h, lo, c, v)], axis=-1)
    return types.SimpleNamespace(prices=prices, tradable=np.asarray(tradable, bool), funding=funding)


def test_price_records_of_tradable_bars_widen_the_extremes_to_the_open_and_close():
    # bar 0: o 10, h 11, l 9, c 10.5, v 4; bar 1: a high below the open and a low above it (bad data):
    # low = min(12.2, open 12, close 12.1) = 12, high = max(11.5, 12, 12.1) = 12.1; volume 0 -> 1/v = 0
    t = duck([[10.0], [12.0]], [[11.0], [11.5]], [[9.0], [12.2]], [[10.5], [12.1]], [[4.0], [0.0]], [[1], [1]])
    r = price_records(t, t.tradable)
    assert r.shape == (2, 1, len(PRICE)) and r.dtype == np.float64
    assert r[0, 0, :7].tolist() == [10.0, 10.5, 0.25, 1.0, 9.0, 11.0, 0.0]
    assert r[1, 0, :7].tolist() == [12.0, 12.1, 0.0, 1.0, 12.0, 12.1, 0.0]


def test_price_records_of_untradable_bars_hold_the_last_close_and_no_volume_or_funding():
    # asset 0 stops trading at bar 2 (last close 12.1); asset 1 is listed from bar 1 (before: mark 0)
    o = [[10.0, NAN], [12.0, 5.0], [NAN, 6.0], [NAN, 7.0]]
    c = [[10.5, NAN], [12.1, 5.5], [NAN, 6.5], [NAN, 7.5]]
    v = [[4.0, 9.0], [2.0, 8.0], [3.0, 16.0], [3.0, 32.0]]
    tradable = [[1, 0], [1, 1], [0, 1], [0, 1]]
    funding = np.full((4, 2), 1 / 64)
    t = duck(o, np.fmax(o, c), np.fmin(o, c), c, v, tradable, funding)
    r = price_records(t, t.tradable)
    for bar in (2, 3):  # open = mark = low = high = 12.1, 1/v 0, not tradable, no funding
        assert r[bar, 0, :7].tolist() == [12.1, 12.1, 0.0, 0.0, 12.1, 12.1, 0.0]
    assert r[0, 1, :7].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert r[3, 1, :7].tolist() == [7.0, 7.5, 1 / 32, 1.0, 7.0, 7.5, 1 / 64]
    assert r[1, 0, PRICE.funding] == 1 / 64


@pytest.mark.parametrize("x, want", [([0.0, 2.0, -1.0, 0.25], [0.0, 0.5, 0.0, 4.0])])
def test_inverse_is_one_over_x_where_positive_else_zero(x, want):
    assert inverse(np.array(x)).tolist() == want


@pytest.mark.parametrize("n, cols", [(1, 8), (8, 8), (9, 24), (16, 24), (17, 24), (24, 24), (25, 40), (33, 40),
                                     (41, 56)])
def test_the_state_arrays_have_an_odd_number_of_blocks_of_eight_columns(n, cols):
    assert columns(n) == cols
    core = PortfolioCore(tensor([[100.0, 50.0]] * 3), n, window=1, scheme="direct", initial_cash=1000.0,
                         execution=ExecutionConfig.frictionless(), reward=RewardConfig(), long_only=True)
    assert core.work.shape[1] == cols and core._out.shape[1] == cols
    assert core.out.shape[0] == n and core.obs.shape == (n * core.obs_dim,)
    assert core.obs_dim == 1 * 2 * 1 + 1 * 2 + 2 + 3


def test_an_untradable_close_row_reads_as_zeros_on_the_next_steps():
    # all in (cash 0): 5 X, 10 Y; X does not trade at bar 2 and is closed at its last close 100; then
    # nothing is traded: the close is no longer in the fills (rows of a fill kind x A + asset, quantity 0 = none)
    o = [[100.0, 50.0], [100.0, 50.0], [NAN, 50.0], [100.0, 50.0], [100.0, 50.0]]
    tradable = np.array([[1, 1], [1, 1], [0, 1], [1, 1], [1, 1]], bool)
    cfg = ExecutionConfig.frictionless(on_untradable="close", max_leverage=1.0)
    e = env(tensor(o, tradable=tradable), cfg, long_only=True)
    e.step(act(0.5, 0.5))
    _, _, _, _, info = e.step(act(np.nan, np.nan))
    assert [(t["symbol"], t["kind"], t["quantity"]) for t in info["trades"]] == [("X", "untradable_close", 5.0)]
    assert e.core.fills[0, 2].tolist() == [-5.0, 100.0, 0.0, 0.0]  # row kind 1 x A + asset 0
    for a in (act(np.nan, np.nan), act(0.0, 0.5)):
        _, _, _, _, info = e.step(a)
        assert info["trades"] == [] and info["cash"] == 500.0
        f = e.core.fills[0]
        assert not f[:, 0].any()  # quantity 0 = no fill (an order row keeps its reference price)
        assert not f[2:].any()  # the untradable-close and liquidation rows without a fill: all 0


def test_a_following_order_fill_leaves_only_its_own_row():
    o = [[100.0, 50.0], [100.0, 50.0], [NAN, 50.0], [100.0, 50.0]]
    tradable = np.array([[1, 1], [1, 1], [0, 1], [1, 1]], bool)
    cfg = ExecutionConfig.frictionless(on_untradable="close", max_leverage=1.0)
    e = env(tensor(o, tradable=tradable), cfg, long_only=True)
    e.step(act(0.5, 0.25))
    e.step(act(np.nan, np.nan))  # X closed: cash 250 + 500 = 750
    _, _, _, _, info = e.step(act(0.25, np.nan))  # buy 2.5 X at 100 (0.25 x 1000)
    assert [(t["symbol"], t["kind"], t["quantity"]) for t in info["trades"]] == [("X", "order", 2.5)]
    f = e.core.fills[0]
    assert f[0].tolist() == [2.5, 100.0, 0.0, 0.0] and not f[1:, 0].any() and not f[2:].any()


def test_a_reset_writes_the_starting_state_and_an_out_row_of_equity_cash_and_bar_only():
    from factorgym.envs.layouts import COUNTER, OUT, STATE
    core = PortfolioCore(tensor([[100.0, 50.0], [100.0, 50.0], [120.0, 50.0], [120.0, 50.0]]), 2, window=1,
                         scheme="direct", initial_cash=1000.0, execution=ExecutionConfig.frictionless(max_leverage=1.0),
                         reward=RewardConfig(kind="differential_sharpe"), long_only=True)
    core.reset(np.array([0, 1]), np.array([0, 0]), np.array([3, 3]))
    core.step(np.array([[0.5, 0.5], [1.0, 0.0]]))
    core.step(np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert core.state[1, STATE.sharpe_square] != 0.0 and core.out[1, OUT.fees] == 0.0
    core.reset(np.array([1]), np.array([1]), np.array([2]))
    assert core.state[1].tolist() == [1000.0, 1000.0, 1000.0, 1000.0, 0.0, 0.0, 0.0, 0.0]  # STATE, positions
    assert core.counters[1].tolist() == [1, 2, 0, 0]  # bar, end bar, done, steps
    row = np.zeros(core.out.shape[1])
    row[[OUT.equity, OUT.cash, OUT.bar]] = [1000.0, 1000.0, 1.0]
    assert core.out[1].tolist() == row.tolist()
    assert core.counters[0, COUNTER.steps] == 2 and core.state[0, STATE.cash] != 1000.0  # env 0 untouched


def test_a_missing_high_or_low_on_a_tradable_bar_falls_back_to_the_open_and_close():
    # fmin / fmax skip NaN: low = min(open 10, close 10.5) = 10, high = max(10, 10.5) = 10.5
    t = duck([[10.0]], [[NAN]], [[NAN]], [[10.5]], [[2.0]], [[1]])
    assert price_records(t, t.tradable)[0, 0, :7].tolist() == [10.0, 10.5, 0.5, 1.0, 10.0, 10.5, 0.0]


def test_the_compiled_step_marks_every_env_bad_shape_and_returns_minus_one_for_an_action_of_the_wrong_size():
    from factorgym.envs.execution import ENV_BAD_SHAPE
    from factorgym.envs.layouts import OUT
    core = PortfolioCore(tensor([[100.0, 50.0]] * 4), 3, window=1, scheme="direct", initial_cash=1000.0,
                         execution=ExecutionConfig.frictionless(), reward=RewardConfig(), long_only=True)
    core.reset(np.arange(3), np.zeros(3, np.int64), np.full(3, 3))
    obs = np.zeros(3 * core.obs_dim, np.float32)
    # 5 values for 3 envs x 2: the kernel itself refuses it (the core's step checks sizes in Python first)
    got = core.step64(core.prices, core.data, core.config, core.work, core.dims, core._out, np.full(5, 0.25), obs)
    assert got == -1
    assert core.out[:, OUT.status].tolist() == [ENV_BAD_SHAPE] * 3
    assert not np.delete(core.out, OUT.status, axis=1).any()
    assert core.counters[:, 0].tolist() == [0, 0, 0] and core.state[:, 0].tolist() == [1000.0] * 3
    # the env raises naming the shape
    e = env(tensor([[100.0, 50.0]] * 4), long_only=True)
    with pytest.raises(ValueError, match=r"has shape \(3,\)"):
        e.step(np.full(3, 0.25))


def test_a_memory_mapped_tensor_observes_its_first_bar_at_a_start_of_bar_zero(tmp_path):
    """Window 1 starts at decision bar 0: the first observation of a memory-mapped tensor (whose feature
    rows the raw path writes itself) holds bar 0's stored row, as an in-memory tensor's does. (The reset
    writes every started env's rows; kernels.py:366 `stepped_only=True` would skip the env at bar 0.)"""
    from factorgym.data_layer.tensor import FactorTensor as _Tensor
    from factorgym.envs import CryptoTradingEnv

    feats = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]], [[9.0, 9.5], [9.75, 10.0]]], np.float32)
    o = np.full((3, 2), 100.0)
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    _Tensor.from_arrays(feats, prices, np.arange(3) * HOUR, symbols=["X", "Y"]).save(tmp_path / "t")
    for mmap in (True, False):
        t = _Tensor.load(tmp_path / "t", mmap=mmap)
        obs, _ = CryptoTradingEnv(t, window=1, mapping="direct", random_start=False).reset(options={"start": 0})
        assert list(obs[:4]) == [1.0, 2.0, 3.0, 4.0], mmap
