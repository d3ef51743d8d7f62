"""Batched step and reset kernels: one compiled call advances N environments by one bar.

The order of operations and the rounding rules are documented in :mod:`factorgym.envs.execution`;
the array layouts (``px``, ``data``, ``par``, ``work``, ``out``, ``obs``) are its ``P_*``, ``C_*``, ``M_*``,
``S_*``, ``I_*``, ``O_*`` and ``F_*`` constants.

The step kernels take ``dims`` = ((0,) x A, (0,) x K): numba compiles one specialisation per tuple
type, so the number of assets A and of action values per env K are constants there: LLVM unrolls
the per-asset loops and every array offset is a constant or a multiple of the env index (15% of a
step at A = 4). One per-env body (:func:`step_env_nb`, inlined at numba-IR level so that a call per
env costs nothing) serves :func:`step_batch_nb` (one thread, the default) and :func:`step_batch_par_nb`
(``parallel=True``, a ``prange`` over envs; opt-in). Env n reads only shared read-only arrays and
writes only ``work[n]``, ``out[:, n]`` and its own slice of ``obs``, so the two give identical results.
"""

from __future__ import annotations

import math

import numba

from factorgym.envs.prefetch import PREFETCH_AHEAD, prefetch_nb

from factorgym.envs.execution import (
    C_BORROW, C_CLOSE_UNTRADABLE, C_DD_PEN, C_ETA, C_FIXED_SLIP, C_IMPACT, C_IMPACT_EXP, C_INIT_CASH,
    C_LONG_ONLY, C_MAINT, C_MKT, C_REWARD, C_SCALE, C_TO_PEN, C_WINDOW, CASH_SAFETY, ENV_BAD_ACTION,
    ENV_BAD_SHAPE, ENV_BANKRUPT, ENV_LIQUIDATED, ENV_OK, F_FEE, F_PRICE, F_QTY, F_SLIP,
    FILL_LIQUIDATION, FILL_UNTRADABLE_CLOSE, FILLED, I_DONE, I_END, I_STEPS, I_T,
    IGNORED_NO_CHANGE, JIT, LOG_FLOOR, M_FEE, M_INV_LOT, M_INV_PRICE_STEP, M_LOT, M_MIN_AMOUNT,
    M_MIN_NOTIONAL, M_PRICE_STEP,
    N_FILL_COLS, N_PX, NOISE, O_BORROW, O_CASH, O_DRAWDOWN, O_EQUITY, O_FEES, O_LOGRET, O_NFILLS, O_REWARD,
    O_SLIP, O_STATUS, O_T, O_TERM, O_TRUNC, O_TURNOVER, O_W, P_INV_VOLUME, P_MARK, P_OPEN, P_TRADABLE,
    REJECTED_UNTRADABLE, REWARD_DRAWDOWN, REWARD_SHARPE, REWARD_TURNOVER, S_CASH, S_EQUITY, S_INIT,
    S_PEAK, S_QTY, S_SH_A, S_SH_B, fill_inv_nb, map_action_nb, record_fill_nb, work_offsets_nb,
    write_obs_nb,
)


@numba.njit(inline="always", **JIT)
def _clear_out(out, n, width):
    for c in range(width):
        out[c, n] = 0.0


@numba.njit(inline="always", **JIT)
def step_env_nb(n, px, par, work, out, act, K, A, wi, wf):
    """Advance env n one bar (if it is live): orders, fills, borrow, mark, reward; state into
    ``work[n]``, fills into its fills block, results into column n of ``out``.

    Writes every field of env n's out column (zeroed when it is done or its action is malformed,
    ``O_T`` = 0 then, so that no observation is written for it).
    """
    out_width = O_W + 3 * A
    if work[n, wi + I_DONE] != 0.0:
        _clear_out(out, n, out_width)
        return
    tw = O_W  # target weights, during the step (then: weights)
    td = tw + A  # order sizes, during the step (then: positions)
    ts = td + A  # order status
    if not map_action_nb(act, n * K, K, par, out, n, A):
        _clear_out(out, n, out_width)
        out[O_STATUS, n] = ENV_BAD_ACTION
        return
    t = int(work[n, wi + I_T])
    f = t + 1
    long_only = par[C_LONG_ONLY] > 0.0
    fixed = par[C_FIXED_SLIP]
    impact = par[C_IMPACT]
    iexp = par[C_IMPACT_EXP]
    mk = C_MKT
    m_fee, m_lot, m_amt, m_not, m_px = mk + M_FEE * A, mk + M_LOT * A, mk + M_MIN_AMOUNT * A, mk + M_MIN_NOTIONAL * A, mk + M_PRICE_STEP * A
    m_ilot, m_ipx = mk + M_INV_LOT * A, mk + M_INV_PRICE_STEP * A
    cash = work[n, S_CASH]
    e_prev = work[n, S_EQUITY]

    # value the book at the open of bar f (untradable assets at their last close)
    e_open = cash
    for i in range(A):
        q = work[n, S_QTY + i]
        if q != 0.0:
            e_open += q * (px[f, i, P_OPEN] if px[f, i, P_TRADABLE] > 0.0 else px[f, i, P_MARK])
    inv_e_open = 1.0 / e_open if e_open > 0.0 else 0.0

    # orders: target quantity minus held quantity (0 for an unchanged target: nothing is filled)
    for i in range(A):
        q = work[n, S_QTY + i]
        w = out[tw + i, n]
        if px[f, i, P_TRADABLE] > 0.0:
            target = w * e_open / px[f, i, P_OPEN] if e_open > 0.0 else 0.0
            d = target - q
            if math.isnan(w):
                d = 0.0  # hold
            elif w == 0.0:
                d = -q  # exact close, no dust
            elif abs(d) <= NOISE * max(abs(target), abs(q)):
                d = 0.0  # round-off of an unchanged target, not an order
            out[ts + i, n] = IGNORED_NO_CHANGE
        else:
            d = 0.0
            held_w = q * px[f, i, P_MARK] * inv_e_open
            out[ts + i, n] = REJECTED_UNTRADABLE if abs(w - held_w) > 1e-12 else IGNORED_NO_CHANGE
        out[td + i, n] = d

    # fills go to fixed rows (kind x A + asset, quantity 0 = no fill). Every order is filled in one
    # pass that does not branch on its side or status (a learning agent's order signs are random, and
    # mispredicted branches cost more than the arithmetic): sells are applied at once, in asset order,
    # so that their proceeds can pay for the buys; buys are planned at full size in their rows.
    # (A masked-out term adds 0.0, so the sums are those of the branching form, bit for bit.)
    for r in range(A, 3 * A):
        work[n, wf + r * N_FILL_COLS + F_QTY] = 0.0
    nfill = 0
    nbuy = 0
    fees = 0.0
    slip = 0.0
    traded = 0.0
    cost = 0.0
    for i in range(A):
        d = out[td + i, n]
        exact = out[tw + i, n] == 0.0
        status, qf, p, fee, sc = fill_inv_nb(
            d, px[f, i, P_OPEN], px[f, i, P_INV_VOLUME], par[m_fee + i], par[m_lot + i], par[m_ilot + i],
            par[m_amt + i], par[m_not + i], par[m_px + i], par[m_ipx + i], fixed, impact, iexp, exact)
        out[ts + i, n] = status if d != 0.0 else out[ts + i, n]
        record_fill_nb(work, n, wf + i * N_FILL_COLS, qf if d > 0.0 else -qf, p, fee, sc)  # (qf = 0 unless filled)
        sell = d < 0.0 and status == FILLED
        q = work[n, S_QTY + i]
        work[n, S_QTY + i] = (0.0 if exact else q - qf) if sell else q
        cash += qf * p - fee if sell else 0.0
        fees += fee if sell else 0.0
        slip += sc if sell else 0.0
        traded += qf * p if sell else 0.0
        nfill += 1 if sell else 0
        buy = d > 0.0 and status == FILLED
        cost += qf * p + fee if buy else 0.0
        nbuy += 1 if buy else 0
    # buys: long-only, if their total cost exceeds the cash every buy is scaled by the same factor
    if nbuy > 0:
        k = 1.0
        if long_only and cost > cash and cost > 0.0:
            k = max(cash, 0.0) / cost * (1.0 - CASH_SAFETY)
        for i in range(A):
            r = wf + i * N_FILL_COLS
            qf = work[n, r + F_QTY]
            p, fee, sc = work[n, r + F_PRICE], work[n, r + F_FEE], work[n, r + F_SLIP]
            buy = qf > 0.0  # a planned buy (sell rows hold negative quantities, unfilled rows 0)
            if k < 1.0 and buy:
                # scale the lot-rounded quantity: floor(k q) x p(k q) <= k x q x p(q), so the total fits the cash
                status, qf, p, fee, sc = fill_inv_nb(
                    qf * k, px[f, i, P_OPEN], px[f, i, P_INV_VOLUME], par[m_fee + i], par[m_lot + i], par[m_ilot + i],
                    par[m_amt + i], par[m_not + i], par[m_px + i], par[m_ipx + i], fixed, impact, iexp, False)
                out[ts + i, n] = status
                record_fill_nb(work, n, r, qf, p, fee, sc)  # (quantity 0 if the scaled order is ignored)
                buy = status == FILLED
            cash -= qf * p + fee if buy else 0.0
            q = work[n, S_QTY + i]
            work[n, S_QTY + i] = (0.0 if out[tw + i, n] == 0.0 else q + qf) if buy else q
            nfill += 1 if buy else 0
            fees += fee if buy else 0.0
            slip += sc if buy else 0.0
            traded += qf * p if buy else 0.0

    # positions in assets that do not trade at bar f: freeze (valued at last close) or close there
    if par[C_CLOSE_UNTRADABLE] > 0.0:
        for i in range(A):
            q = work[n, S_QTY + i]
            if q != 0.0 and px[f, i, P_TRADABLE] == 0.0:
                p = px[f, i, P_MARK]
                fee = abs(q) * p * par[m_fee + i]
                cash += q * p - fee
                work[n, S_QTY + i] = 0.0
                record_fill_nb(work, n, wf + (FILL_UNTRADABLE_CLOSE * A + i) * N_FILL_COLS, -q, p, fee, 0.0)
                nfill += 1
                fees += fee
                traded += abs(q) * p

    # borrow cost for holding shorts and borrowed cash through the bar; then mark to the close of f
    short = 0.0
    for i in range(A):
        q = work[n, S_QTY + i]
        if q < 0.0:
            short -= q * px[f, i, P_MARK]
    borrow = par[C_BORROW] * (short + max(-cash, 0.0))
    cash -= borrow
    e = cash
    gross = 0.0
    for i in range(A):
        q = work[n, S_QTY + i]
        if q != 0.0:
            e += q * px[f, i, P_MARK]
            gross += abs(q) * px[f, i, P_MARK]
    status_env = ENV_OK
    if not long_only and gross > 0.0 and e < par[C_MAINT] * gross:
        for i in range(A):
            q = work[n, S_QTY + i]
            if q == 0.0:
                continue
            if px[f, i, P_TRADABLE] > 0.0:
                _, qf, p, fee, sc = fill_inv_nb(-q, px[f, i, P_MARK], px[f, i, P_INV_VOLUME], par[m_fee + i], 0.0, 0.0,
                                                0.0, 0.0, par[m_px + i], par[m_ipx + i], fixed, impact, iexp, True)
            else:
                qf, p, sc = abs(q), px[f, i, P_MARK], 0.0
                fee = qf * p * par[m_fee + i]
            cash += q * p - fee
            work[n, S_QTY + i] = 0.0
            record_fill_nb(work, n, wf + (FILL_LIQUIDATION * A + i) * N_FILL_COLS, -qf if q > 0.0 else qf, p, fee, sc)
            nfill += 1
            fees += fee
            slip += sc
            traded += qf * p
        e = cash
        status_env = ENV_LIQUIDATED
    elif e <= 0.0:
        status_env = ENV_BANKRUPT

    work[n, S_CASH] = cash
    work[n, S_EQUITY] = e
    if e > work[n, S_PEAK]:
        work[n, S_PEAK] = e
    dd = 1.0 - e / work[n, S_PEAK]
    ratio = e / e_prev
    reward = 0.0  # the log-return rewards are computed by _log_reward, after every env has stepped
    if int(par[C_REWARD]) == REWARD_SHARPE:
        r = ratio - 1.0
        a_ = work[n, S_SH_A]
        b_ = work[n, S_SH_B]
        var = b_ - a_ * a_
        reward = (b_ * (r - a_) - 0.5 * a_ * (r * r - b_)) / var ** 1.5 if var > 1e-12 else 0.0
        eta = par[C_ETA]
        work[n, S_SH_A] = a_ + eta * (r - a_)
        work[n, S_SH_B] = b_ + eta * (r * r - b_)

    work[n, wi + I_T] = f
    work[n, wi + I_STEPS] += 1.0
    term = status_env != ENV_OK
    trunc = f >= work[n, wi + I_END]
    if term or trunc:
        work[n, wi + I_DONE] = 1.0
    out[O_REWARD, n] = reward * par[C_SCALE]
    out[O_EQUITY, n] = e
    out[O_CASH, n] = cash
    out[O_FEES, n] = fees
    out[O_SLIP, n] = slip
    out[O_TURNOVER, n] = traded * inv_e_open
    out[O_BORROW, n] = borrow
    out[O_TERM, n] = 1.0 if term else 0.0
    out[O_TRUNC, n] = 1.0 if trunc else 0.0
    out[O_NFILLS, n] = nfill
    out[O_STATUS, n] = status_env
    out[O_T, n] = f
    out[O_LOGRET, n] = ratio  # (until _log_reward replaces it by its log)
    out[O_DRAWDOWN, n] = dd
    inv_e = 1.0 / e if e > 0.0 else 0.0
    for i in range(A):
        q = work[n, S_QTY + i]
        out[tw + i, n] = q * px[f, i, P_MARK] * inv_e
        out[td + i, n] = q


@numba.njit(inline="always", **JIT)
def _log_reward(out, par, n):
    """Env n's log return from the equity ratio that :func:`step_env_nb` left in ``out[O_LOGRET]``,
    and its reward unless it is the differential Sharpe. Run in the observation pass: a call to
    ``log`` inside the step body made LLVM save and restore every live register around it."""
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
def _count_done(out, N):
    """Envs that finished in this step, or -1 if any action was malformed."""
    done = 0
    for n in range(N):
        if out[O_STATUS, n] < 0.0:
            return -1
        if out[O_TERM, n] + out[O_TRUNC, n] > 0.0:
            done += 1
    return done


@numba.njit(inline="always", **JIT)
def _check_shape(out, act, N, A, K):
    """K if the action has N x K values (K per env); else -1, every env marked ENV_BAD_SHAPE."""
    if act.shape[0] != N * K:
        for n in range(N):
            _clear_out(out, n, O_W + 3 * A)
            out[O_STATUS, n] = ENV_BAD_SHAPE
        return -1
    return K


@numba.njit(**JIT)
def step_batch_nb(px, data, par, work, dims, out, act, obs):
    """Advance every environment n with ``done == 0`` by one bar (the others are left untouched,
    their out column zeroed). Reads the action of env n from the flat ``act`` [N x K] (row-major);
    writes ``work``, ``out`` and env n's observation at ``obs[n x obs_dim]``. Returns the number of envs
    that terminated or were truncated, or -1 if an action was malformed (``O_STATUS`` < 0)."""
    T, A, K = px.shape[0], len(dims[0]), len(dims[1])  # compile-time constants (tuple lengths)
    N = work.shape[0]
    wi, wf, _ = work_offsets_nb(A)
    K = _check_shape(out, act, N, A, K)
    if K < 0:
        return -1
    A4 = A * N_PX
    for n in range(N):
        m = min(n + PREFETCH_AHEAD, N - 1)
        if work[m, wi + I_DONE] == 0.0:
            r = (int(work[m, wi + I_T]) + 1) * A4
            prefetch_nb(px, r)
            prefetch_nb(px, r + A4 - 1)
        step_env_nb(n, px, par, work, out, act, K, A, wi, wf)
    # observations in a second pass: a pure gather over envs, whose memory loads overlap
    window = int(par[C_WINDOW])
    mask_off = data.shape[0] - T * A
    AF = mask_off // T
    D = obs.shape[0] // N
    for n in range(N):
        m = min(n + PREFETCH_AHEAD, N - 1)
        fm = int(out[O_T, m])
        prefetch_nb(data, fm * AF)
        prefetch_nb(data, fm * AF + AF - 1)
        prefetch_nb(data, mask_off + fm * A)
        if out[O_T, n] > 0.0:  # stepped in this call (skipped and malformed envs have O_T = 0)
            _log_reward(out, par, n)
            write_obs_nb(obs, n * D, int(out[O_T, n]), data, px, work, n, window, A, AF, mask_off)
    return _count_done(out, N)


@numba.njit(parallel=True, **JIT)
def step_batch_par_nb(px, data, par, work, dims, out, act, obs):
    """:func:`step_batch_nb` with the envs spread over numba's threads (``prange``); same results."""
    T, A, K = px.shape[0], len(dims[0]), len(dims[1])  # compile-time constants (tuple lengths)
    N = work.shape[0]
    wi, wf, _ = work_offsets_nb(A)
    K = _check_shape(out, act, N, A, K)
    if K < 0:
        return -1
    window = int(par[C_WINDOW])
    mask_off = data.shape[0] - T * A
    AF = mask_off // T
    D = obs.shape[0] // N
    for n in numba.prange(N):
        step_env_nb(n, px, par, work, out, act, K, A, wi, wf)
        if out[O_T, n] > 0.0:
            _log_reward(out, par, n)
            write_obs_nb(obs, n * D, int(out[O_T, n]), data, px, work, n, window, A, AF, mask_off)
    return _count_done(out, N)


@numba.njit(**JIT)
def reset_batch_nb(idx, starts, ends, px, data, par, work, obs, out):
    """Start environment ``idx[j]`` at decision bar ``starts[j]`` with all cash; its episode is
    truncated when it reaches bar ``ends[j]``. Writes its first observation at ``obs[idx[j] x obs_dim]``
    (``obs`` holds N observations, flat) and its out row (equity, cash and bar; the rest 0)."""
    T, A = px.shape[0], px.shape[1]
    N = work.shape[0]
    wi, _, width = work_offsets_nb(A)
    mask_off = data.shape[0] - T * A
    AF = mask_off // T
    init = par[C_INIT_CASH]
    D = obs.shape[0] // N
    for j in range(idx.shape[0]):
        n = idx[j]
        for c in range(width):
            work[n, c] = 0.0
        work[n, S_CASH] = init
        work[n, S_EQUITY] = init
        work[n, S_PEAK] = init
        work[n, S_INIT] = init
        work[n, wi + I_T] = starts[j]
        work[n, wi + I_END] = ends[j]
        for c in range(out.shape[0]):
            out[c, n] = 0.0
        out[O_EQUITY, n] = init
        out[O_CASH, n] = init
        out[O_T, n] = starts[j]
        write_obs_nb(obs, n * D, starts[j], data, px, work, n, int(par[C_WINDOW]), A, AF, mask_off)
