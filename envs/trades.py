"""The fills of one step as rows and as a lazy sequence of dicts (``info["trades"]``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from factorgym.envs.layouts import FILL, FILL_KINDS

def fill_rows(block: np.ndarray) -> np.ndarray:
    """The fills of one step as rows (asset, side +-1, quantity, price, fee, slippage_cost, kind code),
    in fill order: order sells, order buys, untradable closes, liquidations, each in asset order.

    ``block``: an env's fills block [3A, 4] (row kind x A + asset, ``FILL`` columns, quantity signed,
    0 = no fill), as the kernels write it."""
    A = block.shape[0] // 3
    q = block[:, FILL.quantity]
    rows = np.flatnonzero(q)
    kind = rows // A
    rows = rows[np.argsort(2 * kind + ((kind == 0) & (q[rows] > 0)), kind="stable")]
    out = np.empty((len(rows), 7))
    out[:, 0] = rows % A
    out[:, 1] = np.sign(q[rows])
    out[:, 2] = np.abs(q[rows])
    out[:, 3] = block[rows, FILL.price]
    out[:, 4] = block[rows, FILL.fee]
    out[:, 5] = block[rows, FILL.slippage_cost]
    out[:, 6] = rows // A
    return out


class Trades(Sequence):
    """The fills of one step: a read-only sequence of dicts, built only when read.

    Each dict: ``timestamp`` (int ms of the fill bar's open), ``symbol``, ``side`` ("buy"/"sell"),
    ``quantity`` (base units), ``price`` (fill price), ``fee`` and ``slippage_cost`` (quote units),
    ``kind`` ("order", "untradable_close", "liquidation"). ``.array`` holds the raw rows
    (asset, side +-1, quantity, price, fee, slippage_cost, kind code; see :func:`fill_rows`);
    ``list(trades)`` gives a list. Built lazily because a step that trades every asset would
    otherwise spend more time making dicts than executing.
    """

    __slots__ = ("_block", "_rows", "_n", "_ts", "_symbols")

    def __init__(self, block: np.ndarray, n: int, timestamp: int, symbols: list[str]) -> None:
        self._block = block  # an owned copy of the env's fills block, with n fills
        self._rows: np.ndarray | None = None
        self._n = n
        self._ts = timestamp
        self._symbols = symbols

    @property
    def array(self) -> np.ndarray:
        if self._rows is None:
            self._rows = fill_rows(self._block)
        return self._rows

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError("trade index out of range")
        a, side, q, p, fee, sc, kind = self.array[i % self._n].tolist()
        return {"timestamp": self._ts, "symbol": self._symbols[int(a)], "side": "buy" if side > 0 else "sell",
                "quantity": q, "price": p, "fee": fee, "slippage_cost": sc, "kind": FILL_KINDS[int(kind)]}

    def to_list(self) -> list[dict]:
        return [self[i] for i in range(self._n)]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Trades, list, tuple)):
            return self.to_list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Trades({self.to_list()!r})"
