"""Engine paths that the mutation run (scripts/mutation.py) found unchecked, each worked by hand with
fees and slippage on two assets (so the second asset's rows are read). The numbers are derived in
the comments, independently of the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _reference_cases import action_sequences, assert_info_matches, assert_obs_matches, assert_reward_matches, \
    assert_trades_match, cases
from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv, ExecutionConfig
from test_reference_step import VECTOR_INFO_KEYS

HOUR = 3_600_000


def make_env(open_, close, cfg, tradable=None, **kw) -> CryptoTradingEnv:
    o, c = np.array(open_, float), np.array(close, float)
    prices = np.stack([o, np.fmax(o, c), np.fmin(o, c), c, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((len(o), 2, 1)), prices, np.arange(len(o)) * HOUR, symbols=["X", "Y"],
                                 tradable=None if tradable is None else np.array(tradable))
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0,
                         random_start=False, **kw)
    e.reset(options={"start": 0})
    return e


def test_liquidation_at_the_close_fills_the_second_asset_at_its_close():
    """Margin breached only by the close's borrow charge (not intrabar): the short in Y (the second
    asset) is bought back at Y's close with slippage and fee, not at any other price of the bar."""
    cfg = ExecutionConfig(taker_fee=0.001, slippage_bps=10.0, half_spread_bps=0.0, impact_coef=0.0,
                          borrow_rate_per_bar=0.6, max_leverage=2.0, maintenance_margin=0.25, use_market_rules=False)
    # bar 1: Y opens at 50, closes at 55 (high 55); X flat at 100
    e = make_env([[100.0, 50.0], [100.0, 50.0], [100.0, 55.0]], [[100.0, 50.0], [100.0, 55.0], [100.0, 55.0]], cfg)
    # fill at bar 1's open (E_open 1000): Y -100% -> sell 20 at 50 x 0.999 = 49.95: proceeds 999, fee 0.999;
    # cash 1998.001. Intrabar at Y's high 55: equity 1998.001 - 1100 = 898.001 >= 0.25 x 1100: no breach.
    # Close: borrow 0.6 x 20 x 55 = 660 -> cash 1338.001, equity 238.001 < 0.25 x 1100 = 275: liquidated at
    # the close: buy 20 at 55 x 1.001 = 55.055 (cost 1101.1, fee 1.1011) -> cash = equity = 235.7999
    _, reward, term, _, info = e.step(np.array([0.0, -1.0], np.float32))
    assert info["status"] == "liquidated" and term
    kinds = [(t["symbol"], t["side"], t["kind"]) for t in info["trades"]]
    assert kinds[-1][:2] == ("Y", "buy"), kinds
    buy = info["trades"][-1]
    assert buy["quantity"] == pytest.approx(20.0, abs=1e-12) and buy["price"] == pytest.approx(55.055, abs=1e-12)
    assert buy["fee"] == pytest.approx(1.1011, abs=1e-12) and buy["slippage_cost"] == pytest.approx(1.1, abs=1e-12)
    assert info["borrow_cost"] == pytest.approx(660.0, abs=1e-9)
    assert info["cash"] == pytest.approx(235.7999, abs=1e-9) and info["equity"] == pytest.approx(235.7999, abs=1e-9)
    assert info["fees"] == pytest.approx(0.999 + 1.1011, abs=1e-12)
    assert list(info["positions"]) == [0.0, 0.0]
    assert reward == pytest.approx(math.log(235.7999 / 1000), abs=1e-12)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_each_env_of_a_two_block_vector_env_matches_the_reference(data):
    """13 envs: two blocks of 8 lanes, the second partly padding (the 5-env reference tests fill one
    block only); every env held against its own plain-Python reference for 6 steps."""
    case = data.draw(cases(schemes=("signed", "direct_short")))
    N, steps = 13, 6
    lo, last = case.window - 1, case.tensor.n_bars - 1
    starts = data.draw(st.lists(st.integers(lo, last - steps - 1), min_size=N, max_size=N))
    actions = data.draw(st.lists(action_sequences(case.scheme, N), min_size=steps, max_size=steps))
    venv = CryptoTradingVectorEnv(case.tensor, N, **case.env_kwargs())
    refs = [case.reference() for _ in range(N)]
    obs, infos = venv.reset(seed=0, options={"start": np.asarray(starts)})
    for i, ref in enumerate(refs):
        ref_obs, ref_info = ref.reset(starts[i], last)
        assert_obs_matches(obs[i], ref_obs, f"env {i} reset")
        assert_info_matches({k: v[i] for k, v in infos.items()}, ref_info, f"env {i} reset")
    for k in range(steps):
        obs, rewards, term, trunc, infos = venv.step(np.stack([case.as_action(a) for a in actions[k]]))
        for i, ref in enumerate(refs):
            if ref.done:
                continue
            ref_obs, ref_reward, ref_term, ref_trunc, ref_info = ref.step(actions[k][i])
            where = f"step {k}, env {i} (bar {ref.t})"
            assert (term[i], trunc[i]) == (ref_term, ref_trunc), where
            assert_reward_matches(rewards[i], ref_reward, where)
            step_info = infos["final_info"] if ref.done else infos
            assert_info_matches({key: step_info[key][i] for key in VECTOR_INFO_KEYS}, ref_info, where)
            if not ref.done:
                assert_trades_match(venv.trades(i), ref_info, where)
                assert_obs_matches(obs[i], ref_obs, where)


def test_market_rules_defaults_are_no_rules_and_the_reciprocals_are_exact():
    from factorgym.envs.execution import MarketRules, market_rules

    assert market_rules() == MarketRules(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    r = market_rules(fee=0.001, lot_step=0.25, min_amount=1.0, min_notional=5.0, price_step=0.01)
    assert r == MarketRules(0.001, 0.25, 4.0, 1.0, 5.0, 0.01, 100.0)


def test_weights_are_reported_for_an_account_worth_less_than_one_unit():
    """Equity below 1 quote unit is still an account: weights = position x close / equity (here
    frictionless, X +50%, Y -50% of 0.5 at bar 1's open 100 / 50, marked at 110 / 50)."""
    cfg = ExecutionConfig(taker_fee=0.0, maker_fee=0.0, slippage_bps=0.0, half_spread_bps=0.0, impact_coef=0.0,
                          max_leverage=2.0, use_market_rules=False)
    open_, close = [[100.0, 50.0], [100.0, 50.0], [110.0, 50.0]], [[100.0, 50.0], [110.0, 50.0], [110.0, 50.0]]
    o, c = np.array(open_), np.array(close)
    prices = np.stack([o, np.fmax(o, c), np.fmin(o, c), c, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((3, 2, 1)), prices, np.arange(3) * HOUR, symbols=["X", "Y"])
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=0.5, random_start=False)
    e.reset(options={"start": 0})
    _, _, _, _, info = e.step(np.array([0.5, -0.5], np.float32))
    # buy 0.0025 X at 100, sell 0.005 Y at 50: cash 0.5; equity 0.5 + 0.0025 x 110 - 0.005 x 50 = 0.525
    assert info["equity"] == pytest.approx(0.525, abs=1e-15)
    assert list(info["weights"]) == pytest.approx([0.275 / 0.525, -0.25 / 0.525], abs=1e-12)



def _two_asset_tensor() -> FactorTensor:
    o = np.array([[100.0, 50.0], [101.0, 49.0], [102.0, 51.0], [103.0, 50.0]])
    prices = np.stack([o, o * 1.01, o * 0.99, o, np.full(o.shape, 1000.0)], axis=-1)
    return FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * HOUR, symbols=["X", "Y"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("scheme,slot", [("simplex", 0), ("simplex", 1), ("simplex", 2), ("signed", 1)])
def test_a_non_finite_value_in_any_slot_of_the_action_is_refused_and_moves_nothing(scheme, slot, bad):
    """NaN or inf in ANY component of the action (not only the first; simplex has A + 1 = 3 slots,
    the last for cash) makes it malformed: ValueError, and the env has not moved (its next valid
    step equals a fresh env's first)."""
    kw = dict(mapping=scheme, long_only=scheme == "simplex", initial_cash=1000.0, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, slippage_bps=5.0, use_market_rules=False))
    env, fresh = CryptoTradingEnv(_two_asset_tensor(), **kw), CryptoTradingEnv(_two_asset_tensor(), **kw)
    env.reset(options={"start": 0})
    fresh.reset(options={"start": 0})
    good = np.array([0.5, -0.5, 0.0] if scheme == "simplex" else [0.5, -0.5])
    action = good.copy()
    action[slot] = bad
    with pytest.raises(ValueError, match="not in the action space"):
        env.step(action)
    obs_a, r_a, _, _, info_a = fresh.step(good)
    obs_b, r_b, _, _, info_b = env.step(good)
    assert np.array_equal(obs_a, obs_b) and r_a == r_b and info_a["equity"] == info_b["equity"]
    assert np.array_equal(info_a["positions"], info_b["positions"]) and info_a["timestamp"] == info_b["timestamp"]


def test_building_an_env_with_no_lot_rules_and_untradable_bars_raises_no_numpy_warning():
    """Steps of 0 (no lot or price rule) and the zero volume of untradable bars store a reciprocal
    of 0 ("no such term"), computed without a divide-by-zero warning (under -W error a warning
    would be an exception in the user's code)."""
    import warnings

    from factorgym.envs.layouts import inverse

    o = np.array([[100.0, 50.0], [101.0, 49.0], [102.0, 51.0], [103.0, 50.0]])
    prices = np.stack([o, o * 1.01, o * 0.99, o, np.full(o.shape, 1000.0)], axis=-1)
    tradable = np.array([[True, False], [True, False], [True, True], [True, True]])
    prices[~tradable] = np.nan
    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * HOUR, symbols=["X", "Y"],
                                 tradable=tradable)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CryptoTradingEnv(t, mapping="direct", random_start=False,
                         execution=ExecutionConfig(taker_fee=0.001, use_market_rules=False))
        np.testing.assert_array_equal(inverse(np.array([0.0, 4.0, -2.0, 0.5])), [0.0, 0.25, 0.0, 2.0])


def test_an_account_marked_at_exactly_zero_equity_is_bankrupt_with_zero_weights():
    """Frictionless, no maintenance margin: short all 1000 of equity in Y at 50 (20 units, cash 2000)
    and Y closes at exactly 100 (its high): equity 2000 - 20 x 100 = 0.0 exactly, never below the
    margin (0 x gross) on the way, so the close finds it bankrupt. Weights of an account worth
    nothing are 0 (the reference model's q x mark / E if E > 0 else 0), not -inf."""
    cfg = ExecutionConfig.frictionless(max_leverage=1.0, maintenance_margin=0.0)
    e = make_env([[100.0, 50.0], [100.0, 50.0], [100.0, 100.0]], [[100.0, 50.0], [100.0, 100.0], [100.0, 100.0]],
                 cfg)
    obs, _, term, _, info = e.step(np.array([0.0, -1.0], np.float32))
    assert info["status"] == "bankrupt" and term
    assert info["equity"] == 0.0 and info["cash"] == 2000.0 and list(info["positions"]) == [0.0, -20.0]
    assert list(info["weights"]) == [0.0, 0.0]
    assert np.isfinite(obs).all()


@pytest.mark.parametrize("bad", [[0.0, -np.inf], [0.0, -1.0, 0.0]], ids=["inf", "wrong-length"])
def test_a_refused_action_on_a_bar_that_breaches_the_margin_liquidates_nothing(bad):
    """Short Y -100% at bar 1 (20 units at 50 with a 0.1% fee: cash 1998.001); bar 2's high of 90
    puts the margin under water intrabar (1998.001 - 1800 < 0.25 x 1800). A malformed action for
    bar 2 is refused: the account is untouched, so the valid action sent next is liquidated at bar
    2 exactly as in a twin env that never got the bad action (a refused env is not live)."""
    cfg = ExecutionConfig(taker_fee=0.001, slippage_bps=0.0, half_spread_bps=0.0, impact_coef=0.0,
                          max_leverage=2.0, maintenance_margin=0.25, use_market_rules=False)
    open_ = [[100.0, 50.0], [100.0, 50.0], [100.0, 50.0], [100.0, 90.0]]
    close = [[100.0, 50.0], [100.0, 50.0], [100.0, 90.0], [100.0, 90.0]]
    env, twin = make_env(open_, close, cfg), make_env(open_, close, cfg)
    short = np.array([0.0, -1.0])
    for e in (env, twin):
        _, _, _, _, info = e.step(short)
        assert info["status"] == "ok" and info["positions"][1] == pytest.approx(-20.0, abs=1e-12)
    with pytest.raises(ValueError):
        env.step(np.array(bad))
    _, r_e, term_e, _, info_e = env.step(short)
    _, r_t, term_t, _, info_t = twin.step(short)
    assert info_t["status"] == "liquidated" and term_t
    assert (info_e["status"], term_e, r_e) == (info_t["status"], term_t, r_t)
    assert info_e["equity"] == info_t["equity"] and info_e["fees"] == info_t["fees"]
    assert [t["price"] for t in info_e["trades"]] == [t["price"] for t in info_t["trades"]]


def test_funding_of_each_asset_is_charged_on_its_own_close():
    """Two perpetuals, frictionless: at bar 1's open buy 3 X at 100 (30%) and 10 Y at 50 (50%). At
    bar 1's close X is 100 with a rate of 0.2%, Y is 55 with 0.1%: funding 0.002 x 3 x 100 +
    0.001 x 10 x 55 = 0.6 + 0.55 = 1.15 paid (longs pay a positive rate); cash 1000 - 300 - 500 -
    1.15 = 198.85, equity 198.85 + 300 + 550 = 1048.85."""
    o = np.array([[100.0, 50.0], [100.0, 50.0], [100.0, 55.0]])
    c = np.array([[100.0, 50.0], [100.0, 55.0], [100.0, 55.0]])
    prices = np.stack([o, np.fmax(o, c), np.fmin(o, c), c, np.full(o.shape, 1000.0)], axis=-1)
    funding = np.array([[0.0, 0.0], [0.002, 0.001], [0.0, 0.0]])
    t = FactorTensor.from_arrays(np.zeros((3, 2, 1)), prices, np.arange(3) * HOUR,
                                 symbols=["X/USDT:USDT", "Y/USDT:USDT"],
                                 funding=funding)
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, initial_cash=1000.0, random_start=False,
                         execution=ExecutionConfig.frictionless(max_leverage=1.0))
    e.reset(options={"start": 0})
    _, _, _, _, info = e.step(np.array([0.3, 0.5]))
    assert list(info["positions"]) == pytest.approx([3.0, 10.0], abs=1e-12)
    assert info["funding"] == pytest.approx(1.15, abs=1e-12)
    assert info["cash"] == pytest.approx(198.85, abs=1e-9) and info["equity"] == pytest.approx(1048.85, abs=1e-9)


@pytest.mark.parametrize("bad", [[3, 0], [0, 3], [-1, 0], [1.5, 0]])
def test_a_discrete_index_one_past_the_last_level_is_refused_and_moves_nothing(bad):
    """Three levels (indices 0, 1, 2): index 3 (= the number of levels), -1 or 1.5 is not in the
    MultiDiscrete space: ValueError, and the env's next valid step equals a fresh env's first;
    index 2 is the last level (100% of the asset's level size)."""
    kw = dict(action_scheme="discrete", levels=(0.0, 0.5, 1.0), long_only=True, initial_cash=1000.0,
              random_start=False, execution=ExecutionConfig(taker_fee=0.001, use_market_rules=False))
    env, fresh = CryptoTradingEnv(_two_asset_tensor(), **kw), CryptoTradingEnv(_two_asset_tensor(), **kw)
    env.reset(options={"start": 0})
    fresh.reset(options={"start": 0})
    with pytest.raises(ValueError, match="not in the action space"):
        env.step(np.array(bad))
    good = np.array([2, 0])
    obs_a, r_a, _, _, info_a = fresh.step(good)
    obs_b, r_b, _, _, info_b = env.step(good)
    assert np.array_equal(obs_a, obs_b) and r_a == r_b and info_a["equity"] == info_b["equity"]
    assert info_a["weights"][0] == pytest.approx(0.5, abs=0.01)  # level 1.0 x level size 1 / A = 0.5


def test_after_a_step_with_one_malformed_action_the_other_envs_observations_are_current_over_a_mapped_tensor(tmp_path):
    """PortfolioCore.step with env 0's action malformed returns -1: env 0 does not move, the others
    do and get their new observations. Over a memory-mapped tensor (feature rows read raw from the
    map) those are the same bits as over the tensor in memory, for every env after the bad one."""
    from factorgym.envs import PortfolioCore, RewardConfig

    rng = np.random.default_rng(21)
    T = 12
    o = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, 2)), axis=0))
    prices = np.stack([o, o * 1.01, o * 0.99, o, np.full(o.shape, 1000.0)], axis=-1)
    mem = FactorTensor.from_arrays(rng.normal(size=(T, 2, 3)).astype(np.float32), prices, np.arange(T) * HOUR)
    mem.save(tmp_path / "t")
    mapped = FactorTensor.load(tmp_path / "t", mmap=True)
    cfg = ExecutionConfig(taker_fee=0.001, use_market_rules=False)
    cores = [PortfolioCore(t, 3, window=3, scheme="signed", execution=cfg, reward=RewardConfig(), initial_cash=1000.0,
                           long_only=False) for t in (mem, mapped)]
    acts = np.array([[np.nan, 0.5], [0.5, -0.5], [-0.2, 0.4]])
    for core in cores:
        core.reset(np.arange(3), np.array([2, 2, 4]), np.array([T - 1] * 3))
        assert core.step(acts.reshape(-1)) == -1
        assert list(core.counters[:, 0]) == [2, 3, 5]  # env 0 stayed at its start, the others moved one bar
    obs_mem, obs_map = (c.obs.reshape(3, -1) for c in cores)
    assert not np.array_equal(obs_map[1], obs_map[2])
    np.testing.assert_array_equal(obs_map[1:].view(np.uint32), obs_mem[1:].view(np.uint32))


@pytest.mark.parametrize("N", [8, 24])
def test_a_vector_env_of_whole_blocks_steps_each_env_as_a_single_env(N):
    """8 and 24 envs fill whole blocks of 8 lanes with no padding block after them (the layout pads
    only to an odd number of blocks): each env, from its own start and with its own actions, gives
    what a single env gives, step after step (the 5- and 13-env tests all have padding lanes)."""
    kw = dict(mapping="signed", long_only=False, initial_cash=1000.0, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, slippage_bps=5.0, max_leverage=2.0, use_market_rules=False))
    rng = np.random.default_rng(N)
    o = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, (12, 2)), axis=0))
    prices = np.stack([o, o * 1.01, o * 0.99, o, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(rng.normal(size=(12, 2, 1)), prices, np.arange(12) * HOUR, symbols=["X", "Y"])
    starts = rng.integers(0, 6, N)
    actions = rng.uniform(-1, 1, (4, N, 2))
    venv = CryptoTradingVectorEnv(t, N, **kw)
    venv.reset(options={"start": starts})
    singles = [CryptoTradingEnv(t, **kw) for _ in range(N)]
    for e, s in zip(singles, starts):
        e.reset(options={"start": int(s)})
    for k in range(4):
        _, rewards, _, _, infos = venv.step(actions[k])
        for i, e in enumerate(singles):
            _, r, _, _, info = e.step(actions[k, i])
            assert rewards[i] == r and infos["equity"][i] == info["equity"], (k, i)
            assert list(infos["positions"][i]) == list(info["positions"]), (k, i)


def test_no_funding_is_charged_on_a_bar_where_the_asset_does_not_trade():
    """A held perpetual over a bar where it is untradable (position frozen; its funding row NaN, or a
    stray finite rate) pays no funding for it; the other asset, tradable, pays its own: 0.001 x 10 x
    50 = 0.5 at bar 2's close."""
    o = np.array([[100.0, 50.0], [100.0, 50.0], [100.0, 50.0], [100.0, 50.0]])
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    tradable = np.array([[True, True], [True, True], [False, True], [True, True]])
    for stray in (np.nan, 0.5):
        funding = np.array([[0.0, 0.0], [0.0, 0.0], [stray, 0.001], [0.0, 0.0]])
        t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * HOUR,
                                     symbols=["X/USDT:USDT", "Y/USDT:USDT"], tradable=tradable, funding=funding)
        e = CryptoTradingEnv(t, mapping="direct", long_only=False, initial_cash=1000.0, random_start=False,
                             execution=ExecutionConfig.frictionless(max_leverage=1.0))
        e.reset(options={"start": 0})
        _, _, _, _, info = e.step(np.array([0.3, 0.5]))  # 3 X at 100, 10 Y at 50
        assert info["funding"] == 0.0
        _, _, _, _, info = e.step(np.array([0.3, 0.5]))  # bar 2: X frozen, no order for Y (at its target)
        assert list(info["positions"]) == pytest.approx([3.0, 10.0], abs=1e-12)
        assert info["funding"] == pytest.approx(0.5, abs=1e-12) and info["equity"] == pytest.approx(999.5, abs=1e-9)



def test_the_kernels_fill_without_the_general_power_is_the_paper_exchanges_fill_to_the_bit():
    """One accounting: for an impact exponent of 0.5 the kernels call fill_order_nb with
    any_exponent=False (compiled without the general power), the paper exchange calls process_order,
    which uses any_exponent=True. Both must give the same fill to the last bit: the square root,
    not x ** 0.5 (which differs from sqrt(x) in the last bit for ~0.1% of x). Impact 1 and no fixed
    slippage put sqrt(participation) straight into the price, over 20,000 sizes."""
    from factorgym.envs.execution import Slippage, fill_order_nb, market_rules

    rules, slip = market_rules(fee=0.001), Slippage(0.0, 1.0, 0.5)
    sizes = np.random.default_rng(23).uniform(0.0625, 0.25, 20_000) * np.where(np.arange(20_000) % 2, 1.0, -1.0)
    for size in sizes:
        fast = fill_order_nb(size, False, 100.0, 1.0, rules, slip, False)
        general = fill_order_nb(size, False, 100.0, 1.0, rules, slip, True)
        assert fast == general, size
        assert fast.price == 100.0 * (1.0 + np.sign(size) * math.sqrt(abs(size))), size
