"""CcxtExchange with ccxt's real ``binance`` class against the loopback fake: 20% faults on signed
requests (5xx, 429, timeouts after the order was booked, dropped connections), no order ever doubled,
rejections as events, the planted key nowhere, client ids within each exchange's rules."""

from __future__ import annotations

import json
import logging
import re
import sqlite3

import pytest

ccxt = pytest.importorskip("ccxt")

from factorgym.agents.live.ccxt_exchange import CLIENT_ID_PARAMS, CcxtExchange, client_order_id, load_keys  # noqa: E402
from factorgym.envs.live.exchange import BadSymbol, InsufficientFunds, InvalidOrder  # noqa: E402
from factorgym.errors import ConfigError  # noqa: E402
from tests.fake_exchange import FakeExchange  # noqa: E402

KEY = "PLANTEDKEYq3v9ZrT0pA1xY7wLkU4sN8bE2"
SECRET = "PLANTEDSECRETm5H6jD0cV9qW2eR7tY1uI3"
FAULTS = ("429", "500", "503", "504", "timeout", "disconnect")


GARBAGE = ("html", "truncated", "500", "timeout")  # 200s whose body is no order, among the others


@pytest.fixture(params=[FAULTS, GARBAGE], ids=["faults", "garbage"])
def fake(request):
    with FakeExchange(fault_rate=0.0, timeout_sleep=0.6, fault_kinds=request.param) as fx:
        fx.kinds = request.param
        fx.open_account(api_key=KEY, secret=SECRET, balances={"USDT": 1_000_000, "BTC": 1.0})
        yield fx


def _exchange(fx, tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("FACTORGYM_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("FACTORGYM_BINANCE_SECRET", SECRET)
    ex = CcxtExchange("binance", base_url=fx.url, run_id="run1", state_dir=tmp_path / "state", timeout_ms=300,
                      backoff=0.01, retries=8, **kw)
    ex.load_markets()
    return ex


def test_orders_under_20_percent_faults_are_never_doubled(fake, tmp_path, monkeypatch, caplog):
    ex = _exchange(fake, tmp_path, monkeypatch)
    fake.fault_rate = 0.2
    caplog.set_level(logging.DEBUG)
    outcomes = {}
    for bar in range(30):
        symbol = ("BTC/USDT", "ETH/USDT", "SOL/USDT")[bar % 3]
        amount = {"BTC/USDT": 0.001, "ETH/USDT": 0.01, "SOL/USDT": 1.0}[symbol]
        cid = ex.client_order_id(bar * 3_600_000, symbol)
        try:
            order = ex.create_order(symbol, "market", "buy", amount, params={"clientOrderId": cid})
            outcomes[cid] = order["status"]
        except (InsufficientFunds, InvalidOrder) as exc:
            outcomes[cid] = f"rejected: {type(exc).__name__}"
    fake.fault_rate = 0.0
    assert set(fake.fault_counts) == set(fake.kinds)  # every kind of fault did happen (kinds are taken in turn)
    # every intended order ended filled (or rejected with a reason) ...
    assert set(outcomes.values()) <= {"closed", "rejected: InsufficientFunds", "rejected: InvalidOrder"}
    assert list(outcomes.values()).count("closed") == 30
    # ... and the fake's own book holds each client id once
    assert all(len(ids) == 1 for ids in fake.account.book.values())
    assert sorted(fake.account.book) == sorted(outcomes)
    kinds = [e.kind for e in ex.events]
    assert kinds.count("order_intent") == 30 and "order_unknown" in kinds and "order_reconciled" in kinds
    _no_secret_anywhere(tmp_path, caplog.text)


def test_rejections_are_events_not_crashes(fake, tmp_path, monkeypatch):
    ex = _exchange(fake, tmp_path, monkeypatch)
    with pytest.raises(InsufficientFunds):
        ex.create_order("BTC/USDT", "market", "buy", 100.0, params={"clientOrderId": "fgrich"})
    with pytest.raises(InvalidOrder):
        ex.create_order("BTC/USDT", "market", "buy", 0.0000001, params={"clientOrderId": "fgdust"})
    fake.account.delisted.add("SOLUSDT")  # delisted after the markets were loaded
    with pytest.raises(BadSymbol):
        ex.create_order("SOL/USDT", "market", "buy", 1.0, params={"clientOrderId": "fggone"})
    rejected = [e.data for e in ex.events if e.kind == "order_rejected"]
    assert [r["reason"] for r in rejected] == ["InsufficientFunds", "InvalidOrder", "BadSymbol"]
    assert all(KEY not in r["message"] and SECRET not in r["message"] and "http" not in r["message"] for r in rejected)
    assert fake.account.book == {}  # nothing was booked, nothing retried
    # one request each, never retried (the dust order is refused by ccxt's own precision check, unsent)
    assert sum(1 for p, _, _ in fake.requests if p == "/api/v3/order") == 2
    # the loop goes on: a good order still works
    order = ex.create_order("ETH/USDT", "market", "buy", 0.01, params={"clientOrderId": "fgok"})
    assert order["status"] == "closed"


def test_a_wrong_key_is_an_authentication_error_without_the_key(fake, tmp_path, monkeypatch):
    from factorgym.envs.live.exchange import AuthenticationError
    monkeypatch.setenv("FACTORGYM_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("FACTORGYM_BINANCE_SECRET", "WRONGSECRETx7x7x7x7")
    ex = CcxtExchange("binance", base_url=fake.url, run_id="r", state_dir=tmp_path, timeout_ms=500, backoff=0.01)
    with pytest.raises(AuthenticationError) as info:
        ex.fetch_balance()
    assert "WRONGSECRET" not in str(info.value) and KEY not in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None  # no ccxt exception (with its URL) chained


def test_balance_trades_and_lookup_have_ccxt_shapes(fake, tmp_path, monkeypatch):
    ex = _exchange(fake, tmp_path, monkeypatch)
    order = ex.create_order("BTC/USDT", "market", "buy", 0.002, params={"clientOrderId": "fgshape"})
    assert order["clientOrderId"] == "fgshape" and order["filled"] == 0.002
    again = ex.fetch_order(None, "BTC/USDT", params={"clientOrderId": "fgshape"})
    assert again["id"] == order["id"]
    balance = ex.fetch_balance()
    assert balance["total"]["BTC"] == pytest.approx(1.002)
    trades = ex.fetch_my_trades("BTC/USDT")
    assert trades[0]["order"] == order["id"] and trades[0]["amount"] == 0.002


def test_keys_only_from_env_or_a_named_file(tmp_path):
    assert load_keys("binance", environ={"FACTORGYM_BINANCE_API_KEY": "k", "FACTORGYM_BINANCE_SECRET": "s"}) == \
        {"apiKey": "k", "secret": "s"}
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"apiKey": "k2", "secret": "s2"}))
    assert load_keys("binance", path, environ={}) == {"apiKey": "k2", "secret": "s2"}
    path.write_text("apiKey=k2")
    with pytest.raises(ConfigError, match="not JSON"):
        load_keys("binance", path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_keys("binance", tmp_path / "missing.json")


def test_sandbox_refusal_is_one_clear_line(tmp_path, monkeypatch):
    # coinbase (advanced) raises NotSupported, others TypeError: both become a ConfigError
    for error in (TypeError("set_sandbox_mode() takes no arguments"), ccxt.NotSupported("no testnet")):
        def refuse(self, enabled, _e=error):
            raise _e
        monkeypatch.setattr(ccxt.kraken, "set_sandbox_mode", refuse)
        with pytest.raises(ConfigError, match="no sandbox/testnet"):
            CcxtExchange("kraken", sandbox=True, run_id="r", state_dir=tmp_path)


def test_ccxt_retries_stay_off(fake, tmp_path, monkeypatch):
    ex = _exchange(fake, tmp_path, monkeypatch)
    assert ex.ex.options["maxRetriesOnFailure"] == 0


@pytest.mark.parametrize("exchange_id", sorted(CLIENT_ID_PARAMS))
def test_client_ids_are_deterministic_and_within_each_exchanges_rules(exchange_id):
    a = client_order_id(exchange_id, "run", 1_700_000_000_000, "BTC/USDT", 0)
    assert a == client_order_id(exchange_id, "run", 1_700_000_000_000, "BTC/USDT", 0)
    others = {client_order_id(exchange_id, "run", 1_700_000_000_000, s, k) for s in ("BTC/USDT", "ETH/USDT")
              for k in range(3)} | {client_order_id(exchange_id, "run2", 1_700_000_000_000, "BTC/USDT", 0)}
    assert len(others) == 7
    param, limit, form = CLIENT_ID_PARAMS[exchange_id]
    if form == "int":
        assert isinstance(a, int) and 0 <= a < 2 ** 45
    elif form == "uuid":
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", a)
    elif form == "gate":
        assert a.startswith("t-") and len(a) <= limit and re.fullmatch(r"t-[0-9a-z]+", a)
    else:
        assert len(a) <= limit and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", a)


def _no_secret_anywhere(tmp_path, log_text):
    for secret in (KEY, SECRET):
        assert secret not in log_text
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    db = sqlite3.connect(tmp_path / "state" / "events.sqlite")
    # format 2: per-bar kinds are MessagePack BLOBs, the others JSON text; scan both as bytes
    payloads = [row[0] if isinstance(row[0], bytes) else row[0].encode() for row in db.execute("SELECT payload FROM events")]
    db.close()
    blob = b"\n".join(payloads)
    assert KEY.encode() not in blob and SECRET.encode() not in blob


def test_no_answer_at_all_stops_without_resending(fake, tmp_path, monkeypatch):
    from factorgym.envs.live.exchange import NetworkError
    ex = _exchange(fake, tmp_path, monkeypatch)
    ex.retries = 3
    fake.fault_rate = 1.0  # every answer is a fault, after the order was booked
    with pytest.raises(NetworkError, match="outcome is unknown"):
        ex.create_order("BTC/USDT", "market", "buy", 0.001, params={"clientOrderId": "fgdark"})
    fake.fault_rate = 0.0
    assert len(fake.account.book.get("fgdark", [])) <= 1 and set(fake.account.book) <= {"fgdark"}  # never resent
    assert [e.kind for e in ex.events][-2:] == ["order_outcome_unknown", "order_gave_up"]
    if fake.account.book:  # (booked before its answer failed: found by its client id once the exchange answers)
        assert ex.fetch_order(None, "BTC/USDT", params={"clientOrderId": "fgdark"})["status"] == "closed"
