"""Named layouts of the arrays the engine's kernels share: each field is named once, here.

A layout is a namedtuple of row (or column) offsets made by :func:`fields` from a list of names, so
``OUT.equity`` is the same integer in Python and in numba (a global tuple is a compile-time
constant there). Blocks of per-asset values follow a layout's named fields at ``len(LAYOUT)``.

| array  | dtype, shape                 | layout                                                        |
| ------ | ---------------------------- | ------------------------------------------------------------- |
| prices | float64 [T, A, len(PRICE)]   | ``PRICE`` per bar and asset (one 64-byte record), made by     |
|        |                              | :func:`price_records` from the tensor                         |
| data   | float32 [T*A*F]              | feature rows [T, A, F]: the tensor's own (``raw_features``,   |
|        |                              | e.g. a memory map; sanitised per window) or a sanitised copy  |
| config | float64                      | ``CONFIG`` scalars, then ``RULE`` x A rules (row-major        |
|        |                              | [len(RULE), A]), then the discrete action levels              |
| work   | float64 [width, L]           | per env (column n): ``STATE``, positions [A], ``COUNTER``,    |
|        |                              | then the last step's fills [3A, len(FILL)] (see below)        |
| out    | float64 [len(OUT) + 3A, L]   | per env: ``OUT`` then weights [A], positions [A], order       |
|        |                              | status [A]: the last step's results                           |
| obs    | float32 [N x obs_dim]        | env n's observation at n x obs_dim                            |

``work`` and ``out`` are field-major (field c of env n at [c, n]; L = :func:`columns` (N)), so that
Python reads ``out[:, :N].T`` as [N, fields] with contiguous columns (the vector env's infos).
Fill rows sit at fixed places, ``kind x A + asset`` (kinds ``FILL_KINDS``), quantity 0 = no fill, so
that no store address depends on earlier fills; they are listed in fill order by ``core.fill_rows``.
An untradable-close or liquidation row without a fill is all 0 (the kernels store those rows only
when a block of envs has one or had one in its last step).
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
from numba.extending import register_jitable

from factorgym.errors import DataValidationError


def fields(name: str, names: str):
    """A namedtuple instance whose field ``k`` (of the space-separated ``names``) holds ``k``."""
    keys = names.split()
    return namedtuple(name, keys)(*range(len(keys)))


# one bar of one asset: open (the mark on untradable bars), mark (close, carried forward over untradable
# bars), 1 / volume (0 when the volume is 0 or the bar untradable), tradable (1.0 / 0.0), the adverse
# extremes of a long (low) and of a short (high) (the mark on untradable bars), the funding rate
# (fraction of notional, + = longs pay; 0 where the tensor has none); one slot of padding
PRICE = fields("Price", "open mark inv_volume tradable low high funding pad")
# the scalar settings
CONFIG = fields("Config", "fixed_slippage impact impact_exponent borrow_rate max_leverage maintenance_margin "
                          "initial_cash long_only close_untradable scheme reward drawdown_penalty turnover_penalty "
                          "sharpe_eta reward_scale window level_size n_levels raw_features")
# the market rules of one symbol (inv_* = 1 / step, or 0 where the step is 0)
RULE = fields("Rule", "fee lot_step inv_lot_step min_amount min_notional price_step inv_price_step")
# the state of one env that persists between steps (positions [A] follow); sharpe_* are the
# differential Sharpe ratio's EMAs of the return and of its square
STATE = fields("State", "cash equity peak initial_cash sharpe_mean sharpe_square")
# its bar counters (integers held as floats): decision bar t, end bar, done flag, steps taken
COUNTER = fields("Counter", "bar end_bar done steps")
# one fill: quantity signed (+ bought, - sold, base units), fill price, fee and slippage cost (quote)
FILL = fields("Fill", "quantity price fee slippage_cost")
FILL_KINDS = ("order", "untradable_close", "liquidation")
FILL_UNTRADABLE_CLOSE, FILL_LIQUIDATION = 1, 2  # (FILL_KINDS.index of each)
# the results of the last step (weights, positions, order status [A each] follow); n_trades counts
# the fills; status is the env status (ENV_*); bar is the bar the step ended on
OUT = fields("Out", "reward equity cash fees slippage_cost turnover borrow_cost funding terminated truncated "
                    "n_trades status bar log_return drawdown")
#: info keys of the scalar results, which are named as the fields
INFO_SCALARS = ("equity", "cash", "fees", "slippage_cost", "borrow_cost", "funding", "turnover")

N_PRICE, N_RULE, N_FILL = len(PRICE), len(RULE), len(FILL)
STATE_POSITIONS = len(STATE)  # row of position 0 in work
OUT_WEIGHTS = len(OUT)  # row of weight 0 in out (positions at + A, order status at + 2A)


@register_jitable
def work_offsets(A: int) -> tuple[int, int, int]:
    """Rows of ``COUNTER`` and of the fills in ``work``, and its width, for A assets."""
    counters = STATE_POSITIONS + A
    fills = counters + len(COUNTER)
    return counters, fills, fills + 3 * A * N_FILL


def block_size(N: int) -> int:
    """Envs stepped together by the kernels, one per SIMD lane: 8 (one AVX-512 vector) for every N,
    so that every number of envs runs one compiled kernel (B is a compile-time constant there).
    Blocks of 16 from 64 envs were within noise of it (the simplex vector env a few percent faster,
    the signed one a few percent slower) and cost a second compile."""
    return 8


def columns(N: int) -> int:
    """L, the columns of ``work`` and ``out`` for N envs: whole blocks of block_size(N) envs (padding
    columns hold envs that are always done), an odd number of blocks, so that rows (L x 8 bytes
    apart) map to different L1 cache sets (with L a multiple of 512 a step ran 1.5x slower)."""
    B = block_size(N)
    m = -(-N // B)
    return B * (m + 1 - m % 2)


def out_shape(A: int, N: int) -> tuple[int, int]:
    return OUT_WEIGHTS + 3 * A, columns(N)


def work_shape(A: int, N: int) -> tuple[int, int]:
    return work_offsets(A)[2], columns(N)


def inverse(x):
    """1 / x where x > 0, else 0 (the stored reciprocals of lot steps, price steps and volumes)."""
    return np.where(np.asarray(x) > 0, 1.0 / np.where(np.asarray(x) > 0, x, 1.0), 0.0)


# ---- the kernels' stack scratch block (see kernels.py): rows of B lanes, lane j of row r at r x B + j
# per-env temporaries of a step: live (not done, action well formed), equity at the open, the cost of
# the planned buys, the liquidation flag (1 intrabar, 2 at the close) and the liquidation point
TEMP = fields("Temp", "live equity_open buy_cost liquidate liquidation_point")
# the per-env values the per-asset loops read and sum into, in a stack array of their own (phases.py)
TOTALS = fields("Totals", "live equity_open cash fees slippage traded n_fills buy_cost")
LIQUIDATE_INTRABAR, LIQUIDATE_AT_CLOSE = 1.0, 2.0
BlockRows = namedtuple("BlockRows", "counters fills weights positions order_status out prices actions temps size")


@register_jitable
def block_rows(A: int, K: int) -> BlockRows:
    """First rows of the regions of the stack block for A assets and K action values: the work rows
    (state, positions, counters at their rows in ``work``; then the fills, held field-major: field F
    of fill row r at ``fills + F x 3A + r``), the out rows (weights, positions and order status
    among them), the ``PRICE`` records of the fill bar (field c of asset i at ``prices + c x A + i``),
    the actions and the ``TEMP`` rows; and the block's size in rows."""
    counters, fills, width = work_offsets(A)
    out = width
    prices = out + OUT_WEIGHTS + 3 * A
    actions = prices + N_PRICE * A
    temps = actions + K
    return BlockRows(counters, fills, out + OUT_WEIGHTS, out + OUT_WEIGHTS + A, out + OUT_WEIGHTS + 2 * A, out,
                     prices, actions, temps, temps + len(TEMP))


def price_records(tensor: Any, tradable: np.ndarray) -> np.ndarray:
    """float64 [T, A, len(PRICE)]: the ``PRICE`` record of every bar and asset (see layouts.py).
    Untradable bars: open, low and high are the mark (the last tradable close), no volume, no
    funding. The adverse extremes include the open and the close (a low above either is bad data)."""
    prices = np.asarray(tensor.prices, dtype=np.float64)
    T, A = tradable.shape
    close = np.where(tradable, prices[..., 3], np.nan)
    mark = _ffill(close)  # last tradable close, carried forward; 0 before the first listing
    open_ = np.where(tradable, prices[..., 0], mark)
    records = _zeros_aligned((T, A, len(PRICE)))
    records[..., PRICE.open] = open_
    records[..., PRICE.mark] = mark
    records[..., PRICE.inv_volume] = inverse(np.where(tradable, prices[..., 4], 0.0))  # 0 = no impact term
    records[..., PRICE.tradable] = tradable
    records[..., PRICE.low] = np.where(tradable, np.fmin(np.fmin(prices[..., 2], open_), mark), mark)
    records[..., PRICE.high] = np.where(tradable, np.fmax(np.fmax(prices[..., 1], open_), mark), mark)
    funding = getattr(tensor, "funding", None)
    if funding is not None:
        funding = np.asarray(funding, dtype=np.float64)
        if funding.shape != (T, A):
            raise DataValidationError(f"tensor.funding must be [T, A] = {(T, A)}, got {funding.shape}")
        records[..., PRICE.funding] = np.where(tradable & np.isfinite(funding), funding, 0.0)
    return records


def _zeros_aligned(shape: tuple[int, ...], align: int = 64) -> np.ndarray:
    """float64 zeros whose first element starts a cache line: each 64-byte ``PRICE`` record then
    fills one line (numpy's own alignment, 16 bytes, split every record over two)."""
    n = int(np.prod(shape))
    buf = np.zeros(n + align // 8)
    skip = (-buf.ctypes.data % align) // 8
    return buf[skip:skip + n].reshape(shape)


def _ffill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaNs along axis 0 (only the past is used); leading NaNs become 0."""
    T = a.shape[0]
    idx = np.where(np.isfinite(a), np.arange(T)[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = np.take_along_axis(a, idx, axis=0)
    return np.where(np.isfinite(out), out, 0.0)
