"""SB3 adapter infos: the lazily filled per-env dicts equal the vector env's info arrays (the finished
step's for a finished env), behave as dicts for SB3 and callbacks, and the trading monitor reads the
same values from the adapter's arrays as from the dicts."""

from __future__ import annotations

import copy
import pickle

import numpy as np

from factorgym.agents.callbacks import TradingEpisodeMonitor
from factorgym.agents.sb3_vec import INFO_KEYS, EnvInfo, make_vec_env
from factorgym.envs import CryptoTradingVectorEnv
from tests.test_vector_env import FULL, make_tensor

KW = dict(window=3, execution=FULL, episode_length=7, mapping="signed")


def test_per_env_infos_equal_the_vector_envs_arrays_and_act_as_dicts():
    t, N = make_tensor(), 5
    sb3, gym = make_vec_env(t, N, seed=4, **KW), CryptoTradingVectorEnv(t, N, **KW)
    assert np.array_equal(sb3.reset(), gym.reset(seed=4)[0])
    rng, n_done = np.random.default_rng(0), 0
    for _ in range(30):
        a = rng.uniform(-1, 1, (N, t.n_assets)).astype(np.float32)
        sb3.step_async(a)
        obs, rew, dones, infos = sb3.step_wait()
        g_obs, g_rew, term, trunc, g = gym.step(a)
        assert np.array_equal(obs, g_obs) and np.array_equal(dones, term | trunc)
        for i, info in enumerate(infos):
            src = g["final_info"] if dones[i] else g
            expected = {k: src[k][i].item() for k in INFO_KEYS}
            if dones[i]:
                n_done += 1
                assert type(info) is dict and np.array_equal(info["terminal_observation"], g["final_obs"][i])
                assert info["TimeLimit.truncated"] == bool(trunc[i] and not term[i])
            else:
                assert isinstance(info, EnvInfo)
                assert info.get("episode") is None and "terminal_observation" not in info  # SB3's look-ups
            for k, v in expected.items():
                assert info[k] == v and type(info[k]) is type(v), (k, info[k], v)
            assert np.array_equal(info["weights"], src["weights"][i])
            assert set(info) >= {*INFO_KEYS, "weights"} and len(info) >= len(INFO_KEYS) + 1
            cols = sb3.info_columns()
            assert cols["equity"][i] == expected["equity"] and np.array_equal(cols["weights"][i], src["weights"][i])
    assert n_done >= N  # every env finished at least one episode

    info = EnvInfo({k: np.arange(3.0) for k in (*INFO_KEYS, "weights")} | {"weights": np.eye(3)}, 1)
    plain = {**{k: 1.0 for k in INFO_KEYS}, "weights": np.eye(3)[1]}
    assert isinstance(info, dict) and list(info) == list(plain) and info.get("equity") == 1.0
    c = info.copy()
    info["terminal_observation"] = 7  # mutable, as SB3 wrappers need
    assert info["terminal_observation"] == 7 and "terminal_observation" not in c
    assert pickle.loads(pickle.dumps(info)).keys() == info.keys() and copy.deepcopy(info)["equity"] == 1.0
    assert {**info}.keys() == info.keys() and dict(info.items()) == dict(info)


def test_trading_monitor_reads_the_same_episodes_from_arrays_as_from_dicts():
    t, N = make_tensor(), 4
    fast = TradingEpisodeMonitor(make_vec_env(t, N, seed=1, **KW), 10_000.0, 8760.0)
    slow = TradingEpisodeMonitor(make_vec_env(t, N, seed=1, **KW), 10_000.0, 8760.0)
    slow._source = None
    assert fast._source is not None
    fast.reset(), slow.reset()
    rng = np.random.default_rng(2)
    for _ in range(40):
        a = rng.uniform(-1, 1, (N, t.n_assets)).astype(np.float32)
        fast.step_async(a), slow.step_async(a)
        fast.step_wait(), slow.step_wait()
    assert len(fast.episodes) == len(slow.episodes) >= N
    for e, f in zip(fast.episodes, slow.episodes):
        assert e == f
