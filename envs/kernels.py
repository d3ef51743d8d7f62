"""Batched step and reset kernels: one compiled call advances N environments by one bar.

The order of operations and the rounding rules are documented in :mod:`factorgym.envs.execution`;
the array layouts (``cfg``, ``mkt``, ``px``, ``st``, ``ist``, ``out``, ``fills``) are its ``C_*``,
``M_*``, ``P_*``, ``S_*``, ``I_*``, ``O_*`` and ``F_*`` constants.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from factorgym.envs.execution import (
    C_BORROW, C_CLOSE_UNTRADABLE, C_DD_PEN, C_ETA, C_FIXED_SLIP, C_IMPACT, C_IMPACT_EXP, C_INIT_CASH,
    C_LONG_ONLY, C_MAINT, C_REWARD, C_SCALE, C_TO_PEN, C_WINDOW, CASH_SAFETY, ENV_BAD_ACTION,
    ENV_BANKRUPT, ENV_LIQUIDATED, ENV_OK, FILL_LIQUIDATION, FILL_ORDER, FILL_UNTRADABLE_CLOSE, FILLED,
    I_DONE, I_END, I_STEPS, I_T, JIT, NOISE, IGNORED_NO_CHANGE, LOG_FLOOR, M_FEE, M_LOT, M_MIN_AMOUNT,
    M_MIN_NOTIONAL, M_PRICE_STEP, O_BORROW, O_CASH, O_DRAWDOWN, O_EQUITY, O_FEES, O_LOGRET, O_NFILLS,
    O_REWARD, O_SLIP, O_STATUS, O_T, O_TERM, O_TRUNC, O_TURNOVER, O_W, P_MARK, P_OPEN, P_VOLUME,
    REJECTED_UNTRADABLE, REWARD_DRAWDOWN, REWARD_SHARPE, REWARD_TURNOVER, S_CASH, S_EQUITY, S_INIT,
    S_PEAK, S_QTY, S_SH_A, S_SH_B, _record, fill_order_nb, map_action_nb, write_obs_nb,
)


@numba.njit(**JIT)
def step_batch_nb(px, tradable, featflat, maskflat, mkt, cfg, st, ist, act, obs, out, fills, scr):
    """Advance every environment n with ``ist[n, I_DONE] == 0`` by one bar (the others are left
    untouched, with ``out[n]`` zeroed). Reads the action of env n from the flat ``act`` [N x K]
    (row-major); writes ``st``, ``ist``, ``obs[n]``, ``out[n]`` and the first ``out[n, O_NFILLS]``
    rows of ``fills[n]``. ``scr`` is float64 [7, A] work space (no allocation per call).

    The per-env body is written inline in the loop on purpose: a call per env to a function taking
    13 arrays (passed as ~100 flattened struct fields) cost ~60 ns, a third of the step.
    """
    A = mkt.shape[1]
    K = act.shape[0] // st.shape[0]
    AF = featflat.shape[0] // px.shape[0]
    for n in range(st.shape[0]):
        if ist[n, I_DONE] != 0:
            for c in range(out.shape[1]):
                out[n, c] = 0.0
            continue
        for c in range(out.shape[1]):
            out[n, c] = 0.0
        t = ist[n, I_T]
        f = t + 1
        if not map_action_nb(act, n * K, K, cfg, scr):
            out[n, O_STATUS] = ENV_BAD_ACTION
            continue
        long_only = cfg[C_LONG_ONLY] > 0.0
        fixed = cfg[C_FIXED_SLIP]
        impact = cfg[C_IMPACT]
        iexp = cfg[C_IMPACT_EXP]
        ostat = O_W + 2 * A
        cash = st[n, S_CASH]
        e_prev = st[n, S_EQUITY]

        # value the book at the open of bar f (untradable assets at their last close)
        e_open = cash
        for i in range(A):
            q = st[n, S_QTY + i]
            if q != 0.0:
                e_open += q * (px[f, i, P_OPEN] if tradable[f, i] else px[f, i, P_MARK])
        inv_e_open = 1.0 / e_open if e_open > 0.0 else 0.0

        # orders: target quantity minus held quantity
        for i in range(A):
            q = st[n, S_QTY + i]
            if tradable[f, i]:
                target = scr[0, i] * e_open / px[f, i, P_OPEN] if e_open > 0.0 else 0.0
                scr[1, i] = target - q
                if math.isnan(scr[0, i]):
                    scr[1, i] = 0.0  # hold
                elif scr[0, i] == 0.0:
                    scr[1, i] = -q  # exact close, no dust
                elif abs(scr[1, i]) <= NOISE * max(abs(target), abs(q)):
                    scr[1, i] = 0.0  # round-off of an unchanged target, not an order
                out[n, ostat + i] = IGNORED_NO_CHANGE
            else:
                scr[1, i] = 0.0
                held_w = q * px[f, i, P_MARK] * inv_e_open
                out[n, ostat + i] = REJECTED_UNTRADABLE if abs(scr[0, i] - held_w) > 1e-12 else IGNORED_NO_CHANGE

        nfill = 0
        fees = 0.0
        slip = 0.0
        traded = 0.0
        # sells first, so that their proceeds can pay for the buys
        for i in range(A):
            if scr[1, i] < 0.0:
                status, qf, p, fee, sc = fill_order_nb(
                    scr[1, i], px[f, i, P_OPEN], px[f, i, P_VOLUME], mkt[M_FEE, i], mkt[M_LOT, i], mkt[M_MIN_AMOUNT, i],
                    mkt[M_MIN_NOTIONAL, i], mkt[M_PRICE_STEP, i], fixed, impact, iexp, scr[0, i] == 0.0)
                out[n, ostat + i] = status
                if status == FILLED:
                    cash += qf * p - fee
                    st[n, S_QTY + i] = 0.0 if scr[0, i] == 0.0 else st[n, S_QTY + i] - qf
                    nfill = _record(fills, n, nfill, i, -1.0, qf, p, fee, sc, FILL_ORDER)
                    fees += fee
                    slip += sc
                    traded += qf * p
        # buys: first their cost at full size, then (long-only) scale all of them to the cash
        cost = 0.0
        for i in range(A):
            scr[2, i] = -1.0
            if scr[1, i] > 0.0:
                status, qf, p, fee, sc = fill_order_nb(
                    scr[1, i], px[f, i, P_OPEN], px[f, i, P_VOLUME], mkt[M_FEE, i], mkt[M_LOT, i], mkt[M_MIN_AMOUNT, i],
                    mkt[M_MIN_NOTIONAL, i], mkt[M_PRICE_STEP, i], fixed, impact, iexp, scr[0, i] == 0.0)
                out[n, ostat + i] = status
                scr[2, i] = status
                scr[3, i] = qf
                scr[4, i] = p
                scr[5, i] = fee
                scr[6, i] = sc
                if status == FILLED:
                    cost += qf * p + fee
        k = 1.0
        if long_only and cost > cash and cost > 0.0:
            k = max(cash, 0.0) / cost * (1.0 - CASH_SAFETY)
        for i in range(A):
            if scr[2, i] < 0.0:
                continue
            if k < 1.0 and scr[2, i] == FILLED:
                # scale the lot-rounded quantity: floor(k q) x p(k q) <= k x q x p(q), so the total fits the cash
                status, qf, p, fee, sc = fill_order_nb(
                    scr[3, i] * k, px[f, i, P_OPEN], px[f, i, P_VOLUME], mkt[M_FEE, i], mkt[M_LOT, i], mkt[M_MIN_AMOUNT, i],
                    mkt[M_MIN_NOTIONAL, i], mkt[M_PRICE_STEP, i], fixed, impact, iexp, False)
                out[n, ostat + i] = status
            else:
                status, qf, p, fee, sc = int(scr[2, i]), scr[3, i], scr[4, i], scr[5, i], scr[6, i]
            if status == FILLED:
                cash -= qf * p + fee
                st[n, S_QTY + i] = 0.0 if scr[0, i] == 0.0 else st[n, S_QTY + i] + qf
                nfill = _record(fills, n, nfill, i, 1.0, qf, p, fee, sc, FILL_ORDER)
                fees += fee
                slip += sc
                traded += qf * p

        # positions in assets that do not trade at bar f: freeze (valued at last close) or close there
        if cfg[C_CLOSE_UNTRADABLE] > 0.0:
            for i in range(A):
                q = st[n, S_QTY + i]
                if q != 0.0 and not tradable[f, i]:
                    p = px[f, i, P_MARK]
                    fee = abs(q) * p * mkt[M_FEE, i]
                    cash += q * p - fee
                    st[n, S_QTY + i] = 0.0
                    nfill = _record(fills, n, nfill, i, -1.0 if q > 0.0 else 1.0, abs(q), p, fee, 0.0, FILL_UNTRADABLE_CLOSE)
                    fees += fee
                    traded += abs(q) * p

        # borrow cost for holding shorts and borrowed cash through the bar
        short = 0.0
        for i in range(A):
            q = st[n, S_QTY + i]
            if q < 0.0:
                short -= q * px[f, i, P_MARK]
        borrow = cfg[C_BORROW] * (short + max(-cash, 0.0))
        cash -= borrow

        # mark to market at the close of bar f
        e = cash
        gross = 0.0
        for i in range(A):
            q = st[n, S_QTY + i]
            if q != 0.0:
                e += q * px[f, i, P_MARK]
                gross += abs(q) * px[f, i, P_MARK]
        status_env = ENV_OK
        if not long_only and gross > 0.0 and e < cfg[C_MAINT] * gross:
            for i in range(A):
                q = st[n, S_QTY + i]
                if q == 0.0:
                    continue
                if tradable[f, i]:
                    _, qf, p, fee, sc = fill_order_nb(-q, px[f, i, P_MARK], px[f, i, P_VOLUME], mkt[M_FEE, i], 0.0, 0.0,
                                                      0.0, mkt[M_PRICE_STEP, i], fixed, impact, iexp, True)
                else:
                    qf, p, sc = abs(q), px[f, i, P_MARK], 0.0
                    fee = qf * p * mkt[M_FEE, i]
                cash += q * p - fee
                st[n, S_QTY + i] = 0.0
                nfill = _record(fills, n, nfill, i, -1.0 if q > 0.0 else 1.0, qf, p, fee, sc, FILL_LIQUIDATION)
                fees += fee
                slip += sc
                traded += qf * p
            e = cash
            status_env = ENV_LIQUIDATED
        elif e <= 0.0:
            status_env = ENV_BANKRUPT

        st[n, S_CASH] = cash
        st[n, S_EQUITY] = e
        if e > st[n, S_PEAK]:
            st[n, S_PEAK] = e
        dd = 1.0 - e / st[n, S_PEAK]
        ratio = e / e_prev
        logret = math.log(ratio if ratio > LOG_FLOOR else LOG_FLOOR)
        kind = int(cfg[C_REWARD])
        if kind == REWARD_SHARPE:
            r = ratio - 1.0
            a_ = st[n, S_SH_A]
            b_ = st[n, S_SH_B]
            var = b_ - a_ * a_
            reward = (b_ * (r - a_) - 0.5 * a_ * (r * r - b_)) / var ** 1.5 if var > 1e-12 else 0.0
            eta = cfg[C_ETA]
            st[n, S_SH_A] = a_ + eta * (r - a_)
            st[n, S_SH_B] = b_ + eta * (r * r - b_)
        elif kind == REWARD_DRAWDOWN:
            reward = logret - cfg[C_DD_PEN] * dd
        elif kind == REWARD_TURNOVER:
            reward = logret - cfg[C_TO_PEN] * traded * inv_e_open
        else:
            reward = logret

        ist[n, I_T] = f
        ist[n, I_STEPS] += 1
        term = status_env != ENV_OK
        trunc = f >= ist[n, I_END]
        if term or trunc:
            ist[n, I_DONE] = 1
        out[n, O_REWARD] = reward * cfg[C_SCALE]
        out[n, O_EQUITY] = e
        out[n, O_CASH] = cash
        out[n, O_FEES] = fees
        out[n, O_SLIP] = slip
        out[n, O_TURNOVER] = traded * inv_e_open
        out[n, O_BORROW] = borrow
        out[n, O_TERM] = 1.0 if term else 0.0
        out[n, O_TRUNC] = 1.0 if trunc else 0.0
        out[n, O_NFILLS] = nfill
        out[n, O_STATUS] = status_env
        out[n, O_T] = f
        out[n, O_LOGRET] = logret
        out[n, O_DRAWDOWN] = dd
        inv_e = 1.0 / e if e > 0.0 else 0.0
        for i in range(A):
            q = st[n, S_QTY + i]
            out[n, O_W + i] = q * px[f, i, P_MARK] * inv_e
            out[n, O_W + A + i] = q
    # observations in a second pass: a pure gather over envs, whose memory loads overlap
    window = int(cfg[C_WINDOW])
    for n in range(st.shape[0]):
        if out[n, O_T] > 0.0:  # stepped in this call (skipped and malformed envs have O_T = 0)
            write_obs_nb(obs, n, int(out[n, O_T]), featflat, maskflat, st, px, window, A, AF)


@numba.njit(**JIT)
def reset_batch_nb(idx, starts, ends, px, featflat, maskflat, cfg, st, ist, obs, out):
    """Start environment ``idx[j]`` at decision bar ``starts[j]`` with all cash; its episode is
    truncated when it reaches bar ``ends[j]``. Writes the first observation into ``obs[idx[j]]``."""
    A = (st.shape[1] - S_QTY)
    AF = featflat.shape[0] // px.shape[0]
    init = cfg[C_INIT_CASH]
    for j in range(idx.shape[0]):
        n = idx[j]
        for c in range(st.shape[1]):
            st[n, c] = 0.0
        st[n, S_CASH] = init
        st[n, S_EQUITY] = init
        st[n, S_PEAK] = init
        st[n, S_INIT] = init
        ist[n, I_T] = starts[j]
        ist[n, I_END] = ends[j]
        ist[n, I_DONE] = 0
        ist[n, I_STEPS] = 0
        for c in range(out.shape[1]):
            out[n, c] = 0.0
        out[n, O_EQUITY] = init
        out[n, O_CASH] = init
        out[n, O_T] = starts[j]
        write_obs_nb(obs, n, starts[j], featflat, maskflat, st, px, int(cfg[C_WINDOW]), A, AF)
