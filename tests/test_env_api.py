"""CryptoTradingEnv: Gymnasium/SB3 checks, seeding, look-ahead, rewards, action schemes, errors."""

from __future__ import annotations

import doctest
import math
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig, RewardConfig, trading_env
from factorgym.errors import ConfigError, DataValidationError

HOUR = 3_600_000


def make_tensor(T: int = 80, A: int = 3, F: int = 2, seed: int = 0, tradable=None) -> FactorTensor:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (T, A)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, (T, A)))
    prices = np.stack([open_, np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99, close,
                       rng.uniform(50, 500, (T, A))], axis=-1)
    return FactorTensor.from_arrays(rng.normal(size=(T, A, F)), prices, np.arange(T) * HOUR,
                                    symbols=[f"C{i}/USDT" for i in range(A)], tradable=tradable)


SCHEMES = [
    dict(),
    dict(mapping="signed", execution=ExecutionConfig(max_leverage=2.0, borrow_rate_per_bar=1e-5)),
    dict(mapping="direct"),
    dict(mapping="direct", long_only=False),
    dict(action_scheme="discrete"),
    dict(action_scheme="discrete", levels=(-1, 0, 1), long_only=False),
    dict(observation="dict"),
]


@pytest.mark.parametrize("kwargs", SCHEMES, ids=lambda k: "-".join(f"{v}" for v in k.values()) or "default")
def test_gymnasium_and_sb3_check_env(kwargs):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = CryptoTradingEnv(make_tensor(), window=4, episode_length=30, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite Box bounds and the SB3 [-1, 1] advice are expected
        gym_check_env(env)
        sb3_check_env(env)


def test_single_asset_discrete_is_discrete_for_dqn():
    env = CryptoTradingEnv(make_tensor(A=1), window=2, action_scheme="discrete", levels=(-1, 0, 1), long_only=False)
    assert isinstance(env.action_space, gymnasium.spaces.Discrete) and env.action_space.n == 3
    env.reset(seed=0)
    _, _, _, _, info = env.step(2)  # level +1: all in
    assert info["weights"][0] == pytest.approx(1.0, abs=0.01)
    _, _, _, _, info = env.step(np.int64(0))  # level -1: short
    assert info["positions"][0] < 0
    with pytest.raises(ValueError, match="action space"):
        env.step(3)


def test_discrete_levels_times_level_size():
    env = CryptoTradingEnv(make_tensor(A=2), action_scheme="discrete", levels=(0, 1, 2), level_size=0.25,
                           execution=ExecutionConfig.frictionless(), random_start=False)
    env.reset()
    _, _, _, _, info = env.step(np.array([2, 1]))
    assert info["weights"] == pytest.approx([0.5, 0.25], abs=0.02)


def test_registered_with_gymnasium_make():
    env = gymnasium.make("factorgym/CryptoTrading-v0", tensor=make_tensor(), window=3)
    obs, _ = env.reset(seed=1)
    assert obs.shape == env.observation_space.shape
    env.action_space.seed(1)
    env.step(env.action_space.sample())


def test_determinism_under_a_seed():
    def run(seed):
        env = CryptoTradingEnv(make_tensor(), window=3, episode_length=20)
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        out = [obs, info["timestamp"]]
        for _ in range(20):
            obs, r, term, trunc, info = env.step(env.action_space.sample())
            out += [obs, r, info["equity"], info["weights"]]
            if term or trunc:
                break
        return out

    a, b = run(7), run(7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, run(8)))


def test_random_start_range_and_truncation():
    env = CryptoTradingEnv(make_tensor(T=50), window=5, episode_length=10)
    starts = set()
    for s in range(30):
        _, info = env.reset(seed=s)
        assert 4 <= info["start"] <= 49 - 10 and info["end"] == info["start"] + 10
        starts.add(info["start"])
    assert len(starts) > 5
    env.reset(seed=0, options={"start": 4})
    env.action_space.seed(0)
    for k in range(10):
        _, _, term, trunc, info = env.step(env.action_space.sample())
    assert trunc and not term and info["timestamp"] == 14 * HOUR
    to_end = CryptoTradingEnv(make_tensor(T=50), window=5, random_start=False)
    _, info = to_end.reset()
    assert (info["start"], info["end"]) == (4, 49)


def test_no_look_ahead_perturbing_the_future_leaves_the_past_unchanged():
    base = make_tensor(T=60, seed=3)
    env_kwargs = dict(window=5, random_start=False, execution=ExecutionConfig(lot_step=0.01, impact_coef=0.05),
                      reward="differential_sharpe")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (50, 4)).astype(np.float32)
    start, t_cut = 10, 30

    def trajectory(tensor):
        env = CryptoTradingEnv(tensor, **env_kwargs)
        obs, _ = env.reset(options={"start": start})
        rows = [(obs, 0.0)]
        for a in actions[: t_cut - start]:
            obs, r, *_ = env.step(a)
            rows.append((obs, r))
        return rows

    ref = trajectory(base)
    future = make_tensor(T=60, seed=99)  # everything after bar t_cut replaced
    feats, prices = base.features.copy(), base.prices.copy()
    feats[t_cut + 1:], prices[t_cut + 1:] = future.features[t_cut + 1:], future.prices[t_cut + 1:]
    tradable = base.tradable.copy()
    tradable[t_cut + 1:, 0] = False
    perturbed = FactorTensor(feats, prices, base.timestamps, base.symbols, base.feature_names, tradable, base.meta)
    for (o1, r1), (o2, r2) in zip(ref, trajectory(perturbed)):
        assert np.array_equal(o1, o2) and r1 == r2


def test_info_contract():
    env = CryptoTradingEnv(make_tensor(), window=2, random_start=False)
    env.reset()
    _, _, _, _, info = env.step(np.array([1, -1, -1, -1], np.float32))  # simplex: all in C0
    assert {"timestamp", "equity", "cash", "weights", "positions", "fees", "slippage_cost", "turnover", "trades"} <= set(info)
    assert isinstance(info["timestamp"], int) and info["timestamp"] == 2 * HOUR
    assert info["weights"].shape == (3,) and info["positions"].shape == (3,)
    trades = list(info["trades"])
    assert len(trades) == 1 and set(trades[0]) >= {"timestamp", "symbol", "side", "quantity", "price", "fee"}
    assert trades[0]["symbol"] == "C0/USDT" and trades[0]["side"] == "buy"
    w_before = info["weights"].copy()
    env.step(np.array([-1, -1, -1, 1], np.float32))
    assert np.array_equal(info["weights"], w_before)  # arrays in info are not reused buffers


def test_observation_layout_mask_and_portfolio():
    tradable = np.ones((40, 2), bool)
    tradable[:6, 1] = False  # asset 1 lists at bar 6
    t = make_tensor(T=40, A=2, F=3, tradable=tradable)
    env = CryptoTradingEnv(t, window=3, observation="dict", random_start=False,
                           execution=ExecutionConfig.frictionless())
    obs, _ = env.reset(options={"start": 5})
    assert np.array_equal(obs["features"][:, 0], t.features[3:6, 0])
    assert np.all(obs["features"][:, 1] == 0) and np.array_equal(obs["mask"], [[1, 0], [1, 0], [1, 0]])
    assert np.array_equal(obs["portfolio"], [0, 0, 1, 1, 0])
    obs, _, _, _, info = env.step(np.array([1.0, -1.0, -1.0], np.float32))  # simplex: all in asset 0
    assert obs["mask"][-1].tolist() == [1, 1]
    assert obs["portfolio"][0] == pytest.approx(info["weights"][0], rel=1e-6)
    assert obs["portfolio"][3] == pytest.approx(info["equity"] / 10_000, rel=1e-6)


@pytest.mark.parametrize("kind", ["log_return", "drawdown_penalty", "turnover_penalty", "differential_sharpe", "callable"])
def test_rewards_match_an_independent_computation(kind):
    cfg = RewardConfig(kind=kind, drawdown_penalty=0.5, turnover_penalty=0.01, sharpe_eta=0.1) if kind != "callable" else None
    fn = (lambda prev, eq, turnover, fees, dd: eq - prev - fees)
    env = CryptoTradingEnv(make_tensor(), window=2, random_start=False, reward=fn if kind == "callable" else cfg)
    env.reset()
    rng = np.random.default_rng(1)
    prev, peak, a_, b_ = 10_000.0, 10_000.0, 0.0, 0.0
    for _ in range(30):
        _, r, _, _, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        e = info["equity"]
        peak = max(peak, e)
        logret = math.log(e / prev)
        if kind == "log_return":
            expected = logret
        elif kind == "drawdown_penalty":
            expected = logret - 0.5 * (1 - e / peak)
        elif kind == "turnover_penalty":
            expected = logret - 0.01 * info["turnover"]
        elif kind == "callable":
            expected = e - prev - info["fees"]
        else:
            ret = e / prev - 1
            var = b_ - a_ * a_
            expected = (b_ * (ret - a_) - 0.5 * a_ * (ret * ret - b_)) / var ** 1.5 if var > 1e-12 else 0.0
            a_, b_ = a_ + 0.1 * (ret - a_), b_ + 0.1 * (ret * ret - b_)
        assert r == pytest.approx(expected, rel=1e-9, abs=1e-12)
        prev = e


def test_bad_configuration_gives_clear_errors():
    t = make_tensor(T=20)
    with pytest.raises(ConfigError, match="window=20 needs at least 21 bars"):
        CryptoTradingEnv(t, window=20)
    with pytest.raises(ConfigError, match="episode_length"):
        CryptoTradingEnv(t, window=5, episode_length=100)
    with pytest.raises(ConfigError, match="mapping"):
        CryptoTradingEnv(t, mapping="softmax")
    with pytest.raises(ConfigError, match="long_only"):
        CryptoTradingEnv(t, action_scheme="discrete", levels=(-1, 0, 1), long_only=True)
    with pytest.raises(ConfigError, match="fee_side"):
        ExecutionConfig(fee_side="both")

    class Misshaped:
        features = np.zeros((20, 2, 3), np.float32)
        prices = np.zeros((20, 3, 5))
        timestamps = np.arange(20)
        tradable = np.ones((20, 2), bool)
        symbols = ["A", "B"]

    with pytest.raises(DataValidationError, match=r"prices must be \[T, A, 5\]"):
        CryptoTradingEnv(Misshaped())
    with pytest.raises(DataValidationError, match="FactorTensor"):
        CryptoTradingEnv(np.zeros((20, 2, 3)))
    prices = t.prices.copy()
    prices[7, 1, 0] = np.nan
    bad = FactorTensor(t.features, prices, t.timestamps, t.symbols, t.feature_names, t.tradable, t.meta)
    with pytest.raises(DataValidationError, match=r"C1/USDT: open is nan at row 7 .*tradable"):
        CryptoTradingEnv(bad)
    env = CryptoTradingEnv(t, window=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action space"):
        env.step(np.array([np.nan, 0, 0, 0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ConfigError, match="start"):
        env.reset(options={"start": 0})


def test_market_rules_from_tensor_meta_are_used():
    t = make_tensor(A=2)
    t.meta["market_rules"] = {"C0/USDT": {"symbol": "C0/USDT", "amount_step": 0.5, "taker_fee": 0.002, "min_notional": 0.0},
                              "C1/USDT": {"symbol": "C1/USDT", "amount_step": 0.0, "taker_fee": 0.0005}}
    env = CryptoTradingEnv(t, mapping="direct", random_start=False)
    assert env.core.market["fee"].tolist() == [0.002, 0.0005] and env.core.market["lot_step"].tolist() == [0.5, 0.0]
    env.reset()
    _, _, _, _, info = env.step(np.array([0.5, 0.5]))
    assert info["positions"][0] % 0.5 == 0
    fees = {tr["symbol"]: tr["fee"] / (tr["quantity"] * tr["price"]) for tr in info["trades"]}
    assert fees == pytest.approx({"C0/USDT": 0.002, "C1/USDT": 0.0005})
    explicit = CryptoTradingEnv(t, execution=ExecutionConfig(taker_fee=0.0))
    assert explicit.core.market["fee"].tolist() == [0.0, 0.0]


def test_docstring_example_runs():
    result = doctest.testmod(trading_env, verbose=False)
    assert result.attempted > 0 and result.failed == 0
