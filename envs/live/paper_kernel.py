"""The env's own accounting phases for one paper account and one fill bar.

The paper exchange does not re-implement the env's step: it runs the very phase sequences of
:mod:`factorgym.envs.phases` that the kernels run (:func:`factorgym.envs.kernels.step_blocks_nb`),
on a block of one lane (B = 1) held in a numpy array:

1. :func:`orders_nb`: ``fill_phases_nb`` (size the orders from the target weights at the fill bar's
   open, sells first, the long-only rescale of buys, the buys, the untradable closes); then the
   paper exchange fills its amount orders (``process_order``);
2. :func:`close_nb`: ``settle_phases_nb`` (long/short intrabar liquidation, borrow and funding at the
   close, mark to market, liquidation at the close).

Lanes are independent and the per-asset sums run in asset order, so one lane gives the results of
the env's lane bit for bit (no fast-math: no reassociation).

Block: ``block_rows(A, A)`` rows of one lane; its state rows are ``STATE`` then positions [A].
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from factorgym.envs.actions import map_actions_nb
from factorgym.envs.jit import JIT
from factorgym.envs.layouts import CONFIG, N_FILL, N_RULE, OUT, PRICE, STATE, STATE_POSITIONS, TEMP, TOTALS, block_rows
from factorgym.envs.phases import fill_phases_nb, settle_phases_nb

#: results of :func:`close_nb`, in ``summary``
SUMMARY = ("equity", "borrow", "funding", "liquidate")


def new_block(A: int) -> np.ndarray:
    """A zeroed one-lane block for A assets (K = A action values)."""
    return np.zeros(block_rows(A, A).size)


@numba.njit(**JIT)
def orders_nb(config, record, cash, positions, weights, block):
    """Steps 2-6 of the env's step at one fill bar: load the account (``cash``, ``positions`` [A]),
    the bar's ``record`` [A, PRICE] and the target ``weights`` [A] (NaN = hold) into ``block``, size
    and fill the orders, rescale (long-only) and fill the buys, close untradable positions.

    Reads the results from the block afterwards: cash at ``STATE.cash``, positions at
    ``STATE_POSITIONS + i``, fills (field-major, see ``block_rows``), order status per asset."""
    A = positions.shape[0]
    B = 1
    rows = block_rows(A, A)
    for c in range(rows.size):
        block[c] = 0.0
    block[STATE.cash] = cash
    for i in range(A):
        block[STATE_POSITIONS + i] = positions[i]
        block[rows.weights + i] = weights[i]
        for c in range(PRICE.pad):
            block[rows.prices + c * A + i] = record[i, c]
    block[rows.temps + TEMP.live] = 1.0
    rules = np.empty(N_RULE * A)
    for c in range(N_RULE * A):
        rules[c] = config[len(CONFIG) + c]
    totals = np.zeros(len(TOTALS))
    fill_phases_nb(config, block, totals, rules, rows, A, B)


@numba.njit(**JIT)
def close_nb(config, cash, positions, block, summary):
    """Steps 7-9 after :func:`orders_nb` (and the paper's amount orders, which set ``cash`` and
    ``positions``): intrabar liquidation (long/short), borrow and funding at the close, mark to
    market, liquidation at the close. ``summary`` gets :data:`SUMMARY` (liquidate: 0, or
    ``LIQUIDATE_INTRABAR`` / ``LIQUIDATE_AT_CLOSE``)."""
    A = positions.shape[0]
    B = 1
    rows = block_rows(A, A)
    block[STATE.cash] = cash
    for i in range(A):
        block[STATE_POSITIONS + i] = positions[i]
    rules = np.empty(N_RULE * A)
    for c in range(N_RULE * A):
        rules[c] = config[len(CONFIG) + c]
    block[rows.temps + TEMP.liquidate] = 0.0
    settle_phases_nb(config, block, rules, rows, A, B)
    summary[0] = block[rows.out + OUT.equity]
    summary[1] = block[rows.out + OUT.borrow_cost]
    summary[2] = block[rows.out + OUT.funding]
    summary[3] = block[rows.temps + TEMP.liquidate]


@numba.njit(**JIT)
def target_weights_nb(config, action, A, out):
    """The env's ``map_actions_nb`` on a one-lane block: the target weights of ``action`` (float64
    [K]) into ``out`` [A] (NaN where a direct-mapping action holds); returns the env's status row
    (0: well formed; ``ENV_BAD_ACTION`` otherwise)."""
    K = action.shape[0]
    rows = block_rows(A, K)
    block = np.zeros(rows.size)
    for k in range(K):
        block[rows.actions + k] = action[k]
    map_actions_nb(config, block, rows, A, K, 1)
    for i in range(A):
        out[i] = block[rows.weights + i]
    return block[rows.out + OUT.status]


@numba.njit(**JIT)
def fill_record_nb(out, carried, bar, tradable):
    """The fill bar's ``PRICE`` records [A, len(PRICE)] into ``out``: row 1 of the env's
    ``price_records`` over two bars, the first at the mark ``carried`` (tradable where > 0), the
    second ``bar`` (OHLCV [A, 5], tradable where ``tradable``). Untradable: the mark is carried,
    open = low = high = mark, no volume; no funding (see ``loop_parts.fill_bar_record``)."""
    for i in range(out.shape[0]):
        prev = carried[i]
        if not (prev > 0.0 and math.isfinite(prev)):
            prev = 0.0  # (not listed yet: price_records' forward fill gives 0)
        if tradable[i]:
            o, c, v = bar[i, 0], bar[i, 3], bar[i, 4]
            mark = c if math.isfinite(c) else prev
            out[i, PRICE.open] = o
            out[i, PRICE.mark] = mark
            out[i, PRICE.inv_volume] = 1.0 / v if v > 0.0 else 0.0
            out[i, PRICE.tradable] = 1.0
            out[i, PRICE.low] = _fmin(_fmin(bar[i, 2], o), mark)
            out[i, PRICE.high] = _fmax(_fmax(bar[i, 1], o), mark)
        else:
            out[i, PRICE.open] = out[i, PRICE.mark] = out[i, PRICE.low] = out[i, PRICE.high] = prev
            out[i, PRICE.inv_volume] = out[i, PRICE.tradable] = 0.0
        out[i, PRICE.funding] = out[i, PRICE.pad] = 0.0


@numba.njit(**JIT)
def feed_row_nb(feat, mask, row, tradable, bar, last_close, last_volume, close_out, volume_out):
    """The live loop's window after closed bar ``bar`` (OHLCV [A, 5]): rows of ``feat`` (float32
    [W + 1, A, F]) and ``mask`` (float32 [W + 1, A]) shifted one up in place, the last set to the
    feature row ``row`` (float64 [A, F]) as float32, 0 where not finite or the asset not
    ``tradable``, and to ``tradable``; the mark (last tradable close) and last tradable volume into
    ``close_out`` and ``volume_out``. (One call instead of ~20 small numpy ones a bar.)"""
    T, A, F = feat.shape
    for t in range(T - 1):
        for i in range(A):
            mask[t, i] = mask[t + 1, i]
            for f in range(F):
                feat[t, i, f] = feat[t + 1, i, f]
    for i in range(A):
        ok = tradable[i]
        for f in range(F):
            x = np.float32(row[i, f])
            feat[T - 1, i, f] = x if ok and np.isfinite(x) else np.float32(0.0)
        mask[T - 1, i] = np.float32(1.0) if ok else np.float32(0.0)
        close_out[i] = bar[i, 3] if ok else last_close[i]
        volume_out[i] = bar[i, 4] if ok else last_volume[i]


@numba.njit(**JIT)
def _fmin(a, b):
    """numpy's ``fmin``: the smaller, ignoring a NaN."""
    return b if a != a or b < a else a


@numba.njit(**JIT)
def _fmax(a, b):
    return b if a != a or b > a else a


#: ``block_rows(A, A)`` for the Python-level readers below (they run a few times a bar; the rows never change)
_rows_of = functools.lru_cache(maxsize=64)(lambda A: block_rows(A, A))


def fills_of(block: np.ndarray, A: int) -> np.ndarray:
    """The block's fill rows as [3A, N_FILL] (row kind x A + asset; quantity 0 = no fill)."""
    rows = _rows_of(A)
    return block[rows.fills: rows.fills + N_FILL * 3 * A].reshape(N_FILL, 3 * A).T.copy()


def account_of(block: np.ndarray, A: int) -> tuple[float, np.ndarray]:
    """(cash, positions [A]) held in the block."""
    return float(block[STATE.cash]), block[STATE_POSITIONS: STATE_POSITIONS + A].copy()


def order_status_of(block: np.ndarray, A: int) -> np.ndarray:
    rows = _rows_of(A)
    return block[rows.order_status: rows.order_status + A].astype(np.int64)
