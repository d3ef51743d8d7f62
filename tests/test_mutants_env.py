"""Paths of the Python around the engine that the mutation run (scripts/mutation.py) found
unchecked: each test fails for a planted bug that the suite let through."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig

HOUR = 3_600_000


def two_assets(T: int = 12) -> FactorTensor:
    rng = np.random.default_rng(3)
    close = np.exp(np.cumsum(rng.normal(0, 0.02, (T, 2)), axis=0)) * np.array([100.0, 20.0])
    return FactorTensor.from_arrays(rng.normal(size=(T, 2, 2)), close, np.arange(T) * HOUR, symbols=["X", "Y"])


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.int16, np.uint8, np.bool_])
def test_an_action_array_of_any_number_dtype_acts_as_its_values(dtype):
    """A 1-d action array of a dtype other than float32/float64 (which the kernels take as they
    are) is converted first: it steps exactly as the float32 array of the same values."""
    values = [1, 0] if dtype in (np.uint8, np.bool_) else [1, -1]
    kw = dict(window=2, mapping="direct", long_only=False, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, max_leverage=2.0, use_market_rules=False))
    ref, env = CryptoTradingEnv(two_assets(), **kw), CryptoTradingEnv(two_assets(), **kw)
    ref.reset(options={"start": 1})
    env.reset(options={"start": 1})
    for _ in range(3):
        obs_a, r_a, _, _, info_a = ref.step(np.array(values, np.float32))
        obs_b, r_b, _, _, info_b = env.step(np.array(values, dtype))
        assert np.array_equal(obs_a, obs_b) and r_a == r_b
        assert list(info_b["weights"]) == list(info_a["weights"]) and info_b["equity"] == info_a["equity"]
    assert info_a["positions"][0] > 0.0  # the action was taken (not read as zeros)


@pytest.mark.parametrize("days, text", [(0.5, "12 h"), (1.99, "48 h"), (2.0, "2 d"), (108.4, "108 d")])
def test_a_span_shows_in_days_from_two_days_and_in_hours_below(days, text):
    from factorgym.envs.backtest import format_metric

    assert format_metric("span_days", days) == text


def test_metrics_of_a_two_bar_run_by_hand():
    """Two bars (one return): exposure and turnover are the second bar's values (the first bar is
    the starting state), annualised turnover = 0.5 x 8760 bars a year."""
    from factorgym.envs.metrics import compute_metrics

    m = compute_metrics([1000.0, 1100.0], bars_per_year=8760.0, turnover=[0.0, 0.5], fees=[0.0, 2.0],
                        gross_exposure=[0.0, 0.8], n_trades=3)
    assert m["exposure"] == pytest.approx(0.8, abs=1e-15)
    assert m["turnover"] == pytest.approx(0.5 * 8760.0, rel=1e-15)
    assert m["total_turnover"] == 0.5 and m["fees"] == 2.0 and m["fees_frac"] == pytest.approx(0.002, abs=1e-15)
    assert m["total_return"] == pytest.approx(0.1, abs=1e-15) and m["n_bars"] == 1.0 and m["hit_rate"] == 1.0


def test_metrics_of_a_one_bar_run_are_undefined_without_numpy_warnings():
    """One bar (no return): the per-bar means are nan, and no 'mean of empty slice' warning is raised."""
    import warnings

    from factorgym.envs.metrics import compute_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics([1000.0], bars_per_year=8760.0, turnover=[0.0], fees=[0.0], gross_exposure=[0.0])
    assert np.isnan(m["turnover"]) and np.isnan(m["exposure"]) and m["n_bars"] == 0.0
    assert m["total_turnover"] == 0.0 and m["final_equity"] == 1000.0


def test_backtest_records_the_default_seed_zero_and_its_numbers_do_not_depend_on_the_seed():
    from factorgym.envs.backtest import backtest

    def policy(obs):
        return np.array([0.5, -0.5], np.float32)

    kw = dict(window=2, mapping="direct", env_kwargs={"long_only": False},
              execution=ExecutionConfig(taker_fee=0.001, max_leverage=2.0, use_market_rules=False))
    default, seeded = backtest(two_assets(), policy, **kw), backtest(two_assets(), policy, seed=7, **kw)
    assert default.info["seed"] == 0 and seeded.info["seed"] == 7
    assert np.array_equal(default.equity, seeded.equity) and default.equity[-1] != default.equity[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3])
def test_a_box_action_of_the_wrong_length_is_refused_and_moves_nothing(dtype, n):
    """A 1-d float action with too few or too many values (the fast path hands it to the kernel
    as it is) fails with the one-line shape error; the env has not moved: its next valid step is a
    fresh env's first."""
    kw = dict(window=2, mapping="direct", long_only=False, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, max_leverage=2.0, use_market_rules=False))
    env, fresh = CryptoTradingEnv(two_assets(), **kw), CryptoTradingEnv(two_assets(), **kw)
    env.reset(options={"start": 1})
    fresh.reset(options={"start": 1})
    with pytest.raises(ValueError, match=rf"has shape \({n},\); the action space .* expects \(2,\)"):
        env.step(np.full(n, 0.5, dtype))
    a = np.array([0.5, -0.5], dtype)
    obs_a, r_a, _, _, info_a = fresh.step(a)
    obs_b, r_b, _, _, info_b = env.step(a)
    assert np.array_equal(obs_a, obs_b) and r_a == r_b and info_a["equity"] == info_b["equity"]
    assert info_a["timestamp"] == info_b["timestamp"]


def test_a_curve_flat_up_to_float_round_off_has_an_undefined_sharpe_not_an_infinite_one():
    """Equity that moves only in its last bits (returns of ~2e-16, std ~1e-16) is a flat curve: both
    the std and the mean are float noise (below 1e-12), so the Sharpe ratio is 0/0 = nan, as for an
    exactly flat curve, not mean/0 = inf."""
    import math

    from factorgym.envs import metrics

    eq = 1000.0 + np.arange(6) * 1e-13
    r = eq[1:] / eq[:-1] - 1.0
    assert 0 < abs(r.mean()) < 1e-12 and r.std(ddof=1) < 1e-12  # the premise: noise, not a return
    assert math.isnan(metrics.sharpe(r, 365.0))
    assert math.isnan(metrics.compute_metrics(eq, bars_per_year=365)["sharpe"])
    assert math.isnan(metrics.sharpe(np.zeros(5), 365.0))  # exactly flat: the same answer


def test_cagr_of_an_empty_curve_is_undefined_like_the_total_return():
    import math

    from factorgym.envs import metrics

    assert math.isnan(metrics.cagr([], 1.0)) and math.isnan(metrics.total_return([]))
    assert metrics.cagr([100.0, 121.0], 2.0) == pytest.approx(0.1, rel=1e-12)  # 1.21 over two years: 10% a year


def test_the_price_error_names_the_first_bad_tradable_bar():
    """Several bad prices on tradable bars: the error points at the earliest one (row and asset),
    where a user starts fixing the data, not at the last."""
    from factorgym.errors import DataValidationError

    t = two_assets(T=12)
    prices = np.array(t.prices)
    prices[9, 0, 0] = np.nan  # X's open at row 9
    prices[4, 1, 0] = -1.0  # Y's open at row 4: the first
    bad = FactorTensor(t.features, prices, t.timestamps, t.symbols, t.feature_names, t.tradable, t.meta)
    with pytest.raises(DataValidationError, match=r"^Y: open is -1.0 at row 4 \(timestamp 14400000\)"):
        CryptoTradingEnv(bad)


def test_a_vector_env_with_more_than_256_action_values_steps_each_env_as_a_single_env():
    """130 envs x 2 assets = 260 action values (past CPython's cache of small ints, where 'is' on
    equal ints stops working): the batch steps, and env i with action i gives what a single env
    gives for that action from the same start."""
    from factorgym.envs import CryptoTradingVectorEnv

    N = 130
    kw = dict(window=2, mapping="direct", long_only=False, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, max_leverage=2.0, use_market_rules=False))
    venv = CryptoTradingVectorEnv(two_assets(), N, **kw)
    venv.reset(options={"start": 1})
    rng = np.random.default_rng(8)
    actions = rng.uniform(-1, 1, (N, 2))
    _, rewards, _, _, infos = venv.step(actions)
    for i in (0, 77, N - 1):
        env = CryptoTradingEnv(two_assets(), **kw)
        env.reset(options={"start": 1})
        _, r, _, _, info = env.step(actions[i])
        assert rewards[i] == r and infos["equity"][i] == info["equity"]


def test_a_start_of_exactly_1e11_is_a_time_in_ms_not_a_bar_index():
    """backtest's start/end: an int >= 1e11 is epoch ms (documented), so 100_000_000_000 (1973-03-03
    09:46:40 UTC) picks the bar stamped at that time, the same run as its bar index."""
    from factorgym.envs.backtest import backtest

    t = two_assets(T=30)
    ts = 100_000_000_000 + (np.arange(30) - 10) * HOUR  # bar 10 is stamped exactly 1e11 ms
    t = FactorTensor(t.features, t.prices, ts, t.symbols, t.feature_names, t.tradable, t.meta)
    kw = dict(mapping="direct", window=3, execution=ExecutionConfig(taker_fee=0.001, use_market_rules=False))
    by_time = backtest(t, lambda obs: np.array([0.5, 0.2]), start=100_000_000_000, **kw)
    by_index = backtest(t, lambda obs: np.array([0.5, 0.2]), start=10, **kw)
    assert by_time.timestamps[0] == 100_000_000_000 and by_time.info["start_bar"] == 10
    np.testing.assert_array_equal(by_time.equity, by_index.equity)


def test_the_shared_price_records_keep_only_a_few_tensors():
    """Price records (an env's largest array for a mapped tensor) are shared between envs over the
    same read-only tensor, but the cache holds at most 4 tensors' records: 6 live tensors in turn do
    not keep 6 copies alive."""
    from factorgym.envs import core

    tensors = []
    for k in range(6):
        t = two_assets(T=12 + k)
        for a in (t.prices, t.tradable):
            a.flags.writeable = False
        tensors.append(t)
        CryptoTradingEnv(t, window=2)
    records = [r for _, r in core._RECORDS]
    assert 1 <= len(records) <= 4
    assert CryptoTradingEnv(tensors[-1], window=2).core.prices is records[-1]  # still shared for a live tensor


@pytest.mark.parametrize("ms", [-3_600_000, -1e-3, 0])
def test_bars_per_year_refuses_a_negative_or_zero_bar_length(ms):
    from factorgym.envs.metrics import bars_per_year_from_ms

    with pytest.raises(ValueError, match="timeframe_ms must be > 0"):
        bars_per_year_from_ms(ms)


@pytest.mark.parametrize("start,end", [(5, 5), (5, 3)])
def test_a_vector_env_refuses_an_episode_end_at_or_before_its_start(start, end):
    """options['end'] inside the data but not after the start is refused (an episode of no bars
    would be truncated before its first step), like an end past the data."""
    from factorgym.envs import CryptoTradingVectorEnv
    from factorgym.errors import ConfigError

    venv = CryptoTradingVectorEnv(two_assets(), 3, window=2, mapping="direct", long_only=False, random_start=False)
    with pytest.raises(ConfigError, match=r"options\['end'\] must be after the start"):
        venv.reset(options={"start": start, "end": end})
    venv.reset(options={"start": start, "end": start + 1})  # one bar: accepted


def test_float32_and_float64_actions_mixed_in_one_episode_act_as_their_values():
    """The single env compiles one entry point per action dtype on first use. An episode that starts
    with float32 actions and then alternates with float64 ones steps exactly as an env given the
    same values (float32 values are exact in float64) always as float64: each dtype reaches the
    entry point compiled for it (the other one cannot unbox it: a TypeError mid-episode)."""
    kw = dict(window=2, mapping="direct", long_only=False, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, max_leverage=2.0, use_market_rules=False))
    mixed, ref = CryptoTradingEnv(two_assets(), **kw), CryptoTradingEnv(two_assets(), **kw)
    mixed.reset(options={"start": 1})
    ref.reset(options={"start": 1})
    rng = np.random.default_rng(9)
    for k in range(6):
        a32 = rng.uniform(-0.9, 0.9, 2).astype(np.float32)
        a = a32 if k % 2 == 0 else a32.astype(np.float64)
        obs_m, r_m, _, _, info_m = mixed.step(a)
        obs_r, r_r, _, _, info_r = ref.step(a32.astype(np.float64))
        assert np.array_equal(obs_m, obs_r) and r_m == r_r, k
        assert info_m["equity"] == info_r["equity"] and np.array_equal(info_m["positions"], info_r["positions"]), k


def test_a_dict_observation_env_steps_to_dicts_holding_the_flat_envs_values():
    """observation='dict': every step (not only reset) returns the dict, whose arrays hold exactly
    the values of the flat observation of the same env and action."""
    kw = dict(window=2, mapping="direct", long_only=False, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, use_market_rules=False))
    flat, d = CryptoTradingEnv(two_assets(), **kw), CryptoTradingEnv(two_assets(), observation="dict", **kw)
    flat.reset(options={"start": 1})
    obs_d, _ = d.reset(options={"start": 1})
    assert isinstance(obs_d, dict)
    for a in ([0.5, -0.2], [0.0, 0.3]):
        obs_f, *_ = flat.step(np.array(a))
        obs_d, *_ = d.step(np.array(a))
        assert isinstance(obs_d, dict)
        got = np.sort(np.concatenate([np.ravel(v) for v in obs_d.values()]))
        np.testing.assert_array_equal(got, np.sort(obs_f))  # the same values, rearranged


def test_nan_features_on_tradable_bars_are_reported_once_and_a_clean_tensor_is_not(caplog):
    import logging

    t = two_assets()
    with caplog.at_level(logging.WARNING):
        CryptoTradingEnv(t, window=2)
    assert "NaN/inf on tradable bars" not in caplog.text
    feats = np.array(t.features)
    feats[3, 0, 1] = np.nan
    feats[5, 1, 0] = np.inf
    bad = FactorTensor(feats, t.prices, t.timestamps, t.symbols, t.feature_names, t.tradable, t.meta)
    with caplog.at_level(logging.WARNING):
        CryptoTradingEnv(bad, window=2)
    assert "2 feature values are NaN/inf on tradable bars; they are observed as 0" in caplog.text


def test_a_one_value_vector_env_takes_a_zero_d_action_array_as_its_value():
    """1 env x 1 asset (signed): a 0-d float array, a Python float and a [1, 1] array are the same
    one action value."""
    from factorgym.envs import CryptoTradingVectorEnv

    t = two_assets()
    one = FactorTensor.from_arrays(np.array(t.features)[:, :1], np.array(t.prices)[:, :1], t.timestamps, symbols=["X"])
    results = []
    for a in (np.array(0.5), 0.5, np.array([[0.5]], np.float32)):
        venv = CryptoTradingVectorEnv(one, 1, window=2, mapping="signed", long_only=False, random_start=False,
                                      execution=ExecutionConfig(taker_fee=0.001, use_market_rules=False))
        venv.reset(options={"start": 1})
        _, rewards, _, _, infos = venv.step(a)
        results.append((float(rewards[0]), float(infos["equity"][0])))
    assert results[0] == results[1] == results[2] and results[0][1] != 10_000.0  # it traded (a fee was paid)


def test_each_metric_kind_has_its_display_format():
    """format_metric's kinds: a count as a whole number, money with thousands separators and cents,
    a ratio to three decimals, a fraction as a percentage (the docstring's ``12.34%``, ``1.23``)."""
    from factorgym.envs.backtest import format_metric

    assert format_metric("n_trades", 1234.4) == "1234"
    assert format_metric("final_equity", 12345.678) == "12,345.68" and format_metric("fees", 0.5) == "0.50"
    assert format_metric("sharpe", 1.23456) == "1.235" and format_metric("turnover", 12.0) == "12.000"
    assert format_metric("total_return", 0.1234) == "12.34%"


def test_the_start_error_names_the_range_of_starts_that_are_accepted():
    """12 bars, window 2: the first decision bar is 1 (two feature rows, bars 0-1) and the last is 10
    (bar 11 is needed to fill at). The error for a start outside names exactly [1, 10], and both
    ends of that range are accepted."""
    from factorgym.errors import ConfigError

    env = CryptoTradingEnv(two_assets(T=12), window=2, mapping="direct", random_start=False)
    for bad in (0, 11):
        with pytest.raises(ConfigError, match=rf"options\['start'\]={bad} is outside \[1, 10\]"):
            env.reset(options={"start": bad})
    for good in (1, 10):
        _, info = env.reset(options={"start": good})
        assert info["timestamp"] == good * HOUR


def test_a_portfolio_core_without_level_size_takes_a_level_as_a_weight_of_one():
    """PortfolioCore (public) built for the discrete scheme without level_size: one level unit is a
    weight of 1, so it steps as the env of one asset, whose level size is 1 / A = 1 (levels 0.25 and
    0.5 stay below the gross cap, so any other unit would show)."""
    from factorgym.envs import PortfolioCore, RewardConfig

    t = two_assets()
    one = FactorTensor.from_arrays(np.array(t.features)[:, :1], np.array(t.prices)[:, :1], t.timestamps, symbols=["X"])
    cfg = ExecutionConfig(taker_fee=0.001, use_market_rules=False)
    core = PortfolioCore(one, 1, window=2, scheme="discrete", execution=cfg, reward=RewardConfig(),
                         initial_cash=1000.0, long_only=True, levels=(0.0, 0.25, 0.5))
    env = CryptoTradingEnv(one, window=2, action_scheme="discrete", levels=[0.0, 0.25, 0.5], long_only=True,
                           execution=cfg, initial_cash=1000.0, random_start=False)
    core.reset(np.array([0]), np.array([1]), np.array([11]))
    env.reset(options={"start": 1})
    for level in (2, 1):
        core.step(np.array([float(level)]))
        _, _, _, _, info = env.step(level)
        assert core.info_scalars(0)["equity"] == info["equity"] and core.state[0, -1] == info["positions"][0]
    assert 0.2 < info["weights"][0] < 0.3  # the second step's level 1 = 25% of equity


@pytest.mark.parametrize("lev", [0.5, 1.0, 1.5])
def test_the_long_only_leverage_note_is_logged_only_when_it_holds(lev, caplog):
    """Long-only with max_leverage < 1 logs that at most that fraction of equity is invested, and an
    all-in action then holds about that fraction; at 1 or above a long-only account holds at most
    100% (no leverage without shorts or borrowing), so the note would be false and is not logged."""
    import logging

    kw = dict(window=2, mapping="direct", long_only=True, random_start=False,
              execution=ExecutionConfig(taker_fee=0.001, max_leverage=lev, use_market_rules=False))
    with caplog.at_level(logging.INFO, logger="factorgym.envs.core"):
        env = CryptoTradingEnv(two_assets(), **kw)
    noted = "at most that fraction of equity is invested" in caplog.text
    env.reset(options={"start": 1})
    _, _, _, _, info = env.step(np.array([1.0, 1.0]))
    invested = float(np.sum(info["weights"]))
    assert noted == (lev < 1.0)
    assert invested == pytest.approx(min(lev, 1.0), abs=0.05)


def test_final_obs_and_final_info_appear_only_on_steps_where_an_env_ended_as_in_gymnasium():
    """Same-step autoreset: the 'final_obs'/'final_info' keys (and their masks) are in the infos only
    on a step where some env terminated or truncated, as Gymnasium's own SyncVectorEnv (SAME_STEP)
    over the same single envs gives them."""
    import gymnasium as gym

    from factorgym.envs import CryptoTradingVectorEnv

    kw = dict(window=2, mapping="direct", long_only=False, random_start=False, episode_length=3,
              execution=ExecutionConfig(taker_fee=0.001, use_market_rules=False))
    final = {"final_obs", "final_info", "_final_obs", "_final_info"}
    venv = CryptoTradingVectorEnv(two_assets(), 2, **kw)
    sync = gym.vector.SyncVectorEnv([lambda: CryptoTradingEnv(two_assets(), **kw)] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    venv.reset(options={"start": 1})
    sync.reset(options={"start": 1})
    ended = []
    for _ in range(4):
        a = np.array([[0.5, -0.2], [0.1, 0.3]])
        _, _, term, trunc, infos = venv.step(a)
        _, _, term_g, trunc_g, infos_g = sync.step(a)
        assert (term | trunc).tolist() == (term_g | trunc_g).tolist()
        assert final & set(infos) == final & set(infos_g), (final & set(infos), final & set(infos_g))
        ended.append(bool((term | trunc).any()))
    assert ended == [False, False, True, False]  # both kinds of step were seen


def test_the_html_report_of_a_result_shows_the_first_500_trades_as_the_report_writer_does(tmp_path):
    """BacktestResult.report_html with its defaults is write_html_report's report: a run of more
    than 500 fills lists the first 500 ("first 500 shown"), 500 table rows."""
    from factorgym.envs.backtest import backtest
    from factorgym.envs.report import write_html_report

    flip = iter(range(10**6))
    res = backtest(two_assets(T=300), lambda obs: np.array([0.6, -0.3]) if next(flip) % 2 else np.array([-0.3, 0.6]),
                   mapping="direct", window=2, env_kwargs={"long_only": False},
                   execution=ExecutionConfig(taker_fee=0.001, max_leverage=1.0, use_market_rules=False))
    n = len(res.trades)
    assert n > 500
    mine = res.report_html(tmp_path / "a.html").read_text()
    theirs = write_html_report(tmp_path / "b.html", {res.name: res}).read_text()
    for html in (mine, theirs):
        assert f"Trades ({n}, first 500 shown)" in html
        table = html[html.index(f"Trades ({n}"):]
        body = table[table.index("<tbody>"):table.index("</tbody>")]
        assert body.count("<tr") == 500


def test_max_drawdown_is_zero_below_two_bars_as_documented():
    """'0 for < 2 bars': an empty curve and a one-bar curve have no fall (not a ruin of 1)."""
    from factorgym.envs import metrics

    assert metrics.max_drawdown([]) == 0.0 and metrics.max_drawdown([1000.0]) == 0.0
    assert metrics.max_drawdown([100.0, 80.0, 120.0, 90.0]) == pytest.approx(0.25, abs=1e-15)  # 120 -> 90


@pytest.mark.parametrize("options, end", [({"start": 1}, 4), ({"start": 1, "end": 3}, 3), ({"start": 9}, 11)])
def test_an_episode_ends_at_the_given_end_else_after_episode_length_bars_within_the_data(options, end):
    """episode_length=3 (12 bars, window 2): from start 1 the episode is truncated at bar 4 after
    3 steps; an explicit options['end'] wins; near the data's end it stops at the last bar (11)."""
    env = CryptoTradingEnv(two_assets(T=12), window=2, mapping="direct", episode_length=3, random_start=False)
    _, info = env.reset(options=options)
    assert (info["start"], info["end"]) == (options["start"], end)
    steps, trunc = 0, False
    while not trunc:
        _, _, term, trunc, info = env.step(np.array([0.2, 0.1]))
        steps += 1
        assert not term
    assert steps == end - options["start"] and info["timestamp"] == end * HOUR


def test_a_backtest_over_more_than_256_bars_that_reaches_the_end_warns_of_no_early_end(caplog):
    """A run of 300 bars (past CPython's cache of small ints, where 'is' on equal ints fails) that
    reaches its last bar logs nothing about an early end; a run cut short by ruin does."""
    import logging

    from factorgym.envs.backtest import backtest

    kw = dict(mapping="direct", window=2, execution=ExecutionConfig(taker_fee=0.001, use_market_rules=False))
    with caplog.at_level(logging.WARNING, logger="factorgym.envs.backtest"):
        full = backtest(two_assets(T=302), lambda obs: np.array([0.3, 0.2]), **kw)
    assert len(full.equity) == 301 and "the episode ended" not in caplog.text
    t = two_assets(T=302)
    prices = np.array(t.prices)
    prices[150:, 0, :4] *= 1e-3  # X loses 99.9% at bar 150: a 2x long is ruined
    ruined = FactorTensor(t.features, prices, t.timestamps, t.symbols, t.feature_names, t.tradable, t.meta)
    with caplog.at_level(logging.WARNING, logger="factorgym.envs.backtest"):
        cut = backtest(ruined, lambda obs: np.array([2.0, 0.0]), env_kwargs={"long_only": False},
                       **{**kw, "execution": ExecutionConfig(taker_fee=0.001, max_leverage=2.0,
                                                             use_market_rules=False)})
    assert len(cut.equity) < 301 and "the episode ended" in caplog.text


def test_an_empty_backtest_range_names_its_zero_bars():
    """start after end: the error says the range has 0 bars (not a negative count, nor 1)."""
    from factorgym.envs.backtest import backtest
    from factorgym.errors import ConfigError

    with pytest.raises(ConfigError, match=r"the backtest range has 0 bars \(start bar 8, end bar 5\)"):
        backtest(two_assets(T=12), lambda obs: np.array([0.1, 0.1]), start=8, end=5, mapping="direct", window=2)
    with pytest.raises(ConfigError, match=r"the backtest range has 1 bars \(start bar 8, end bar 9\)"):
        backtest(two_assets(T=12), lambda obs: np.array([0.1, 0.1]), start=8, end=9, mapping="direct", window=2)


def test_an_env_starts_with_the_documented_10000_of_cash():
    """initial_cash defaults to 10_000.0 (the env's option table): reset's equity and cash, and the
    first step's equity with no position taken."""
    env = CryptoTradingEnv(two_assets(), window=2, mapping="direct", random_start=False)
    _, info = env.reset(options={"start": 1})
    assert info["equity"] == info["cash"] == 10_000.0 and env.initial_cash == 10_000.0
    _, _, _, _, info = env.step(np.zeros(2))
    assert info["equity"] == 10_000.0


def test_the_trades_frame_has_float_columns_with_and_without_trades():
    """BacktestResult.trades: quantity, price, fee and slippage_cost are float64 whether the run
    traded or not (an empty frame's columns would otherwise be 'object', which breaks sums and
    comparisons downstream)."""
    from factorgym.envs.backtest import backtest

    kw = dict(mapping="direct", window=2, execution=ExecutionConfig(taker_fee=0.001, use_market_rules=False))
    idle = backtest(two_assets(T=20), lambda obs: np.zeros(2), **kw)
    busy = backtest(two_assets(T=20), lambda obs: np.array([0.3, 0.2]), **kw)
    assert len(idle.trades) == 0 and len(busy.trades) > 0
    for res in (idle, busy):
        for col in ("quantity", "price", "fee", "slippage_cost"):
            assert res.trades[col].dtype == np.float64, (col, res.trades[col].dtype)
