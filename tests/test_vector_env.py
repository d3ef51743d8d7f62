"""Vector env: same trajectories as the single env, autoreset, SB3 VecEnv adapter."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.agents.sb3_vec import make_vec_env
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv, ExecutionConfig
from factorgym.envs.layouts import COUNTER, work_offsets
from factorgym.errors import ConfigError

HOUR = 3_600_000
FULL = ExecutionConfig(taker_fee=0.001, slippage_bps=2.0, impact_coef=0.02, lot_step=0.01, min_notional=5.0,
                       price_step=0.01, borrow_rate_per_bar=1e-4, max_leverage=2.0)


def make_tensor(T: int = 120, A: int = 3, F: int = 2, seed: int = 0) -> FactorTensor:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (T, A)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, (T, A)))
    tradable = rng.random((T, A)) > 0.05
    prices = np.stack([open_, open_ * 1.02, open_ * 0.98, close, rng.uniform(50, 500, (T, A))], axis=-1)
    return FactorTensor.from_arrays(rng.normal(size=(T, A, F)), prices, np.arange(T) * HOUR, tradable=tradable)


@pytest.mark.parametrize("kwargs", [dict(), dict(mapping="signed"), dict(action_scheme="discrete", levels=(-1, 0, 1), long_only=False)])
def test_vector_env_equals_single_envs_for_the_same_actions_and_starts(kwargs):
    from factorgym.envs.layouts import block_size

    t, N, steps = make_tensor(), 19, 40
    assert N > 2 * block_size(N)  # two full blocks of envs (SIMD lanes) and a partial one
    starts = np.linspace(3, 59, N).astype(np.int64)
    starts[1] = starts[2]  # (two envs on the same bars)
    venv = CryptoTradingVectorEnv(t, N, window=4, execution=FULL, episode_length=60, **kwargs)
    obs_v, _ = venv.reset(seed=0, options={"start": starts})
    singles = [CryptoTradingEnv(t, window=4, execution=FULL, episode_length=60, **kwargs) for _ in range(N)]
    obs_s = [e.reset(options={"start": int(s)})[0] for e, s in zip(singles, starts)]
    assert np.array_equal(obs_v, np.stack(obs_s))
    venv.action_space.seed(3)
    for _ in range(steps):
        actions = venv.action_space.sample()
        obs_v, rew_v, term_v, trunc_v, info_v = venv.step(actions)
        for i, env in enumerate(singles):
            obs, r, term, trunc, info = env.step(actions[i])
            assert np.array_equal(obs_v[i], obs) and rew_v[i] == r and term_v[i] == term and trunc_v[i] == trunc
            assert info_v["equity"][i] == info["equity"] and np.array_equal(info_v["positions"][i], info["positions"])
            assert info_v["timestamp"][i] == info["timestamp"] and info_v["n_trades"][i] == len(info["trades"])
            assert venv.trades(i) == info["trades"]


# (in the default run since session 12: the parallel kernel compiles in ~15 s from an empty cache, not
# the ~110 s it once took, and no other test runs it)
def test_parallel_kernel_gives_the_same_trajectories_bit_for_bit():
    from factorgym.envs.layouts import block_size
    from factorgym.envs.kernels import PAR_CHUNK

    t, N = make_tensor(), PAR_CHUNK * 8 + 5
    assert N == PAR_CHUNK * block_size(N) + 5  # two parallel tasks, the second with a partial block
    kw = dict(window=3, execution=FULL, episode_length=15, mapping="signed")
    serial, par = CryptoTradingVectorEnv(t, N, **kw), CryptoTradingVectorEnv(t, N, parallel=True, **kw)
    assert par.core.parallel and not serial.core.parallel
    o1, _ = serial.reset(seed=4)
    o2, _ = par.reset(seed=4)
    assert np.array_equal(o1, o2)
    rng = np.random.default_rng(0)
    for _ in range(40):  # crosses the autoreset at step 15
        a = rng.uniform(-1, 1, (N, 3)).astype(np.float32)
        s1, s2 = serial.step(a), par.step(a)
        for x, y in zip(s1[:4], s2[:4]):
            assert np.array_equal(x, y)
        assert np.array_equal(serial.core.work, par.core.work)


def test_malformed_actions_raise_and_leave_that_env_alone():
    venv = CryptoTradingVectorEnv(make_tensor(), 3, window=2)
    venv.reset(seed=0)
    before = venv.core.state.copy()
    a = np.zeros((3, 4), np.float32)
    a[1, 2] = np.nan
    with pytest.raises(ValueError, match="env 1"):
        venv.step(a)
    assert np.array_equal(venv.core.state[1], before[1]) and venv.core.counters[1, COUNTER.steps] == 0  # env 1 did not move
    with pytest.raises(ValueError, match="values"):
        venv.step(np.zeros((3, 3), np.float32))


def test_same_step_autoreset_and_final_obs():
    t = make_tensor()
    venv = CryptoTradingVectorEnv(t, 3, window=2, episode_length=5)
    obs, info = venv.reset(seed=1)
    venv.action_space.seed(1)
    for k in range(5):
        prev = obs
        obs, rew, term, trunc, info = venv.step(venv.action_space.sample())
        assert obs is not prev and not np.shares_memory(obs, prev)  # fresh array every step
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all() and info["final_obs"][0].shape == obs[0].shape
    assert not np.array_equal(info["final_obs"][0], obs[0])
    assert np.all(info["equity"] == 10_000.0)  # already the reset state of the new episodes
    assert np.all(info["final_info"]["equity"] != 10_000.0)
    obs, *_ = venv.step(venv.action_space.sample())  # the new episodes run on
    assert venv.core.counters[:, COUNTER.steps].tolist() == [1, 1, 1]


def test_vector_reset_is_seeded():
    t = make_tensor()
    a = CryptoTradingVectorEnv(t, 4, episode_length=10).reset(seed=5)[1]["timestamp"]
    b = CryptoTradingVectorEnv(t, 4, episode_length=10).reset(seed=5)[1]["timestamp"]
    assert np.array_equal(a, b) and len(set(a.tolist())) > 1
    with pytest.raises(ConfigError, match="start"):
        CryptoTradingVectorEnv(t, 2).reset(options={"start": [0, 500]})


def test_sb3_vec_env_adapter_terminal_observation_and_ppo_smoke():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecEnv

    venv = make_vec_env(make_tensor(), 2, window=3, episode_length=4, seed=0)
    assert isinstance(venv, VecEnv)
    obs = venv.reset()
    venv.action_space.seed(0)
    assert obs.shape == (2, venv.observation_space.shape[0])
    for _ in range(4):
        obs, rew, dones, infos = venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    assert dones.all() and rew.dtype == np.float32
    assert infos[0]["TimeLimit.truncated"] and infos[0]["terminal_observation"].shape == obs[0].shape
    assert infos[0]["equity"] != 10_000.0  # SB3 convention: the info of the step that ended the episode
    assert not np.array_equal(infos[0]["terminal_observation"], obs[0])  # obs[0] is the new episode's
    assert set(infos[1]) >= {"equity", "cash", "fees", "turnover", "weights"}
    model = PPO("MlpPolicy", make_vec_env(make_tensor(), 2, window=3, episode_length=20, seed=0), n_steps=32,
                batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)


def test_returned_rewards_and_infos_are_not_changed_by_later_steps():
    """The kernel writes each step's results into a fresh array and hands its columns out without a
    copy: a later step (with or without autoresets) must not change what an earlier one returned."""
    venv = CryptoTradingVectorEnv(make_tensor(), 4, execution=FULL, episode_length=3)
    venv.reset(seed=2)
    venv.action_space.seed(2)
    kept = []
    for _ in range(7):  # resets at steps 3 and 6
        _, rew, term, trunc, info = venv.step(venv.action_space.sample())
        kept.append(((rew, term, trunc, info), (rew.copy(), term.copy(), trunc.copy(),
                                                {k: v.copy() for k, v in info.items() if isinstance(v, np.ndarray) and v.dtype != object})))
    for (rew, term, trunc, info), (rew0, term0, trunc0, info0) in kept:
        assert np.array_equal(rew, rew0) and np.array_equal(term, term0) and np.array_equal(trunc, trunc0)
        for k, v in info0.items():
            assert np.array_equal(info[k], v), k


def test_results_array_rows_fall_in_different_cache_sets_and_bad_buffers_are_refused():
    from factorgym.envs import layouts

    for n in range(1, 3000):  # whole blocks of envs, an odd number of them
        fields, L = layouts.out_shape(4, n)
        B = layouts.block_size(n)
        assert fields == layouts.OUT_WEIGHTS + 12 and L >= n and L % B == 0 and (L // B) % 2 == 1
        assert layouts.work_shape(4, n) == (layouts.work_offsets(4)[2], L)
    venv = CryptoTradingVectorEnv(make_tensor(), 4)
    venv.reset(seed=0)
    act = np.zeros((4, venv.core.action_dim))
    with pytest.raises(ValueError, match="out must be"):
        venv.core.step(act, out=np.empty(venv.core.out.shape))  # [N, fields]: the transposed layout


def test_envs_that_are_done_keep_their_state_and_report_nothing():
    venv = CryptoTradingVectorEnv(make_tensor(), 10, window=2, execution=FULL, episode_length=20)
    venv.reset(seed=0)
    core = venv.core
    venv.step(np.full((10, core.action_dim), 0.5))  # every env holds positions now
    core.work[work_offsets(core.n_assets)[0] + COUNTER.done, [2, 9]] = 1.0  # envs 2 and 9 (two blocks) have finished
    st, ist = core.state.copy(), core.counters
    assert core.step(np.full((10, core.action_dim), -0.5)) == 0
    assert np.array_equal(core.state[[2, 9]], st[[2, 9]]) and np.array_equal(core.counters[[2, 9]], ist[[2, 9]])
    assert not core.out[[2, 9]].any()  # no results, no fills
    live = [0, 1, 3, 4, 5, 6, 7, 8]
    assert (core.counters[live, COUNTER.steps] == 2).all() and not np.array_equal(core.state[live], st[live])


def test_results_do_not_depend_on_the_number_of_envs():
    t, steps = make_tensor(), 30
    small, big = 19, 70  # (3 and 9 blocks of envs, both with a partial block)
    starts = np.linspace(3, 59, big).astype(np.int64)
    kw = dict(window=3, execution=FULL, episode_length=20, mapping="signed")  # (ends, autoresets included)
    a, b = CryptoTradingVectorEnv(t, small, **kw), CryptoTradingVectorEnv(t, big, **kw)
    oa, _ = a.reset(seed=1, options={"start": starts[:small]})
    ob, _ = b.reset(seed=1, options={"start": starts})
    assert np.array_equal(oa, ob[:small])
    rng = np.random.default_rng(0)
    for _ in range(steps):
        act = rng.uniform(-1, 1, (big, 3)).astype(np.float32)
        ra, rb = a.step(act[:small]), b.step(act)
        for x, y in zip(ra[:4], rb[:4]):
            assert np.array_equal(x, y[:small])
        assert all(a.trades(i) == b.trades(i) for i in range(small))


def test_rare_fill_rows_hold_only_this_steps_fills_whatever_the_other_envs_in_the_block():
    """Untradable closes and liquidations are stored only when a block of envs has one or still holds
    one from the last step (``kernels._store_block``): each env's fill rows must equal its own, as a
    single env has them, and a close must not outlive its step."""
    T, A, N = 40, 2, 9
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    tradable = np.ones((T, A), dtype=bool)
    tradable[12, 1] = False  # asset 1 does not trade at bar 12: held positions in it are closed there
    t = FactorTensor.from_arrays(rng.normal(size=(T, A, 2)), close, np.arange(T) * HOUR, tradable=tradable)
    kw = dict(window=1, mapping="direct", execution=ExecutionConfig(taker_fee=0.001, on_untradable="close"),
              episode_length=20)
    starts = np.array([5, 7] + [14] * (N - 2))  # env 0 fills at bar 12 in step 7, env 1 in step 5
    venv = CryptoTradingVectorEnv(t, N, **kw)
    venv.reset(options={"start": starts})
    singles = [CryptoTradingEnv(t, **kw) for _ in range(2)]
    for env, s in zip(singles, starts):
        env.reset(options={"start": int(s)})
    weights = np.full((N, A), 0.4)
    for step in range(1, 10):
        venv.step(weights)
        for i, env in enumerate(singles):
            _, _, _, _, info = env.step(weights[i])
            assert np.array_equal(venv.core.fills[i], env.core.fills[0]), (step, i)
            closes = [x for x in info["trades"] if x["kind"] == "untradable_close"]
            assert len(closes) == (1 if step == (7, 5)[i] else 0), (step, i, info["trades"])
            assert venv.trades(i) == info["trades"]
            assert not venv.core.fills[i, A:].any() or step == (7, 5)[i]  # (rows A.. : closes, liquidations)


def test_trades_of_an_env_that_ended_are_its_final_steps_fills_liquidations_included():
    """Same-step autoreset clears an ended env's fill rows; ``trades(i)`` still gives that step's
    fills, as the single env's ``info["trades"]`` of its final step, liquidation fills included
    (they happen only in final steps), and ``n_trades`` (also in ``final_info``) counts them. (Before
    session 12, trades(i) of an env reset in the step was [], while n_trades said otherwise.)"""
    rng = np.random.default_rng(7)
    T, A, N = 160, 3, 11
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.06, (T, A)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.02, (T, A)))
    prices = np.stack([open_, np.maximum(open_, close) * 1.1, np.minimum(open_, close) * 0.9, close,
                       rng.uniform(50, 500, (T, A))], axis=-1)
    t = FactorTensor.from_arrays(rng.normal(size=(T, A, 2)), prices, np.arange(T) * HOUR, tradable=rng.random((T, A)) > 0.1)
    cfg = ExecutionConfig(taker_fee=0.001, slippage_bps=2.0, lot_step=0.01, min_notional=5.0, borrow_rate_per_bar=1e-3,
                          max_leverage=3.0, maintenance_margin=0.2, on_untradable="close")
    kw = dict(window=3, execution=cfg, episode_length=12, mapping="signed", long_only=False, random_start=False)
    venv, singles = CryptoTradingVectorEnv(t, N, **kw), [CryptoTradingEnv(t, **kw) for _ in range(N)]
    venv.reset(seed=0)
    for e in singles:
        e.reset()
    kinds = {"liquidation": 0, "ended": 0}
    for _ in range(30):
        a = rng.uniform(-1, 1, (N, A)).astype(np.float32)
        _, _, term, trunc, infos = venv.step(a)
        for i, e in enumerate(singles):
            _, _, te, tr, info = e.step(a[i])
            assert (te, tr) == (term[i], trunc[i]) and venv.trades(i) == info["trades"]
            if te or tr:
                assert infos["final_info"]["n_trades"][i] == infos["n_trades"][i] == len(info["trades"])
                kinds["ended"] += 1
                kinds["liquidation"] += sum(x["kind"] == "liquidation" for x in info["trades"])
                e.reset()
    assert kinds["liquidation"] > 0 and kinds["ended"] > N, kinds
