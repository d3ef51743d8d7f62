"""Batched step and reset kernels: one compiled call advances N environments by one bar.

The order of operations and the rounding rules are documented in :mod:`factorgym.envs.execution`;
the array layouts (``px``, ``data``, ``par``, ``work``, ``out``, ``obs``) are its ``P_*``, ``C_*``, ``M_*``,
``S_*``, ``I_*``, ``O_*`` and ``F_*`` constants.

SIMD across envs. The envs are stepped in blocks of B (``execution.block_size``: 8 or 16; their
columns of the field-major ``work`` and ``out``). A block's state is copied into a scratch array on
the stack (row r, lane j at ``r x B + j``; :func:`~factorgym.envs.intrinsics.stack_block_intrinsic`),
stepped there in phases that are each a loop over the block's lanes, and copied back. In those
loops no env branches on its own values (``select_nb`` instead of conditional expressions: a learning agent's order signs
are random, and a mispredicted branch costs more than computing both sides), so LLVM can turn a
loop into vector code, 8 envs per instruction with AVX-512 (4 with AVX2). What it needs for that,
and why the code looks the way it does:

- the loops touch only stack arrays, which LLVM can prove overlap no argument array (over the
  argument arrays it would need more run-time overlap checks than it is willing to emit); the
  per-symbol rules are copied into a stack array of their own too, once per call;
- block indices are unsigned (``_at``): numba's negative-index wraparound would hide them from LLVM;
- no calls in the loops: ``sqrt_nb`` is LLVM's intrinsic, the general impact power is compiled in a
  separate copy of the order loop used only when the exponent is not 0.5.

The per-asset phases (orders and fills, buys, untradable closes) are an outer loop over assets
around the loop over lanes, so that sums over assets run in asset order and results are those of a
per-env loop, bit for bit. With the asset index not a constant there, LLVM can tell the per-asset
rows (all "constant + i") apart from each other but not from per-env rows of the same array, so the
per-env values those loops read and sum into live in a second stack array, ``acc``, the rules in a
third, and the block holds the fill rows field-major (``wf + F_* x 3A + row``), so that each is
"constant + i" too. The order-and-fill, buy, close and marking loops and most of the mapping then
vectorise (LLVM's loop-vectorize remarks); the copies into and out of the block, the price gather
and a few short loops do not. (Vectorising the order-and-fill loop, the last to go, made no
difference to the vector env's speed that the noise of this machine would show: the step is now
bound by moving state in and out of the blocks and by the Python around the call.)

The two rare paths, the long-only rescaling of buys that cost more than the cash and liquidation,
run as scalar fix-ups over the lanes that need them. Envs that are done, or whose action is
malformed, are stepped with no orders and keep their state (their untradable-close and liquidation
fill rows are cleared).

The kernels take ``dims`` = ((0,) x A, (0,) x K, (0,) x B): numba compiles one specialisation per
tuple type, so the number of assets A, of action values per env K and the block size B are
constants there: LLVM unrolls the small per-asset loops and every block offset is a constant. One
block loop (:func:`step_blocks_nb`) serves :func:`step_batch_nb` (one thread, the default) and
:func:`step_batch_par_nb` (``parallel=True``: runs of blocks spread over numba's threads; opt-in).
A block reads only shared read-only arrays and writes only its own columns of ``work`` and ``out``
and its envs' slices of ``obs``, so the two give identical results.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from factorgym.envs.execution import (
    C_BORROW, C_CLOSE_UNTRADABLE, C_DD_PEN, C_ETA, C_FIXED_SLIP, C_IMPACT, C_IMPACT_EXP, C_INIT_CASH,
    C_LEVEL_SIZE, C_LONG_ONLY, C_MAINT, C_MAX_LEV, C_MKT, C_N_LEVELS, C_REWARD, C_SCALE, C_SCHEME, C_TO_PEN,
    C_WINDOW, CASH_SAFETY, ENV_BAD_ACTION, ENV_BAD_SHAPE, ENV_BANKRUPT, ENV_LIQUIDATED, ENV_OK, F_FEE,
    F_PRICE, F_QTY, F_SLIP, FILL_LIQUIDATION, FILL_UNTRADABLE_CLOSE, FILLED, I_DONE, I_END, I_STEPS, I_T,
    IGNORED_NO_CHANGE, JIT, LOG_FLOOR, M_FEE, M_INV_LOT, M_INV_PRICE_STEP, M_LOT, M_MIN_AMOUNT,
    M_MIN_NOTIONAL, M_PRICE_STEP, N_FILL_COLS, N_MKT, N_PX, NOISE, O_BORROW, O_CASH, O_DRAWDOWN, O_EQUITY,
    O_FEES, O_LOGRET, O_NFILLS, O_REWARD, O_SLIP, O_STATUS, O_T, O_TERM, O_TRUNC, O_TURNOVER, O_W,
    P_INV_VOLUME, P_MARK, P_OPEN, P_TRADABLE, REJECTED_UNTRADABLE, REWARD_DRAWDOWN, REWARD_SHARPE,
    REWARD_TURNOVER, S_CASH, S_EQUITY, S_INIT, S_PEAK, S_QTY, S_SH_A, S_SH_B, SCHEME_DIRECT,
    SCHEME_DISCRETE, SCHEME_SIGNED, SCHEME_SIMPLEX, block_rows, fill_inv_nb, work_offsets_nb, write_obs_nb,
)
from factorgym.envs.intrinsics import lane_index_nb, prefetch_nb, select_nb, stack_block_intrinsic

block_rows_nb = numba.njit(**JIT)(block_rows)
stack_block_nb = stack_block_intrinsic(lambda A, K, B: block_rows(A, K)[-1] * B)
stack_rules_nb = stack_block_intrinsic(lambda A, K, B: N_MKT * A * B)
X_LIVE, X_EOPEN, X_COST, X_LIQ = 0, 1, 2, 3  # per-lane temporaries (rows r_x + X_*)
# rows of the second stack array, the per-env values the per-asset loops read and sum into (see _orders_loop)
E_LIVE, E_EOPEN, E_CASH, E_FEES, E_SLIP, E_TRADED, E_NFILL, E_COST = 0, 1, 2, 3, 4, 5, 6, 7
N_ENV_ROWS = 8
stack_env_nb = stack_block_intrinsic(lambda A, K, B: N_ENV_ROWS * B)
PAR_CHUNK = 8  # blocks per task of the parallel kernel (each task sets up its own stack block)


_at = lane_index_nb  # _at(r, j, B): index of lane j of row r of a block of B lanes (see intrinsics.py)


@numba.njit(inline="always", **JIT)
def _fill_fields(wf, A):
    """First block rows of the fill fields F_QTY, F_PRICE, F_FEE, F_SLIP: the block holds the fills
    field-major, field F of fill row r (kind x A + asset) at ``wf + F x 3A + r``."""
    return wf + F_QTY * 3 * A, wf + F_PRICE * 3 * A, wf + F_FEE * 3 * A, wf + F_SLIP * 3 * A


@numba.njit(inline="always", **JIT)
def _obs_layout(px, data, par, A):
    """Offset of the mask in ``data``, features per bar (A x F), window and observation size."""
    T = px.shape[0]
    mask_off = data.shape[0] - T * A
    AF = mask_off // T
    window = int(par[C_WINDOW])
    return mask_off, AF, window, window * (AF + A) + A + 3


@numba.njit(inline="always", **JIT)
def _copy_rules(par, rules, A, B):
    """The per-symbol market rules into rows of a stack array of their own, each value in every lane:
    the phase loops then read them from memory LLVM knows they never write (read from ``par`` or from
    the block itself, they kept the order loop from vectorising: "too many memory checks")."""
    for c in range(N_MKT * A):
        for j in range(B):
            rules[_at(c, j, B)] = par[C_MKT + c]


@numba.njit(inline="always", **JIT)
def _load_block(lo, N, work, act, px, blk, A, K, wi, wf, r_px, r_act, B):
    """State rows of envs lo..lo+B into the block, their actions (float64), and the price records
    of the bar they fill at (f = t + 1; bar 0 for envs that are done: nothing is read from it)."""
    u0 = np.uint64(lo)
    for c in range(wf):
        for j in range(B):
            blk[_at(c, j, B)] = work[c, u0 + np.uint64(j)]
    for j in range(B):
        n = min(lo + j, N - 1)  # (padding lanes past the last env read its action; they are done)
        for k in range(K):
            blk[_at((r_act + k), j, B)] = act[n * K + k]
    for j in range(B):
        f = select_nb(blk[_at((wi + I_DONE), j, B)] == 0.0, int(blk[_at((wi + I_T), j, B)]) + 1, 0)
        for i in range(A):
            for c in range(N_PX):
                blk[_at((r_px + c * A + i), j, B)] = px[f, i, c]


@numba.njit(inline="always", **JIT)
def _map_actions(par, blk, A, K, wi, r_out, r_act, r_x, B):
    """Target weights into the weight rows, ``X_LIVE`` (not done, action well formed) and the
    status row (``ENV_BAD_ACTION`` for a malformed action of a live env)."""
    scheme = int(par[C_SCHEME])
    long_only = par[C_LONG_ONLY] > 0.0
    cap = par[C_MAX_LEV]
    tw = r_out + O_W
    direct = scheme == SCHEME_DIRECT
    for j in range(B):
        ok = True
        for k in range(K):
            x = blk[_at((r_act + k), j, B)]
            ok &= math.isfinite(x) | (direct & math.isnan(x))  # (direct mapping: NaN = hold that asset)
        blk[_at((r_x + X_LIVE), j, B)] = select_nb(ok, 1.0, 0.0)
    if scheme == SCHEME_SIMPLEX:  # w_i = (a_i + 1) / sum_j (a_j + 1), slot A = cash
        for j in range(B):
            s = 0.0
            for k in range(A + 1):
                s += min(max(blk[_at((r_act + k), j, B)], -1.0), 1.0) + 1.0
            for i in range(A):
                x = min(max(blk[_at((r_act + i), j, B)], -1.0), 1.0) + 1.0
                blk[_at((tw + i), j, B)] = select_nb(s > 0.0, x / s, 0.0)
    elif scheme == SCHEME_DISCRETE:  # level index -> level x level size
        n_levels = int(par[C_N_LEVELS])
        top = n_levels - 1.0
        size = par[C_LEVEL_SIZE]
        for j in range(B):
            ok = blk[_at((r_x + X_LIVE), j, B)] > 0.0
            for i in range(A):
                x = blk[_at((r_act + i), j, B)]
                xs = select_nb((x >= 0.0) & (x <= top), x, 0.0)  # (NaN fails both)
                k = int(xs)
                ok &= (x >= 0.0) & (x <= top) & (k == x)
                blk[_at((tw + i), j, B)] = par[C_MKT + N_MKT * A + k] * size
            blk[_at((r_x + X_LIVE), j, B)] = select_nb(ok, 1.0, 0.0)
    elif scheme == SCHEME_SIGNED:
        for j in range(B):
            for i in range(A):
                blk[_at((tw + i), j, B)] = min(max(blk[_at((r_act + i), j, B)], -1.0), 1.0) * cap
    else:  # direct: the action is the target weight vector
        for j in range(B):
            for i in range(A):
                blk[_at((tw + i), j, B)] = blk[_at((r_act + i), j, B)]
    # clip to the constraints: long-only weights >= 0 summing to <= 1, gross <= max_leverage
    limit = select_nb(long_only, min(cap, 1.0), cap)
    clip = scheme != SCHEME_SIMPLEX  # (simplex weights are >= 0 and sum to <= 1 by construction)
    for j in range(B):
        gross = 0.0
        for i in range(A):
            w = blk[_at((tw + i), j, B)]
            w = select_nb((clip) & (long_only) & (w < 0.0), 0.0, w)
            blk[_at((tw + i), j, B)] = w
            gross += select_nb(math.isnan(w), 0.0, abs(w))
        k = select_nb((clip) & (gross > limit), limit / gross, 1.0)  # (x 1.0 is exact)
        for i in range(A):
            blk[_at((tw + i), j, B)] *= k
        done = blk[_at((wi + I_DONE), j, B)] != 0.0
        ok = blk[_at((r_x + X_LIVE), j, B)] > 0.0
        blk[_at((r_out + O_STATUS), j, B)] = select_nb((not done) & (not ok), ENV_BAD_ACTION, 0.0)
        blk[_at((r_x + X_LIVE), j, B)] = select_nb((not done) & (ok), 1.0, 0.0)


@numba.njit(inline="always", **JIT)
def _orders_and_sells(par, blk, acc, rules, A, wf, r_out, r_px, r_x, B):
    """Value the book at the open, size the orders, fill every order: sells applied at once (their
    proceeds pay for the buys), buys planned at full size in their fill rows (``X_COST``: their cost)."""
    if par[C_IMPACT] == 0.0 or par[C_IMPACT_EXP] == 0.5:
        _orders_loop(par, blk, acc, rules, A, wf, r_out, r_px, r_x, False, B)  # (compiled without the power call)
    else:
        _orders_loop(par, blk, acc, rules, A, wf, r_out, r_px, r_x, True, B)


@numba.njit(inline="always", **JIT)
def _orders_loop(par, blk, acc, rules, A, wf, r_out, r_px, r_x, any_exp, B):
    fq, fp, ff, fs = _fill_fields(wf, A)
    fixed = par[C_FIXED_SLIP]
    impact = par[C_IMPACT]
    iexp = par[C_IMPACT_EXP]
    tw, td, ts = r_out + O_W, r_out + O_W + A, r_out + O_W + 2 * A
    op, mk, iv, tr = r_px + P_OPEN * A, r_px + P_MARK * A, r_px + P_INV_VOLUME * A, r_px + P_TRADABLE * A
    # The per-asset loop below keeps its per-env values in ``acc``, a second stack array: with the
    # asset index i not a constant there, LLVM can tell per-asset rows (all "constant + i") apart from
    # each other but not from per-env rows of the same array, and would not vectorise the loop.
    for j in range(B):
        e_open = blk[_at(S_CASH, j, B)]
        for i in range(A):  # (px's open is the last close where the asset is untradable)
            q = blk[_at(S_QTY + i, j, B)]
            e_open += select_nb(q != 0.0, q * blk[_at(op + i, j, B)], 0.0)
        acc[_at(E_LIVE, j, B)] = blk[_at(r_x + X_LIVE, j, B)]
        acc[_at(E_EOPEN, j, B)] = e_open
        acc[_at(E_CASH, j, B)] = blk[_at(S_CASH, j, B)]
        for c in range(E_FEES, E_COST + 1):
            acc[_at(c, j, B)] = 0.0
    for c in range(N_FILL_COLS):  # the untradable-close and liquidation rows: no fills yet
        for r in range(A, 3 * A):
            for j in range(B):
                blk[_at(wf + c * 3 * A + r, j, B)] = 0.0
    # one asset at a time (the order of the sums is the asset order), all lanes at once
    for i in range(A):
        for j in range(B):
            live = acc[_at(E_LIVE, j, B)] > 0.0
            e_open = acc[_at(E_EOPEN, j, B)]
            inv_e_open = select_nb(e_open > 0.0, 1.0 / e_open, 0.0)
            # the order: target quantity minus held quantity (0 for an unchanged target: no fill)
            q = blk[_at(S_QTY + i, j, B)]
            w = blk[_at(tw + i, j, B)]
            price = blk[_at(op + i, j, B)]
            target = select_nb(e_open > 0.0, w * e_open / price, 0.0)
            d = target - q
            d = select_nb(abs(d) <= NOISE * max(abs(target), abs(q)), 0.0, d)  # round-off of an unchanged target
            exact = w == 0.0
            d = select_nb(exact, -q, d)  # exact close, no dust
            d = select_nb(math.isnan(w), 0.0, d)  # hold
            tradable = blk[_at(tr + i, j, B)] > 0.0
            d = select_nb((tradable) & (live), d, 0.0)
            held_w = q * blk[_at(mk + i, j, B)] * inv_e_open
            rejected = (not tradable) & (abs(w - held_w) > 1e-12)
            # its fill: a sell is applied at once, a buy planned (E_COST: the planned buys' cost)
            status, qf, p, fee, sc = fill_inv_nb(
                d, price, blk[_at(iv + i, j, B)], rules[_at(M_FEE * A + i, j, B)], rules[_at(M_LOT * A + i, j, B)],
                rules[_at(M_INV_LOT * A + i, j, B)], rules[_at(M_MIN_AMOUNT * A + i, j, B)],
                rules[_at(M_MIN_NOTIONAL * A + i, j, B)], rules[_at(M_PRICE_STEP * A + i, j, B)],
                rules[_at(M_INV_PRICE_STEP * A + i, j, B)], fixed, impact, iexp, exact, any_exp)
            no_order = select_nb(rejected, REJECTED_UNTRADABLE, IGNORED_NO_CHANGE)
            blk[_at(ts + i, j, B)] = select_nb(d != 0.0, status, no_order)
            blk[_at(td + i, j, B)] = d
            blk[_at(fq + i, j, B)] = select_nb(d > 0.0, qf, -qf)  # (qf = 0 unless filled)
            blk[_at(fp + i, j, B)] = p
            blk[_at(ff + i, j, B)] = fee
            blk[_at(fs + i, j, B)] = sc
            sell = (d < 0.0) & (status == FILLED)
            blk[_at(S_QTY + i, j, B)] = select_nb(sell, select_nb(exact, 0.0, q - qf), q)
            acc[_at(E_CASH, j, B)] += select_nb(sell, qf * p - fee, 0.0)
            acc[_at(E_FEES, j, B)] += select_nb(sell, fee, 0.0)
            acc[_at(E_SLIP, j, B)] += select_nb(sell, sc, 0.0)
            acc[_at(E_TRADED, j, B)] += select_nb(sell, qf * p, 0.0)
            acc[_at(E_NFILL, j, B)] += select_nb(sell, 1.0, 0.0)
            buy = (d > 0.0) & (status == FILLED)
            acc[_at(E_COST, j, B)] += select_nb(buy, qf * p + fee, 0.0)
    for j in range(B):
        blk[_at(r_x + X_EOPEN, j, B)] = acc[_at(E_EOPEN, j, B)]
        blk[_at(S_CASH, j, B)] = acc[_at(E_CASH, j, B)]
        blk[_at(r_out + O_FEES, j, B)] = acc[_at(E_FEES, j, B)]
        blk[_at(r_out + O_SLIP, j, B)] = acc[_at(E_SLIP, j, B)]
        blk[_at(r_out + O_TURNOVER, j, B)] = acc[_at(E_TRADED, j, B)]  # (traded value until _finish)
        blk[_at(r_out + O_NFILLS, j, B)] = acc[_at(E_NFILL, j, B)]
        blk[_at(r_x + X_COST, j, B)] = acc[_at(E_COST, j, B)]


@numba.njit(inline="always", **JIT)
def _rescale_buys(par, blk, rules, A, wf, r_out, r_px, r_x, B):
    """Long-only: in each env whose planned buys cost more than its cash, every buy is scaled by the
    same factor and filled again (rare: a scalar pass over the lanes that need it)."""
    fq, fp, ff, fs = _fill_fields(wf, A)
    fixed = par[C_FIXED_SLIP]
    impact = par[C_IMPACT]
    iexp = par[C_IMPACT_EXP]
    ts = r_out + O_W + 2 * A
    op, iv = r_px + P_OPEN * A, r_px + P_INV_VOLUME * A
    for j in range(B):
        cost = blk[_at((r_x + X_COST), j, B)]
        cash = blk[_at(S_CASH, j, B)]
        if not (cost > cash and cost > 0.0):
            continue
        k = max(cash, 0.0) / cost * (1.0 - CASH_SAFETY)
        for i in range(A):
            qf = blk[_at(fq + i, j, B)]
            if qf > 0.0:  # a planned buy: scale the lot-rounded quantity (floor(k q) x p(k q) <= k q p(q))
                status, qf, p, fee, sc = fill_inv_nb(
                    qf * k, blk[_at((op + i), j, B)], blk[_at((iv + i), j, B)], rules[_at(M_FEE * A + i, j, B)],
                    rules[_at(M_LOT * A + i, j, B)], rules[_at(M_INV_LOT * A + i, j, B)],
                    rules[_at(M_MIN_AMOUNT * A + i, j, B)],
                    rules[_at(M_MIN_NOTIONAL * A + i, j, B)], rules[_at(M_PRICE_STEP * A + i, j, B)],
                    rules[_at(M_INV_PRICE_STEP * A + i, j, B)], fixed, impact, iexp, False)
                blk[_at((ts + i), j, B)] = status
                blk[_at(fq + i, j, B)] = qf  # (0 if the scaled order is ignored)
                blk[_at(fp + i, j, B)] = p
                blk[_at(ff + i, j, B)] = fee
                blk[_at(fs + i, j, B)] = sc


@numba.njit(inline="always", **JIT)
def _buys_and_mark(par, blk, acc, rules, A, wf, r_out, r_px, r_x, B):
    """Apply the buys; close (or freeze) positions in untradable assets; borrow; mark to the close
    of bar f (equity into the out row); flag the envs to liquidate."""
    fq, fp, ff, fs = _fill_fields(wf, A)
    long_only = par[C_LONG_ONLY] > 0.0
    close_untradable = par[C_CLOSE_UNTRADABLE] > 0.0
    rate = par[C_BORROW]
    maint = par[C_MAINT]
    tw = r_out + O_W
    mk, tr = r_px + P_MARK * A, r_px + P_TRADABLE * A
    for j in range(B):  # the per-env values the per-asset loops use, in acc (see _orders_loop)
        acc[_at(E_LIVE, j, B)] = blk[_at(r_x + X_LIVE, j, B)]
        acc[_at(E_CASH, j, B)] = blk[_at(S_CASH, j, B)]
        acc[_at(E_NFILL, j, B)] = blk[_at(r_out + O_NFILLS, j, B)]
        acc[_at(E_FEES, j, B)] = blk[_at(r_out + O_FEES, j, B)]
        acc[_at(E_SLIP, j, B)] = blk[_at(r_out + O_SLIP, j, B)]
        acc[_at(E_TRADED, j, B)] = blk[_at(r_out + O_TURNOVER, j, B)]
    for i in range(A):  # (asset by asset, as the sums must run in asset order; all lanes at once)
        for j in range(B):
            qf = blk[_at(fq + i, j, B)]
            p, fee, sc = blk[_at(fp + i, j, B)], blk[_at(ff + i, j, B)], blk[_at(fs + i, j, B)]
            buy = qf > 0.0  # (sell rows hold negative quantities, unfilled rows 0)
            acc[_at(E_CASH, j, B)] -= select_nb(buy, qf * p + fee, 0.0)
            q = blk[_at(S_QTY + i, j, B)]
            blk[_at(S_QTY + i, j, B)] = select_nb(buy, select_nb(blk[_at(tw + i, j, B)] == 0.0, 0.0, q + qf), q)
            acc[_at(E_NFILL, j, B)] += select_nb(buy, 1.0, 0.0)
            acc[_at(E_FEES, j, B)] += select_nb(buy, fee, 0.0)
            acc[_at(E_SLIP, j, B)] += select_nb(buy, sc, 0.0)
            acc[_at(E_TRADED, j, B)] += select_nb(buy, qf * p, 0.0)
    # positions in assets that do not trade at bar f: freeze (valued at last close) or close there
    for i in range(A):
        r = FILL_UNTRADABLE_CLOSE * A + i
        for j in range(B):
            live = acc[_at(E_LIVE, j, B)] > 0.0
            q = blk[_at(S_QTY + i, j, B)]
            close = close_untradable & live & (q != 0.0) & (blk[_at(tr + i, j, B)] == 0.0)
            p = blk[_at(mk + i, j, B)]
            fee = abs(q) * p * rules[_at(M_FEE * A + i, j, B)]
            blk[_at(fq + r, j, B)] = select_nb(close, -q, 0.0)
            blk[_at(fp + r, j, B)] = p
            blk[_at(ff + r, j, B)] = fee
            blk[_at(fs + r, j, B)] = 0.0
            acc[_at(E_CASH, j, B)] += select_nb(close, q * p - fee, 0.0)
            blk[_at(S_QTY + i, j, B)] = select_nb(close, 0.0, q)
            acc[_at(E_NFILL, j, B)] += select_nb(close, 1.0, 0.0)
            acc[_at(E_FEES, j, B)] += select_nb(close, fee, 0.0)
            acc[_at(E_TRADED, j, B)] += select_nb(close, abs(q) * p, 0.0)
    for j in range(B):
        live = blk[_at(r_x + X_LIVE, j, B)] > 0.0
        cash = acc[_at(E_CASH, j, B)]
        blk[_at(r_out + O_NFILLS, j, B)] = acc[_at(E_NFILL, j, B)]
        blk[_at(r_out + O_FEES, j, B)] = acc[_at(E_FEES, j, B)]
        blk[_at(r_out + O_SLIP, j, B)] = acc[_at(E_SLIP, j, B)]
        blk[_at(r_out + O_TURNOVER, j, B)] = acc[_at(E_TRADED, j, B)]
        # borrow cost for holding shorts and borrowed cash through the bar; then mark to the close of f
        short = 0.0
        for i in range(A):
            q = blk[_at((S_QTY + i), j, B)]
            short -= select_nb(q < 0.0, q * blk[_at((mk + i), j, B)], 0.0)
        borrow = select_nb(live, rate * (short + max(-cash, 0.0)), 0.0)
        cash -= borrow
        e = cash
        gross = 0.0
        for i in range(A):
            q = blk[_at((S_QTY + i), j, B)]
            e += select_nb(q != 0.0, q * blk[_at((mk + i), j, B)], 0.0)
            gross += select_nb(q != 0.0, abs(q) * blk[_at((mk + i), j, B)], 0.0)
        blk[_at(S_CASH, j, B)] = cash
        blk[_at(r_out + O_EQUITY, j, B)] = e
        blk[_at(r_out + O_BORROW, j, B)] = borrow
        liq = live & (not long_only) & (gross > 0.0) & (e < maint * gross)
        blk[_at((r_x + X_LIQ), j, B)] = select_nb(liq, 1.0, 0.0)


@numba.njit(inline="always", **JIT)
def _liquidate(par, blk, rules, A, wf, r_out, r_px, r_x, B):
    """Close every position of the flagged envs at the close, fee and slippage paid (rare: a scalar
    pass over the lanes that need it)."""
    fq, fp, ff, fs = _fill_fields(wf, A)
    fixed = par[C_FIXED_SLIP]
    impact = par[C_IMPACT]
    iexp = par[C_IMPACT_EXP]
    mk, iv, tr = r_px + P_MARK * A, r_px + P_INV_VOLUME * A, r_px + P_TRADABLE * A
    for j in range(B):
        if blk[_at((r_x + X_LIQ), j, B)] == 0.0:
            continue
        cash = blk[_at(S_CASH, j, B)]
        nfill = blk[_at((r_out + O_NFILLS), j, B)]
        fees = blk[_at((r_out + O_FEES), j, B)]
        slip = blk[_at((r_out + O_SLIP), j, B)]
        traded = blk[_at((r_out + O_TURNOVER), j, B)]
        for i in range(A):
            q = blk[_at((S_QTY + i), j, B)]
            if q == 0.0:
                continue
            if blk[_at((tr + i), j, B)] > 0.0:
                _, qf, p, fee, sc = fill_inv_nb(-q, blk[_at((mk + i), j, B)], blk[_at((iv + i), j, B)],
                                                rules[_at(M_FEE * A + i, j, B)],
                                                0.0, 0.0, 0.0, 0.0, rules[_at(M_PRICE_STEP * A + i, j, B)],
                                                rules[_at(M_INV_PRICE_STEP * A + i, j, B)], fixed, impact, iexp, True)
            else:
                qf, p, sc = abs(q), blk[_at((mk + i), j, B)], 0.0
                fee = qf * p * rules[_at(M_FEE * A + i, j, B)]
            cash += q * p - fee
            blk[_at((S_QTY + i), j, B)] = 0.0
            r = FILL_LIQUIDATION * A + i
            blk[_at(fq + r, j, B)] = -qf if q > 0.0 else qf
            blk[_at(fp + r, j, B)] = p
            blk[_at(ff + r, j, B)] = fee
            blk[_at(fs + r, j, B)] = sc
            nfill += 1.0
            fees += fee
            slip += sc
            traded += qf * p
        blk[_at(S_CASH, j, B)] = cash
        blk[_at((r_out + O_EQUITY), j, B)] = cash
        blk[_at((r_out + O_NFILLS), j, B)] = nfill
        blk[_at((r_out + O_FEES), j, B)] = fees
        blk[_at((r_out + O_SLIP), j, B)] = slip
        blk[_at((r_out + O_TURNOVER), j, B)] = traded


@numba.njit(inline="always", **JIT)
def _finish(par, blk, A, wi, r_out, r_px, r_x, B):
    """Env status, peak, drawdown, Sharpe statistics, bar and step counters; the out rows (zero for
    envs that did not step, whose state keeps its values)."""
    mk = r_px + P_MARK * A
    tw, td, ts = r_out + O_W, r_out + O_W + A, r_out + O_W + 2 * A
    if int(par[C_REWARD]) == REWARD_SHARPE:  # (a separate loop: its power does not vectorise)
        eta = par[C_ETA]
        for j in range(B):
            e = blk[_at((r_out + O_EQUITY), j, B)]
            r = e / blk[_at(S_EQUITY, j, B)] - 1.0
            a_ = blk[_at(S_SH_A, j, B)]
            b_ = blk[_at(S_SH_B, j, B)]
            var = b_ - a_ * a_
            reward = select_nb(var > 1e-12, (b_ * (r - a_) - 0.5 * a_ * (r * r - b_)) / var ** 1.5, 0.0)
            live = blk[_at((r_x + X_LIVE), j, B)] > 0.0
            blk[_at((r_out + O_REWARD), j, B)] = select_nb(live, reward * par[C_SCALE], 0.0)
            blk[_at(S_SH_A, j, B)] = select_nb(live, a_ + eta * (r - a_), a_)
            blk[_at(S_SH_B, j, B)] = select_nb(live, b_ + eta * (r * r - b_), b_)
    else:  # the log-return rewards are computed in the observation pass (see _log_reward)
        for j in range(B):
            blk[_at((r_out + O_REWARD), j, B)] = 0.0
    for j in range(B):
        live = blk[_at((r_x + X_LIVE), j, B)] > 0.0
        e = blk[_at((r_out + O_EQUITY), j, B)]
        cash = blk[_at(S_CASH, j, B)]
        e_prev = blk[_at(S_EQUITY, j, B)]
        liq = blk[_at((r_x + X_LIQ), j, B)] > 0.0
        status_env = select_nb(liq, ENV_LIQUIDATED, select_nb(e <= 0.0, ENV_BANKRUPT, ENV_OK))
        peak = blk[_at(S_PEAK, j, B)]
        peak = select_nb(e > peak, e, peak)
        f = blk[_at((wi + I_T), j, B)] + 1.0
        term = status_env != ENV_OK
        trunc = f >= blk[_at((wi + I_END), j, B)]
        blk[_at(S_EQUITY, j, B)] = select_nb(live, e, e_prev)
        blk[_at(S_PEAK, j, B)] = select_nb(live, peak, blk[_at(S_PEAK, j, B)])
        blk[_at((wi + I_T), j, B)] = select_nb(live, f, f - 1.0)
        blk[_at((wi + I_STEPS), j, B)] += select_nb(live, 1.0, 0.0)
        blk[_at((wi + I_DONE), j, B)] = select_nb((live) & ((term) | (trunc)), 1.0, blk[_at((wi + I_DONE), j, B)])
        inv_e = select_nb(e > 0.0, 1.0 / e, 0.0)
        blk[_at((r_out + O_EQUITY), j, B)] = select_nb(live, e, 0.0)
        blk[_at((r_out + O_CASH), j, B)] = select_nb(live, cash, 0.0)
        for c in (O_FEES, O_SLIP, O_BORROW, O_NFILLS):
            blk[_at((r_out + c), j, B)] = select_nb(live, blk[_at((r_out + c), j, B)], 0.0)
        e_open = blk[_at((r_x + X_EOPEN), j, B)]
        inv_e_open = select_nb(e_open > 0.0, 1.0 / e_open, 0.0)
        blk[_at((r_out + O_TURNOVER), j, B)] = select_nb(live, blk[_at((r_out + O_TURNOVER), j, B)] * inv_e_open, 0.0)
        blk[_at((r_out + O_TERM), j, B)] = select_nb((live) & (term), 1.0, 0.0)
        blk[_at((r_out + O_TRUNC), j, B)] = select_nb((live) & (trunc), 1.0, 0.0)
        blk[_at((r_out + O_STATUS), j, B)] = select_nb(live, status_env, blk[_at((r_out + O_STATUS), j, B)])
        blk[_at((r_out + O_T), j, B)] = select_nb(live, f, 0.0)
        blk[_at((r_out + O_LOGRET), j, B)] = select_nb(live, e / e_prev, 0.0)  # (until _log_reward replaces it by its log)
        blk[_at((r_out + O_DRAWDOWN), j, B)] = select_nb(live, 1.0 - e / peak, 0.0)
        for i in range(A):
            q = blk[_at((S_QTY + i), j, B)]
            blk[_at((tw + i), j, B)] = select_nb(live, q * blk[_at((mk + i), j, B)] * inv_e, 0.0)
            blk[_at((td + i), j, B)] = select_nb(live, q, 0.0)
            blk[_at((ts + i), j, B)] = select_nb(live, blk[_at((ts + i), j, B)], 0.0)


@numba.njit(inline="always", **JIT)
def _store_block(lo, work, out, blk, A, width, r_out, B):
    u0 = np.uint64(lo)
    wf = width - 3 * A * N_FILL_COLS
    for c in range(wf):
        for j in range(B):
            work[c, u0 + np.uint64(j)] = blk[_at(c, j, B)]
    for r in range(3 * A):  # (the block holds the fills field-major, work row-major: kind x A + asset, F_*)
        for c in range(N_FILL_COLS):
            for j in range(B):
                work[wf + r * N_FILL_COLS + c, u0 + np.uint64(j)] = blk[_at(wf + c * 3 * A + r, j, B)]
    for c in range(O_W + 3 * A):
        for j in range(B):
            out[c, u0 + np.uint64(j)] = blk[_at((r_out + c), j, B)]


@numba.njit(inline="always", **JIT)
def _log_reward(out, par, n):
    """Env n's log return from the equity ratio that the step left in ``out[O_LOGRET]``, and its
    reward unless it is the differential Sharpe (scalar: ``log`` does not vectorise here)."""
    ratio = out[O_LOGRET, n]
    logret = math.log(ratio if ratio > LOG_FLOOR else LOG_FLOOR)
    out[O_LOGRET, n] = logret
    kind = int(par[C_REWARD])
    if kind == REWARD_SHARPE:
        return
    if kind == REWARD_DRAWDOWN:
        reward = logret - par[C_DD_PEN] * out[O_DRAWDOWN, n]
    elif kind == REWARD_TURNOVER:
        reward = logret - par[C_TO_PEN] * out[O_TURNOVER, n]
    else:
        reward = logret
    out[O_REWARD, n] = reward * par[C_SCALE]


@numba.njit(inline="always", **JIT)
def _prefetch_block(lo, N, px, data, work, A, wi, AF, mask_off, B):
    """Ask for the price and feature rows the envs lo..lo+B will read."""
    for n in range(lo, min(lo + B, N)):
        if work[wi + I_DONE, n] == 0.0:
            f = int(work[wi + I_T, n]) + 1
            prefetch_nb(px, f * A * N_PX)
            prefetch_nb(px, f * A * N_PX + A * N_PX - 1)
            prefetch_nb(data, f * AF)
            prefetch_nb(data, f * AF + AF - 1)
            prefetch_nb(data, mask_off + f * A)


@numba.njit(**JIT)
def step_blocks_nb(b0, b1, N, px, data, par, work, out, act, obs, dims):
    """Step the envs of blocks b0..b1 (columns b x B ...): per block, load, phases, store, then
    the observations. (A function of its own, not inlined: numba's IR inlining copies a callee's IR
    at a cost that grows with its size squared, and this body inlined into each kernel took minutes
    to compile. The stack block is allocated here, so LLVM still sees every use of it.)"""
    A, K, B = len(dims[0]), len(dims[1]), len(dims[2])  # compile-time constants (tuple lengths)
    wi, wf, width = work_offsets_nb(A)
    r_out, r_px, r_act, r_x, _ = block_rows_nb(A, K)
    mask_off, AF, window, D = _obs_layout(px, data, par, A)
    blk = stack_block_nb(dims)
    acc = stack_env_nb(dims)
    rules = stack_rules_nb(dims)
    _copy_rules(par, rules, A, B)
    for b in range(b0, b1):
        lo = b * B
        _prefetch_block(lo + B, N, px, data, work, A, wi, AF, mask_off, B)
        _load_block(lo, N, work, act, px, blk, A, K, wi, wf, r_px, r_act, B)
        _map_actions(par, blk, A, K, wi, r_out, r_act, r_x, B)
        _orders_and_sells(par, blk, acc, rules, A, wf, r_out, r_px, r_x, B)
        if par[C_LONG_ONLY] > 0.0:
            _rescale_buys(par, blk, rules, A, wf, r_out, r_px, r_x, B)
        _buys_and_mark(par, blk, acc, rules, A, wf, r_out, r_px, r_x, B)
        if par[C_LONG_ONLY] == 0.0:
            _liquidate(par, blk, rules, A, wf, r_out, r_px, r_x, B)
        _finish(par, blk, A, wi, r_out, r_px, r_x, B)
        _store_block(lo, work, out, blk, A, width, r_out, B)
        for n in range(lo, min(lo + B, N)):
            if out[O_T, n] > 0.0:  # stepped in this call (skipped and malformed envs have O_T = 0)
                _log_reward(out, par, n)
                write_obs_nb(obs, n * D, int(out[O_T, n]), data, px, work, n, window, A, AF, mask_off)


@numba.njit(inline="always", **JIT)
def _count_done(out, N):
    """Envs that finished in this step, or -1 if any action was malformed."""
    done = 0
    bad = False
    for n in range(N):
        bad |= out[O_STATUS, n] < 0.0
        done += select_nb(out[O_TERM, n] + out[O_TRUNC, n] > 0.0, 1, 0)
    return select_nb(bad, -1, done)


@numba.njit(inline="always", **JIT)
def _check_shape(out, act, N, A, K):
    """True if the action has N x K values (K per env); else every env is marked ENV_BAD_SHAPE."""
    if act.shape[0] != N * K:
        for n in range(N):
            for c in range(O_W + 3 * A):
                out[c, n] = 0.0
            out[O_STATUS, n] = ENV_BAD_SHAPE
        return False
    return True


@numba.njit(inline="always", **JIT)
def _as_float64(act):
    """The actions as a new contiguous float64 array: step_blocks_nb is then compiled once per (A, K, B),
    not once more per action dtype and layout (it is most of a kernel's compile time)."""
    a = np.empty(act.shape[0])
    for k in range(act.shape[0]):
        a[k] = act[k]
    return a


@numba.njit(inline="always", **JIT)
def _sizes(px, data, par, obs, dims):
    A, K, B = len(dims[0]), len(dims[1]), len(dims[2])  # compile-time constants (tuple lengths)
    D = _obs_layout(px, data, par, A)[3]
    return A, K, B, obs.shape[0] // D


@numba.njit(**JIT)
def step_batch_nb(px, data, par, work, dims, out, act, obs):
    """Advance every environment n with ``done == 0`` by one bar (the others are left untouched,
    their out column zeroed). Reads the action of env n from the flat ``act`` [N x K] (row-major);
    writes ``work``, ``out`` and env n's observation at ``obs[n x obs_dim]``. Returns the number of envs
    that terminated or were truncated, or -1 if an action was malformed (``O_STATUS`` < 0)."""
    A, K, B, N = _sizes(px, data, par, obs, dims)
    if not _check_shape(out, act, N, A, K):
        return -1
    step_blocks_nb(0, -(-N // B), N, px, data, par, work, out, _as_float64(act), obs, dims)
    return _count_done(out, N)


@numba.njit(parallel=True, **JIT)
def step_batch_par_nb(px, data, par, work, dims, out, act, obs):
    """:func:`step_batch_nb` with the blocks of envs spread over numba's threads; same results."""
    A, K, B, N = _sizes(px, data, par, obs, dims)
    if not _check_shape(out, act, N, A, K):
        return -1
    nb = -(-N // B)
    a64 = _as_float64(act)
    d0, d1, d2 = dims[0], dims[1], dims[2]  # (numba's parallel loops cannot take the nested tuple itself)
    for c in numba.prange(-(-nb // PAR_CHUNK)):  # runs of PAR_CHUNK blocks, spread over the threads
        b0 = c * PAR_CHUNK
        step_blocks_nb(b0, min(b0 + PAR_CHUNK, nb), N, px, data, par, work, out, a64, obs, (d0, d1, d2))
    return _count_done(out, N)


@numba.njit(**JIT)
def reset_batch_nb(idx, starts, ends, px, data, par, work, obs, out):
    """Start environment ``idx[j]`` at decision bar ``starts[j]`` with all cash; its episode is
    truncated when it reaches bar ``ends[j]``. Writes its first observation at ``obs[idx[j] x obs_dim]``
    (``obs`` holds N observations, flat) and its out column (equity, cash and bar; the rest 0)."""
    A = px.shape[1]
    wi, _, width = work_offsets_nb(A)
    mask_off, AF, window, D = _obs_layout(px, data, par, A)
    init = par[C_INIT_CASH]
    for j in range(idx.shape[0]):
        n = idx[j]
        for c in range(width):
            work[c, n] = 0.0
        work[S_CASH, n] = init
        work[S_EQUITY, n] = init
        work[S_PEAK, n] = init
        work[S_INIT, n] = init
        work[wi + I_T, n] = starts[j]
        work[wi + I_END, n] = ends[j]
        for c in range(out.shape[0]):
            out[c, n] = 0.0
        out[O_EQUITY, n] = init
        out[O_CASH, n] = init
        out[O_T, n] = starts[j]
        write_obs_nb(obs, n * D, starts[j], data, px, work, n, window, A, AF, mask_off)
