"""``CcxtExchange``: the ``Exchange`` port over a real ccxt exchange, safe to retry, every step logged.

Keys come only from the environment or from a key file the user names, never from the command
line: ``FACTORGYM_<ID>_API_KEY``, ``FACTORGYM_<ID>_SECRET`` and ``FACTORGYM_<ID>_PASSWORD`` (ID in
capitals, e.g. ``FACTORGYM_BINANCE_API_KEY``), or a JSON file ``{"apiKey": ..., "secret": ...,
"password": ...}``. They are redacted from every event, log line and exception text this adapter
produces (exception texts of ccxt can hold the request's URL and parameters: URLs are stripped).

Orders carry a deterministic client order id (:func:`client_order_id` of run, bar, symbol and
attempt) in the exchange's own parameter (:data:`CLIENT_ID_PARAMS`). ccxt's ``maxRetriesOnFailure``
stays 0 (it would resend a POST blindly). After a network error or timeout on ``create_order`` the
outcome is *unknown*: the order is looked up by its client id (the look-up retried), then among the
open and the closed orders; found, it is the answer; absent, it is sent again with the *same* client
id (a duplicate is refused by the exchange and looked up again). ``InsufficientFunds``,
``InvalidOrder``, ``BadRequest`` and authentication errors are never retried: they are logged as an
``order_rejected`` event with their reason and raised as the port's error of the same name. Rate
limits: ccxt's throttle (``enableRateLimit``) plus exponential back-off on 429/418.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from factorgym.envs.live import exchange as port
from factorgym.envs.live.events import EventLog
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)

#: exchange id -> (ccxt parameter of the client order id, max length, form): "text" = [A-Za-z0-9]
#: starting with a letter, "uuid" = a UUID string, "int" = an integer (< 2**45), "gate" = "t-" + text
CLIENT_ID_PARAMS: dict[str, tuple[str, int, str]] = {
    "binance": ("newClientOrderId", 36, "text"),
    "binanceusdm": ("newClientOrderId", 36, "text"),
    "okx": ("clOrdId", 32, "text"),
    "bybit": ("orderLinkId", 36, "text"),
    "kraken": ("cl_ord_id", 18, "text"),
    "coinbase": ("client_order_id", 36, "uuid"),
    "kucoin": ("clientOid", 40, "text"),
    "bitget": ("clientOid", 40, "text"),
    "gate": ("text", 30, "gate"),
    "bitfinex": ("cid", 0, "int"),
}
DEFAULT_CLIENT_ID = ("clientOrderId", 32, "text")  # ccxt's unified parameter, elsewhere
LOGGERS = ("ccxt", "ccxt.base.exchange", "urllib3.connectionpool", "factorgym")  # redacted while an adapter is open
UNKNOWN = object()  # an order's outcome the exchange would not tell
NEVER_RETRY = ("InsufficientFunds", "InvalidOrder", "BadRequest", "AuthenticationError", "PermissionDenied",
               "AccountSuspended", "BadSymbol", "NotSupported")
_URL = re.compile(r"https?://\S+")
_QUERY_SECRET = re.compile(r"(?i)(api[-_]?key|signature|secret|password|passphrase|token)=[^&\s\"']+")


def client_order_id(exchange_id: str, run_id: str, bar_ts: int, symbol: str, attempt: int = 0) -> str | int:
    """The deterministic client order id of (run, bar, symbol, attempt) in the exchange's form."""
    _, limit, form = CLIENT_ID_PARAMS.get(exchange_id, DEFAULT_CLIENT_ID)
    digest = hashlib.sha256(f"{run_id}|{int(bar_ts)}|{symbol}|{int(attempt)}".encode()).digest()
    if form == "uuid":
        return str(uuid.UUID(bytes=digest[:16], version=4))
    if form == "int":
        return int.from_bytes(digest[:6], "big") >> 3  # 45 bits
    text = "fg" + digest.hex()
    if form == "gate":
        return "t-" + text[: limit - 2]
    return text[:limit]


def load_keys(exchange_id: str, key_file: str | Path | None = None,
              environ: dict[str, str] | None = None) -> dict[str, str]:
    """apiKey/secret/password from ``key_file`` (JSON) if given, else from the environment."""
    if key_file is not None:
        path = Path(key_file)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"key file {path} does not exist") from None
        except ValueError:
            raise ConfigError(f"key file {path} is not JSON of the form {{\"apiKey\": ..., \"secret\": ...}}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"key file {path}: expected a JSON object with apiKey and secret")
        return {k: str(data[k]) for k in ("apiKey", "secret", "password") if data.get(k)}
    env = os.environ if environ is None else environ
    prefix = f"FACTORGYM_{exchange_id.upper()}_"
    names = {"apiKey": "API_KEY", "secret": "SECRET", "password": "PASSWORD"}
    return {k: env[prefix + v] for k, v in names.items() if env.get(prefix + v)}


class _Redactor(logging.Filter):
    """Replaces the adapter's secrets (and secret-looking query values) in every record it sees."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = _QUERY_SECRET.sub(lambda m: m.group(1) + "=***", text)
        for secret in self.secrets:
            clean = clean.replace(secret, "***")
        if clean != text:
            record.msg, record.args = clean, ()
        return True


def _swap_hosts(urls: Any, base_url: str) -> Any:
    """``urls['api']`` with every URL's scheme and host replaced by ``base_url`` (paths kept)."""
    if isinstance(urls, dict):
        return {k: _swap_hosts(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str):
        return base_url.rstrip("/") + urlsplit(urls).path
    return urls


class CcxtExchange:
    """The port over ``ccxt.<exchange_id>``; see the module docstring.

    Args:
        exchange_id: a ccxt id (``"binance"``, ``"okx"``, ...).
        sandbox: use the exchange's testnet (a clear error where ccxt has none).
        key_file: JSON key file; default: the ``FACTORGYM_<ID>_*`` environment variables.
        base_url: send every API call here (testing hook: a loopback fake exchange).
        run_id, state_dir: the event log ``state_dir/events.sqlite`` and this run's name in it.
        markets: saved ccxt markets (skips ``load_markets``' request).
        timeout_ms: ccxt's request timeout.
        retries: tries of a retryable call (network errors, rate limits) before giving up.
        backoff: first back-off in seconds (doubled each try, capped at 30 s).
        options: extra ccxt ``options``.
    """

    def __init__(self, exchange_id: str, *, sandbox: bool = False, key_file: str | Path | None = None,
                 base_url: str | None = None, run_id: str, state_dir: str | Path, markets: dict | None = None,
                 timeout_ms: int = 10_000, retries: int = 6, backoff: float = 0.5, options: dict | None = None,
                 sleep: Callable[[float], None] = time.sleep, durable: bool = True) -> None:
        import ccxt

        self._ccxt = ccxt
        cls = getattr(ccxt, str(exchange_id), None)
        if exchange_id not in ccxt.exchanges or cls is None:
            raise ConfigError(f"exchange {exchange_id!r} is not a ccxt exchange id; see ccxt.exchanges")
        self.id = exchange_id
        self.run_id = str(run_id)
        keys = load_keys(exchange_id, key_file)
        self._secrets = [v for v in keys.values() if v]
        self.events = EventLog(Path(state_dir) / "events.sqlite", self.run_id, durable=durable)
        for s in self._secrets:
            self.events.add_secret(s)
        opts = {"maxRetriesOnFailure": 0, **(options or {})}
        if exchange_id.startswith("binance"):
            opts.setdefault("fetchMarkets", {"types": ["spot"]})
            opts.setdefault("fetchCurrencies", False)
            opts.setdefault("fetchMargins", False)
            opts.setdefault("warnOnFetchOpenOrdersWithoutSymbol", False)
        self.ex = cls({**keys, "enableRateLimit": True, "timeout": int(timeout_ms), "options": opts})
        self.ex.options["maxRetriesOnFailure"] = 0  # never resend a request blindly
        if sandbox:
            try:
                self.ex.set_sandbox_mode(True)
            except (TypeError, ccxt.NotSupported):
                raise ConfigError(f"exchange {exchange_id!r} has no sandbox/testnet in ccxt; run without --sandbox "
                                  f"(real money) or choose an exchange with a testnet") from None
        if base_url:
            self.ex.urls["api"] = _swap_hosts(self.ex.urls["api"], base_url)
        if markets is not None:
            self.ex.set_markets(markets)
        self.param, self.id_limit, self.id_form = CLIENT_ID_PARAMS.get(exchange_id, DEFAULT_CLIENT_ID)
        self.retries, self.backoff, self._sleep = int(retries), float(backoff), sleep
        self._log_filter = _Redactor(self._secrets)
        for name in LOGGERS:  # (ccxt's debug log prints the request headers, keys included)
            logging.getLogger(name).addFilter(self._log_filter)
        self._event("connect", exchange=exchange_id, sandbox=bool(sandbox), base_url=bool(base_url),
                    keys="present" if keys else "absent")

    # ------------------------------------------------------------------ the port
    @property
    def markets(self) -> dict[str, dict[str, Any]]:
        return self.ex.markets or {}

    def load_markets(self, reload: bool = False) -> dict[str, dict[str, Any]]:
        return self._call("load_markets", reload)

    def fetch_ohlcv(self, symbol, timeframe="1h", since=None, limit=None):
        return self._call("fetch_ohlcv", symbol, timeframe, since, limit)

    def fetch_balance(self) -> dict[str, Any]:
        balance = self._call("fetch_balance")
        self._event("balance", total={k: v for k, v in (balance.get("total") or {}).items() if v})
        return balance

    def fetch_order(self, id, symbol=None, params=None):
        return self._call("fetch_order", id, symbol, self._native(params))

    def fetch_open_orders(self, symbol=None, since=None, limit=None, params=None):
        return self._call("fetch_open_orders", symbol, since, limit, self._native(params))

    def fetch_closed_orders(self, symbol=None, since=None, limit=None, params=None):
        return self._call("fetch_closed_orders", symbol, since, limit, self._native(params))

    def fetch_my_trades(self, symbol=None, since=None, limit=None, params=None):
        return self._call("fetch_my_trades", symbol, since, limit, self._native(params))

    def cancel_order(self, id, symbol=None, params=None):
        self._event("cancel_requested", id=id, symbol=symbol)
        order = self._call("cancel_order", id, symbol, self._native(params))
        self._event("order_canceled", id=id, symbol=symbol, status=order.get("status"))
        return order

    def client_order_id(self, bar_ts: int, symbol: str, attempt: int = 0) -> str | int:
        """This run's client order id for (bar, symbol, attempt), in this exchange's form."""
        return client_order_id(self.id, self.run_id, bar_ts, symbol, attempt)

    def create_order(self, symbol, type, side, amount, price=None, params=None) -> dict[str, Any]:
        """Place an order idempotently (see the module docstring). ``params["clientOrderId"]`` is the
        client id (default: from the run, the current time and the symbol); ``params["exact"]`` and
        ``params["targetWeight"]`` (paper-only keys) are dropped."""
        params = dict(params or {})
        for key in ("exact", "targetWeight", "closePosition"):
            params.pop(key, None)
        cid = params.pop("clientOrderId", None)
        if cid is None:
            cid = self.client_order_id(int(time.time() * 1000), symbol)
        params[self.param] = cid
        self._event("order_intent", client_id=str(cid), symbol=symbol, type=type, side=side, amount=amount,
                    price=price)
        unknown = False
        for attempt in range(self.retries):
            try:
                order = self._raw("create_order", symbol, type, side, amount, price, dict(params))
                if not isinstance(order, dict) or not order.get("id") or order.get("status") is None:  # a 200 of garbage
                    raise self._ccxt.NetworkError("create_order answered without an order id")
            except self._ccxt.BaseError as exc:
                name = self._ccxt_name(exc)
                if unknown and name in ("InvalidOrder", "DuplicateOrderId", "BadRequest"):
                    found = self._reconcile(symbol, cid)  # (a resend refused as a duplicate: it was placed)
                    if isinstance(found, dict):
                        return found
                if name in NEVER_RETRY or not isinstance(exc, self._ccxt.OperationFailed):
                    self._event("order_rejected", client_id=str(cid), symbol=symbol, side=side, amount=amount,
                                reason=name, message=self._redact(str(exc)))
                    error = self._port_error(exc)
                    break
                unknown = True
                self._event("order_unknown", client_id=str(cid), symbol=symbol, attempt=attempt, error=name,
                            message=self._redact(str(exc)))
                self._pause(attempt, exc)
                found = self._reconcile(symbol, cid)
                if isinstance(found, dict):
                    return found
                if found is UNKNOWN:  # no definite answer: resending could double it
                    self._event("order_gave_up", client_id=str(cid), symbol=symbol, tries=attempt + 1)
                    error = port.NetworkError(f"{self.id}: order {cid} for {symbol}: its outcome is unknown (the "
                                              f"exchange did not answer the look-ups); look it up by its client id")
                    break
                self._event("order_resent", client_id=str(cid), symbol=symbol, attempt=attempt + 1)
                continue
            self._event("order_accepted", client_id=str(cid), symbol=symbol, id=str(order["id"]),
                        status=order.get("status"), filled=order.get("filled"), average=order.get("average"))
            return order
        else:
            self._event("order_gave_up", client_id=str(cid), symbol=symbol, tries=self.retries)
            error = port.NetworkError(f"{self.id}: order {cid} for {symbol}: no answer after {self.retries} tries; "
                                      f"its outcome is unknown (look it up by its client id)")
        raise error

    def close(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)
        self.events.close()

    # ------------------------------------------------------------------ internals
    def _reconcile(self, symbol: str, cid: Any) -> Any:
        """The order with client id ``cid``: by client id (retried), then among the open and the closed
        orders. None only on a definite answer that the exchange does not have it (safe to resend
        with the same id); :data:`UNKNOWN` when no answer could be had (never resend then)."""
        definite = False
        for attempt in range(self.retries):
            try:
                order = self._raw("fetch_order", None, symbol, {"clientOrderId": cid, self._lookup_param(): cid})
                if not isinstance(order, dict) or not order.get("id") or order.get("status") is None:
                    raise self._ccxt.NetworkError("fetch_order answered without an order")  # (a 200 of garbage)
                self._event("order_reconciled", client_id=str(cid), symbol=symbol, via="fetch_order",
                            id=str(order.get("id")), status=order.get("status"), filled=order.get("filled"))
                return order
            except self._ccxt.OrderNotFound:
                definite = True
                break
            except (self._ccxt.OperationFailed, self._ccxt.ExchangeError) as exc:
                if not isinstance(exc, self._ccxt.OperationFailed):
                    break  # (the exchange cannot look orders up by client id: the lists must answer)
                self._event("lookup_retry", client_id=str(cid), attempt=attempt, error=self._ccxt_name(exc))
                self._pause(attempt, exc)
        lists_read = 0
        for call, capability in (("fetch_open_orders", "fetchOpenOrders"), ("fetch_closed_orders", "fetchClosedOrders")):
            if not self.ex.has.get(capability):
                continue
            try:
                orders = self._call(call, symbol)
            except (port.ExchangeError, port.NetworkError):
                continue
            lists_read += 1
            for order in orders:
                if str(order.get("clientOrderId")) == str(cid) and order.get("id") and order.get("status"):
                    self._event("order_reconciled", client_id=str(cid), symbol=symbol, via=call,
                                id=str(order.get("id")), status=order.get("status"), filled=order.get("filled"))
                    return order
        if definite or lists_read == 2:
            self._event("order_absent", client_id=str(cid), symbol=symbol)
            return None
        self._event("order_outcome_unknown", client_id=str(cid), symbol=symbol)
        return UNKNOWN

    def _lookup_param(self) -> str:
        return "origClientOrderId" if self.id.startswith("binance") else self.param

    def _call(self, name: str, *args: Any) -> Any:
        """A read (or cancel) with retries on network errors and rate limits; errors as the port's."""
        error: BaseException | None = None
        for attempt in range(self.retries):
            try:
                return self._raw(name, *args)
            except self._ccxt.OperationFailed as exc:  # (NetworkError and Binance's -1000 "unknown error")
                self._event("retry", call=name, attempt=attempt, error=self._ccxt_name(exc),
                            message=self._redact(str(exc)))
                self._pause(attempt, exc)
                error = port.NetworkError(f"{self.id}.{name}: {self._redact(str(exc))} (after {attempt + 1} tries)")
            except self._ccxt.BaseError as exc:
                self._event("error", call=name, error=self._ccxt_name(exc), message=self._redact(str(exc)))
                error = self._port_error(exc)
                break
        raise error  # (outside the except blocks: no ccxt exception chained to it)

    def _raw(self, name: str, *args: Any) -> Any:
        """``self.ex.<name>(*args)``; a garbled answer that ccxt fails to parse (a 200 of HTML or cut
        JSON can raise TypeError, AttributeError, ...) becomes a ``NetworkError``: the outcome is unknown."""
        try:
            return getattr(self.ex, name)(*args)
        except self._ccxt.BaseError:
            raise
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            failure = self._ccxt.NetworkError(f"{self.id}.{name}: unreadable answer ({type(exc).__name__})")
        raise failure

    def _pause(self, attempt: int, exc: BaseException) -> None:
        wait = min(self.backoff * 2 ** attempt, 30.0)
        if isinstance(exc, (self._ccxt.DDoSProtection, self._ccxt.RateLimitExceeded)):
            wait = max(wait, 1.0)
        self._sleep(wait)

    def _native(self, params: dict | None) -> dict:
        params = dict(params or {})
        cid = params.pop("clientOrderId", None)
        if cid is not None:
            params["clientOrderId"] = cid
            params[self._lookup_param()] = cid
        return params

    def _ccxt_name(self, exc: BaseException) -> str:
        for cls in type(exc).__mro__:
            if getattr(port, cls.__name__, None) is not None and cls.__name__ not in ("Exception", "BaseException"):
                return type(exc).__name__ if type(exc).__name__ in NEVER_RETRY else cls.__name__
        return type(exc).__name__

    def _port_error(self, exc: BaseException) -> BaseException:
        """The port's error of the nearest ccxt class name, with secrets and URLs stripped."""
        for cls in type(exc).__mro__:
            mine = getattr(port, cls.__name__, None)
            if isinstance(mine, type) and issubclass(mine, Exception) and mine.__module__ == port.__name__:
                return mine(self._redact(str(exc)))
        return port.ExchangeError(self._redact(str(exc)))

    def _redact(self, text: str) -> str:
        text = _URL.sub("<url>", text)
        text = _QUERY_SECRET.sub(lambda m: m.group(1) + "=***", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:500]

    def _event(self, kind: str, **data: Any) -> None:
        self.events.append(kind, int(time.time() * 1000), **data)
