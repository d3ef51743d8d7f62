"""Overfitting statistics: the papers' worked numbers, hand values, and their behaviour on simulated
markets with and without skill (independent answers: closed forms, scipy, Monte Carlo)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factorgym.agents.stats import (
    block_bootstrap_ci,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    minimum_track_record_length,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sample_moments,
)
from factorgym.errors import ConfigError


# ------------------------------------------------------------------ the papers' worked examples
def test_psr_sharpe_ratio_efficient_frontier_example():
    # Bailey & López de Prado (2012): annual SR 1.585 on 24 monthly returns, skew -2.448,
    # kurtosis 10.164 -> PSR(0) = 0.9132 (also the value pypbo's tests hold).
    psr = probabilistic_sharpe_ratio(1.585 / math.sqrt(12), 24, 0.0, skew=-2.448, kurtosis=10.164)
    assert round(psr, 4) == 0.9132


def test_dsr_deflated_sharpe_ratio_example():
    # Bailey & López de Prado (2014): annual SR 2.5, T = 1250 daily returns (250 a year), N = 100
    # trials, annual V[SR] = 0.5, skew -3, kurtosis 10 -> SR0 = 0.1132 a day, DSR = 0.9004.
    sr, var = 2.5 / math.sqrt(250), 0.5 / 250
    assert round(expected_max_sharpe(100, var), 4) == 0.1132
    assert round(deflated_sharpe_ratio(sr, 1250, 100, var, skew=-3, kurtosis=10), 4) == 0.9004


def test_expected_max_sharpe_factor_for_100_trials():
    # the bracket for N = 100 (pypbo's expected_max(100) = 2.5306...)
    assert expected_max_sharpe(100, 1.0) == pytest.approx(2.5306028932016846, abs=1e-9)
    assert expected_max_sharpe(1, 4.0) == 0.0


def test_psr_against_scipy_normal_and_hand_value():
    from scipy.stats import norm

    sr, n, skew, kurt = 0.1, 500, -0.5, 6.0
    z = (sr - 0.02) * math.sqrt(n - 1) / math.sqrt(1 + 0.5 * 0.1 + (6 - 1) / 4 * 0.01)
    assert probabilistic_sharpe_ratio(sr, n, 0.02, skew, kurt) == pytest.approx(norm.cdf(z), abs=1e-12)
    # normal returns: PSR(0) = Φ(SR sqrt(n-1) / sqrt(1 + SR²/2))
    assert probabilistic_sharpe_ratio(0.05, 401) == pytest.approx(norm.cdf(0.05 * 20 / math.sqrt(1.00125)), abs=1e-12)


def test_min_track_record_length_hand_value_and_psr_identity():
    # normal returns, SR 0.1 per period, SR* 0, 95 %: 1 + (1 + 2/4 * 0.01) * (1.644854 / 0.1)^2
    z = 1.6448536269514722
    assert minimum_track_record_length(0.1) == pytest.approx(1 + 1.005 * (z / 0.1) ** 2, rel=1e-12)
    # at exactly MinTRL returns the PSR equals the confidence asked for
    for sr, b, sk, ku, c in [(0.3, 0.1, -1.0, 7.0, 0.95), (0.05, 0.0, 0.2, 3.5, 0.99), (0.458, 0.0, -2.448, 10.164, 0.9)]:
        n = minimum_track_record_length(sr, b, sk, ku, c)
        assert probabilistic_sharpe_ratio(sr, n, b, sk, ku) == pytest.approx(c, abs=1e-12)
    assert minimum_track_record_length(0.1, sr_benchmark=0.1) == math.inf


def test_sample_moments_of_a_known_series():
    r = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    sr, skew, kurt, n = sample_moments(r)
    d = r - r.mean()
    assert n == 5 and sr == pytest.approx(r.mean() / r.std(ddof=1))
    assert skew == pytest.approx(np.mean(d**3) / np.mean(d**2) ** 1.5)
    assert kurt == pytest.approx(np.mean(d**4) / np.mean(d**2) ** 2)
    assert math.isnan(sample_moments(np.ones(10))[0])


# ------------------------------------------------------------------ errors name the value
@pytest.mark.parametrize("call, words", [
    (lambda: probabilistic_sharpe_ratio(0.1, 1), "n_obs"),
    (lambda: probabilistic_sharpe_ratio(2.0, 100, skew=3.0, kurtosis=1.0), "excess"),
    (lambda: deflated_sharpe_ratio(0.1, 100, 0, 0.01), "n_trials"),
    (lambda: deflated_sharpe_ratio(0.1, 100, 5, -0.01), "sr_variance"),
    (lambda: minimum_track_record_length(0.1, confidence=1.5), "confidence"),
    (lambda: probability_of_backtest_overfitting(np.zeros((100, 3)), n_blocks=5), "even"),
    (lambda: probability_of_backtest_overfitting(np.zeros(100), n_blocks=4), "[T, N]"),
    (lambda: probability_of_backtest_overfitting(np.zeros((100, 1)), n_blocks=4), "at least 2"),
    (lambda: probability_of_backtest_overfitting(np.zeros((10, 3)), n_blocks=8), "rows per block"),
    (lambda: probability_of_backtest_overfitting(np.full((40, 3), np.nan), n_blocks=4), "returns[0, 0]"),
])
def test_bad_inputs_raise_one_line_errors(call, words):
    with pytest.raises(ConfigError, match=None) as e:
        call()
    assert words in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------ PBO by hand
def test_pbo_two_blocks_by_hand():
    # S = 2 blocks of 4 bars, 3 configs. Split A: J = block 0; split B: J = block 1.
    a = np.array([1, 2, 1, 2], float)  # SR = 1.5/0.57735 = 2.598
    b = np.array([0, 1, 0, 1], float)  # SR = 0.5/0.57735 = 0.866
    c = np.array([1, 3, 1, 3], float)  # SR = 2/1.1547 = 1.732
    block0 = np.column_stack([a, b, c])   # config 0 best in block 0
    block1 = np.column_stack([b, c, a])   # config 0 worst in block 1; config 2 best in block 1
    res = probability_of_backtest_overfitting(np.vstack([block0, block1]), n_blocks=2)
    # split J=block0: winner 0, its OOS SR 0.866 ranks 1 of 3 -> ω = 1/4, λ = ln(1/3) < 0
    # split J=block1: winner 2, its OOS SR (block 0, col c) 1.732 ranks 2 of 3 -> ω = 2/4, λ = 0
    assert res.n_splits == 2 and res.rows_used == 8
    assert sorted(res.logits.tolist()) == pytest.approx([math.log(1 / 3), 0.0])
    assert res.pbo == 1.0 and float(res) == 1.0
    assert sorted(res.oos_sharpe.tolist()) == pytest.approx([0.5 / np.std(b, ddof=1), 2 / np.std(c, ddof=1)])


def test_pbo_blocks_are_contiguous_in_time_not_shuffled():
    # config 0 is best in the first half of time, config 1 in the second: with 2 blocks every split
    # picks the one that fails out of sample -> PBO = 1; shuffling rows would blur this
    rng = np.random.default_rng(3)
    T = 400
    r = rng.normal(0, 0.01, size=(T, 2))
    r[: T // 2, 0] += 0.01
    r[T // 2:, 1] += 0.01
    assert probability_of_backtest_overfitting(r, n_blocks=2).pbo == 1.0


# ------------------------------------------------------------------ behaviour on simulated markets
def test_pbo_without_skill_is_near_one_half_on_average():
    rng = np.random.default_rng(11)
    pbos = [probability_of_backtest_overfitting(rng.normal(0, 0.01, size=(480, 20)), n_blocks=10).pbo for _ in range(40)]
    assert 0.4 < np.mean(pbos) < 0.6
    assert np.std(pbos) > 0.1  # one market's PBO varies widely


def test_pbo_with_one_planted_skill_strategy_is_near_zero():
    rng = np.random.default_rng(12)
    r = rng.normal(0, 0.01, size=(2000, 30))
    r[:, 7] += 0.002  # per-bar SR 0.2
    res = probability_of_backtest_overfitting(r, n_blocks=16)
    assert res.n_splits == 12870
    assert res.pbo < 0.05
    assert res.prob_oos_loss < 0.05


def _best_of_n(rng, T, N, skill=0.0):
    r = rng.normal(0, 0.01, size=(T, N))
    r[:, 0] += skill
    srs = r.mean(axis=0) / r.std(axis=0, ddof=1)
    k = int(np.argmax(srs))
    sr, skew, kurt, n = sample_moments(r[:, k])
    return deflated_sharpe_ratio(sr, n, N, float(np.var(srs, ddof=1)), skew, kurt)


def test_dsr_of_the_best_of_many_no_skill_strategies_is_low():
    rng = np.random.default_rng(21)
    dsr = np.array([_best_of_n(rng, 500, 50) for _ in range(60)])
    assert dsr.mean() < 0.6
    assert np.mean(dsr > 0.95) < 0.15  # a false discovery rate near the 5 % the test promises


def test_dsr_of_a_planted_skill_strategy_is_high():
    rng = np.random.default_rng(22)
    dsr = [_best_of_n(rng, 2000, 50, skill=0.002) for _ in range(10)]
    assert min(dsr) > 0.95


def test_psr_is_calibrated_under_the_null():
    # no skill, normal returns: PSR(0) is uniform, so P(PSR > 0.95) is about 5 %
    rng = np.random.default_rng(31)
    r = rng.normal(0, 0.01, size=(2000, 250))
    srs = r.mean(axis=1) / r.std(axis=1, ddof=1)
    psr = np.array([probabilistic_sharpe_ratio(s, 250) for s in srs])
    assert 0.03 < np.mean(psr > 0.95) < 0.075


# ------------------------------------------------------------------ bootstrap CI
def test_block_bootstrap_ci_covers_the_true_sharpe_about_95_percent():
    rng = np.random.default_rng(41)
    true_sr, hits = 0.1, 0
    for _ in range(150):
        r = rng.normal(true_sr * 0.01, 0.01, size=400)
        lo, hi = block_bootstrap_ci(r, n_boot=400, seed=int(rng.integers(1 << 30)))
        hits += lo <= true_sr <= hi
    assert 0.88 <= hits / 150 <= 0.99


def test_block_bootstrap_ci_is_seeded_and_handles_short_series():
    r = np.random.default_rng(0).normal(0.001, 0.01, 300)
    assert block_bootstrap_ci(r, seed=5) == block_bootstrap_ci(r, seed=5)
    lo, hi = block_bootstrap_ci(r, np.mean, block=10, seed=1)
    assert lo < r.mean() < hi
    assert all(math.isnan(x) for x in block_bootstrap_ci([0.1, 0.2]))


def test_block_bootstrap_ci_of_several_seeds_resamples_rows_together():
    rng = np.random.default_rng(7)
    base = rng.normal(0.001, 0.01, 500)
    two = np.column_stack([base, base])  # identical columns: the mean Sharpe equals the one-column Sharpe
    assert block_bootstrap_ci(two, seed=3, n_boot=300) == pytest.approx(block_bootstrap_ci(base, seed=3, n_boot=300))
    with pytest.raises(ConfigError, match="shape"):
        block_bootstrap_ci(np.zeros((3, 3, 3)))


def test_block_bootstrap_fast_sharpe_equals_the_explicit_resample():
    r = np.random.default_rng(8).normal(0.001, 0.01, 301)  # 301 bars: the last block is cut
    fast = block_bootstrap_ci(r, block=7, n_boot=300, seed=4)
    slow = block_bootstrap_ci(r, lambda x: x.mean() / x.std(ddof=1), block=7, n_boot=300, seed=4)
    assert fast == pytest.approx(slow, abs=1e-12)
