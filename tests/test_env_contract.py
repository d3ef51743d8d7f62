"""envs/trading_env.py against its docstrings (the env's option table, the "info after each step"
list, Starting State / Episode End, the Gymnasium API): every documented default, every validation
with its exact one-line message and its boundary (the last value accepted, the first refused), the
reset and step infos' keys, types and values, the observation size W*A*F + W*A + A + 3, actions of
every shape and dtype, render, the statuses of a ruined episode, and the fill price/fee formula of
ExecutionConfig."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig, RewardConfig
from factorgym.envs.trades import Trades
from factorgym.errors import ConfigError
from tests._env_data import FEES, HOUR, LS, two_assets, with_prices

pytestmark = pytest.mark.filterwarnings("error")  # no numpy or Gymnasium warning may escape


def test_the_option_tables_defaults():
    """window 1, weights/simplex (long-only), log_return, ExecutionConfig(), episode_length None,
    random_start True, initial_cash 10_000, flat observation, render_mode None."""
    env = CryptoTradingEnv(two_assets())
    assert env.window == 1 and env.scheme == "simplex" and env.long_only is True
    assert env.reward_config == RewardConfig() and env.execution == ExecutionConfig()
    assert env.episode_length is None and env.random_start is True and env.initial_cash == 10_000.0
    assert env.render_mode is None and env.render() is None
    assert env.action_space.shape == (3,) and env.action_space.dtype == np.float32  # A + 1 (cash last)
    assert env.observation_space.shape == (1 * 2 * 2 + 1 * 2 + 2 + 3,)
    assert env.tensor_symbols == ["X", "Y"] and env.metadata == {"render_modes": ["ansi"], "render_fps": 4}
    _, info = env.reset(seed=3)
    assert info["end"] == 11  # to the last bar



def test_reward_config_defaults_are_the_documented_penalties():
    """RewardConfig: drawdown_penalty 0.1, turnover_penalty 0.001, sharpe_eta 0.01, scale 1; a reward
    given by name takes them."""
    assert RewardConfig() == RewardConfig("log_return", 0.1, 0.001, 0.01, 1.0)
    for kind, penalty in (("drawdown_penalty", 0.1), ("turnover_penalty", 0.001)):
        env = CryptoTradingEnv(two_assets(), reward=kind, **LS)
        env.reset(options={"start": 1})
        prev, peak = 10_000.0, 10_000.0
        for a in ([0.8, -0.5], [-0.6, 0.4], [0.1, 0.9]):
            _, r, _, _, info = env.step(np.array(a))
            e = info["equity"]
            peak = max(peak, e)
            term = (1 - e / peak) if kind == "drawdown_penalty" else info["turnover"]
            assert r == pytest.approx(math.log(e / prev) - penalty * term, rel=1e-12, abs=1e-15), kind
            prev = e



def test_a_reward_scale_multiplies_every_reward():
    ref = CryptoTradingEnv(two_assets(), reward=RewardConfig(kind="drawdown_penalty", drawdown_penalty=0.3), **LS)
    big = CryptoTradingEnv(two_assets(), reward=RewardConfig(kind="drawdown_penalty", drawdown_penalty=0.3, scale=250.0),
                           **LS)
    ref.reset(options={"start": 1})
    big.reset(options={"start": 1})
    for a in ([0.8, -0.5], [-0.6, 0.4]):
        _, r1, *_ = ref.step(np.array(a))
        _, r2, *_ = big.step(np.array(a))
        assert r2 == pytest.approx(250.0 * r1, rel=1e-12) and r1 != 0.0



def test_level_size_defaults_to_one_over_the_number_of_assets():
    env = CryptoTradingEnv(two_assets(), action_scheme="discrete", window=2, random_start=False, execution=FEES)
    assert env.level_size == 0.5 and list(env.levels) == [0.0, 1.0]
    env.reset(options={"start": 1})
    _, _, _, _, info = env.step(np.array([1, 0]))  # level 1 of X: half the equity
    assert info["weights"][0] == pytest.approx(0.5, abs=0.01) and info["weights"][1] == 0.0
    sized = CryptoTradingEnv(two_assets(), action_scheme="discrete", window=2, random_start=False, execution=FEES,
                             level_size=0.25)
    assert sized.level_size == 0.25
    sized.reset(options={"start": 1})
    _, _, _, _, info = sized.step(np.array([1, 1]))
    assert list(np.round(info["weights"], 2)) == [0.25, 0.25]



@pytest.mark.parametrize("W, F", [(1, 1), (2, 3), (4, 2)])
def test_the_flat_observation_has_w_a_f_plus_w_a_plus_a_plus_3_values(W, F):
    t = two_assets(F=F)
    env = CryptoTradingEnv(t, window=W, random_start=False)
    obs, _ = env.reset()
    n = W * 2 * F + W * 2 + 2 + 3
    assert env.observation_space.shape == (n,) and obs.shape == (n,) and obs.dtype == np.float32
    assert env.core.obs_dim == n
    # the portfolio block at reset: no weights, cash / equity 1, equity / initial 1, drawdown 0
    assert obs[-5:].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    np.testing.assert_array_equal(obs[: W * 2 * F], np.asarray(t.features[:W]).reshape(-1))  # the first W rows



@pytest.mark.parametrize("kw, message", [
    ({"window": 0}, r"window=0; expected an integer >= 1 \(bars of features per observation\)"),
    ({"window": -3}, r"window=-3; expected an integer >= 1 \(bars of features per observation\)"),
    ({"window": 2.0}, r"window=2.0; expected an integer >= 1 \(bars of features per observation\)"),
    ({"window": 12}, r"window=12 needs at least 13 bars \(window rows plus one bar to fill at\); the tensor has 12"),
    ({"initial_cash": 0}, r"initial_cash=0.0; expected a positive number \(quote currency\)"),
    ({"initial_cash": -5}, r"initial_cash=-5.0; expected a positive number \(quote currency\)"),
    ({"initial_cash": math.nan}, r"initial_cash=nan; expected a positive number \(quote currency\)"),
    ({"initial_cash": math.inf}, r"initial_cash=inf; expected a positive number \(quote currency\)"),
    ({"episode_length": 0}, r"episode_length=0; expected an integer in \[1, 11\] \(bars after the first full window of 1\)"),
    ({"episode_length": 12}, r"episode_length=12; expected an integer in \[1, 11\] \(bars after the first full window of 1\)"),
    ({"episode_length": 10, "window": 3},
     r"episode_length=10; expected an integer in \[1, 9\] \(bars after the first full window of 3\)"),
    ({"episode_length": 2.0}, r"episode_length=2.0; expected an integer in \[1, 11\] \(bars after the first full window of 1\)"),
    ({"render_mode": "human"}, r"render_mode='human'; expected None or one of \['ansi'\]"),
    ({"execution": {"taker_fee": 0.0}}, r"execution must be an ExecutionConfig, got dict"),
    ({"reward": 42}, r"reward=42; expected a reward name, a RewardConfig or a callable"),
    ({"reward": "sharpe"}, r"reward kind 'sharpe' is unknown; expected one of \(.*\) or a callable"),
])
def test_a_bad_option_is_refused_with_its_value_and_what_is_accepted(kw, message):
    with pytest.raises(ConfigError, match=rf"^{message}$"):
        CryptoTradingEnv(two_assets(), **kw)



@pytest.mark.parametrize("kw", [{"window": 11}, {"window": np.int64(3)}, {"initial_cash": 1e-6},
                                {"episode_length": 11}, {"episode_length": 1}, {"episode_length": 9, "window": 3},
                                {"episode_length": np.int32(4)}, {"render_mode": "ansi"}, {"render_mode": None}])
def test_the_last_accepted_values_build_an_env(kw):
    env = CryptoTradingEnv(two_assets(), random_start=False, **kw)
    env.reset()



def test_a_bar_after_the_last_accepted_window_leaves_one_decision_bar():
    """window = T - 1 (11 of 12 bars): one decision bar (10), one step, then truncated at bar 11."""
    env = CryptoTradingEnv(two_assets(), window=11, mapping="direct", execution=FEES)
    _, info = env.reset(seed=0)
    assert (info["start"], info["end"]) == (10, 11)
    _, _, term, trunc, info = env.step(np.array([0.5, 0.5]))
    assert trunc and not term and info["timestamp"] == 11 * HOUR



def test_reset_info_is_the_starting_state():
    env = CryptoTradingEnv(two_assets(), initial_cash=2_500, **LS)
    obs, info = env.reset(options={"start": 3})
    assert set(info) == {"timestamp", "equity", "cash", "fees", "slippage_cost", "borrow_cost", "funding", "turnover",
                         "weights", "positions", "trades", "status", "start", "end"}
    assert (info["timestamp"], info["equity"], info["cash"], info["start"], info["end"]) == (3 * HOUR, 2500.0, 2500.0, 3, 11)
    assert all(info[k] == 0.0 for k in ("fees", "slippage_cost", "borrow_cost", "funding", "turnover"))
    assert info["weights"].tolist() == [0.0, 0.0] and info["positions"].tolist() == [0.0, 0.0]
    assert info["trades"] == [] and info["status"] == "ok" and env.initial_cash == 2500.0



def test_step_info_keys_types_and_trades():
    env = CryptoTradingEnv(two_assets(), **LS)
    env.reset(options={"start": 1})
    obs, reward, term, trunc, info = env.step(np.array([0.6, -0.4]))
    assert set(info) == {"timestamp", "equity", "cash", "fees", "slippage_cost", "borrow_cost", "funding", "turnover",
                         "weights", "positions", "trades", "status"}
    for k in ("equity", "cash", "fees", "slippage_cost", "borrow_cost", "funding", "turnover"):
        assert type(info[k]) is float, k
    assert type(info["timestamp"]) is int and info["timestamp"] == 2 * HOUR
    assert type(reward) is float and term is False and trunc is False and info["status"] == "ok"
    for k in ("weights", "positions"):
        assert info[k].dtype == np.float64 and info[k].shape == (2,), k
    assert isinstance(info["trades"], Trades) and len(info["trades"]) == 2
    fills = list(info["trades"])
    assert [(f["symbol"], f["side"], f["kind"], f["timestamp"]) for f in fills] == \
           [("Y", "sell", "order", 2 * HOUR), ("X", "buy", "order", 2 * HOUR)]  # sells before buys
    assert info["fees"] == pytest.approx(sum(f["fee"] for f in fills), rel=1e-12)
    # turnover: the traded notional over the equity before the fills (both orders from cash: 0.6 + 0.4)
    assert info["turnover"] == pytest.approx(sum(f["quantity"] * f["price"] for f in fills) / 10_000, rel=1e-12)
    assert env.core.trades(0) == fills and env.order_status == ["filled", "filled"]



def test_a_step_without_orders_reports_no_trades_and_no_change():
    env = CryptoTradingEnv(two_assets(), **LS)
    env.reset(options={"start": 1})
    _, _, _, _, info = env.step(np.zeros(2))
    assert info["trades"] == [] and info["fees"] == 0.0 and info["turnover"] == 0.0
    assert env.order_status == ["ignored_no_change", "ignored_no_change"]



def test_a_fill_is_priced_at_the_open_with_fixed_slippage_plus_half_spread_plus_impact():
    """ExecutionConfig: s = (slippage_bps + half_spread_bps) / 1e4 + impact_coef * (qty / volume) **
    impact_exponent; a buy fills at open x (1 + s), a sell at open x (1 - s); fee = fee x notional
    (the maker fee when fee_side is 'maker'); slippage_cost = qty x open x s."""
    t = two_assets()
    vol = 1e4
    for cfg, fee in ((ExecutionConfig(taker_fee=0.002, maker_fee=0.0005, slippage_bps=2.0, half_spread_bps=3.0,
                                      impact_coef=0.2, impact_exponent=1.0, use_market_rules=False), 0.002),
                     (ExecutionConfig(taker_fee=0.002, maker_fee=0.0005, fee_side="maker", slippage_bps=2.0,
                                      half_spread_bps=3.0, impact_coef=0.05, use_market_rules=False), 0.0005)):
        env = CryptoTradingEnv(t, window=2, mapping="direct", long_only=False, random_start=False, execution=cfg)
        env.reset(options={"start": 1})
        _, _, _, _, info = env.step(np.array([0.7, -0.5]))
        for f in info["trades"]:
            a = ["X", "Y"].index(f["symbol"])
            opn = float(t.prices[2, a, 0])
            s = 5.0 / 1e4 + cfg.impact_coef * (f["quantity"] / vol) ** cfg.impact_exponent
            side = 1.0 if f["side"] == "buy" else -1.0
            assert f["price"] == pytest.approx(opn * (1 + side * s), rel=1e-12), f
            assert f["fee"] == pytest.approx(fee * f["quantity"] * f["price"], rel=1e-12), f
            assert f["slippage_cost"] == pytest.approx(f["quantity"] * opn * s, rel=1e-12), f



def test_the_weights_in_info_are_signed_position_values_over_equity_at_the_close():
    t = two_assets()
    env = CryptoTradingEnv(t, **LS)
    env.reset(options={"start": 1})
    for k, a in enumerate(([0.6, -0.4], [-0.3, 0.5]), start=2):
        _, _, _, _, info = env.step(np.array(a))
        value = info["positions"] * np.asarray(t.prices[k, :, 3])
        np.testing.assert_allclose(info["weights"], value / info["equity"], rtol=1e-12)
        assert info["equity"] == pytest.approx(info["cash"] + value.sum(), rel=1e-12)



def test_a_reward_callable_gets_the_previous_and_new_equity_turnover_fees_and_drawdown():
    """reward_fn(prev_equity, equity, turnover, fees, drawdown): prev_equity is initial_cash on an
    episode's first step (again after a reset), then the last step's equity."""
    calls = []

    def fn(*args):
        calls.append(args)
        return 0.125

    env = CryptoTradingEnv(two_assets(), reward=fn, initial_cash=1_000.0, **LS)
    assert env.reward_config == RewardConfig()
    infos = []
    for _ in range(2):
        calls.clear()
        env.reset(options={"start": 1})
        peak, prev = 1_000.0, 1_000.0
        for a in ([0.9, -0.9], [-0.9, 0.9], [0.2, 0.0]):
            _, r, _, _, info = env.step(np.array(a))
            assert r == 0.125
            peak = max(peak, info["equity"])
            infos.append((prev, info["equity"], info["turnover"], info["fees"], 1 - info["equity"] / peak))
            prev = info["equity"]
        assert [c[0] for c in calls] == [i[0] for i in infos[-3:]] and calls[0][0] == 1_000.0
        for c, i in zip(calls, infos[-3:]):
            assert c[1:4] == i[1:4] and c[4] == pytest.approx(i[4], abs=1e-15)



def test_render_ansi_shows_the_bar_time_equity_cash_and_signed_weights():
    env = CryptoTradingEnv(two_assets(), render_mode="ansi", **LS)
    env.reset(options={"start": 1})
    _, _, _, _, info = env.step(np.array([0.6, -0.4]))
    w = info["weights"]
    assert env.render() == (f"bar 2 ts=7200000 equity={info['equity']:.2f} cash={info['cash']:.2f} "
                            f"weights[X={w[0]:+.3f}, Y={w[1]:+.3f}]")
    assert w[1] < 0 and f"Y={w[1]:+.3f}".startswith("Y=-")



def test_a_step_before_reset_or_after_the_end_is_refused():
    env = CryptoTradingEnv(two_assets(), episode_length=1, **LS)
    msg = r"^step\(\) called on a finished \(or never reset\) episode; call reset\(\) first$"
    with pytest.raises(RuntimeError, match=msg):
        env.step(np.zeros(2))
    env.reset(options={"start": 1})
    _, _, _, trunc, _ = env.step(np.zeros(2))
    assert trunc
    with pytest.raises(RuntimeError, match=msg):
        env.step(np.zeros(2))
    env.reset(options={"start": 1})
    env.step(np.zeros(2))  # a reset starts it again



@pytest.mark.parametrize("L, starts", [(None, range(1, 11)), (3, range(1, 9)), (10, range(1, 2))])
def test_random_starts_cover_exactly_window_minus_1_to_t_minus_1_minus_l(L, starts):
    """12 bars, window 2: starts are drawn from [1, 11 - L] (L = 1 when episode_length is None), all of
    them; the end is start + L (or the last bar)."""
    env = CryptoTradingEnv(two_assets(), window=2, episode_length=L, mapping="direct", execution=FEES)
    env.reset(seed=123)
    seen = set()
    for _ in range(150):
        _, info = env.reset()
        seen.add(info["start"])
        assert info["end"] == (11 if L is None else info["start"] + L)
    assert seen == set(starts)



def test_without_random_start_every_reset_starts_at_the_first_full_window():
    env = CryptoTradingEnv(two_assets(), window=3, random_start=False, episode_length=4, execution=FEES)
    assert {env.reset(seed=s)[1]["start"] for s in range(5)} == {2}



@pytest.mark.parametrize("options, message", [
    ({"start": 1, "end": 1}, r"options\['end'\]=1 must be in \(1, 11\] \(the bar the episode is truncated at\)"),
    ({"start": 5, "end": 2}, r"options\['end'\]=2 must be in \(5, 11\] \(the bar the episode is truncated at\)"),
    ({"start": 5, "end": 12}, r"options\['end'\]=12 must be in \(5, 11\] \(the bar the episode is truncated at\)"),
    ({"start": 11}, r"options\['start'\]=11 is outside \[1, 10\]: the first decision bar needs 2 feature rows before "
                    r"it and one bar after it to fill at"),
    ({"start": -1}, r"options\['start'\]=-1 is outside \[1, 10\]"),
])
def test_episode_bounds_outside_the_data_are_refused_naming_the_range(options, message):
    env = CryptoTradingEnv(two_assets(), **LS)
    with pytest.raises(ConfigError, match=rf"^{message}"):
        env.reset(options=options)



@pytest.mark.parametrize("options, bounds", [({"start": 1, "end": 11}, (1, 11)), ({"start": 10}, (10, 11)),
                                             ({"start": np.int64(4), "end": np.int64(5)}, (4, 5)),
                                             ({"start": 4.0}, (4, 11))])
def test_episode_bounds_at_the_edges_are_accepted(options, bounds):
    _, info = CryptoTradingEnv(two_assets(), **LS).reset(options=options)
    assert (info["start"], info["end"]) == bounds and type(info["start"]) is int



@pytest.mark.parametrize("mapping", ["signed", "simplex"])
def test_a_nan_action_is_refused_with_the_action_and_the_space(mapping):
    env = CryptoTradingEnv(two_assets(), **{**LS, "mapping": mapping, "long_only": mapping == "simplex"})
    env.reset(options={"start": 1})
    a = np.zeros(env.action_space.shape)
    a[0] = np.nan
    with pytest.raises(ValueError) as e:
        env.step(a)
    assert str(e.value) == (f"action {a!r} is not in the action space {env.action_space} (NaN, or a discrete index "
                            f"that is not an integer in range)")
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape))  # the refused step moved nothing
    assert info["timestamp"] == 2 * HOUR



def test_a_nan_weight_in_the_direct_mapping_holds_that_asset():
    """spaces.py: direct mapping, 'NaN = hold: no order; the rest is clipped alone'."""
    env = CryptoTradingEnv(two_assets(), **LS)
    env.reset(options={"start": 1})
    _, _, _, _, info = env.step(np.array([0.6, -0.4]))
    held = info["positions"][0]
    _, _, _, _, info = env.step(np.array([np.nan, 0.0]))
    assert info["positions"][0] == held and info["positions"][1] == 0.0
    assert [f["symbol"] for f in info["trades"]] == ["Y"] and env.order_status[1] == "filled"



@pytest.mark.parametrize("action, shape", [([0.1, 0.2, 0.3], "(3,)"), ([[0.1, 0.2]], "(1, 2)"), (0.5, "()"),
                                           (np.array(["a", "b"]), "(2,)"), (np.array([[0.1, 0.2]]), "(1, 2)"),
                                           (np.array([[0.1], [0.2]], np.float32), "(2, 1)"),
                                           (np.array([[0.1], [0.2]]), "(2, 1)"),  # (2 values: the kernel would take them)
                                           (np.float64(0.5), "()"), (np.array(0.5), "()")])
def test_an_action_of_the_wrong_shape_or_kind_is_refused_naming_its_shape(action, shape):
    env = CryptoTradingEnv(two_assets(), **LS)
    env.reset(options={"start": 1})
    with pytest.raises(ValueError) as e:
        env.step(action)
    assert str(e.value) == f"action {action!r} has shape {shape}; the action space {env.action_space} expects (2,)"



def test_a_discrete_env_of_one_asset_takes_a_python_int_or_any_one_value_array():
    t = two_assets()
    one = FactorTensor.from_arrays(np.array(t.features)[:, :1], np.array(t.prices)[:, :1], t.timestamps, symbols=["X"])
    results = []
    for a in (2, np.int64(2), np.array([2]), np.array(2.0), [2]):
        env = CryptoTradingEnv(one, window=2, action_scheme="discrete", levels=(0.0, 0.5, 1.0), random_start=False,
                               execution=FEES)
        env.reset(options={"start": 1})
        _, _, _, _, info = env.step(a)
        results.append(info["weights"][0])
    assert len(set(results)) == 1 and results[0] == pytest.approx(1.0, abs=0.01)
    env.reset(options={"start": 1})
    with pytest.raises(ValueError, match=r"^action 3 is not in the action space Discrete\(3\)"):
        env.step(3)
    for bad, shape in ((np.array([]), "(0,)"), (np.array([], np.int64), "(0,)"), ([], "(0,)"),
                       (np.array([1, 1]), "(2,)"), (np.array([1.0, 1.0]), "(2,)")):
        env.reset(options={"start": 1})
        with pytest.raises(ValueError) as e:
            env.step(bad)
        assert str(e.value) == f"action {bad!r} has shape {shape}; the action space Discrete(3) expects ()"



@pytest.mark.parametrize("dtype", [np.longdouble, np.int64, np.float16])
def test_an_env_action_of_a_wider_or_narrower_dtype_steps_as_its_float64_values(dtype):
    """Only float32 and float64 1-d arrays go straight to the kernel; others (long double, which a
    float64 casts to safely, included) are converted to float64 first."""
    env, ref = CryptoTradingEnv(two_assets(), **LS), CryptoTradingEnv(two_assets(), **LS)
    env.reset(options={"start": 1})
    ref.reset(options={"start": 1})
    a = np.array([1, -1] if dtype == np.int64 else [0.5, -0.5], dtype)
    assert a.dtype == dtype
    obs, r, _, _, info = env.step(a)
    obs_r, r_r, _, _, info_r = ref.step(np.asarray(a, np.float64))
    np.testing.assert_array_equal(obs, obs_r)
    assert r == r_r and info["equity"] == info_r["equity"] and info["positions"][0] > 0



@pytest.mark.parametrize("gap, status", [(False, "liquidated"), (True, "bankrupt")])
def test_a_ruined_episode_terminates_with_the_status_named(gap, status):
    """A 2x long of X that loses 60%: within bar 3 (open unchanged, low and close down) the margin
    check liquidates it at the breach price (equity still > 0: "liquidated"); through a gap at bar 3's
    open the fill already leaves equity <= 0 ("bankrupt"). Either ends the episode (terminated)."""
    t = two_assets()
    prices = np.array(t.prices)
    if gap:
        prices[3:, 0, :4] *= 0.4
    else:
        prices[3, 0, 2:4] *= 0.4
        prices[4:, 0, :4] *= 0.4
    env = CryptoTradingEnv(with_prices(t, prices), **{**LS, "execution": ExecutionConfig(
        taker_fee=0.001, max_leverage=2.0, use_market_rules=False)})
    env.reset(options={"start": 1})
    _, _, term, trunc, info = env.step(np.array([2.0, 0.0]))
    assert (term, trunc, info["status"]) == (False, False, "ok")
    _, _, term, trunc, info = env.step(np.array([2.0, 0.0]))
    assert (term, trunc, info["status"]) == (True, False, status)
    assert (info["equity"] > 0) == (not gap)
    if not gap:
        assert [f["kind"] for f in info["trades"]][-1] == "liquidation" and info["positions"].tolist() == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(2))



def test_reset_takes_seed_and_options_by_keyword_only_as_gymnasiums_env():
    import inspect

    import gymnasium as gym

    def kinds(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert kinds(CryptoTradingEnv.reset) == kinds(gym.Env.reset)
    env = CryptoTradingEnv(two_assets(), **LS)
    with pytest.raises(TypeError):
        env.reset(0)

