"""Kernel phases that are not accounting: actions to target weights, and the observation writer.

Both work on the kernels' stack block (layout: :func:`factorgym.envs.layouts.block_rows`; lane j
of row r at ``lane(r, j, B)``). The action schemes are tabled in :mod:`factorgym.envs.spaces`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from factorgym.envs.execution import ENV_BAD_ACTION, SCHEME_DIRECT, SCHEME_DISCRETE, SCHEME_SIGNED, SCHEME_SIMPLEX
from factorgym.envs.intrinsics import lane_index_nb as lane
from factorgym.envs.intrinsics import select_nb
from factorgym.envs.jit import JIT
from factorgym.envs.layouts import CONFIG, COUNTER, N_RULE, OUT, PRICE, STATE, STATE_POSITIONS, TEMP


@numba.njit(inline="always", **JIT)
def map_actions_nb(config, block, rows, A, K, B):
    """Target weights into the weight rows, ``TEMP.live`` (not done, action well formed) and the
    env status row (``ENV_BAD_ACTION`` for a malformed action of a live env)."""
    scheme = int(config[CONFIG.scheme])
    long_only = config[CONFIG.long_only] > 0.0
    cap = config[CONFIG.max_leverage]
    weights, actions, live_row = rows.weights, rows.actions, rows.temps + TEMP.live
    direct = scheme == SCHEME_DIRECT
    for j in range(B):
        ok = True
        for k in range(K):
            x = block[lane(actions + k, j, B)]
            ok &= math.isfinite(x) | (direct & math.isnan(x))  # (direct mapping: NaN = hold that asset)
        block[lane(live_row, j, B)] = select_nb(ok, 1.0, 0.0)
    if scheme == SCHEME_SIMPLEX:  # w_i = (a_i + 1) / sum_j (a_j + 1), slot A = cash
        for j in range(B):
            total = 0.0
            for k in range(A + 1):
                total += min(max(block[lane(actions + k, j, B)], -1.0), 1.0) + 1.0
            for i in range(A):
                x = min(max(block[lane(actions + i, j, B)], -1.0), 1.0) + 1.0
                block[lane(weights + i, j, B)] = select_nb(total > 0.0, x / total, 0.0)
    elif scheme == SCHEME_DISCRETE:  # level index -> level x level size
        top = config[CONFIG.n_levels] - 1.0
        size = config[CONFIG.level_size]
        levels = len(CONFIG) + N_RULE * A
        for j in range(B):
            ok = block[lane(live_row, j, B)] > 0.0
            for i in range(A):
                x = block[lane(actions + i, j, B)]
                k = int(select_nb((x >= 0.0) & (x <= top), x, 0.0))  # (NaN fails both)
                ok &= (x >= 0.0) & (x <= top) & (k == x)
                block[lane(weights + i, j, B)] = config[levels + k] * size
            block[lane(live_row, j, B)] = select_nb(ok, 1.0, 0.0)
    elif scheme == SCHEME_SIGNED:
        for j in range(B):
            for i in range(A):
                block[lane(weights + i, j, B)] = min(max(block[lane(actions + i, j, B)], -1.0), 1.0) * cap
    else:  # direct: the action is the target weight vector
        for j in range(B):
            for i in range(A):
                block[lane(weights + i, j, B)] = block[lane(actions + i, j, B)]
    # clip to the constraints: long-only weights >= 0 summing to <= 1, gross <= max_leverage
    limit = select_nb(long_only, min(cap, 1.0), cap)
    clip = scheme != SCHEME_SIMPLEX  # (simplex weights are >= 0 and sum to <= 1 by construction)
    for j in range(B):
        gross = 0.0
        for i in range(A):
            w = block[lane(weights + i, j, B)]
            w = select_nb(clip & long_only & (w < 0.0), 0.0, w)
            block[lane(weights + i, j, B)] = w
            gross += select_nb(math.isnan(w), 0.0, abs(w))
        k = select_nb(clip & (gross > limit), limit / gross, 1.0)  # (x 1.0 is exact)
        for i in range(A):
            block[lane(weights + i, j, B)] *= k
        done = block[lane(rows.counters + COUNTER.done, j, B)] != 0.0
        ok = block[lane(live_row, j, B)] > 0.0
        block[lane(rows.out + OUT.status, j, B)] = select_nb((not done) & (not ok), ENV_BAD_ACTION, 0.0)
        block[lane(live_row, j, B)] = select_nb((not done) & ok, 1.0, 0.0)


@numba.njit(inline="always", **JIT)
def write_obs_nb(obs, lo, hi, D, out, data, prices, work, window, A, features_per_bar, copy_features, stepped_only):
    """Observations of envs lo..hi (env n's at ``obs[n x D]``) of the bars ``out[OUT.bar, n]`` (with
    ``stepped_only``: only of the envs that stepped, whose bar is > 0): feature rows bar-W+1..bar (0
    where untradable or not finite; with ``copy_features``, copied from ``data``, the sanitised rows
    [T, A, F] flat; else left to :func:`write_raw_features_nb`), the mask rows (``PRICE.tradable``),
    then weights [A], cash weight, equity / initial equity, drawdown.

    Called once per block of envs, not per env, and calls nothing: each inlined call of a function
    that takes arrays can cost numba an atomic reference count increment and decrement per array,
    which its pruning pass does not remove around calls and branches; per env they took a third of
    the vector env's step."""
    for n in range(lo, hi):
        bar = int(out[OUT.bar, n])
        if stepped_only and bar <= 0:  # (skipped and malformed envs have bar 0)
            continue
        # unsigned indices: numba then needs no negative-index wraparound per element, and LLVM turns
        # the row copies into vector moves
        start = n * D
        first = bar - window + 1
        if copy_features:
            count = np.uint64(window * features_per_bar)
            src = np.uint64(first * features_per_bar)
            dst = np.uint64(start)
            for j in range(count):
                obs[dst + j] = data[src + j]
        dst = start + window * features_per_bar
        for r in range(window):
            for i in range(A):
                obs[dst + r * A + i] = prices[first + r, i, PRICE.tradable]
        portfolio = start + window * features_per_bar + window * A
        equity = work[STATE.equity, n]
        inv_equity = 1.0 / equity if equity > 0.0 else 0.0
        for i in range(A):
            obs[portfolio + i] = work[STATE_POSITIONS + i, n] * prices[bar, i, PRICE.mark] * inv_equity
        obs[portfolio + A] = work[STATE.cash, n] * inv_equity
        obs[portfolio + A + 1] = equity / work[STATE.initial_cash, n]
        peak = work[STATE.peak, n]
        obs[portfolio + A + 2] = 1.0 - equity / peak if peak > 0.0 else 0.0


@numba.njit(**JIT)
def write_raw_features_nb(obs, lo, hi, D, out, data, prices, window, A, features_per_bar, stepped_only):
    """The feature rows of the observations of envs lo..hi (as :func:`write_obs_nb`) from a memory-mapped
    tensor's own, unsanitised rows ``data``: 0 where untradable or not finite. Not inlined: kept out
    of the in-memory tensors' step (its branches and loops there cost them speed)."""
    F = np.uint64(features_per_bar // A) if A > 0 else np.uint64(0)
    zero = np.float32(0.0)
    for n in range(lo, hi):
        bar = int(out[OUT.bar, n])
        if stepped_only and bar <= 0:
            continue
        first = bar - window + 1
        src = np.uint64(first * features_per_bar)
        dst = np.uint64(n * D)
        for r in range(window * A):  # (one row of F features per bar and asset)
            ok = prices[first + r // A, r % A, PRICE.tradable] > 0.0
            row = np.uint64(r) * F
            for f in range(F):
                x = data[src + row + f]
                obs[dst + row + f] = select_nb(ok & (x - x == zero), x, zero)  # (x - x is 0 iff x is finite)
