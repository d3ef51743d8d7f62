"""Batched step and reset kernels: one compiled call advances N environments by one bar.

The order of operations and the rounding rules are documented in :mod:`factorgym.envs.execution`,
whose functions every fill goes through; the array layouts are named in :mod:`factorgym.envs.layouts`.

SIMD across envs. The envs are stepped in blocks of B (``layouts.block_size``: 8; their
columns of the field-major ``work`` and ``out``). A block's state is copied into a scratch array on
the stack (row r, lane j at ``r x B + j``; :func:`~factorgym.envs.intrinsics.stack_block_intrinsic`),
stepped there in phases (:mod:`factorgym.envs.actions`, :mod:`factorgym.envs.phases`) that are each
a loop over the block's lanes, and copied back. LLVM can turn those loops into vector code (8 envs
per instruction with AVX-512, 4 with AVX2) because:

- they touch only stack arrays, which LLVM can prove overlap no argument array;
- block indices are unsigned (``lane``): numba's negative-index wraparound would hide them from LLVM;
- no env branches on its own values (``select_nb``), and no calls are left in the loops (``sqrt_nb``
  is LLVM's intrinsic; the general impact power is compiled in a separate copy of the order loop).

Envs that are done, or whose action is malformed, are stepped with no orders and keep their state.
The kernels take ``dims`` = ((0,) x A, (0,) x B): numba compiles one specialisation per tuple type,
so the number of assets A and the block size B are constants there (LLVM unrolls the small per-asset
loops; every block offset is a constant: with A known only at run time the rows' offsets are too,
and the phase loops stay scalar). Nothing else of an env's shape is in the types: the block always
holds A + 1 action rows (the action size K, A or A + 1 by the mapping, is read from the config; the
last row is 0 when K = A), so every env of A assets and one action dtype runs one compiled kernel.
:func:`step_blocks_nb` serves :func:`step_batch_nb` (one thread) and :func:`step_batch_par_nb`
(``parallel=True``: runs of blocks over numba's threads). A block writes only its own columns and
observations, so both give identical results.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from factorgym.envs.actions import map_actions_nb, write_obs_nb, write_raw_features_nb
from factorgym.envs.execution import (
    ENV_BAD_SHAPE, ENV_BANKRUPT, ENV_LIQUIDATED, ENV_OK, LOG_FLOOR, REWARD_DRAWDOWN, REWARD_SHARPE, REWARD_TURNOVER,
    SCHEME_SIMPLEX,
)
from factorgym.envs.intrinsics import lane_index_nb as lane
from factorgym.envs.intrinsics import prefetch_nb, select_nb, stack_block_intrinsic
from factorgym.envs.jit import JIT
from factorgym.envs.layouts import (
    CONFIG, COUNTER, FILL, N_FILL, N_PRICE, N_RULE, OUT, OUT_WEIGHTS, PRICE, STATE,
    STATE_POSITIONS, TEMP, TOTALS, block_rows, work_offsets,
)
from factorgym.envs.phases import fill_phases_nb, settle_phases_nb

stack_block_nb = stack_block_intrinsic(lambda A, B: block_rows(A, A + 1).size * B)
stack_totals_nb = stack_block_intrinsic(lambda A, B: len(TOTALS) * B)
stack_rules_nb = stack_block_intrinsic(lambda A, B: N_RULE * A * B)
stack_settings_nb = stack_block_intrinsic(lambda A, B: len(CONFIG))
PAR_CHUNK = 8  # blocks per task of the parallel kernel (each task sets up its own stack block)


@numba.njit(inline="always", **JIT)
def _obs_layout(prices, data, config, A):
    """Whether ``data`` (the feature rows) is raw (sanitised per window), features per bar (A x F),
    window and observation size."""
    features_per_bar = data.shape[0] // prices.shape[0]
    window = int(config[CONFIG.window])
    return config[CONFIG.raw_features] > 0.0, features_per_bar, window, window * (features_per_bar + A) + A + 3


@numba.njit(inline="always", **JIT)
def _copy_rules(config, rules, A, B):
    """The market rules into a stack array of their own, each value in every lane: the phase loops
    then read them from memory LLVM knows they never write."""
    for c in range(N_RULE * A):
        for j in range(B):
            rules[lane(c, j, B)] = config[len(CONFIG) + c]


@numba.njit(inline="always", **JIT)
def _load_block(lo, N, work, act, prices, config, block, rows, A, K, B):
    """State rows of envs lo..lo+B into the block, their K actions (float64) in its A + 1 action rows
    (0 in the last if K = A), and the price records of the bar they fill at (f = t + 1; bar 0 for envs
    that are done: nothing is read from it)."""
    u0 = np.uint64(lo)
    for c in range(rows.fills):
        for j in range(B):
            block[lane(c, j, B)] = work[c, u0 + np.uint64(j)]
    for j in range(B):
        n = min(lo + j, N - 1)  # (padding lanes past the last env read its action; they are done)
        row = np.uint64(n * K)  # (unsigned: no negative-index wraparound per action value)
        for k in range(A + 1):
            block[lane(rows.actions + k, j, B)] = select_nb(k < K, act[row + np.uint64(min(k, K - 1))], 0.0)
        block[lane(rows.temps + TEMP.liquidate, j, B)] = 0.0
    for j in range(B):
        done = block[lane(rows.counters + COUNTER.done, j, B)] != 0.0
        f = select_nb(done, 0, int(block[lane(rows.counters + COUNTER.bar, j, B)]) + 1)
        for i in range(A):
            for c in range(PRICE.pad):  # (every field but the padding)
                block[lane(rows.prices + c * A + i, j, B)] = prices[f, i, c]


@numba.njit(inline="always", **JIT)
def _finish(config, block, rows, A, B):
    """Env status, peak, drawdown, Sharpe statistics, bar and step counters; the out rows (zero for
    envs that did not step, whose state keeps its values)."""
    out, counters, live_row = rows.out, rows.counters, rows.temps + TEMP.live
    mark = rows.prices + PRICE.mark * A
    if int(config[CONFIG.reward]) == REWARD_SHARPE:  # (a loop of its own: its power does not vectorise)
        eta = config[CONFIG.sharpe_eta]
        for j in range(B):
            r = block[lane(out + OUT.equity, j, B)] / block[lane(STATE.equity, j, B)] - 1.0
            mean = block[lane(STATE.sharpe_mean, j, B)]
            square = block[lane(STATE.sharpe_square, j, B)]
            var = square - mean * mean
            reward = select_nb(var > 1e-12, (square * (r - mean) - 0.5 * mean * (r * r - square)) / var ** 1.5, 0.0)
            live = block[lane(live_row, j, B)] > 0.0
            block[lane(out + OUT.reward, j, B)] = select_nb(live, reward * config[CONFIG.reward_scale], 0.0)
            block[lane(STATE.sharpe_mean, j, B)] = select_nb(live, mean + eta * (r - mean), mean)
            block[lane(STATE.sharpe_square, j, B)] = select_nb(live, square + eta * (r * r - square), square)
    else:  # the log-return rewards are computed after the block (see _log_rewards)
        for j in range(B):
            block[lane(out + OUT.reward, j, B)] = 0.0
    for j in range(B):
        live = block[lane(live_row, j, B)] > 0.0
        equity = block[lane(out + OUT.equity, j, B)]
        cash = block[lane(STATE.cash, j, B)]
        previous = block[lane(STATE.equity, j, B)]
        liquidated = block[lane(rows.temps + TEMP.liquidate, j, B)] > 0.0
        status = select_nb(liquidated, ENV_LIQUIDATED, select_nb(equity <= 0.0, ENV_BANKRUPT, ENV_OK))
        peak = block[lane(STATE.peak, j, B)]
        new_peak = select_nb(equity > peak, equity, peak)
        f = block[lane(counters + COUNTER.bar, j, B)] + 1.0
        terminated = status != ENV_OK
        truncated = f >= block[lane(counters + COUNTER.end_bar, j, B)]
        block[lane(STATE.equity, j, B)] = select_nb(live, equity, previous)
        block[lane(STATE.peak, j, B)] = select_nb(live, new_peak, peak)
        block[lane(counters + COUNTER.bar, j, B)] = select_nb(live, f, f - 1.0)
        block[lane(counters + COUNTER.steps, j, B)] += select_nb(live, 1.0, 0.0)
        done = block[lane(counters + COUNTER.done, j, B)]
        block[lane(counters + COUNTER.done, j, B)] = select_nb(live & (terminated | truncated), 1.0, done)
        inv_equity = select_nb(equity > 0.0, 1.0 / equity, 0.0)
        block[lane(out + OUT.equity, j, B)] = select_nb(live, equity, 0.0)
        block[lane(out + OUT.cash, j, B)] = select_nb(live, cash, 0.0)
        for c in (OUT.fees, OUT.slippage_cost, OUT.n_trades):  # (the charges are 0 there already)
            block[lane(out + c, j, B)] = select_nb(live, block[lane(out + c, j, B)], 0.0)
        equity_open = block[lane(rows.temps + TEMP.equity_open, j, B)]
        inv_equity_open = select_nb(equity_open > 0.0, 1.0 / equity_open, 0.0)
        traded = block[lane(out + OUT.turnover, j, B)]
        block[lane(out + OUT.turnover, j, B)] = select_nb(live, traded * inv_equity_open, 0.0)
        block[lane(out + OUT.terminated, j, B)] = select_nb(live & terminated, 1.0, 0.0)
        block[lane(out + OUT.truncated, j, B)] = select_nb(live & truncated, 1.0, 0.0)
        block[lane(out + OUT.status, j, B)] = select_nb(live, status, block[lane(out + OUT.status, j, B)])
        block[lane(out + OUT.bar, j, B)] = select_nb(live, f, 0.0)
        # (the equity ratio until _log_rewards replaces it by its log)
        block[lane(out + OUT.log_return, j, B)] = select_nb(live, equity / previous, 0.0)
        block[lane(out + OUT.drawdown, j, B)] = select_nb(live, 1.0 - equity / new_peak, 0.0)
        for i in range(A):
            q = block[lane(STATE_POSITIONS + i, j, B)]
            block[lane(rows.weights + i, j, B)] = select_nb(live, q * block[lane(mark + i, j, B)] * inv_equity, 0.0)
            block[lane(rows.positions + i, j, B)] = select_nb(live, q, 0.0)
            block[lane(rows.order_status + i, j, B)] = select_nb(live, block[lane(rows.order_status + i, j, B)], 0.0)


@numba.njit(inline="always", **JIT)
def _store_block(lo, work, out, block, rows, A, B):
    u0 = np.uint64(lo)
    for c in range(rows.fills):
        for j in range(B):
            work[c, u0 + np.uint64(j)] = block[lane(c, j, B)]
    for r in range(A):  # (the block holds the fills field-major, work row-major: fill row r, FILL field)
        for c in range(N_FILL):
            for j in range(B):
                work[rows.fills + r * N_FILL + c, u0 + np.uint64(j)] = block[lane(rows.fills + c * 3 * A + r, j, B)]
    # The untradable-close and liquidation rows (rare; two thirds of the fill rows, a fifth of a step's
    # stores): a row without a fill is stored as zeros, so the work rows of an env are 0 unless the
    # last store put a fill there; they are stored only if this block has such a fill or work still
    # holds one (the outcome is the same for each env whatever its neighbours in the block)
    special = False
    for r in range(A, 3 * A):
        for j in range(B):
            special |= (block[lane(rows.fills + FILL.quantity * 3 * A + r, j, B)] != 0.0) \
                | (work[rows.fills + r * N_FILL + FILL.quantity, u0 + np.uint64(j)] != 0.0)
    if special:
        for r in range(A, 3 * A):
            for c in range(N_FILL):
                for j in range(B):
                    filled = block[lane(rows.fills + FILL.quantity * 3 * A + r, j, B)] != 0.0
                    x = block[lane(rows.fills + c * 3 * A + r, j, B)]
                    work[rows.fills + r * N_FILL + c, u0 + np.uint64(j)] = select_nb(filled, x, 0.0)
    for c in range(OUT_WEIGHTS + 3 * A):
        for j in range(B):
            out[c, u0 + np.uint64(j)] = block[lane(rows.out + c, j, B)]


@numba.njit(inline="always", **JIT)
def _log_rewards(out, config, lo, hi):
    """The log returns of envs lo..hi that stepped, from the equity ratio the step left in
    ``out[OUT.log_return]``, and their rewards unless the reward is the differential Sharpe (scalar:
    ``log`` does not vectorise here). One call per block (see :func:`write_obs_nb`)."""
    kind = int(config[CONFIG.reward])
    for n in range(lo, hi):
        if out[OUT.bar, n] > 0.0:  # stepped in this call (skipped and malformed envs have bar 0)
            ratio = out[OUT.log_return, n]
            log_return = math.log(ratio if ratio > LOG_FLOOR else LOG_FLOOR)
            out[OUT.log_return, n] = log_return
            if kind == REWARD_SHARPE:
                continue
            if kind == REWARD_DRAWDOWN:
                reward = log_return - config[CONFIG.drawdown_penalty] * out[OUT.drawdown, n]
            elif kind == REWARD_TURNOVER:
                reward = log_return - config[CONFIG.turnover_penalty] * out[OUT.turnover, n]
            else:
                reward = log_return
            out[OUT.reward, n] = reward * config[CONFIG.reward_scale]


@numba.njit(inline="always", **JIT)
def _prefetch_block(lo, N, prices, data, work, A, counters, features_per_bar, B):
    """Ask for every cache line of the price records and the feature row of the bar the envs
    lo..lo+B will fill at (the first and last element alone missed the lines between them)."""
    record_row = A * N_PRICE  # float64: 8 a line
    for n in range(lo, min(lo + B, N)):
        if work[counters + COUNTER.done, n] == 0.0:
            f = int(work[counters + COUNTER.bar, n]) + 1
            for k in range(0, record_row, 8):
                prefetch_nb(prices, f * record_row + k)
            prefetch_nb(prices, f * record_row + record_row - 1)
            for k in range(0, features_per_bar, 16):  # float32: 16 a line
                prefetch_nb(data, f * features_per_bar + k)
            prefetch_nb(data, f * features_per_bar + features_per_bar - 1)


@numba.njit(**JIT)
def step_blocks_nb(b0, b1, N, prices, data, config, work, out, act, obs, dims):
    """Step the envs of blocks b0..b1: per block, load, phases, store, then the observations; then the
    log returns and rewards (and a memory-mapped tensor's feature rows) of all of them. (Not
    inlined: numba's IR inlining costs grow with the callee's size squared, and this body inlined
    into each kernel took minutes to compile. The stack block is allocated here.)"""
    A, B = len(dims[0]), len(dims[1])  # compile-time constants (tuple lengths)
    K = _action_size(config, A)
    rows = block_rows(A, A + 1)
    raw, features_per_bar, window, D = _obs_layout(prices, data, config, A)
    block = stack_block_nb(dims)
    totals = stack_totals_nb(dims)
    rules = stack_rules_nb(dims)
    _copy_rules(config, rules, A, B)
    # the phases read the CONFIG scalars from a stack copy: passed into inlined functions that branch
    # (or into the rare phases compiled on their own), an argument array costs numba an atomic
    # reference count increment and decrement per block; a stack array has no count
    settings = stack_settings_nb(dims)
    for c in range(len(CONFIG)):
        settings[c] = config[c]
    for b in range(b0, b1):
        lo = b * B
        _prefetch_block(lo + B, N, prices, data, work, A, rows.counters, features_per_bar, B)
        _load_block(lo, N, work, act, prices, config, block, rows, A, K, B)
        map_actions_nb(config, block, rows, A, A + 1, B)
        fill_phases_nb(settings, block, totals, rules, rows, A, B)
        settle_phases_nb(settings, block, rules, rows, A, B)
        _finish(settings, block, rows, A, B)
        _store_block(lo, work, out, block, rows, A, B)
        write_obs_nb(obs, lo, min(lo + B, N), D, out, data, prices, work, window, A, features_per_bar, not raw, True)
    lo, hi = b0 * B, min(b1 * B, N)
    _log_rewards(out, config, lo, hi)  # (a pass of its own: it calls log, see write_obs_nb)
    if raw:
        write_raw_features_nb(obs, lo, hi, D, out, data, prices, window, A, features_per_bar, True)


@numba.njit(inline="always", **JIT)
def _count_done(out, N):
    """Envs that finished in this step, or -1 if any action was malformed."""
    done = 0
    bad = False
    for n in range(N):
        bad |= out[OUT.status, n] < 0.0
        done += select_nb(out[OUT.terminated, n] + out[OUT.truncated, n] > 0.0, 1, 0)
    return select_nb(bad, -1, done)


@numba.njit(inline="always", **JIT)
def _check_shape(out, act, N, A, K):
    """True if the action has N x K values (K per env); else every env is marked ENV_BAD_SHAPE."""
    if act.shape[0] != N * K:
        for n in range(N):
            for c in range(OUT_WEIGHTS + 3 * A):
                out[c, n] = 0.0
            out[OUT.status, n] = ENV_BAD_SHAPE
        return False
    return True


@numba.njit(inline="always", **JIT)
def _as_float64(act):
    """The actions as a new contiguous float64 array: step_blocks_nb is then compiled once per
    (A, K, B), not once more per action dtype and layout (most of a kernel's compile time)."""
    a = np.empty(act.shape[0])
    for k in range(act.shape[0]):
        a[k] = act[k]
    return a


@numba.njit(inline="always", **JIT)
def _action_size(config, A):
    """K, the action values per env: A + 1 for the simplex mapping (the last is cash), else A."""
    return select_nb(int(config[CONFIG.scheme]) == SCHEME_SIMPLEX, A + 1, A)


@numba.njit(inline="always", **JIT)
def _sizes(prices, data, config, obs, dims):
    A, B = len(dims[0]), len(dims[1])  # compile-time constants (tuple lengths)
    K = _action_size(config, A)
    D = _obs_layout(prices, data, config, A)[3]
    return A, K, B, obs.shape[0] // D


@numba.njit(**JIT)
def step_batch_nb(prices, data, config, work, dims, out, act, obs):
    """Advance every environment n with ``done == 0`` by one bar (the others are left untouched,
    their out column zeroed). Reads the action of env n from the flat ``act`` [N x K] (row-major);
    writes ``work``, ``out`` and env n's observation at ``obs[n x obs_dim]``. Returns the number of envs
    that terminated or were truncated, or -1 if an action was malformed (``OUT.status`` < 0)."""
    A, K, B, N = _sizes(prices, data, config, obs, dims)
    if not _check_shape(out, act, N, A, K):
        return -1
    # (b0 an int64 variable, as in the parallel kernel: a literal 0 would add a specialisation)
    step_blocks_nb(np.int64(0), -(-N // B), N, prices, data, config, work, out, _as_float64(act), obs, dims)
    return _count_done(out, N)


@numba.njit(parallel=True, **JIT)
def step_batch_par_nb(prices, data, config, work, dims, out, act, obs):
    """:func:`step_batch_nb` with the blocks of envs spread over numba's threads; same results."""
    A, K, B, N = _sizes(prices, data, config, obs, dims)
    if not _check_shape(out, act, N, A, K):
        return -1
    n_blocks = -(-N // B)
    a64 = _as_float64(act)
    d0, d1 = dims[0], dims[1]  # (numba's parallel loops cannot take the nested tuple itself)
    for c in numba.prange(-(-n_blocks // PAR_CHUNK)):  # runs of PAR_CHUNK blocks, spread over the threads
        b0 = c * PAR_CHUNK
        step_blocks_nb(b0, min(b0 + PAR_CHUNK, n_blocks), N, prices, data, config, work, out, a64, obs, (d0, d1))
    return _count_done(out, N)


@numba.njit(**JIT)
def reset_batch_nb(idx, starts, ends, prices, data, config, work, obs, out):
    """Start environment ``idx[j]`` at decision bar ``starts[j]`` with all cash; its episode is
    truncated when it reaches bar ``ends[j]``. Writes its first observation at ``obs[idx[j] x obs_dim]``
    (``obs`` holds N observations, flat) and its out column (equity, cash and bar; the rest 0)."""
    A = prices.shape[1]
    counters, _, width = work_offsets(A)
    raw, features_per_bar, window, D = _obs_layout(prices, data, config, A)
    initial = config[CONFIG.initial_cash]
    for j in range(idx.shape[0]):
        n = idx[j]
        for c in range(width):
            work[c, n] = 0.0
        for c in (STATE.cash, STATE.equity, STATE.peak, STATE.initial_cash):
            work[c, n] = initial
        work[counters + COUNTER.bar, n] = starts[j]
        work[counters + COUNTER.end_bar, n] = ends[j]
        for c in range(out.shape[0]):
            out[c, n] = 0.0
        out[OUT.equity, n] = initial
        out[OUT.cash, n] = initial
        out[OUT.bar, n] = starts[j]
        write_obs_nb(obs, n, n + 1, D, out, data, prices, work, window, A, features_per_bar, not raw, False)
        if raw:
            write_raw_features_nb(obs, n, n + 1, D, out, data, prices, window, A, features_per_bar, False)
