"""The one execution and accounting core: numba kernels batched over N environments.

Everything that moves money lives here and nowhere else; the single env, the vector env, the
backtest and the paper exchange call these kernels. In the style of vectorbt's ``nb.py``: plain
array functions over state records, each order returning a status code (``FILLED``, ``IGNORED_*``,
``REJECTED_*``) instead of raising.

Order of operations in one step of one environment (decision at the close of bar t):

1. map the action to target weights w* (fraction of equity per asset, signed);
2. value the book at the open of bar f = t+1 (untradable assets at their last close): E_open;
3. per tradable asset, target quantity q* = w* x E_open / open; order = q* - q;
   assets not tradable at bar f are rejected (``REJECTED_UNTRADABLE``);
4. sells first (so their proceeds can pay for buys): fill at open x (1 - s), fee on the proceeds;
5. buys: fill at open x (1 + s); long-only: if their total cost (fees included) exceeds cash, every
   buy is scaled by the same factor, then rounded down to its lot again -- cash never goes negative;
6. positions in assets untradable at f: kept and valued at their last close (``freeze``) or closed
   at that price with the fee (``close``);
7. borrow: ``borrow_rate_per_bar`` x (short notional + borrowed cash) at the close of f;
8. mark to market at the close of f: E = cash + sum(q x close);
9. long/short: if E < maintenance_margin x gross exposure, every position is closed at the close
   (fee and slippage paid) and the episode terminates (``LIQUIDATED``); E <= 0 terminates
   (``BANKRUPT``);
10. reward from E_t -> E_f; observation of bar f written into the output row.

Rounding rules (floating point, as vectorbt's nb.py documents its own):

- a quantity is rounded *down* to its lot step: ``floor(q * (1 / step) + 1e-9) * step``, with
  ``1 / step`` computed once per symbol (a multiply in the hot loop instead of a division); the 1e-9
  (of one step) absorbs round-off such as 0.3 / 0.1 = 2.9999999999999996; orders that round to 0, or
  fall below ``min_amount`` (base units) or ``min_notional`` (quantity x open, quote units), are
  ignored with a status code;
- a target weight of exactly 0 closes the whole position without lot rounding (no dust is left);
- an order smaller than 1e-10 of the target (or held) quantity is round-off of an unchanged
  target (e.g. holding 100% while the price moves) and is not sent (``IGNORED_NO_CHANGE``);
- fill prices are rounded to the price step against the trader: buys up
  (``ceil(p * (1 / step) - 1e-9) * step``), sells down (``floor(p * (1 / step) + 1e-9) * step``);
- the impact participation is ``qty * (1 / bar volume)``, the reciprocal stored once per bar;
- the long-only buy scale factor is ``cash / cost x (1 - 1e-12)`` so that round-off cannot make
  cash negative;
- fees are fee_rate x quantity x fill price, never rounded.
"""

from __future__ import annotations

import numba
import numpy as np

from factorgym.envs.intrinsics import select_nb, sqrt_nb

# ---- order status codes (vectorbt style) --------------------------------------------------------
FILLED = 0
IGNORED_NO_CHANGE = 1
IGNORED_LOT = 2
IGNORED_MIN_AMOUNT = 3
IGNORED_MIN_NOTIONAL = 4
REJECTED_UNTRADABLE = 5
ORDER_STATUS = ("filled", "ignored_no_change", "ignored_lot", "ignored_min_amount",
                "ignored_min_notional", "rejected_untradable")

# ---- environment status codes --------------------------------------------------------------------
ENV_OK = 0
ENV_BANKRUPT = 1
ENV_LIQUIDATED = 2
ENV_BAD_ACTION = -1
ENV_BAD_SHAPE = -2  # the action has the wrong number of values (checked in the kernel)
ENV_STATUS = {ENV_OK: "ok", ENV_BANKRUPT: "bankrupt", ENV_LIQUIDATED: "liquidated"}

# ---- fill kinds ----------------------------------------------------------------------------------
FILL_ORDER = 0
FILL_UNTRADABLE_CLOSE = 1
FILL_LIQUIDATION = 2

# ---- action schemes and rewards -----------------------------------------------------------------
SCHEME_SIMPLEX, SCHEME_SIGNED, SCHEME_DIRECT, SCHEME_DISCRETE = 0, 1, 2, 3
REWARD_LOG, REWARD_SHARPE, REWARD_DRAWDOWN, REWARD_TURNOVER = 0, 1, 2, 3

# ---- layouts of the arrays the kernels share ------------------------------------------------------
# The step kernels take seven arrays (each argument costs ~30 ns to unbox, a third of a single env's
# step when there were 13): px, data, par (static), work (state), out (results), act and obs; and
# ``dims``, tuples of A and K zeros whose lengths numba compiles in as constants (see kernels.py).
#
# px: float64 [T, A, 4] = open (the mark on untradable bars), mark (close, carried forward over
#     untradable bars), 1 / volume
#     (0 when the volume is 0 or the bar untradable), tradable (1.0 / 0.0): everything one bar of one
#     asset needs, in one 32-byte record.
P_OPEN, P_MARK, P_INV_VOLUME, P_TRADABLE = 0, 1, 2, 3
N_PX = 4
# data: float32 [T*A*F + T*A] = feature rows [T, A, F] (0 where untradable), then the mask [T, A].
# par: float64 [C_MKT + 7A + n_levels] = the scalars C_*, the per-symbol rules M_* x A starting at
#     par[C_MKT] (row-major [7, A]; M_INV_* = 1 / step or 0), then the discrete levels. Every offset
#     is a constant once A is (no index arithmetic on values read from memory in the hot loop).
C_FIXED_SLIP, C_IMPACT, C_IMPACT_EXP, C_BORROW, C_MAX_LEV, C_MAINT, C_INIT_CASH = 0, 1, 2, 3, 4, 5, 6
C_LONG_ONLY, C_CLOSE_UNTRADABLE, C_SCHEME, C_REWARD, C_DD_PEN, C_TO_PEN, C_ETA = 7, 8, 9, 10, 11, 12, 13
C_SCALE, C_WINDOW, C_LEVEL_SIZE, C_N_LEVELS, C_MKT = 14, 15, 16, 17, 18  # (K: see kernels.py)
M_FEE, M_LOT, M_MIN_AMOUNT, M_MIN_NOTIONAL, M_PRICE_STEP, M_INV_LOT, M_INV_PRICE_STEP = 0, 1, 2, 3, 4, 5, 6
N_MKT = 7
# work: float64 [width, L], field-major like out (env n in column n, L from columns(N)): the state
#     that persists between steps, in three blocks of rows at the offsets work_offsets(A) gives:
#   st    [S_QTY + A]    cash, equity, peak equity, initial cash, Sharpe EMAs A and B, quantities [A]
#   ist   [4]            decision bar t, end bar, done flag, steps taken (integers held as floats)
#   fills [3A, 4]        the last step's fills, F_* columns, at fixed rows: kind x A + asset (kinds
#                        FILL_*: orders, untradable closes, liquidations); quantity 0 = no fill. Fixed
#                        rows keep every store address independent of earlier fills (``Trades`` lists
#                        them in fill order: sells, buys, closes, liquidations, each in asset order)
# out: float64 [O_W + 3A, L], field-major: row c holds field c of every env (env n in column n; L from
#     columns(N)), the results of the last step: the O_* scalars, then weights [A], positions [A],
#     order status [A]. Python reads it as the [N, fields] view ``out[:, :N].T``, whose columns
#     (the vector env's rewards and infos) are contiguous; the vector env passes a fresh array each
#     step, so that they are views of memory nobody else writes: no copy.
S_CASH, S_EQUITY, S_PEAK, S_INIT, S_SH_A, S_SH_B, S_QTY = 0, 1, 2, 3, 4, 5, 6
I_T, I_END, I_DONE, I_STEPS = 0, 1, 2, 3
N_IST = 4
O_REWARD, O_EQUITY, O_CASH, O_FEES, O_SLIP, O_TURNOVER, O_BORROW = 0, 1, 2, 3, 4, 5, 6
O_TERM, O_TRUNC, O_NFILLS, O_STATUS, O_T, O_LOGRET, O_DRAWDOWN, O_W = 7, 8, 9, 10, 11, 12, 13, 14
F_QTY, F_PRICE, F_FEE, F_SLIP = 0, 1, 2, 3  # F_QTY signed: + bought, - sold (base units)
N_FILL_COLS = 4
N_TEMP = 4  # per-env temporaries of a step (kernels.X_*)
# obs: float32 flat [N x obs_dim] (env n's observation at n x obs_dim): a 1-D argument, so the single
#     env can hand the kernel a fresh [obs_dim] array and return it without a copy.


# Every division in the kernels is guarded explicitly (or its divisor is validated > 0), so numpy's
# error model (no per-division zero check) is safe and lets LLVM optimise the loops.
# numba's on-disk cache keys a kernel on its own file only: after editing a helper here, touch
# kernels.py (or delete envs/__pycache__/*.nb*) or the kernels keep the old inlined code.
JIT = dict(cache=True, error_model="numpy")
LOT_EPS = 1e-9
NOISE = 1e-10  # |order| <= 1e-10 x |target or position| is round-off, not an order
CASH_SAFETY = 1e-12
MAX_SLIP = 0.5
LOG_FLOOR = 1e-12  # equity ratio floor of the log return on bankruptcy: log(1e-12) ~ -27.6


def inverse(x):
    """1 / x where x > 0, else 0 (the stored reciprocals of lot steps, price steps and volumes)."""
    return np.where(np.asarray(x) > 0, 1.0 / np.where(np.asarray(x) > 0, x, 1.0), 0.0)


@numba.njit(inline="always", **JIT)
def round_lot_nb(qty: float, step: float, inv_step: float) -> float:
    """``qty`` (>= 0) rounded down to a multiple of ``step`` (0 = no rounding); ``inv_step`` = 1 / step."""
    if step > 0.0:
        return np.floor(qty * inv_step + LOT_EPS) * step
    return qty


@numba.njit(inline="always", **JIT)
def fill_inv_nb(size, ref_price, inv_volume, fee_rate, lot_step, inv_lot, min_amount, min_notional, price_step,
                inv_price_step, fixed_slip, impact, impact_exp, exact, any_exp=True):
    """:func:`fill_order_nb` with the reciprocals of the volume, lot step and price step given
    (0 where the value is 0): the form the kernels call, with no division per order.

    Branch-free in the order's side and status (the conditional expressions become selects): a
    learning agent's order signs are random, and mispredicted branches cost more than computing a
    fill and discarding it. Only per-symbol settings (lot step, price step, impact) branch.
    ``any_exp=False`` (a constant in the caller, for ``impact_exp`` 0.5 or ``impact`` 0) compiles
    without the general power, whose call would keep the kernels' loops from vectorising."""
    q = abs(size)
    qr = select_nb(exact, q, round_lot_nb(q, lot_step, inv_lot))
    # the first failing check gives the status: tested in reverse order, each overriding the last
    status = select_nb(qr * ref_price < min_notional, IGNORED_MIN_NOTIONAL, FILLED)
    status = select_nb(qr < min_amount, IGNORED_MIN_AMOUNT, status)
    status = select_nb(qr <= 0.0, IGNORED_LOT, status)
    status = select_nb(exact, FILLED, status)
    status = select_nb(q == 0.0, IGNORED_NO_CHANGE, status)
    part = qr * inv_volume  # 0 when the volume is unknown: no impact
    if impact == 0.0:
        imp = 0.0
    elif (impact_exp == 0.5) | (not any_exp):
        imp = sqrt_nb(part)
    else:
        imp = select_nb(part > 0.0, part ** impact_exp, 0.0)
    slip = min(fixed_slip + impact * imp, MAX_SLIP)
    s = select_nb(size > 0.0, 1.0, -1.0)  # buys pay up, sells receive less
    price = ref_price * (1.0 + s * slip)
    if price_step > 0.0:  # against the trader: buys ceil(p - eps) = -floor(-p + eps), sells floor(p + eps)
        price = -s * np.floor(-s * price * inv_price_step + LOT_EPS) * price_step
    ok = status == FILLED
    return (status, select_nb(ok, qr, 0.0), select_nb(ok, price, ref_price), select_nb(ok, qr * price * fee_rate, 0.0),
            select_nb(ok, qr * abs(price - ref_price), 0.0))


@numba.njit(**JIT)
def fill_order_nb(size, ref_price, volume, fee_rate, lot_step, min_amount, min_notional, price_step,
                  fixed_slip, impact, impact_exp, exact):
    """Fill a market order of ``size`` base units (+ buy, - sell) against ``ref_price``.

    Returns ``(status, qty, price, fee, slippage_cost)`` with ``qty`` >= 0 the filled quantity,
    ``price`` the fill price, ``fee`` and ``slippage_cost`` (qty x |price - ref_price|) in quote units.
    ``exact`` skips lot rounding and the minimums (closing a held position, liquidation).
    ``volume`` 0 (unknown) skips the impact term. Computes the reciprocals and calls :func:`fill_inv_nb`.
    """
    inv_v = 1.0 / volume if volume > 0.0 else 0.0
    inv_lot = 1.0 / lot_step if lot_step > 0.0 else 0.0
    inv_ps = 1.0 / price_step if price_step > 0.0 else 0.0
    return fill_inv_nb(size, ref_price, inv_v, fee_rate, lot_step, inv_lot, min_amount, min_notional, price_step,
                       inv_ps, fixed_slip, impact, impact_exp, exact)


def work_offsets(A: int) -> tuple[int, int, int]:
    """Offsets of the ist and fills blocks in a work row, and the row's width, for A assets."""
    w_ist = S_QTY + A
    w_fills = w_ist + N_IST
    return w_ist, w_fills, w_fills + 3 * A * N_FILL_COLS


def block_size(N: int) -> int:
    """Envs stepped together by the kernels, one per SIMD lane (see kernels.py): 8 (one AVX-512
    vector) for up to 63 envs, where fewer padding lanes keep a single env's step short; 16 above,
    where fewer blocks mean less per-block work."""
    return 8 if N < 64 else 16


def columns(N: int) -> int:
    """L, the columns of ``work`` and ``out`` for N envs: whole blocks of block_size(N) envs (the
    kernels step every lane of a block; the padding columns hold envs that are always done), an odd
    number of them, so that the rows (L x 8 bytes apart) map to different L1 cache sets: with L a
    multiple of 512 every field of an env fell in one set, and a step ran 1.5x slower."""
    B = block_size(N)
    m = -(-N // B)
    return B * (m + 1 - m % 2)


def out_shape(A: int, N: int) -> tuple[int, int]:
    """Shape of the out array: O_W + 3A fields by :func:`columns` (N)."""
    return O_W + 3 * A, columns(N)


def work_shape(A: int, N: int) -> tuple[int, int]:
    """Shape of the work array: the rows of :func:`work_offsets` (A) by :func:`columns` (N)."""
    return work_offsets(A)[2], columns(N)


def block_rows(A: int, K: int) -> tuple[int, int, int, int, int]:
    """Offsets (in rows of block_size lanes) of the regions of the kernels' stack scratch block, and its
    row count: the work rows (the state rows at their offsets in ``work``, then the fills, held
    field-major), the out rows, the price records of the fill bar (``P_*`` x A + asset), the K action
    values, and the kernels' per-env temporaries."""
    r_out = S_QTY + A + N_IST + 3 * A * N_FILL_COLS  # work_offsets(A)[2]
    r_px = r_out + O_W + 3 * A
    r_act = r_px + N_PX * A
    r_x = r_act + K
    return r_out, r_px, r_act, r_x, r_x + N_TEMP


work_offsets_nb = numba.njit(**JIT)(work_offsets)


@numba.njit(inline="always", **JIT)
def write_obs_nb(obs, o, f, data, px, work, n, window, A, AF, mask_off):
    """Observation of bar f into ``obs[o:o + obs_dim]``: features rows f-W+1..f (zeroed where
    untradable), the mask rows, then weights [A], cash weight, equity / initial equity, drawdown."""
    # unsigned indices: numba then needs no negative-index wraparound per element, and LLVM turns the
    # two row copies into vector moves (3x faster at window 32)
    lo = f - window + 1
    nf = np.uint64(window * AF)
    src = np.uint64(lo * AF)
    dst = np.uint64(o)
    for j in range(nf):
        obs[dst + j] = data[src + j]
    nm = np.uint64(window * A)
    src = np.uint64(mask_off + lo * A)
    dst = np.uint64(o + window * AF)
    for j in range(nm):
        obs[dst + j] = data[src + j]
    o2 = o + window * AF
    nm = window * A
    base = o2 + nm
    e = work[S_EQUITY, n]
    inv = 1.0 / e if e > 0.0 else 0.0
    for i in range(A):
        obs[base + i] = work[S_QTY + i, n] * px[f, i, P_MARK] * inv
    obs[base + A] = work[S_CASH, n] * inv
    obs[base + A + 1] = e / work[S_INIT, n]
    obs[base + A + 2] = 1.0 - e / work[S_PEAK, n] if work[S_PEAK, n] > 0.0 else 0.0
