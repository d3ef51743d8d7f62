"""The paper exchange's history cap: the book holds the open orders and the latest ``keep_history``
done orders and trades; everything older is read from the event log with the same answers as an
uncapped exchange (orders by id and by client id, orders and trades since a time, idempotent
resends, ids that keep counting), and a restart rebuilds the same capped book."""

from __future__ import annotations

from array import array
from collections import deque

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs.config import ExecutionConfig
from factorgym.envs.live import book as book_module
from factorgym.envs.live.book import Book, ClientIdIndex
from factorgym.envs.live.exchange import ExchangeError, OrderNotFound
from factorgym.envs.live.paper import PaperExchange
from factorgym.errors import ConfigError

H = 3_600_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
KEEP = 4
EXECUTION = ExecutionConfig(slippage_bps=2.0, lot_step=0.001, min_notional=5.0)


def _tensor(T: int = 62) -> FactorTensor:
    rng = np.random.default_rng(3)
    A = len(SYMBOLS)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0)) * np.array([1.0, 0.5, 0.2])
    open_ = close * np.exp(rng.normal(0, 0.002, (T, A)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, (T, A)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, (T, A)))
    prices = np.stack([open_, high, low, close, rng.uniform(50, 500, (T, A))], axis=-1)
    tradable = np.ones((T, A), bool)
    tradable[20:23, 1] = False  # ETH does not trade: its orders there are rejected at the fill
    return FactorTensor.from_arrays(rng.normal(size=(T, A, 2)), prices, np.arange(T) * H, symbols=SYMBOLS,
                                    tradable=tradable)


def _exchange(tensor, path, keep):
    return PaperExchange(tensor, execution=EXECUTION, initial_cash=10_000.0, state_dir=path, participation=0.01,
                         remainder="keep", keep_history=keep)


def _bar(ex, tensor, t, w):
    """Bar t's orders: a target weight per symbol, and now and then an amount order, a resting limit
    order, a refused order, a cancel (some raise: the same on every exchange)."""
    ts = tensor.timestamps
    ex.record_decision(int(ts[t]), f"obs{t}", w.tolist())
    for i, sym in enumerate(SYMBOLS):
        ex.create_order(sym, "market", "buy", None, params={"targetWeight": float(w[i]), "clientOrderId": f"w-{t}-{i}"})
    tries = []
    if t % 5 == 0:
        tries.append(("SOL/USDT", "market", "sell" if t % 10 else "buy", 0.5, None, {"clientOrderId": f"a-{t}"}))
    if t % 9 == 2:  # far below the market: rests until cancelled
        tries.append(("BTC/USDT", "limit", "buy", 0.01, 50.0, {"clientOrderId": f"rest-{t}"}))
    if t % 7 == 3:  # near the market, larger than the participation cap: fills over several bars
        tries.append(("SOL/USDT", "limit", "buy", 3.0, float(tensor.prices[t, 2, 3]), {"clientOrderId": f"lim-{t}"}))
    if t % 13 == 4:
        tries.append(("BTC/USDT", "market", "buy", 1e-9, None, {"clientOrderId": f"bad-{t}"}))  # InvalidOrder
    for sym, type_, side, amount, price, params in tries:
        try:
            ex.create_order(sym, type_, side, amount, price, params=params)
        except ExchangeError:
            pass
    if t == 40:
        ex.cancel_order(None, params={"clientOrderId": "rest-11"})  # (an old client id: its order still open)
    if t == 47:
        ex.cancel_order(ex.fetch_order(None, params={"clientOrderId": "rest-2"})["id"])
    ex.advance(int(ts[t + 1]))


def _run(tensor, path, keep, until=None):
    ex = _exchange(tensor, path, keep)
    w = np.random.default_rng(1).dirichlet(np.ones(len(SYMBOLS) + 1), size=tensor.n_bars)[:, :len(SYMBOLS)]
    ex.advance(int(tensor.timestamps[1]))
    for t in range(1, (until or tensor.n_bars - 1)):
        _bar(ex, tensor, t, w[t])
    return ex, w


def _book_state(book: Book) -> dict:
    """Everything the book holds, comparable."""
    def plain(v):
        return v.state() if isinstance(v, ClientIdIndex) else list(v) if isinstance(v, (deque, array)) else v
    return {k: plain(getattr(book, k)) for k in Book.__slots__}


@pytest.fixture(params=[book_module.MARK_EVERY, 3], ids=["marks-default", "marks-every-3"])
def pair(request, tmp_path, monkeypatch):
    """A capped and an uncapped exchange after the same run (marks every 3: look-ups start mid-log;
    the compact client-id index merged every 8)."""
    monkeypatch.setattr(book_module, "MARK_EVERY", request.param)
    monkeypatch.setattr(ClientIdIndex, "MERGE", 8)
    tensor = _tensor()
    capped, _ = _run(tensor, tmp_path / "capped", KEEP)
    full, _ = _run(tensor, tmp_path / "full", None)
    yield tensor, capped, full
    capped.close()
    full.close()


def test_the_book_holds_at_most_keep_done_orders_and_trades(pair):
    tensor, capped, full = pair
    book = capped.book
    assert book.evicted_orders > 50 and full.book.n_trades > 4 * KEEP  # (the cap was reached many times)
    assert len(book.orders) - len(book.open) <= KEEP and len(book.trades) == KEEP
    assert len(book.client_ids) <= len(book.orders) and len(book.placed) == len(book.orders)
    assert [o["id"] for o in book.open.values()] == [o["id"] for o in full.book.open.values()]
    assert any(o["info"]["dueTs"] < book.now - 30 * H for o in book.open.values())  # an old resting order, held
    assert len(full.book.orders) == full.book.n_orders and len(full.book.trades) == full.book.n_trades


def test_every_order_by_id_and_by_client_id_equals_the_uncapped_exchanges(pair):
    tensor, capped, full = pair
    orders = full.fetch_orders()
    assert len(orders) == capped.book.n_orders == full.book.n_orders
    assert {o["status"] for o in orders} == {"open", "closed", "canceled", "rejected"}
    assert any(len(o["trades"]) > 1 for o in orders)  # (a limit order filled over several bars)
    for o in orders:
        assert capped.fetch_order(o["id"]) == o
        assert capped.fetch_order(None, params={"clientOrderId": o["clientOrderId"]}) == o
    first = orders[0]
    assert first["id"] == "paper-1" and first["id"] not in capped.book.orders  # read from the log
    for missing in ("paper-0", f"paper-{len(orders) + 1}", "other-3"):
        with pytest.raises(OrderNotFound):
            capped.fetch_order(missing)
    with pytest.raises(OrderNotFound):
        capped.fetch_order(None, params={"clientOrderId": "never-sent"})


def test_orders_and_trades_since_any_time_equal_the_uncapped_exchanges(pair):
    tensor, capped, full = pair
    ts = tensor.timestamps.tolist()
    assert capped.fetch_my_trades() == full.fetch_my_trades()
    assert capped.fetch_orders() == full.fetch_orders()
    oldest = capped.book.trades[0]["timestamp"]
    assert list(full.book.trades)[-KEEP - 1]["timestamp"] == oldest  # (the book starts inside a bar's trades)
    for since in [None, *ts, ts[0] - 1, oldest + 1, ts[-1] + H]:
        assert capped.fetch_my_trades(since=since) == full.fetch_my_trades(since=since), since
    for since in [None, ts[0] - 1, *ts[::4], *ts[-6:], oldest + 1, ts[-1] + H]:
        for symbol in (None, "SOL/USDT"):
            for limit in (None, 1, 7, 40):
                args = dict(symbol=symbol, since=since, limit=limit)
                assert capped.fetch_my_trades(**args) == full.fetch_my_trades(**args), args
                assert capped.fetch_orders(**args) == full.fetch_orders(**args), args
    mid = full.fetch_my_trades(since=ts[30])
    assert mid and mid[0]["timestamp"] >= ts[30] and mid[0]["id"] != "t1"


def test_an_old_client_id_sent_again_returns_its_first_order(pair):
    tensor, capped, full = pair
    n, events = capped.book.n_orders, capped.events.last_seq
    for cid in ("w-1-0", "a-5", "a-10", "lim-3", "w-21-1"):
        first = full.fetch_order(None, params={"clientOrderId": cid})
        assert first["id"] not in capped.book.orders
        if first["status"] == "rejected":
            with pytest.raises(ExchangeError, match="rejected"):
                capped.create_order("BTC/USDT", "market", "buy", None, params={"targetWeight": 0.9, "clientOrderId": cid})
            continue
        again = capped.create_order("BTC/USDT", "market", "buy", None, params={"targetWeight": 0.9, "clientOrderId": cid})
        assert again == first
    with pytest.raises(Exception) as refused:  # a refused order stays refused, with its reason
        capped.create_order("BTC/USDT", "market", "buy", 1.0, params={"clientOrderId": "bad-4"})
    with pytest.raises(type(refused.value)):
        full.create_order("BTC/USDT", "market", "buy", 1.0, params={"clientOrderId": "bad-4"})
    assert "rejected" in str(refused.value)
    assert (capped.book.n_orders, capped.events.last_seq) == (n, events)  # no new order, no event
    # ids keep counting past the orders the book let go
    new = capped.create_order("ETH/USDT", "market", "buy", None, params={"targetWeight": 0.1, "clientOrderId": "new"})
    same = full.create_order("ETH/USDT", "market", "buy", None, params={"targetWeight": 0.1, "clientOrderId": "new"})
    assert new == same and new["id"] == f"paper-{n + 1}"
    capped.advance(capped.now + H)
    full.advance(full.now + H)
    assert capped.fetch_my_trades()[-1] == full.fetch_my_trades()[-1]
    assert capped.book.n_trades == full.book.n_trades and capped.fetch_my_trades()[-1]["id"] == f"t{full.book.n_trades}"
    with pytest.raises(OrderNotFound, match="closed"):  # an old, done order cannot be cancelled
        capped.cancel_order("paper-1")


def test_status_and_state_at_equal_the_uncapped_exchanges(pair):
    tensor, capped, full = pair
    assert capped.status() == full.status()
    for k in (3, 21, 40, len(tensor.timestamps) - 1):
        assert capped.state_at(int(tensor.timestamps[k])) == full.state_at(int(tensor.timestamps[k]))
    assert capped.status()["n_trades"] == len(full.fetch_my_trades()) > KEEP


def test_a_restart_rebuilds_the_same_capped_book(pair, tmp_path):
    tensor, capped, full = pair
    capped.commit()
    again = _exchange(tensor, tmp_path / "capped", KEEP)
    assert _book_state(again.book) == _book_state(capped.book)
    assert again.fetch_my_trades() == full.fetch_my_trades() and again.fetch_orders() == full.fetch_orders()
    again.close()


def test_a_restarted_run_goes_on_as_an_uninterrupted_one(tmp_path):
    tensor = _tensor(40)
    w = np.random.default_rng(1).dirichlet(np.ones(len(SYMBOLS) + 1), size=tensor.n_bars)[:, :len(SYMBOLS)]
    ref, _ = _run(tensor, tmp_path / "ref", KEEP)
    ex, _ = _run(tensor, tmp_path / "cut", KEEP, until=25)
    ex.close()
    ex = _exchange(tensor, tmp_path / "cut", KEEP)
    for t in range(25, tensor.n_bars - 1):
        _bar(ex, tensor, t, w[t])
    assert _book_state(ex.book) == _book_state(ref.book)
    ex.close()
    ref.close()


def test_keep_history_zero_and_bad_values(tmp_path):
    tensor = _tensor(20)
    ex, _ = _run(tensor, tmp_path / "zero", 0)
    full, _ = _run(tensor, tmp_path / "full", None)
    assert not ex.book.trades and len(ex.book.orders) == len(ex.book.open)
    assert ex.fetch_orders() == full.fetch_orders() and ex.fetch_my_trades() == full.fetch_my_trades()
    ex.close()
    full.close()
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ConfigError, match="keep_history"):
            _exchange(tensor, tmp_path / "bad", bad)


class _Key:
    """A client id whose hash is chosen (collisions on purpose)."""

    def __init__(self, name, h):
        self.name, self.h = name, h

    def __hash__(self):
        return self.h


def test_the_client_id_index_returns_every_candidate_latest_first(monkeypatch):
    monkeypatch.setattr(ClientIdIndex, "MERGE", 5)
    index = ClientIdIndex()
    for seq in range(1, 11):
        index.add(_Key(f"k{seq}", seq % 3 - 2 ** 62), seq)  # 3 hashes: a collision merges the tail first
    for seq in range(11, 14):
        index.add(_Key(f"k{seq}", seq), seq)
    assert len(index) == 13 and index.state()[2] == {1 - 2 ** 62: 10, 11: 11, 12: 12, 13: 13}  # (the rest merged)
    assert index.get(_Key("x", 1 - 2 ** 62)) == [10, 7, 4, 1]
    assert index.get(_Key("x", 0 - 2 ** 62)) == [9, 6, 3]
    assert index.get(_Key("x", 5)) == [] and index.get(_Key("x", 11)) == [11] and index.get(_Key("x", 13)) == [13]
