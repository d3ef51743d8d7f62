"""Vector-env autoreset: each new episode starts where a single env's reset at the same bar starts.

The start bar of an autoreset episode is known independently: with ``random_start=False`` it is the
first bar with a full window; with random starts it is drawn from the vector env's ``np_random``
(seeded by ``reset(seed=...)``), which the test replicates with gymnasium's own seeding."""

from __future__ import annotations

import numpy as np
from gymnasium.utils.seeding import np_random
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _reference_cases import SCHEMES, action_sequences, cases
from factorgym.agents.sb3_vec import make_vec_env
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv

RESET_KEYS = ("timestamp", "equity", "cash", "weights", "positions", "fees", "slippage_cost", "borrow_cost", "turnover")


def assert_same_reset(obs, infos, i, single_obs, single_info, where):
    assert np.array_equal(obs[i], single_obs), f"{where}: first observation of the new episode"
    for key in RESET_KEYS:
        assert np.array_equal(infos[key][i], single_info[key]), f"{where}: info[{key!r}] {infos[key][i]} != {single_info[key]}"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), random_start=st.booleans())
def test_each_autoreset_episode_equals_a_single_env_reset_at_its_start_bar(data, random_start):
    case = data.draw(cases(schemes=("signed", "simplex")))
    N, L = 4, data.draw(st.integers(1, 5))
    seed = data.draw(st.integers(0, 2**31 - 1))
    kw = dict(case.env_kwargs(), episode_length=L, random_start=random_start)
    venv = CryptoTradingVectorEnv(case.tensor, N, **kw)
    single = CryptoTradingEnv(case.tensor, **kw)
    lo, last = case.window - 1, case.tensor.n_bars - 1
    rng = np_random(seed)[0]
    obs, infos = venv.reset(seed=seed)
    starts = rng.integers(lo, last - L + 1, size=N) if random_start else np.full(N, lo)
    for i in range(N):
        assert_same_reset(obs, infos, i, *single.reset(options={"start": int(starts[i])}), f"reset, env {i}")
    resets = 0
    for k, actions in enumerate(data.draw(st.lists(action_sequences(case.scheme, N), min_size=12, max_size=12))):
        obs, _, term, trunc, infos = venv.step(np.stack([case.as_action(a) for a in actions]))
        done = np.flatnonzero(term | trunc)
        new = rng.integers(lo, last - L + 1, size=len(done)) if random_start else np.full(len(done), lo)
        for i, s in zip(done, new):
            assert_same_reset(obs, infos, i, *single.reset(options={"start": int(s)}), f"step {k}, env {i} restarted at bar {s}")
            assert venv.core.counters[i, 0] == s  # the decision bar the new episode is at
            resets += 1
    assert resets >= N  # every env finished at least one episode of at most 5 bars


def test_sb3_adapter_autoreset_starts_where_the_single_env_does():
    """The SB3 VecEnv adapter: the observation returned with done=True is the next episode's first."""
    from _reference_cases import make_market

    t = make_market(7, 24, 0.05, 0.1)
    venv = make_vec_env(t, 3, seed=11, window=3, episode_length=2, random_start=False, mapping="signed")
    single = CryptoTradingEnv(t, window=3, episode_length=2, random_start=False, mapping="signed")
    first, _ = single.reset()
    obs = venv.reset()
    assert np.array_equal(obs, np.stack([first] * 3))
    rng = np.random.default_rng(0)
    for _ in range(2):
        obs, _, dones, infos = venv.step(rng.uniform(-1, 1, (3, 2)).astype(np.float32))
    assert dones.all()
    assert np.array_equal(obs, np.stack([first] * 3))
    assert all("terminal_observation" in info for info in infos)
