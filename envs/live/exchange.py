"""The ``Exchange`` port: what a trading loop needs from an exchange, in ccxt's unified names and shapes.

Two adapters implement it: :class:`factorgym.envs.live.paper.PaperExchange` (local, fills through
the engine's ``process_order``) and :class:`factorgym.agents.live.ccxt_exchange.CcxtExchange` (any
ccxt exchange). The loop (``LiveTradingEnv``) is written against this protocol only.

Structures (ccxt's, so a loop written for one adapter reads the other's answers):

- balance: ``{"free": {CUR: x}, "used": {CUR: x}, "total": {CUR: x}, CUR: {"free", "used", "total"},
  "info": {...}, "timestamp", "datetime"}``. Positions of a spot/margin account are the base-currency
  balances (a negative total is a short, under margin); the quote currency is the cash.
- order: ``{"id", "clientOrderId", "timestamp", "datetime", "lastTradeTimestamp", "symbol", "type",
  "timeInForce", "side", "price", "average", "amount", "filled", "remaining", "cost", "status"
  ("open" | "closed" | "canceled" | "rejected" | "expired"), "fee": {"cost", "currency"}, "fees",
  "trades", "reduceOnly", "postOnly", "stopPrice", "triggerPrice", "info"}``.
- trade: ``{"id", "order", "timestamp", "datetime", "symbol", "type", "side", "takerOrMaker",
  "price", "amount", "cost", "fee": {"cost", "currency"}, "fees", "info"}``.
- candle: ``[ms, open, high, low, close, volume]``.

``params["clientOrderId"]`` is the unified client order id: an adapter puts it in its exchange's own
parameter and returns the first order again when the same id is sent twice (idempotent retries).

Errors: the classes below, named and nested as ccxt's (``InsufficientFunds``, ``InvalidOrder``,
``BadSymbol``, ``OrderNotFound``, ``NetworkError``, ...), so a loop catches the same names whichever
adapter it runs on; the ccxt adapter turns ccxt's exceptions into these (with secrets stripped).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

# statuses of an order (ccxt's)
OPEN, CLOSED, CANCELED, REJECTED, EXPIRED = "open", "closed", "canceled", "rejected", "expired"


class ExchangeError(Exception):
    """The exchange refused a request; retrying it unchanged will not help."""


class AuthenticationError(ExchangeError):
    """Keys missing, wrong or without the needed permission."""


class BadRequest(ExchangeError):
    """A malformed request."""


class BadSymbol(BadRequest):
    """The exchange does not list the symbol (or no longer: delisted)."""


class InsufficientFunds(ExchangeError):
    """Not enough balance for the order."""


class InvalidOrder(ExchangeError):
    """The order breaks the market's rules (lot step, minimum amount or notional, type)."""


class OrderNotFound(InvalidOrder):
    """No order with that id (or client id)."""


class NotSupported(ExchangeError):
    """The exchange (or adapter) does not offer this call or order type."""


class NetworkError(Exception):
    """The request may or may not have reached the exchange: retryable, and for an order the outcome
    is unknown until reconciled (look it up by client order id)."""


class RequestTimeout(NetworkError):
    """No answer in time."""


class RateLimitExceeded(NetworkError):
    """Too many requests; wait and retry."""


class ExchangeNotAvailable(NetworkError):
    """The exchange is down or in maintenance (5xx)."""


#: the reasons a rejected order carries (event field ``reason``), by error class
REJECT_REASONS = {InsufficientFunds: "InsufficientFunds", BadSymbol: "BadSymbol", InvalidOrder: "InvalidOrder",
                  NotSupported: "NotSupported", BadRequest: "BadRequest"}


def reason_of(exc: BaseException) -> str:
    """The ccxt class name that explains a rejection (``"InsufficientFunds"``, ``"InvalidOrder"``, ...)."""
    for cls in type(exc).__mro__:
        if cls.__module__ == __name__ and cls.__name__ not in ("Exception", "BaseException"):
            return cls.__name__
    return type(exc).__name__


@runtime_checkable
class Exchange(Protocol):
    """The exchange port (ccxt's unified API, the calls a trading loop makes).

    Attributes:
        id: the exchange's id (``"paper"``, ``"binance"``, ...).
        markets: ``{symbol: market}`` after :meth:`load_markets` (ccxt market structures: ``id``,
            ``symbol``, ``base``, ``quote``, ``active``, ``precision``, ``limits``, ``taker``, ``maker``).
    """

    id: str
    markets: dict[str, dict[str, Any]]

    def load_markets(self, reload: bool = False) -> dict[str, dict[str, Any]]:
        """The markets, fetched once (again with ``reload``)."""
        ...

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1h", since: int | None = None,
                    limit: int | None = None) -> list[list[float]]:
        """Closed candles ``[ms, o, h, l, c, v]`` from ``since`` (bar open time, UTC ms), oldest first."""
        ...

    def fetch_balance(self) -> dict[str, Any]:
        """The account's balances (ccxt balance structure)."""
        ...

    def create_order(self, symbol: str, type: str, side: str, amount: float, price: float | None = None,
                     params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Place an order (ccxt order structure). ``params["clientOrderId"]`` makes it idempotent."""
        ...

    def fetch_order(self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One order by exchange id (or by ``params["clientOrderId"]`` where ``id`` is None)."""
        ...

    def fetch_open_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None,
                          params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Orders still open."""
        ...

    def cancel_order(self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Cancel an open order; the order structure with status ``"canceled"``."""
        ...

    def fetch_my_trades(self, symbol: str | None = None, since: int | None = None, limit: int | None = None,
                        params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The account's fills, oldest first."""
        ...
