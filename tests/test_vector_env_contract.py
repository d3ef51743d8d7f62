"""envs/vector_env.py against its docstrings: the constructor's checks and exact messages, the
batched spaces, reset (seed lists, per-env start/end arrays and their bounds), the infos' keys,
dtypes and shapes after reset and step, a callable reward over arrays (autoresets included),
get_attr, trades, close, dict observations: each against single CryptoTradingEnvs or Gymnasium."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv, ExecutionConfig
from factorgym.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("error")  # no numpy or Gymnasium warning may escape

HOUR = 3_600_000
FEES = ExecutionConfig(taker_fee=0.001, use_market_rules=False)
LS = dict(window=2, mapping="direct", long_only=False, random_start=False, execution=FEES)
SCALARS = ("equity", "cash", "fees", "slippage_cost", "borrow_cost", "funding", "turnover")


def two_assets(T: int = 12) -> FactorTensor:
    rng = np.random.default_rng(4)
    close = np.exp(np.cumsum(rng.normal(0, 0.02, (T, 2)), axis=0)) * np.array([100.0, 20.0])
    opn = close * np.exp(rng.normal(0, 0.005, (T, 2)))
    prices = np.stack([opn, np.maximum(opn, close), np.minimum(opn, close), close, np.full((T, 2), 1e4)], -1)
    return FactorTensor.from_arrays(rng.normal(size=(T, 2, 2)), prices, np.arange(T) * HOUR, symbols=["X", "Y"])


T12 = two_assets()


# ------------------------------------------------------------------ construction
@pytest.mark.parametrize("n, shown", [(0, "0"), (-2, "-2"), (2.0, "2.0"), ("3", "'3'"), (None, "None")])
def test_num_envs_must_be_a_positive_integer(n, shown):
    with pytest.raises(ConfigError, match=rf"^num_envs={shown}; expected an integer >= 1$"):
        CryptoTradingVectorEnv(T12, n, **LS)


@pytest.mark.parametrize("mode", [None, "ansi"])
def test_the_vector_env_refuses_any_render_mode(mode):
    with pytest.raises(ConfigError, match=r"^the vector env does not render; drop render_mode$"):
        CryptoTradingVectorEnv(T12, 2, render_mode=mode, **LS)


def test_one_env_and_numpy_integers_are_accepted_and_options_reach_the_env():
    v = CryptoTradingVectorEnv(T12, np.int64(1), **LS)
    assert v.num_envs == 1 and type(v.num_envs) is int
    v = CryptoTradingVectorEnv(T12, 3, initial_cash=500.0, episode_length=4, **LS)
    assert v.get_attr("initial_cash") == (500.0, 500.0, 500.0) and v.get_attr("episode_length") == (4, 4, 4)
    assert v.get_attr("window") == (2, 2, 2) and v.get_attr("execution") == (FEES,) * 3
    assert v.core.parallel is False  # documented default
    assert CryptoTradingVectorEnv(T12, 2, parallel=True, **LS).core.parallel is True


@pytest.mark.parametrize("kw", [LS, dict(window=3), dict(action_scheme="discrete", levels=(-1, 0, 1), long_only=False),
                                dict(window=2, observation="dict")])
def test_the_spaces_are_the_single_envs_batched_as_gymnasium_batches_them(kw):
    v = CryptoTradingVectorEnv(T12, 3, **kw)
    single = CryptoTradingEnv(T12, **kw)
    assert v.single_observation_space == single.observation_space and v.single_action_space == single.action_space
    assert v.observation_space == gym.vector.utils.batch_space(single.observation_space, 3)
    assert v.action_space == gym.vector.utils.batch_space(single.action_space, 3)
    assert v.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP and v.render_mode is None


# ------------------------------------------------------------------ reset
def test_reset_infos_are_the_starting_state_of_every_env_without_a_status():
    v = CryptoTradingVectorEnv(T12, 3, initial_cash=750.0, **LS)
    obs, infos = v.reset(options={"start": np.array([1, 4, 9])})
    assert set(infos) == {"timestamp", *SCALARS, "weights", "positions", "n_trades"}
    assert infos["timestamp"].dtype == np.int64 and infos["timestamp"].tolist() == [HOUR, 4 * HOUR, 9 * HOUR]
    assert infos["equity"].tolist() == infos["cash"].tolist() == [750.0] * 3
    for k in ("fees", "slippage_cost", "borrow_cost", "funding", "turnover"):
        assert infos[k].dtype == np.float64 and infos[k].tolist() == [0.0] * 3, k
    assert infos["weights"].shape == infos["positions"].shape == (3, 2) and not infos["weights"].any()
    assert infos["n_trades"].dtype == np.int64 and infos["n_trades"].tolist() == [0, 0, 0]
    assert obs.shape == (3, v.core.obs_dim) and obs.dtype == np.float32
    for i, s in enumerate((1, 4, 9)):  # each row: a single env's first observation at its start
        np.testing.assert_array_equal(obs[i], CryptoTradingEnv(T12, initial_cash=750.0, **LS).reset(options={"start": s})[0])


def test_a_seed_list_seeds_the_vector_env_with_its_first_seed():
    kw = dict(LS, random_start=True, episode_length=3)
    a, b, c = (CryptoTradingVectorEnv(T12, 4, **kw) for _ in range(3))
    assert a.reset(seed=[7, 8, 9, 10])[1]["timestamp"].tolist() == b.reset(seed=7)[1]["timestamp"].tolist()
    starts = {tuple(c.reset(seed=s)[1]["timestamp"].tolist()) for s in range(6)}
    assert len(starts) > 1  # different seeds, different starts


def test_random_starts_cover_the_single_envs_range():
    """[window - 1, T - 1 - L], L = episode_length (3): bars 1..8 of 12, every one of them drawn."""
    v = CryptoTradingVectorEnv(T12, 8, **dict(LS, random_start=True, episode_length=3))
    v.reset(seed=0)
    seen = set()
    for _ in range(20):
        _, infos = v.reset()
        seen |= set((infos["timestamp"] // HOUR).tolist())
    assert seen == set(range(1, 9))


@pytest.mark.parametrize("options, message", [
    ({"start": 0}, r"options\['start'\] must be in \[1, 10\], got 0"),
    ({"start": 11}, r"options\['start'\] must be in \[1, 10\], got 11"),
    ({"start": np.array([1, 11, 2])}, r"options\['start'\] must be in \[1, 10\], got array\(\[ 1, 11,  2\]\)"),
    ({"start": 3, "end": 12}, r"options\['end'\] must be after the start and <= 11, got 12"),
    ({"start": np.array([1, 5, 2]), "end": np.array([4, 5, 11])},
     r"options\['end'\] must be after the start and <= 11, got array\(\[ 4,  5, 11\]\)"),
])
def test_bounds_outside_the_data_are_refused_naming_the_range(options, message):
    with pytest.raises(ConfigError, match=rf"^{message}$"):
        CryptoTradingVectorEnv(T12, 3, **LS).reset(options=options)


def test_per_env_bounds_at_the_edges_run_as_single_envs():
    """Starts 1 and 10 (the first and last decision bars), ends 2, 11 and 11: env i's steps are a
    single env's from its start; each is truncated at its own end."""
    v = CryptoTradingVectorEnv(T12, 3, **LS)
    starts, ends = np.array([1, 10, 5]), np.array([2, 11, 11])
    v.reset(options={"start": starts, "end": ends})
    singles = [CryptoTradingEnv(T12, **LS) for _ in range(3)]
    for env, s, e in zip(singles, starts, ends):
        env.reset(options={"start": int(s), "end": int(e)})
    a = np.array([[0.5, -0.2], [0.1, 0.3], [-0.4, 0.4]])
    _, rewards, term, trunc, infos = v.step(a)
    for i, env in enumerate(singles):
        _, r, te, tr, info = env.step(a[i])
        assert (rewards[i], term[i], trunc[i]) == (r, te, tr), i
        assert infos["final_info"]["equity"][i] == info["equity"] if tr else infos["equity"][i] == info["equity"]
    assert trunc.tolist() == [True, True, False] and not term.any()


# ------------------------------------------------------------------ step
def test_step_infos_have_the_documented_dtypes_and_are_the_single_envs_values():
    v = CryptoTradingVectorEnv(T12, 3, **LS)
    v.reset(options={"start": np.array([1, 2, 3])})
    singles = [CryptoTradingEnv(T12, **LS) for _ in range(3)]
    for i, env in enumerate(singles):
        env.reset(options={"start": i + 1})
    a = np.array([[0.5, -0.2], [0.0, 0.0], [-0.4, 0.4]])
    obs, rewards, term, trunc, infos = v.step(a)
    assert set(infos) == {"timestamp", *SCALARS, "weights", "positions", "n_trades", "status"}
    assert infos["status"].dtype == np.int8 and infos["n_trades"].dtype == np.int64
    assert infos["timestamp"].dtype == np.int64 and rewards.dtype == np.float64
    assert term.dtype == trunc.dtype == np.bool_ and term.shape == (3,)
    for k in SCALARS:
        assert infos[k].dtype == np.float64 and infos[k].shape == (3,), k
    for i, env in enumerate(singles):
        o, r, _, _, info = env.step(a[i])
        np.testing.assert_array_equal(obs[i], o)
        assert rewards[i] == r and infos["timestamp"][i] == info["timestamp"]
        assert all(infos[k][i] == info[k] for k in SCALARS)
        assert infos["weights"][i].tolist() == info["weights"].tolist()
        assert infos["positions"][i].tolist() == info["positions"].tolist()
        assert infos["n_trades"][i] == len(info["trades"]) and v.trades(i) == list(info["trades"])
    assert infos["n_trades"].tolist() == [2, 0, 2] and infos["status"].tolist() == [0, 0, 0]


def test_a_ruined_env_reports_status_1_or_2_and_the_others_0():
    t = two_assets(T=12)
    prices = np.array(t.prices)
    prices[3:, 0, :4] *= 0.02  # X loses 98% at bar 3
    crash = FactorTensor(t.features, prices, t.timestamps, t.symbols, t.feature_names, t.tradable, t.meta)
    kw = dict(LS, execution=ExecutionConfig(taker_fee=0.001, max_leverage=2.0, use_market_rules=False))
    v = CryptoTradingVectorEnv(crash, 2, **kw)
    v.reset(options={"start": 1})
    v.step(np.array([[2.0, 0.0], [0.0, 0.0]]))
    _, _, term, _, infos = v.step(np.array([[2.0, 0.0], [0.0, 0.0]]))
    single = CryptoTradingEnv(crash, **kw)
    single.reset(options={"start": 1})
    single.step(np.array([2.0, 0.0]))
    _, _, te, _, info = single.step(np.array([2.0, 0.0]))
    assert te and term.tolist() == [True, False]
    assert infos["final_info"]["status"].tolist() == [{"bankrupt": 1, "liquidated": 2}[info["status"]], 0]


def test_a_step_before_reset_or_after_close_is_refused():
    v = CryptoTradingVectorEnv(T12, 2, **LS)
    with pytest.raises(RuntimeError, match=r"^step\(\) before reset\(\); call reset\(\) first$"):
        v.step(np.zeros((2, 2)))
    v.reset(options={"start": 1})
    v.step(np.zeros((2, 2)))
    v.close()
    with pytest.raises(RuntimeError, match=r"^step\(\) before reset\(\); call reset\(\) first$"):
        v.step(np.zeros((2, 2)))


@pytest.mark.parametrize("bad_env", [0, 2])
def test_a_malformed_action_names_the_first_bad_env_and_the_space(bad_env):
    v = CryptoTradingVectorEnv(T12, 3, **dict(LS, mapping="signed"))
    v.reset(options={"start": 1})
    a = np.zeros((3, 2))
    a[bad_env, 1] = np.nan
    a[2, 0] = np.nan
    with pytest.raises(ValueError) as e:
        v.step(a)
    assert str(e.value) == (f"action of env {bad_env} is not in the action space {v.single_action_space} (NaN, or a "
                            f"discrete index that is not an integer in range)")


def test_a_reward_callable_gets_float64_arrays_and_restarts_from_the_initial_cash_after_an_autoreset():
    """Vector env: reward_fn(prev_equity, equity, turnover, fees, drawdown) on float64 arrays [N];
    prev_equity is initial_cash on each env's first step, also the first of an autoreset episode."""
    calls = []

    def fn(prev, eq, turnover, fees, dd):
        calls.append((prev.copy(), eq.copy(), turnover.copy(), fees.copy(), dd.copy()))
        assert all(isinstance(x, np.ndarray) and x.dtype == np.float64 and x.shape == (2,)
                   for x in (prev, eq, turnover, fees, dd))
        return eq - prev

    kw = dict(LS, episode_length=2, initial_cash=1_000.0)
    v = CryptoTradingVectorEnv(T12, 2, reward=fn, **kw)
    v.reset(options={"start": np.array([1, 2])})
    a = np.array([[0.6, -0.3], [-0.2, 0.5]])
    eqs = []
    for _ in range(4):
        _, rewards, term, trunc, infos = v.step(a)
        done = term | trunc
        eq = np.where(done, infos["final_info"]["equity"], infos["equity"]) if done.any() else infos["equity"]
        eqs.append((eq, done))
        np.testing.assert_array_equal(rewards, calls[-1][1] - calls[-1][0])
    assert calls[0][0].tolist() == [1_000.0, 1_000.0]
    for k in range(1, 4):
        prev_eq, prev_done = eqs[k - 1]
        np.testing.assert_array_equal(calls[k][0], np.where(prev_done, 1_000.0, prev_eq))
    assert [d.tolist() for _, d in eqs] == [[False, False], [True, True], [False, False], [True, True]]
    # and the arrays are those of single envs: turnover and fees of the first step
    single = CryptoTradingEnv(T12, **kw)
    single.reset(options={"start": 1})
    _, _, _, _, info = single.step(a[0])
    assert (calls[0][2][0], calls[0][3][0]) == (info["turnover"], info["fees"])


def test_a_dict_observation_vector_env_gives_batched_dicts_of_the_flat_values():
    flat, d = CryptoTradingVectorEnv(T12, 2, **LS), CryptoTradingVectorEnv(T12, 2, observation="dict", **LS)
    o_f, _ = flat.reset(options={"start": 1})
    o_d, _ = d.reset(options={"start": 1})
    assert set(o_d) == {"features", "mask", "portfolio"}
    assert o_d["features"].shape == (2, 2, 2, 2) and o_d["mask"].shape == (2, 2, 2) and o_d["portfolio"].shape == (2, 5)
    assert d.observation_space.contains(o_d)
    a = np.array([[0.5, -0.2], [0.1, 0.3]])
    o_f, *_ = flat.step(a)
    o_d, *_ = d.step(a)
    got = np.concatenate([o_d[k].reshape(2, -1) for k in ("features", "mask", "portfolio")], axis=1)
    np.testing.assert_array_equal(got, o_f)


def test_final_obs_of_a_dict_env_is_a_dict_and_the_new_first_obs_is_a_reset():
    kw = dict(LS, episode_length=1, observation="dict")
    v = CryptoTradingVectorEnv(T12, 2, **kw)
    v.reset(options={"start": np.array([1, 3])})
    obs, _, _, trunc, infos = v.step(np.array([[0.5, -0.2], [0.1, 0.3]]))
    assert trunc.tolist() == [True, True] and infos["_final_obs"].tolist() == [True, True]
    single = CryptoTradingEnv(T12, **kw)
    single.reset(options={"start": 1})
    last, *_ = single.step(np.array([0.5, -0.2]))
    for k in ("features", "mask", "portfolio"):
        np.testing.assert_array_equal(infos["final_obs"][0][k], last[k])
    first, _ = single.reset(options={"start": 1})  # not random: the new episode starts at bar 1
    for k in ("features", "mask", "portfolio"):
        np.testing.assert_array_equal(obs[k][0], first[k])
    assert infos["timestamp"].tolist() == [HOUR, HOUR] and infos["equity"].tolist() == [10_000.0] * 2
    assert infos["final_info"]["timestamp"].tolist() == [2 * HOUR, 4 * HOUR]


def test_reset_infos_are_not_changed_by_later_steps():
    v = CryptoTradingVectorEnv(T12, 2, **LS)
    _, infos = v.reset(options={"start": 1})
    kept = {k: np.array(x, copy=True) for k, x in infos.items()}
    v.step(np.array([[0.5, -0.2], [0.1, 0.3]]))
    for k, x in infos.items():
        np.testing.assert_array_equal(x, kept[k], err_msg=k)


def test_reset_takes_seed_and_options_by_keyword_only_as_gymnasiums_vector_env():
    import inspect

    def kinds(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert kinds(CryptoTradingVectorEnv.reset) == kinds(gym.vector.VectorEnv.reset)
    with pytest.raises(TypeError):
        CryptoTradingVectorEnv(T12, 2, **LS).reset(0)
