"""Orders and trades a capped :class:`~factorgym.envs.live.book.Book` no longer holds, rebuilt from
the event log: the same structures the book built for them (its own code applies their events), but
each look-up reads the log from the book's mark before it (slower: about ``MARK_EVERY`` orders'
events for an order, the log from ``since`` on for trades or orders).

``book`` is the exchange's live book (its marks, counters and the orders it still holds).
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from factorgym.envs.live.book import ORDER_KINDS, Book, make_trade
from factorgym.envs.live.events import Event, EventLog


@contextlib.contextmanager
def _reading(log: EventLog, after_seq: int) -> Iterator[Iterator[Event]]:
    """The log's events after ``after_seq``, closed when the block ends (a read stopped early
    gives the cyclic garbage collector back at once)."""
    events = log.events(after_seq=max(after_seq, 0))
    try:
        yield events
    finally:
        events.close()


def _scratch(book: Book) -> Book:
    return Book(book.symbols, book.bases, book.quote, keep=None)


def order_number(order_id: Any) -> int | None:
    """N of the paper exchange's order id ``paper-N`` (None for another id)."""
    if isinstance(order_id, str) and order_id.startswith("paper-") and order_id[6:].isdigit():
        return int(order_id[6:])
    return None


def order_by_id(log: EventLog, book: Book, order_id: str) -> dict[str, Any] | None:
    """Order ``order_id`` rebuilt from its events (None: the log has no such order)."""
    n = order_number(order_id)
    if n is None or not 1 <= n <= book.n_orders:
        return None
    mark = (n - 1) // book.mark_every
    return _order(log, book, book.order_marks[mark] - 1, lambda o: o["id"] == order_id, max_skip=book.mark_every)


def order_by_client_id(log: EventLog, book: Book, client_id: Any) -> dict[str, Any] | None:
    """The order placed with ``client_id`` that the book no longer holds (its compact index names
    the candidates' first events; each is checked), rebuilt from its events; None if none."""
    for seq in book.old_client_ids.get(client_id):
        order = _order(log, book, seq - 1, lambda o: o["clientOrderId"] == client_id, max_skip=0)
        if order is not None:
            return order
    return None


def _order(log: EventLog, book: Book, after_seq: int, match: Callable[[dict], bool], *,
           max_skip: int) -> dict[str, Any] | None:
    """The first order after ``after_seq`` that ``match`` accepts (at most ``max_skip`` orders
    before it), through its last event (done; or the log's end)."""
    scratch = _scratch(book)
    target = None
    skipped = 0
    with _reading(log, after_seq) as events:
        for ev in events:
            kind = ev.kind
            if target is None:
                if kind in ORDER_KINDS:
                    if match(ev.data["order"]):
                        target = ev.data["order"]["id"]
                        scratch.apply(ev)
                        if kind == "order_rejected":
                            break
                        continue
                    skipped += 1
                if skipped > max_skip or (max_skip == 0 and target is None):
                    return None
            elif kind == "fill" and ev.data["trade"]["order"] == target:
                scratch.apply(ev)
            elif kind == "order_done" and ev.data["id"] == target:
                scratch.apply(ev)
                break
    return None if target is None else scratch.orders[target]


def orders(log: EventLog, book: Book, *, symbol: str | None, since: int | None,
           limit: int | None) -> list[dict[str, Any]]:
    """:meth:`PaperExchange.fetch_orders` over the whole run: the orders placed at or after ``since``
    (of ``symbol``), in placing order, at most ``limit``; those the book holds taken from it, the
    others rebuilt from the log (read from the mark before ``since`` until the book holds the rest)."""
    def wanted(o: dict, ts: int) -> bool:
        return (symbol is None or o["symbol"] == symbol) and (since is None or ts >= since)

    def full() -> bool:
        return limit is not None and len(out) >= limit

    start = 0
    if since is not None:
        j = bisect.bisect_left(book.order_mark_ts, since) - 1
        start = book.order_marks[j] - 1 if j >= 0 else 0
    scratch = _scratch(book)
    out: list[dict[str, Any]] = []
    pending: set[str] = set()  # rebuilt, not done yet
    rest_from = None  # the first event from which the book holds every order
    with _reading(log, start) as events:
        for ev in events:
            kind = ev.kind
            if kind in ORDER_KINDS:
                if not pending and (full() or ev.seq > book.last_evicted_seq):
                    rest_from = ev.seq
                    break
                o = ev.data["order"]
                if full() or not wanted(o, ev.ts):
                    continue
                held = book.orders.get(o["id"])
                if held is not None and book.placed.get(o["id"]) == ev.seq:
                    out.append(held)
                else:
                    scratch.apply(ev)
                    out.append(scratch.orders[o["id"]])
                    if kind == "order_accepted":
                        pending.add(o["id"])
            elif not pending:
                continue
            elif kind == "fill" and ev.data["trade"]["order"] in pending:
                scratch.apply(ev)
            elif kind == "order_done" and ev.data["id"] in pending:
                scratch.apply(ev)
                pending.discard(ev.data["id"])
    if rest_from is not None and not full():
        out += [o for oid, o in book.orders.items() if book.placed[oid] >= rest_from and wanted(o, o["timestamp"])]
    return out if limit is None else out[:limit]


def trades(log: EventLog, book: Book, *, symbol: str | None, since: int | None,
           limit: int | None, order_type: Callable[[str], str | None]) -> list[dict[str, Any]]:
    """The trades the book no longer holds, at or after ``since`` (of ``symbol``), oldest first, at
    most ``limit``: read from the mark before ``since`` up to the first trade the book holds.
    ``order_type(id)``: the type of an order placed before the read starts."""
    upto = book.n_trades - len(book.trades) + 1  # the first trade the book holds
    j = bisect.bisect_left(book.trade_mark_ts, since) - 1 if since is not None else -1
    start, number = (book.trade_marks[j] - 1, j * book.mark_every + 1) if j >= 0 else (0, 1)
    types: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    if number >= upto:
        return out
    with _reading(log, start) as events:
        for ev in events:
            kind = ev.kind
            if kind in ORDER_KINDS:
                types[ev.data["order"]["id"]] = ev.data["order"]["type"]
                continue
            if kind == "fill":
                t = ev.data["trade"]
            elif kind == "order_done" and ev.data.get("trade"):
                t = ev.data["trade"]
            else:
                continue
            if (symbol is None or t["symbol"] == symbol) and (since is None or t["ts"] >= since):
                oid = t["order"]
                if oid is not None and oid not in types:  # (placed before the read started)
                    types[oid] = order_type(oid)
                out.append(make_trade(t, book.quote, None if oid is None else types[oid]))
                if limit is not None and len(out) >= limit:
                    break
            number += 1
            if number >= upto:
                break
    return out
