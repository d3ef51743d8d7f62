"""Overfitting statistics of backtested Sharpe ratios, in plain numpy (normal law from the stdlib).

Units, for every function here (read before passing numbers in):

* **Sharpe ratios are per period and not annualised**: ``SR = mean(r) / std(r)`` of the per-bar
  returns the track record is made of (an annual 2.5 on 250 daily bars is ``2.5 / sqrt(250)``).
  Variances of Sharpe ratios are in the same per-period units (annual ``V`` over ``q`` periods a
  year is ``V / q``).
* **Kurtosis is non-excess**: 3 for a normal law (pandas' ``kurt()`` is excess: add 3).
* Skewness and kurtosis are the sample moments of the same per-bar returns, as the papers use them.

References:
  Bailey, D. H. and M. López de Prado (2012), "The Sharpe Ratio Efficient Frontier", Journal of
  Risk 15(2) -- the probabilistic Sharpe ratio (PSR) and the minimum track record length (MinTRL).
  Bailey, D. H. and M. López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for Selection
  Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5) -- DSR.
  Bailey, D. H., J. M. Borwein, M. López de Prado and Q. J. Zhu (2017), "The Probability of Backtest
  Overfitting", Journal of Computational Finance 20(4) -- PBO by combinatorially symmetric
  cross-validation (CSCV).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from factorgym.errors import ConfigError

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()
_MAX_SPLITS = 1_000_000  # C(S, S/2) for S = 24 is 2.7 million: refuse before allocating it


def _check_n_obs(n_obs: float) -> float:
    n = float(n_obs)
    if not n > 1:
        raise ConfigError(f"n_obs={n_obs!r}: a Sharpe ratio's standard error needs more than 1 observation")
    return n


def _sr_dispersion(sr: float, skew: float, kurtosis: float) -> float:
    """``1 - γ3·SR + (γ4 - 1)/4 · SR²``: the variance of the SR estimator times (n - 1)."""
    d = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not d > 0:
        raise ConfigError(f"1 - skew*SR + (kurtosis-1)/4*SR^2 = {d:.4g} <= 0 for SR={sr}, skew={skew}, "
                          f"kurtosis={kurtosis}: is the kurtosis excess (add 3) or the Sharpe ratio annualised?")
    return d


def sample_moments(returns) -> tuple[float, float, float, int]:
    """``(SR, skew, kurtosis, n)`` of per-bar returns: per-period Sharpe ``mean / std`` (ddof=1),
    sample skewness ``m3 / m2^1.5`` and non-excess kurtosis ``m4 / m2²`` (biased central moments,
    as in the papers). A flat series gives ``(nan, 0, 3, n)``."""
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    r = r[np.isfinite(r)]
    n = int(r.size)
    if n < 2:
        return math.nan, 0.0, 3.0, n
    d = r - r.mean()
    m2 = float(np.mean(d * d))
    sd = float(r.std(ddof=1))
    if m2 <= 1e-24 or sd <= 1e-12:
        return math.nan, 0.0, 3.0, n
    return float(r.mean()) / sd, float(np.mean(d**3)) / m2**1.5, float(np.mean(d**4)) / m2**2, n


def probabilistic_sharpe_ratio(sr: float, n_obs: float, sr_benchmark: float = 0.0,
                               skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark`` (Bailey & López de Prado 2012).

    ``PSR(SR*) = Φ( (SR - SR*) · sqrt(n - 1) / sqrt(1 - γ3·SR + (γ4 - 1)/4 · SR²) )``

    with ``SR`` the observed per-period Sharpe ratio over ``n = n_obs`` returns, ``γ3`` their
    skewness and ``γ4`` their (non-excess) kurtosis, ``Φ`` the standard normal CDF.
    The 2012 paper's example: SR 1.585 a year on 24 monthly returns (``1.585/sqrt(12)``),
    γ3 = -2.448, γ4 = 10.164 give PSR(0) = 0.9132.
    """
    n = _check_n_obs(n_obs)
    z = (sr - sr_benchmark) * math.sqrt(n - 1.0) / math.sqrt(_sr_dispersion(sr, skew, kurtosis))
    return _N.cdf(z)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios estimated around a true value of 0
    (Bailey & López de Prado 2014, from the false strategy theorem):

    ``SR0 = sqrt(V[SR_n]) · ((1 - γ)·Φ⁻¹(1 - 1/N) + γ·Φ⁻¹(1 - 1/(N·e)))``

    ``γ`` the Euler-Mascheroni constant, ``N = n_trials``, ``V[SR_n]`` the variance of the trials'
    per-period Sharpe ratios. One trial selects nothing: ``SR0 = 0``.
    """
    n = int(n_trials)
    if n < 1 or n != n_trials:
        raise ConfigError(f"n_trials={n_trials!r}: expected a whole number >= 1 (configurations tried)")
    if not sr_variance >= 0:
        raise ConfigError(f"sr_variance={sr_variance!r}: a variance is >= 0")
    if n == 1:
        return 0.0
    z = (1.0 - EULER_GAMMA) * _N.inv_cdf(1.0 - 1.0 / n) + EULER_GAMMA * _N.inv_cdf(1.0 - 1.0 / (n * math.e))
    return math.sqrt(sr_variance) * z


def deflated_sharpe_ratio(sr: float, n_obs: float, n_trials: int, sr_variance: float,
                          skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """The PSR against the Sharpe ratio that luck alone would reach after ``n_trials`` tries
    (Bailey & López de Prado 2014):

    ``DSR = Φ( (SR - SR0) · sqrt(T - 1) / sqrt(1 - γ3·SR + (γ4 - 1)/4 · SR²) )``,
    ``SR0 = sqrt(V[SR_n]) · ((1 - γ)·Φ⁻¹(1 - 1/N) + γ·Φ⁻¹(1 - 1/(N·e)))``

    ``SR`` the selected strategy's per-period Sharpe ratio over ``T = n_obs`` returns with skewness
    ``γ3`` and kurtosis ``γ4``; ``N = n_trials``; ``V[SR_n] = sr_variance`` the variance of the
    trials' per-period Sharpe ratios. The paper's example: annual SR 2.5 on T = 1250 daily returns
    (250 a year), N = 100, annual V = 0.5, γ3 = -3, γ4 = 10 give SR0 = 0.1132 per day, DSR = 0.9004.
    """
    sr0 = expected_max_sharpe(n_trials, sr_variance)
    return probabilistic_sharpe_ratio(sr, n_obs, sr_benchmark=sr0, skew=skew, kurtosis=kurtosis)


def minimum_track_record_length(sr: float, sr_benchmark: float = 0.0, skew: float = 0.0,
                                kurtosis: float = 3.0, confidence: float = 0.95) -> float:
    """Returns needed before ``PSR(sr_benchmark)`` reaches ``confidence`` (Bailey & López de Prado 2012):

    ``MinTRL = 1 + (1 - γ3·SR + (γ4 - 1)/4 · SR²) · (Z_α / (SR - SR*))²``

    in periods of the returns (per-period ``SR``, ``SR*``), ``Z_α = Φ⁻¹(confidence)``. ``inf`` when
    ``SR <= SR*`` (no track record is long enough).
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence!r}: expected a probability in (0, 1), e.g. 0.95")
    if sr <= sr_benchmark:
        return math.inf
    z = _N.inv_cdf(confidence)
    return 1.0 + _sr_dispersion(sr, skew, kurtosis) * (z / (sr - sr_benchmark)) ** 2


@dataclass(frozen=True)
class PBOResult:
    """Outcome of CSCV. ``float(result)`` is the PBO.

    Attributes:
        pbo: share of splits whose in-sample best configuration ranks at or below the out-of-sample
            median (logit λ <= 0); a probability in [0, 1].
        logits: λ per split [n_splits].
        is_sharpe, oos_sharpe: per split, the in-sample winner's per-period Sharpe ratio in and out
            of sample [n_splits] (the "performance degradation" scatter of the paper).
        prob_oos_loss: share of splits where the winner's out-of-sample Sharpe ratio is < 0.
        n_splits, n_blocks, n_configs, rows_used: the combinatorics and the rows kept (the oldest
            ``T mod n_blocks`` rows are dropped so the blocks are equal).
    """

    pbo: float
    logits: np.ndarray
    is_sharpe: np.ndarray
    oos_sharpe: np.ndarray
    prob_oos_loss: float
    n_splits: int
    n_blocks: int
    n_configs: int
    rows_used: int

    def __float__(self) -> float:
        return float(self.pbo)


def _half_sharpe(s1: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    """Per-period Sharpe ratio (ddof=1) from sums of r and r² over n rows; flat -> -inf (never best)."""
    mean = s1 / n
    var = np.maximum(s2 - n * mean * mean, 0.0) / (n - 1)
    sd = np.sqrt(var)
    out = np.full(mean.shape, -np.inf)
    ok = sd > 1e-12 * np.maximum(1.0, np.abs(mean))
    np.divide(mean, sd, out=out, where=ok)
    return out


def probability_of_backtest_overfitting(returns, n_blocks: int = 16) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation
    (Bailey, Borwein, López de Prado & Zhu 2017).

    ``returns`` is ``[T, N]``: per-bar returns of N configurations over the same T bars, in time
    order. CSCV:

    1. cut the rows into ``S = n_blocks`` contiguous blocks of equal length, in time order (never
       shuffled; the oldest ``T mod S`` rows are dropped);
    2. for each of the ``C(S, S/2)`` ways to pick S/2 blocks as the in-sample set J (the rest, J̄,
       out of sample): compute each configuration's Sharpe ratio on J and on J̄, take the in-sample
       winner ``n* = argmax_n SR_J(n)``, and its relative out-of-sample rank
       ``ω = rank(SR_J̄(n*)) / (N + 1)`` (rank 1 = worst of N, ties share the average rank);
    3. ``λ = ln(ω / (1 - ω))``; ``PBO = #{λ <= 0} / C(S, S/2)``.

    A PBO near 0.5 says the in-sample choice carries no information; near 0, that the winner
    stays good out of sample. A flat configuration (zero variance in a half) has Sharpe -inf.
    """
    M = np.asarray(returns, dtype=np.float64)
    if M.ndim != 2:
        raise ConfigError(f"returns must be [T, N] (bars x configurations), got shape {M.shape}")
    T, N = M.shape
    S = int(n_blocks)
    if S != n_blocks or S < 2 or S % 2:
        raise ConfigError(f"n_blocks={n_blocks!r}: expected an even whole number >= 2, e.g. 16")
    if N < 2:
        raise ConfigError(f"returns has {N} configuration column(s); PBO ranks configurations and needs at least 2")
    if not np.all(np.isfinite(M)):
        r, c = np.argwhere(~np.isfinite(M))[0]
        raise ConfigError(f"returns[{r}, {c}] is {M[r, c]}: every return must be finite (use 0 for a flat bar)")
    block = T // S
    if block < 2:
        raise ConfigError(f"{T} rows in {S} blocks leave {block} row(s) per block; each half's Sharpe needs >= 2 rows per block")
    n_splits = math.comb(S, S // 2)
    if n_splits > _MAX_SPLITS:
        raise ConfigError(f"n_blocks={S} gives {n_splits} splits; use n_blocks <= 22")
    M = M[T - block * S:]
    blocks = M.reshape(S, block, N)
    s1 = blocks.sum(axis=1)  # [S, N]
    s2 = (blocks * blocks).sum(axis=1)
    pick = np.zeros((n_splits, S))
    for k, combo in enumerate(itertools.combinations(range(S), S // 2)):
        pick[k, combo] = 1.0
    n_half = block * (S // 2)
    tot1, tot2 = s1.sum(axis=0), s2.sum(axis=0)
    is1, is2 = pick @ s1, pick @ s2  # [n_splits, N]
    sr_is = _half_sharpe(is1, is2, n_half)
    sr_oos = _half_sharpe(tot1 - is1, tot2 - is2, n_half)
    best = np.argmax(sr_is, axis=1)
    rows = np.arange(n_splits)
    winner_oos = sr_oos[rows, best]
    below = (sr_oos < winner_oos[:, None]).sum(axis=1)
    equal = (sr_oos == winner_oos[:, None]).sum(axis=1)  # includes the winner itself
    rank = below + (equal + 1) / 2.0  # average rank among ties, 1 = worst
    omega = rank / (N + 1.0)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)), logits=logits, is_sharpe=sr_is[rows, best], oos_sharpe=winner_oos,
        prob_oos_loss=float(np.mean(winner_oos < 0.0)), n_splits=n_splits, n_blocks=S, n_configs=N,
        rows_used=int(block * S),
    )


def block_bootstrap_ci(returns, statistic=None, *, block: int | None = None, n_boot: int = 2000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic(returns)`` by the circular moving-block bootstrap.

    Resamples ``ceil(T / block)`` blocks of ``block`` consecutive bars (wrapping at the end) with
    replacement and cuts the result to T bars, keeping short-range serial dependence. ``returns`` is
    ``[T]`` or ``[T, S]`` (e.g. one column per seed; rows are resampled together). ``block``
    defaults to ``round(T ** (1/3))``; ``statistic`` (called on each resampled array) defaults to the
    per-period Sharpe ratio ``mean / std`` (ddof=1), averaged over columns for ``[T, S]``.
    Returns ``(low, high)``; ``(nan, nan)`` with fewer than 3 bars.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim not in (1, 2):
        raise ConfigError(f"returns must be [T] or [T, S], got shape {r.shape}")
    T = r.shape[0]
    if not 0 < level < 1:
        raise ConfigError(f"level={level!r}: expected a probability in (0, 1), e.g. 0.95")
    if T < 3:
        return math.nan, math.nan
    b = max(1, int(round(T ** (1 / 3)))) if block is None else int(block)
    if not 1 <= b <= T:
        raise ConfigError(f"block={block!r}: expected 1 <= block <= {T} bars")
    rng = np.random.default_rng(seed)
    n_blk = -(-T // b)
    starts = rng.integers(0, T, size=(n_boot, n_blk))
    if statistic is None:
        # Sharpe from the sums of r and r² over the picked blocks: each block's sums come from circular
        # cumulative sums, so no [n_boot, T] resample is built; the last block is cut to T bars.
        R = r if r.ndim == 2 else r[:, None]
        wrap = np.concatenate([R, R[:b]], axis=0)
        c1 = np.concatenate([np.zeros((1, R.shape[1])), np.cumsum(wrap, axis=0)])
        c2 = np.concatenate([np.zeros((1, R.shape[1])), np.cumsum(wrap * wrap, axis=0)])
        tail = T - (n_blk - 1) * b  # bars taken from the last block
        full, last = starts[:, :-1], starts[:, -1]
        s1 = (c1[full + b] - c1[full]).sum(axis=1) + c1[last + tail] - c1[last]
        s2 = (c2[full + b] - c2[full]).sum(axis=1) + c2[last + tail] - c2[last]
        mean = s1 / T
        var = np.maximum(s2 - T * mean * mean, 0.0) / (T - 1)
        sd = np.sqrt(var)
        ok = sd > 1e-12
        sr = np.where(ok, mean / np.where(ok, sd, 1.0), np.nan)  # [n_boot, S]
        stats = sr.mean(axis=1)  # a flat column makes that resample nan (dropped)
    else:
        idx = ((starts[:, :, None] + np.arange(b)) % T).reshape(n_boot, -1)[:, :T]
        stats = np.array([statistic(x) for x in r[idx]], dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [a, 1.0 - a])
    return float(lo), float(hi)
