"""PaperExchange: fills against hand-worked numbers and ``process_order``, equality with ``backtest()``
at every bar, idempotent client ids, rejections as events, replay of the log, ccxt's structures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs.backtest import backtest
from factorgym.envs.config import ExecutionConfig
from factorgym.envs.execution import Slippage, market_rules, process_order
from factorgym.envs.live.exchange import BadSymbol, Exchange, InsufficientFunds, InvalidOrder
from factorgym.envs.live.paper import PaperExchange, engine_config

H = 3_600_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


def _tensor(T=80, seed=0, gaps=True, funding=False) -> FactorTensor:
    rng = np.random.default_rng(seed)
    A = len(SYMBOLS)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0)) * np.array([1.0, 0.5, 0.2])
    open_ = close * np.exp(rng.normal(0, 0.002, (T, A)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, (T, A)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, (T, A)))
    volume = rng.uniform(50, 500, (T, A))
    prices = np.stack([open_, high, low, close, volume], axis=-1)
    tradable = np.ones((T, A), bool)
    if gaps:
        tradable[20:23, 1] = False  # a gap of three bars in ETH
        tradable[T - 5, 2] = False
    rates = rng.normal(0, 1e-4, (T, A)) if funding else None
    return FactorTensor.from_arrays(rng.normal(size=(T, A, 2)), prices, np.arange(T) * H, symbols=SYMBOLS,
                                    tradable=tradable, funding=rates)


def _weights(T, A, long_only, seed=1):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(A + 1), size=T)[:, :A]
    if not long_only:
        w = w * rng.choice([-1.5, 1.5], size=(T, A))
    w[::7] = 0.0  # exact closes
    w[5::11, 0] = np.nan  # holds
    return w


def _run_paper(tensor, weights, tmp_path, *, execution, long_only, start, initial_cash=10_000.0, **kw):
    ex = PaperExchange(tensor, execution=execution, initial_cash=initial_cash, state_dir=tmp_path, long_only=long_only,
                       **kw)
    ts = tensor.timestamps
    T = len(ts)
    equity = [initial_cash]
    ex.advance(int(ts[start + 1]))
    for k, t in enumerate(range(start, T - 1)):
        ex.record_decision(int(ts[t]), f"obs{t}", weights[k])
        for i, sym in enumerate(tensor.symbols):
            if not math.isnan(weights[k, i]):
                ex.create_order(sym, "market", "buy", None, params={"targetWeight": float(weights[k, i]),
                                                                   "clientOrderId": f"r-{t}-{i}"})
        ex.advance(int(ts[t + 1]) + H)
        equity.append(ex.status()["equity"])
    return ex, np.array(equity)


@pytest.mark.parametrize("long_only,funding,keep", [(True, False, 10_000), (False, True, 10_000), (False, True, 3)])
def test_weight_orders_equal_backtest_at_every_bar(tmp_path, long_only, funding, keep):
    tensor = _tensor(funding=funding)
    execution = ExecutionConfig(slippage_bps=2.0, lot_step=0.001, min_notional=5.0, price_step=0.01,
                                borrow_rate_per_bar=2e-5, max_leverage=1.0 if long_only else 2.0,
                                maintenance_margin=0.05, on_untradable="close" if funding else "freeze")
    start = 0
    w = _weights(tensor.n_bars, 3, long_only)
    calls = iter(range(10**9))

    def policy(obs):
        return w[next(calls)]

    res = backtest(tensor, policy, mapping="direct", execution=execution, env_kwargs={"long_only": long_only})
    ex, equity = _run_paper(tensor, w, tmp_path, execution=execution, long_only=long_only, start=start,
                            keep_history=keep)  # (3: the book holds 3 trades, the rest is read from the log)
    assert res.info["status"] == "ok"
    assert len(equity) == len(res.equity)
    np.testing.assert_array_equal(equity, res.equity)  # bit for bit (the env's own phase functions)
    np.testing.assert_array_equal(ex.status()["cash"], res.cash[-1])
    np.testing.assert_array_equal(list(ex.status()["positions"].values()), res.positions[-1])
    assert len(ex.fetch_my_trades()) == len(res.trades)
    trades = res.trades
    mine = ex.fetch_my_trades()
    np.testing.assert_array_equal([t["price"] for t in mine], trades["price"].to_numpy())
    np.testing.assert_array_equal([t["fee"]["cost"] for t in mine], trades["fee"].to_numpy())


def test_balance_totals_are_fetch_balances_totals_at_every_bar(tmp_path):
    """The loop reads the account through ``balance_totals`` (no ccxt structure): the same numbers as
    ``fetch_balance()["total"]``, shorts included, in a dict the caller may change."""
    tensor = _tensor()
    w = _weights(tensor.n_bars, 3, long_only=False)
    ex = PaperExchange(tensor, execution=ExecutionConfig(max_leverage=2.0), initial_cash=10_000.0, state_dir=tmp_path,
                       long_only=False)
    ts = tensor.timestamps
    ex.advance(int(ts[1]))
    seen_short = False
    for t in range(1, 30):
        for i, sym in enumerate(tensor.symbols):
            if not math.isnan(w[t, i]):
                ex.create_order(sym, "market", "buy", None, params={"targetWeight": float(w[t, i]), "clientOrderId": f"b{t}-{i}"})
        ex.advance(int(ts[t + 1]))
        totals = ex.balance_totals()
        assert totals == ex.fetch_balance()["total"]
        assert list(totals) == ["USDT", *(s.split("/")[0] for s in tensor.symbols)]
        seen_short |= min(list(totals.values())[1:]) < 0
        totals["USDT"] = -1.0
        assert ex.fetch_balance()["total"]["USDT"] != -1.0
    assert seen_short


def test_a_liquidation_equals_backtest_and_is_a_fill_event(tmp_path):
    tensor = _tensor(T=40, gaps=False)
    tensor.prices[25:, 2, :4] *= 1.48  # SOL gaps up 48 % while the account is short 1.9x its equity in it
    execution = ExecutionConfig(max_leverage=2.0, maintenance_margin=0.05)
    w = np.tile([0.0, 0.0, -1.9], (40, 1))
    calls = iter(range(10**9))
    res = backtest(tensor, lambda obs: w[next(calls)], mapping="direct", execution=execution,
                   env_kwargs={"long_only": False})
    ex, equity = _run_paper(tensor, w, tmp_path, execution=execution, long_only=False, start=0)
    assert res.info["status"] == "liquidated"
    np.testing.assert_array_equal(equity[:len(res.equity)], res.equity)
    bars = [e.data for e in ex.events if e.kind == "bar"]
    assert bars[len(res.equity) - 2]["status"] == "liquidated"
    liquidations = [e.data["trade"] for e in ex.events if e.kind == "fill" and e.data["trade"]["info"]["kind"] == "liquidation"]
    assert [t["symbol"] for t in liquidations[:1]] == ["SOL/USDT"] and liquidations[0]["side"] == "buy"
    mine = ex.fetch_my_trades()[:len(res.trades)]
    np.testing.assert_array_equal([t["price"] for t in mine], res.trades["price"].to_numpy())


def test_engine_config_is_the_envs(tmp_path):
    from factorgym.envs.core import PortfolioCore
    from factorgym.envs.config import RewardConfig
    from factorgym.envs.layouts import CONFIG
    tensor = _tensor()
    execution = ExecutionConfig(slippage_bps=3.0, lot_step=0.01, min_notional=10.0, borrow_rate_per_bar=1e-5)
    core = PortfolioCore(tensor, 1, window=1, scheme="direct", execution=execution, reward=RewardConfig(),
                         initial_cash=5000.0, long_only=False)
    mine = engine_config(execution, SYMBOLS, tensor.meta, initial_cash=5000.0, long_only=False)
    used = [CONFIG.fixed_slippage, CONFIG.impact, CONFIG.impact_exponent, CONFIG.borrow_rate, CONFIG.max_leverage,
            CONFIG.maintenance_margin, CONFIG.initial_cash, CONFIG.long_only, CONFIG.close_untradable]
    np.testing.assert_array_equal(mine[used], core.config[used])
    n = len(CONFIG)
    np.testing.assert_array_equal(mine[n:], core.config[n:n + len(mine) - n])


def _one_asset(tmp_path, execution, **kw):
    T = 6
    prices = np.zeros((T, 1, 5))
    prices[..., 0] = [[100.0], [101.0], [102.0], [103.0], [104.0], [105.0]]
    prices[..., 1] = prices[..., 0] + 2
    prices[..., 2] = prices[..., 0] - 2
    prices[..., 3] = prices[..., 0] + 0.5
    prices[..., 4] = 400.0
    tensor = FactorTensor.from_arrays(np.zeros((T, 1, 1)), prices, np.arange(T) * H, symbols=["BTC/USDT"])
    return tensor, PaperExchange(tensor, execution=execution, state_dir=tmp_path, **kw)


def test_amount_order_fills_as_worked_by_hand_and_as_process_order(tmp_path):
    # fee 10 bps, fixed slippage 10 bps + 0 spread, impact 0.01 x sqrt(q / volume), lot 0.001
    execution = ExecutionConfig(taker_fee=0.001, slippage_bps=10.0, half_spread_bps=0.0, impact_coef=0.01,
                                lot_step=0.001, use_market_rules=False)
    tensor, ex = _one_asset(tmp_path, execution)
    ex.advance(H)  # decision at the close of bar 0; fills at bar 1's open = 101
    order = ex.create_order("BTC/USDT", "market", "buy", 4.0004, params={"clientOrderId": "x1"})
    assert order["status"] == "open" and order["amount"] == 4.0004
    ex.advance(2 * H)
    q = 4.0  # 4.0004 rounded down to the lot
    slip = 0.001 + 0.01 * math.sqrt(q / 400.0)  # 0.002
    price = 101.0 * (1 + slip)  # 101.202
    fee = q * price * 0.001
    cash = 10_000.0 - (q * price + fee)
    assert price == pytest.approx(101.202, rel=1e-12)
    trade = ex.fetch_my_trades()[0]
    assert trade["amount"] == q and trade["price"] == pytest.approx(price, rel=1e-15)
    assert trade["fee"]["cost"] == pytest.approx(fee, rel=1e-15)
    assert ex.fetch_balance()["USDT"]["total"] == pytest.approx(cash, rel=1e-15)
    assert ex.fetch_balance()["BTC"]["total"] == q
    # the same order through process_order called directly: identical floats
    c, p, r = process_order(10_000.0, 0.0, 4.0004, 101.0, 1 / 400.0, market_rules(0.001, 0.001), Slippage(0.001, 0.01, 0.5))
    assert (ex.fetch_balance()["USDT"]["total"], ex.fetch_balance()["BTC"]["total"]) == (c, p)
    assert (trade["price"], trade["fee"]["cost"]) == (r.price, r.fee)
    done = ex.fetch_order(order["id"])
    assert done["status"] == "closed" and done["filled"] == q and done["remaining"] == pytest.approx(0.0004)
    # equity at bar 1's close: cash + q x close
    assert ex.status()["equity"] == pytest.approx(cash + q * 101.5, rel=1e-15)


def test_participation_cap_keeps_or_cancels_the_remainder(tmp_path):
    execution = ExecutionConfig.frictionless()
    for remainder, expect, status in (("keep", [40.0, 40.0, 10.0], "closed"), ("cancel", [40.0], "canceled")):
        tensor, ex = _one_asset(tmp_path / remainder, execution, participation=0.1, remainder=remainder)
        ex.advance(H)
        o = ex.create_order("BTC/USDT", "market", "buy", 90.0 if remainder == "keep" else 60.0)
        ex.advance(5 * H)  # volume 400 a bar: at most 40 a bar
        assert [t["amount"] for t in ex.fetch_my_trades()] == expect
        assert ex.fetch_order(o["id"])["status"] == status
        assert ex.fetch_balance()["BTC"]["total"] == sum(expect)


def test_latency_delays_the_fill(tmp_path):
    tensor, ex = _one_asset(tmp_path, ExecutionConfig.frictionless(), latency_bars=2)
    ex.advance(H)
    ex.create_order("BTC/USDT", "market", "buy", 1.0)
    ex.advance(3 * H)
    assert ex.fetch_my_trades() == []
    ex.advance(4 * H)
    assert [t["price"] for t in ex.fetch_my_trades()] == [103.0]  # the open of bar 3 = 1 + 2 bars late


def test_client_order_id_is_idempotent(tmp_path):
    tensor, ex = _one_asset(tmp_path, ExecutionConfig.frictionless())
    ex.advance(H)
    a = ex.create_order("BTC/USDT", "market", "buy", 1.0, params={"clientOrderId": "same"})
    b = ex.create_order("BTC/USDT", "market", "buy", 1.0, params={"clientOrderId": "same"})
    assert a["id"] == b["id"] and len(ex.fetch_open_orders()) == 1
    ex.advance(2 * H)
    c = ex.create_order("BTC/USDT", "market", "buy", 1.0, params={"clientOrderId": "same"})
    assert c["id"] == a["id"] and c["status"] == "closed"
    assert len(ex.fetch_my_trades()) == 1 and ex.fetch_balance()["BTC"]["total"] == 1.0


def test_rejections_are_events_with_reasons(tmp_path):
    execution = ExecutionConfig.frictionless(lot_step=0.01, min_notional=50.0)
    tensor, ex = _one_asset(tmp_path, execution)
    ex.advance(H)
    with pytest.raises(BadSymbol):
        ex.create_order("DOGE/USDT", "market", "buy", 1.0, params={"clientOrderId": "delisted"})
    with pytest.raises(InvalidOrder):
        ex.create_order("BTC/USDT", "market", "buy", 0.001, params={"clientOrderId": "dust"})
    with pytest.raises(InsufficientFunds):
        ex.create_order("BTC/USDT", "market", "buy", 1000.0, params={"clientOrderId": "rich"})
    with pytest.raises(InvalidOrder):
        ex.create_order("BTC/USDT", "stop", "buy", 1.0, 100.0)  # (an unsupported type)
    with pytest.raises(InsufficientFunds):  # the same client id again: the same answer, no new event
        ex.create_order("BTC/USDT", "market", "buy", 1000.0, params={"clientOrderId": "rich"})
    small = ex.create_order("BTC/USDT", "market", "buy", 0.2)  # 0.2 x 101 < 50: refused at the fill
    ex.advance(2 * H)
    rejected = [e.data for e in ex.events if e.kind == "order_rejected"]
    assert [r["reason"] for r in rejected] == ["BadSymbol", "InvalidOrder", "InsufficientFunds", "InvalidOrder"]
    done = ex.fetch_order(small["id"])
    assert done["status"] == "rejected" and "min" in done["info"]["reason"]
    assert ex.fetch_balance()["USDT"]["total"] == 10_000.0


def test_replay_of_the_log_gives_identical_state(tmp_path):
    tensor = _tensor(T=40, funding=True)
    execution = ExecutionConfig(borrow_rate_per_bar=1e-5, lot_step=0.001, max_leverage=2.0)
    w = _weights(40, 3, long_only=False)
    ex, _ = _run_paper(tensor, w, tmp_path, execution=execution, long_only=False, start=0)
    status, balance, trades = ex.status(), ex.fetch_balance(), ex.fetch_my_trades()
    orders = ex.fetch_orders()
    ex.close()
    again = PaperExchange(tensor, execution=execution, state_dir=tmp_path, long_only=False)
    import json
    replayed = again.status()
    assert json.dumps(replayed.pop("last_decision")) == json.dumps(status.pop("last_decision"))  # (NaN = hold)
    assert replayed == status
    assert again.fetch_balance() == balance and again.fetch_my_trades() == trades and again.fetch_orders() == orders
    # independent check: cash = initial - buys + sells - fees - borrow - funding
    flows = sum((-1 if t["side"] == "buy" else 1) * t["cost"] - t["fee"]["cost"] for t in trades)
    assert status["cash"] == pytest.approx(10_000.0 + flows - status["borrow"] - status["funding"], rel=1e-9)
    # a resumed exchange continues where it stopped
    assert again.now == ex.now


def test_state_at_is_the_time_machine(tmp_path):
    tensor = _tensor(T=30, gaps=False)
    w = _weights(30, 3, long_only=True)
    ex, equity = _run_paper(tensor, w, tmp_path, execution=ExecutionConfig(), long_only=True, start=0)
    for k in (1, 5, 17):
        # the state known at time ts[k + 1] is the state at the close of bar k
        past = ex.state_at(int(tensor.timestamps[k]) + H)
        assert past["equity"] == equity[k]
        assert past["time"] == int(tensor.timestamps[k]) + H


def test_resume_refuses_other_settings(tmp_path):
    from factorgym.errors import ConfigError
    tensor, ex = _one_asset(tmp_path, ExecutionConfig.frictionless())
    ex.close()
    with pytest.raises(ConfigError, match="other symbols or execution settings"):
        PaperExchange(tensor, execution=ExecutionConfig(), state_dir=tmp_path)


def test_structures_have_ccxt_shapes(tmp_path):
    ccxt = pytest.importorskip("ccxt")
    tensor, ex = _one_asset(tmp_path, ExecutionConfig(taker_fee=0.001, use_market_rules=False))
    assert isinstance(ex, Exchange)
    ex.advance(H)
    order = ex.create_order("BTC/USDT", "market", "buy", 2.0, params={"clientOrderId": "c1"})
    ex.advance(2 * H)
    order = ex.fetch_order(order["id"])
    unified = ccxt.Exchange().safe_order(dict(order))
    assert set(order) <= set(unified) | {"lastUpdateTimestamp"}
    for key in ("id", "clientOrderId", "symbol", "side", "amount", "filled", "remaining", "cost", "average", "status"):
        assert unified[key] == order[key], key
    assert unified["fee"]["cost"] == pytest.approx(order["fee"]["cost"])
    balance = ex.fetch_balance()
    raw = {"info": {}, **{c: {"free": balance[c]["free"], "used": balance[c]["used"]} for c in ("USDT", "BTC")}}
    safe = ccxt.Exchange().safe_balance(raw)
    for c in ("USDT", "BTC"):
        assert safe[c] == balance[c] and safe["total"][c] == balance["total"][c]
    trade = ex.fetch_my_trades()[0]
    assert set(trade) <= set(ccxt.Exchange().safe_trade(dict(trade)))
    assert ex.fetch_ohlcv("BTC/USDT", "1h")[-1] == [H, 101.0, 103.0, 99.0, 101.5, 400.0]


def test_structures_returned_are_the_callers_to_change(tmp_path):
    import copy

    tensor, ex = _one_asset(tmp_path, ExecutionConfig(taker_fee=0.001, use_market_rules=False))
    ex.advance(H)
    placed = ex.create_order("BTC/USDT", "market", "buy", 2.0, params={"clientOrderId": "c1"})
    ex.advance(2 * H)
    order, trades = ex.fetch_order(placed["id"]), ex.fetch_my_trades()
    before = copy.deepcopy((order, trades, ex.fetch_orders()))
    for o in (placed, order, *ex.fetch_orders()):
        o["info"]["x"], o["fee"]["cost"], o["fees"][0]["cost"], o["status"] = 1, -1.0, -1.0, "mine"
        for t in o["trades"]:
            t["fee"]["cost"], t["fees"][0]["cost"], t["info"]["kind"] = -1.0, -1.0, "mine"
    for t in trades:
        t["fee"]["cost"], t["fees"][0]["cost"], t["info"]["kind"], t["price"] = -1.0, -1.0, "mine", 0.0
    assert (ex.fetch_order(placed["id"]), ex.fetch_my_trades(), ex.fetch_orders()) == before
    assert order["trades"] and trades


def test_a_batch_commits_a_bars_orders_together_or_not_at_all(tmp_path):
    tensor, ex = _one_asset(tmp_path, ExecutionConfig.frictionless())
    ex.advance(H)
    with ex.batch():
        ex.record_decision(0, "h0", [0.5])
        ex.create_order("BTC/USDT", "market", "buy", 1.0, params={"clientOrderId": "b1"})
    n = ex.events.last_seq
    with pytest.raises(RuntimeError):
        with ex.batch():
            ex.create_order("BTC/USDT", "market", "buy", 2.0, params={"clientOrderId": "b2"})
            raise RuntimeError("killed mid-bar")
    assert ex.events.last_seq == n and [o["clientOrderId"] for o in ex.fetch_open_orders()] == ["b1"]
    ex.advance(2 * H)
    assert ex.fetch_balance()["BTC"]["total"] == 1.0


_RESUMABLE_LOOP = """
import sys, numpy as np
sys.path.insert(0, sys.argv[3])
from test_paper_exchange import _tensor, _weights, H
from factorgym.envs.config import ExecutionConfig
from factorgym.envs.live.paper import PaperExchange
tensor = _tensor(T=40, funding=True)
w = _weights(40, 3, long_only=False)
ex = PaperExchange(tensor, execution=ExecutionConfig(borrow_rate_per_bar=1e-5, lot_step=0.001, max_leverage=2.0),
                   state_dir=sys.argv[1], long_only=False, durable=False, group_commit=int(sys.argv[4]))
ts = [int(x) for x in tensor.timestamps]
if ex.now is None:
    ex.advance(ts[1])
stop = int(sys.argv[2])
while ex.now <= ts[-1]:
    t = ts.index(ex.now) - 1  # the decision bar whose close is now
    with ex.batch():
        for i, sym in enumerate(tensor.symbols):  # (idempotent: a resumed bar returns the same orders)
            if not np.isnan(w[t, i]):
                ex.create_order(sym, "market", "buy", None, params={"targetWeight": float(w[t, i]),
                                                                   "clientOrderId": f"r-{t}-{i}"})
    ex.advance(ex.now + H)
    if t == stop:
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
print(repr(ex.status()["equity"]))
"""


@pytest.mark.parametrize("group_commit", [1, 5])  # 5: the kills lose committed-later batches, recomputed
def test_sigkilled_runs_resume_to_the_uninterrupted_equity(tmp_path, subprocess_env, group_commit):
    import subprocess
    import sys
    from pathlib import Path
    here = str(Path(__file__).parent)

    def run(state, stop):
        return subprocess.run([sys.executable, "-c", _RESUMABLE_LOOP, str(state), str(stop), here, str(group_commit)],
                              capture_output=True, text=True, timeout=300, env=subprocess_env)

    whole = run(tmp_path / "whole", -1)
    assert whole.returncode == 0, whole.stderr
    for stop in (3, 17, 30):  # killed right after settling these bars, then restarted
        assert run(tmp_path / "killed", stop).returncode == -9
        tensor = _tensor(T=40, funding=True)
        ex = PaperExchange(tensor, execution=ExecutionConfig(borrow_rate_per_bar=1e-5, lot_step=0.001, max_leverage=2.0),
                           state_dir=tmp_path / "killed", long_only=False)
        ids = [o["clientOrderId"] for o in ex.fetch_orders()]
        assert len(ids) == len(set(ids))  # no order placed twice
        ex.close()
    last = run(tmp_path / "killed", -1)
    assert last.returncode == 0, last.stderr
    assert last.stdout == whole.stdout  # the same final equity, to the last bit


@pytest.mark.parametrize("since, limit", [(None, None), (None, 5), (21 * H, None), (19 * H, 3), (0, 0), (500 * H, None)])
def test_ohlcv_arrays_are_fetch_ohlcvs_rows(tmp_path, since, limit):
    tensor = _tensor(T=40)  # (ETH misses bars 20-22)
    ex = PaperExchange(tensor, state_dir=tmp_path)
    ex.advance(H)
    ex.advance(30 * H)
    for sym in SYMBOLS:
        got = ex.ohlcv_arrays(sym, "1h", since=since, limit=limit)
        rows = ex.fetch_ohlcv(sym, "1h", since=since, limit=limit)
        assert got["time"].dtype == np.int64 and got["close"].dtype == np.float64
        assert np.column_stack([got[k] for k in ("time", "open", "high", "low", "close", "volume")]).tolist() == rows
    assert len(ex.ohlcv_arrays("ETH/USDT", "1h")["time"]) == 27  # (30 closed bars, 3 missing)
    with pytest.raises(BadSymbol):
        ex.ohlcv_arrays("XRP/USDT", "1h")
    ex.close()


@pytest.mark.parametrize("since, limit", [(None, None), (None, 5), (19 * H, 3), (20 * H, 2), (0, 0), (500 * H, None)])
@pytest.mark.parametrize("symbols", [SYMBOLS, ["SOL/USDT", "ETH/USDT"], ["ETH/USDT"]])
def test_ohlcv_panel_holds_each_symbols_fetch_ohlcv_rows(tmp_path, since, limit, symbols):
    """The panel (any symbols, any order) is fetch_ohlcv's candles of each symbol, NaN where it has
    none; its times are the bars at which any of them traded (ETH alone misses 20-22: no rows)."""
    tensor = _tensor(T=40)  # (ETH misses bars 20-22)
    ex = PaperExchange(tensor, state_dir=tmp_path)
    ex.advance(H)
    ex.advance(30 * H)
    got = ex.ohlcv_panel(symbols, "1h", since=since, limit=limit)
    times, ohlcv = got["time"], got["ohlcv"]
    assert times.dtype == np.int64 and ohlcv.dtype == np.float64 and ohlcv.shape == (len(times), len(symbols), 5)
    for j, sym in enumerate(symbols):
        rows = [[t, *r] for t, r in zip(times.tolist(), ohlcv[:, j].tolist()) if not math.isnan(r[0])]
        full = ex.fetch_ohlcv(sym, "1h", since=since)
        assert rows == [c for c in full if c[0] in set(times.tolist())]  # (a limit cuts bar times, not candles)
        assert np.isnan(ohlcv[:, j]).all(axis=1).sum() == len(times) - len(rows)
    every = ex.ohlcv_panel(symbols, "1h", since=since)["time"].tolist()
    assert times.tolist() == (every if limit is None else every[:limit])
    assert every == sorted({c[0] for s in symbols for c in ex.fetch_ohlcv(s, "1h", since=since)})
    with pytest.raises(BadSymbol):
        ex.ohlcv_panel(["XRP/USDT"], "1h")
    ex.close()


def test_group_commit_defers_commits_and_commit_writes_them(tmp_path, monkeypatch):
    import sqlite3

    import factorgym.envs.live.events as events

    monkeypatch.setattr(events, "GROUP_COMMIT_S", 1e9)  # (a slow machine would commit the old batches)
    tensor = _tensor(T=40)
    w = _weights(40, 3, long_only=True)
    ex, _ = _run_paper(tensor, w, tmp_path / "g", execution=ExecutionConfig(), long_only=True, start=0,
                       group_commit=1000)

    def on_disk():
        db = sqlite3.connect(tmp_path / "g" / "events.sqlite")
        try:
            return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            db.close()

    n, status = ex.events.last_seq, ex.status()
    assert on_disk() == 0 and n > 100
    ex.commit()
    assert on_disk() == n
    ex.close()
    ref, _ = _run_paper(tensor, w, tmp_path / "one", execution=ExecutionConfig(), long_only=True, start=0)
    assert ref.events.last_seq == n and {**ref.status(), "last_decision": None} == {**status, "last_decision": None}
    ref.close()
    again = PaperExchange(tensor, execution=ExecutionConfig(), state_dir=tmp_path / "g")
    assert {**again.status(), "last_decision": None} == {**status, "last_decision": None}
    again.close()


def test_a_format_1_log_replays_to_the_same_account(tmp_path):
    """A run's log rewritten as format 1 wrote it (JSON text, no user_version) gives the same account,
    and the run goes on in format 1."""
    import json
    import sqlite3
    import zlib

    from factorgym.envs.live.events import decode

    tensor = _tensor(T=40, funding=True)
    execution = ExecutionConfig(borrow_rate_per_bar=1e-5, lot_step=0.001, max_leverage=2.0)
    w = _weights(40, 3, long_only=False)
    ex, _ = _run_paper(tensor, w, tmp_path, execution=execution, long_only=False, start=0)
    status, trades, orders = ex.status(), ex.fetch_my_trades(), ex.fetch_orders()
    ex.close()
    db = sqlite3.connect(tmp_path / "events.sqlite")
    rows = db.execute("SELECT run_id, seq, ts, kind, payload FROM events ORDER BY seq").fetchall()
    assert {type(r[4]) for r in rows} == {bytes, str}  # (format 2: both kinds of payload)
    db.execute("DELETE FROM events")
    crc = 0
    for run_id, seq, ts, kind, payload in rows:
        text = json.dumps(decode(payload), separators=(",", ":"))
        crc = zlib.crc32(f"{crc}|{seq}|{ts}|{kind}|{text}".encode())
        db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", (run_id, seq, ts, kind, text, crc))
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    again = PaperExchange(tensor, execution=execution, state_dir=tmp_path, long_only=False)
    assert again.events.format == 1 and again.events.repaired is None
    replayed = again.status()
    assert json.dumps(replayed.pop("last_decision")) == json.dumps(status.pop("last_decision"))  # (NaN = hold)
    assert replayed == status and again.fetch_my_trades() == trades and again.fetch_orders() == orders
    again.create_order("BTC/USDT", "market", "buy", None, params={"targetWeight": 0.1, "clientOrderId": "new"})
    again.close()
    db = sqlite3.connect(tmp_path / "events.sqlite")
    assert {t for (t,) in db.execute("SELECT typeof(payload) FROM events")} == {"text"}
    db.close()


# ---------------------------------------------------------------------- limit orders
def _limit_tensor():
    bars = [  # open, high, low, close, volume
        (100.0, 101.0, 99.0, 100.0, 1000.0),
        (100.0, 101.0, 99.5, 100.0, 1000.0),  # t1: low 99.5 does not trade through a 99 buy
        (100.0, 100.5, 98.0, 99.0, 1000.0),   # t2: low 98 < 99, open above: fills at the limit, 99
        (97.0, 98.0, 96.0, 97.0, 1000.0),     # t3: opens at 97, below a 98 buy: fills at the open
        (97.0, 103.0, 97.0, 102.0, 1000.0),   # t4: high 103 > 101: a 101 sell fills at 101
        (105.0, 106.0, 104.0, 105.0, 1000.0), # t5: opens at 105, above a 102 sell: fills at the open
        (105.0, 105.0, 40.0, 105.0, 1000.0),  # t6: trades through 50, but that buy was cancelled
        (105.0, 105.0, 105.0, 105.0, 1000.0),
    ]
    prices = np.array(bars)[:, None, :]
    return FactorTensor.from_arrays(np.zeros((len(bars), 1, 1)), prices, np.arange(len(bars)) * H, symbols=["BTC/USDT"])


def test_limit_orders_fill_at_the_limit_or_the_gapped_open_and_rest_until_then(tmp_path):
    tensor, ts, fee = _limit_tensor(), np.arange(8) * H, 0.001
    execution = ExecutionConfig(taker_fee=fee, slippage_bps=0.0, half_spread_bps=0.0, lot_step=0.0, min_notional=0.0)
    ex = PaperExchange(tensor, execution=execution, initial_cash=1000.0, state_dir=tmp_path)
    ex.advance(int(ts[1]))
    buy = ex.create_order("BTC/USDT", "limit", "buy", 1.0, 99.0, params={"clientOrderId": "b1"})
    assert buy["status"] == "open" and buy["price"] == 99.0 and buy["type"] == "limit" and buy["timeInForce"] == "GTC"
    ex.advance(int(ts[2]))  # bar t1 never reaches 99
    assert [o["id"] for o in ex.fetch_open_orders()] == [buy["id"]] and ex.fetch_balance()["total"]["USDT"] == 1000.0
    ex.close()
    ex = PaperExchange(tensor, execution=execution, initial_cash=1000.0, state_dir=tmp_path)  # restart: still open
    assert [o["id"] for o in ex.fetch_open_orders()] == [buy["id"]]
    ex.advance(int(ts[3]))
    cash = 1000.0 - 99.0 - 99.0 * fee
    done = ex.fetch_order(buy["id"])
    assert done["status"] == "closed" and done["filled"] == 1.0 and done["average"] == 99.0 and done["price"] == 99.0
    trade = ex.fetch_my_trades()[-1]
    assert (trade["price"], trade["amount"], trade["type"], trade["takerOrMaker"]) == (99.0, 1.0, "limit", "maker")
    assert math.isclose(trade["fee"]["cost"], 99.0 * fee, rel_tol=1e-12)
    assert math.isclose(ex.fetch_balance()["total"]["USDT"], cash, rel_tol=1e-12)
    ex.create_order("BTC/USDT", "limit", "buy", 2.0, 98.0)
    ex.advance(int(ts[4]))  # gaps down through 98: bought at the open, 97
    cash -= 2 * 97.0 * (1 + fee)
    assert ex.fetch_my_trades()[-1]["price"] == 97.0 and ex.fetch_balance()["total"]["BTC"] == 3.0
    ex.create_order("BTC/USDT", "limit", "sell", 2.0, 101.0)
    ex.advance(int(ts[5]))
    cash += 2 * 101.0 * (1 - fee)
    assert ex.fetch_my_trades()[-1]["price"] == 101.0
    ex.create_order("BTC/USDT", "limit", "sell", 1.0, 102.0)
    never = ex.create_order("BTC/USDT", "limit", "buy", 1.0, 50.0)
    assert ex.cancel_order(never["id"])["status"] == "canceled"
    ex.advance(int(ts[7]))  # t5 gaps up through 102: sold at the open, 105; t6 trades through 50: nothing
    cash += 105.0 * (1 - fee)
    assert [t["price"] for t in ex.fetch_my_trades()] == [99.0, 97.0, 101.0, 105.0]
    assert ex.fetch_open_orders() == [] and ex.fetch_order(never["id"])["filled"] == 0.0
    bal = ex.fetch_balance()["total"]
    assert bal["BTC"] == 0.0 and math.isclose(bal["USDT"], cash, rel_tol=1e-12)
    kinds = [e.kind for e in ex.events]
    assert kinds.count("order_accepted") == 5 and kinds.count("fill") == 4 and kinds.count("order_done") == 5
    ex.close()
    again = PaperExchange(tensor, execution=execution, initial_cash=1000.0, state_dir=tmp_path)  # the log replays it
    assert again.fetch_balance()["total"] == bal and len(again.fetch_my_trades()) == 4
    again.close()


@pytest.mark.parametrize("args, why", [
    (("limit", "buy", 1.0, None, {}), "price"),
    (("limit", "buy", 1.0, -5.0, {}), "price"),
    (("limit", "buy", None, 99.0, {"targetWeight": 0.5}), "takes an amount"),
    (("stop", "buy", 1.0, 99.0, {}), "not supported"),
    (("limit", "buy", 20.0, 99.0, {}), "costs about"),  # 20 x 99 > 1000 of cash
])
def test_bad_limit_orders_are_refused_and_logged(tmp_path, args, why):
    ex = PaperExchange(_limit_tensor(), initial_cash=1000.0, state_dir=tmp_path)
    ex.advance(H)
    type_, side, amount, price, params = args
    with pytest.raises((InvalidOrder, InsufficientFunds), match=why):
        ex.create_order("BTC/USDT", type_, side, amount, price, params=params)
    assert ex.events.last().kind == "order_rejected" and ex.fetch_open_orders() == []
    ex.close()


def test_a_capped_limit_order_fills_over_several_bars_then_closes(tmp_path):
    execution = ExecutionConfig(taker_fee=0.0, slippage_bps=0.0, half_spread_bps=0.0, lot_step=0.0, min_notional=0.0)
    ex = PaperExchange(_limit_tensor(), execution=execution, initial_cash=1000.0, state_dir=tmp_path,
                       participation=0.001)  # 0.001 x 1000 volume: 1 unit a bar
    ex.advance(H)
    order = ex.create_order("BTC/USDT", "limit", "buy", 2.5, 99.0)
    ex.advance(3 * H)  # t1 stays above 99; t2 trades through: 1 at 99
    mid = ex.fetch_order(order["id"])
    assert (mid["status"], mid["filled"], mid["remaining"]) == ("open", 1.0, 1.5)
    ex.advance(5 * H)  # t3 and t4 open at 97, below the limit: 1 and then the last 0.5 at 97
    done = ex.fetch_order(order["id"])
    assert done["status"] == "closed" and [t["amount"] for t in done["trades"]] == [1.0, 1.0, 0.5]
    assert [t["price"] for t in done["trades"]] == [99.0, 97.0, 97.0]
    assert math.isclose(done["average"], (99.0 + 97.0 * 1.5) / 2.5, rel_tol=1e-12)
    assert math.isclose(ex.fetch_balance()["total"]["USDT"], 1000.0 - 99.0 - 97.0 * 1.5, rel_tol=1e-12)
    ex.close()
