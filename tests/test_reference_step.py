"""Every money path of the engine held against the plain-Python reference (tests/reference_model.py)
on random markets and configurations: the single env, each env of a vector env (autoresets
included) and the backtest. Per step: equity, cash, positions, weights, reward, turnover, fees,
slippage cost, borrow, status, order statuses, the trade list and the observation."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.seeding import np_random
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from _reference_cases import (SCHEMES, assert_info_matches, assert_obs_matches, assert_reward_matches,
                              assert_trades_match, action_sequences, cases)
from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv
from factorgym.envs.backtest import backtest

# example counts sized so the module runs in ~15 s warm; the ``slow`` variants at the end run 20x more
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
VECTOR_INFO_KEYS = ("timestamp", "equity", "cash", "fees", "slippage_cost", "borrow_cost", "turnover", "funding",
                    "weights", "positions", "status")


def note_paths(info) -> None:
    """Hypothesis statistics (``--hypothesis-show-statistics``): which money paths the cases reach."""
    for t in info.trades:
        event(f"fill: {t.kind}")
    for s in info.order_status:
        event(f"order: {s}")
    if info.status != "ok":
        event(f"env: {info.status}")
    if info.borrow_cost > 0:
        event("borrow charged")


def run_single(case, actions, start):
    env = CryptoTradingEnv(case.tensor, random_start=False, **case.env_kwargs())
    ref = case.reference()
    end = case.tensor.n_bars - 1
    obs, info = env.reset(options={"start": start})
    ref_obs, ref_info = ref.reset(start, end)
    assert_obs_matches(obs, ref_obs, "reset")
    assert_info_matches(info, ref_info, "reset")
    for k, a in enumerate(actions):
        obs, reward, term, trunc, info = env.step(case.as_action(a))
        ref_obs, ref_reward, ref_term, ref_trunc, ref_info = ref.step(a)
        where = f"step {k} (bar {start + k + 1}, action {a})"
        assert_info_matches(info, ref_info, where, env.order_status)
        assert_trades_match(info["trades"], ref_info, where)
        assert_reward_matches(reward, ref_reward, where)
        assert (term, trunc) == (ref_term, ref_trunc), where
        assert_obs_matches(obs, ref_obs, where)
        note_paths(ref_info)
        if term or trunc:
            return k + 1
    return len(actions)


@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_single_env_matches_the_reference_step_by_step(data):
    case = data.draw(cases())
    start = data.draw(st.integers(case.window - 1, case.window + 2))
    actions = data.draw(action_sequences(case.scheme, case.tensor.n_bars - 1 - start))
    run_single(case, actions, start)


@settings(max_examples=12, **SETTINGS)
@given(data=st.data())
def test_each_env_of_a_vector_env_matches_the_reference_across_autoresets(data):
    """Five envs with their own start bars and actions; short episodes, so each env autoresets
    (truncation or liquidation) to a start the vector env draws from its np_random, replicated here."""
    case = data.draw(cases())
    N, L, steps = 5, data.draw(st.integers(2, 6)), 14
    seed = data.draw(st.integers(0, 2**31 - 1))
    lo, last = case.window - 1, case.tensor.n_bars - 1
    starts = data.draw(st.lists(st.integers(lo, last - L), min_size=N, max_size=N))
    actions = data.draw(st.lists(action_sequences(case.scheme, N), min_size=steps, max_size=steps))
    venv = CryptoTradingVectorEnv(case.tensor, N, episode_length=L, **case.env_kwargs())
    rng = np_random(seed)[0]  # the vector env's np_random after reset(seed=seed)
    refs = [case.reference() for _ in range(N)]
    obs, infos = venv.reset(seed=seed, options={"start": np.asarray(starts)})
    for i, ref in enumerate(refs):
        ref_obs, ref_info = ref.reset(starts[i], min(starts[i] + L, last))
        assert_obs_matches(obs[i], ref_obs, f"env {i} reset")
        assert_info_matches({k: v[i] for k, v in infos.items()}, ref_info, f"env {i} reset")
    for k in range(steps):
        batch = np.stack([case.as_action(a) for a in actions[k]])
        obs, rewards, term, trunc, infos = venv.step(batch)
        done = []
        for i, ref in enumerate(refs):
            ref_obs, ref_reward, ref_term, ref_trunc, ref_info = ref.step(actions[k][i])
            where = f"step {k}, env {i} (bar {ref.t})"
            assert (term[i], trunc[i]) == (ref_term, ref_trunc), where
            assert_reward_matches(rewards[i], ref_reward, where)
            step_info = infos["final_info"] if ref.done else infos
            assert_info_matches({key: step_info[key][i] for key in VECTOR_INFO_KEYS}, ref_info, where)
            assert step_info["n_trades"][i] == len(ref_info.trades), where
            if ref.done:
                assert_obs_matches(infos["final_obs"][i], ref_obs, where + " final obs")
                done.append(i)
            else:
                assert_trades_match(venv.trades(i), ref_info, where)
                assert_obs_matches(obs[i], ref_obs, where)
        if done:  # the new episodes: starts drawn in env order, as the env documents
            new_starts = rng.integers(lo, last - L + 1, size=len(done))
            for i, s in zip(done, new_starts):
                ref_obs, ref_info = refs[i].reset(int(s), min(int(s) + L, last))
                assert_obs_matches(obs[i], ref_obs, f"step {k}, env {i} autoreset to bar {s}")
                reset_info = {key: infos[key][i] for key in ("timestamp", "equity", "cash", "weights", "positions",
                                                             "fees", "slippage_cost", "borrow_cost", "turnover")}
                assert_info_matches(reset_info, ref_info, f"step {k}, env {i} autoreset to bar {s}")


def split_kwargs(case):
    kw = case.env_kwargs()
    named = {k: kw.pop(k) for k in ("window", "execution", "initial_cash")}
    named["action_scheme"] = kw.pop("action_scheme", "weights")
    named["mapping"] = kw.pop("mapping", None)
    return named, kw


@settings(max_examples=12, **SETTINGS)
@given(data=st.data())
def test_backtest_matches_the_reference_bar_by_bar(data):
    case = data.draw(cases(T=26))
    T = case.tensor.n_bars
    lo = data.draw(st.integers(case.window - 1, case.window + 3))
    hi = data.draw(st.integers(lo + 2, T))
    actions = data.draw(action_sequences(case.scheme, hi - lo - 1))
    seen = []

    def policy(obs):
        seen.append(obs.copy())
        return case.as_action(actions[len(seen) - 1])

    named, env_kwargs = split_kwargs(case)
    res = backtest(case.tensor, policy, start=lo, end=hi, env_kwargs=env_kwargs, **named)
    ref = case.reference()
    ref_obs, info = ref.reset(lo, hi - 1)
    rows, trades = [info], []
    for k in range(len(seen)):
        assert_obs_matches(seen[k], ref_obs, f"observation before step {k}")
        ref_obs, reward, term, trunc, info = ref.step(actions[k])
        info.reward = reward
        rows.append(info)
        trades += [(info.timestamp, f) for f in info.trades]
        if term or trunc:
            break
    assert len(res.equity) == len(rows) and res.info["status"] == rows[-1].status
    for k, r in enumerate(rows):
        got = {"equity": res.equity[k], "cash": res.cash[k], "positions": res.positions[k], "weights": res.weights[k],
               "fees": res.fees[k], "turnover": res.turnover[k], "timestamp": res.timestamps[k],
               "slippage_cost": r.slippage_cost, "borrow_cost": r.borrow_cost}
        assert_info_matches(got, r, f"backtest row {k}")
        if k:
            assert_reward_matches(res.rewards[k], r.reward, f"backtest row {k}")
    frame = res.trades
    assert len(frame) == len(trades)
    for (ts, f), row in zip(trades, frame.itertuples()):
        assert (row.time.value // 1_000_000, row.symbol, row.side, row.kind) == (ts, case.tensor.symbols[f.asset], f.side, f.kind)
        assert (row.quantity, row.price, row.fee, row.slippage_cost) == (f.qty, f.price, f.fee, f.slippage_cost) or \
            np.allclose([row.quantity, row.price, row.fee, row.slippage_cost], [f.qty, f.price, f.fee, f.slippage_cost],
                        rtol=1e-12, atol=0)


# the same properties with 20x the examples (``make test-all``)
test_single_env_thorough = pytest.mark.slow(settings(max_examples=600, **SETTINGS)(given(data=st.data())(
    test_single_env_matches_the_reference_step_by_step.hypothesis.inner_test)))
test_vector_env_thorough = pytest.mark.slow(settings(max_examples=240, **SETTINGS)(given(data=st.data())(
    test_each_env_of_a_vector_env_matches_the_reference_across_autoresets.hypothesis.inner_test)))
test_backtest_thorough = pytest.mark.slow(settings(max_examples=240, **SETTINGS)(given(data=st.data())(
    test_backtest_matches_the_reference_bar_by_bar.hypothesis.inner_test)))
