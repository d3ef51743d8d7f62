"""The live loop's small parts: clocks (wall time, replay), client order ids, observation hashes,
market rules from ccxt markets, target weights by the env's own mapping, ccxt error names, the loop's
book carried over bars settled after it was last saved."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol

import numpy as np

from factorgym.errors import ConfigError

#: order errors that reject one order and never stop the loop (ccxt's class names)
REJECTIONS = ("InsufficientFunds", "InvalidOrder", "BadSymbol", "BadRequest", "NotSupported", "OrderNotFound")


class Clock(Protocol):
    """When bars close. ``wait_for_close(bar_ts, tf_ms)`` returns once the bar opening at ``bar_ts`` has
    closed (a replay clock moves the paper exchange instead of sleeping); ``now_ms()`` is wall time."""

    def wait_for_close(self, bar_ts: int, tf_ms: int) -> None: ...

    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock bars: sleeps until ``bar_ts + tf_ms + delay_ms`` (exchanges publish a closed candle
    a moment after the boundary). ``stop`` (a ``threading.Event``) ends a wait early."""

    def __init__(self, delay_ms: int = 2_000, stop: Any = None) -> None:
        self.delay_ms, self.stop = int(delay_ms), stop

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def wait_for_close(self, bar_ts: int, tf_ms: int) -> None:
        due = bar_ts + tf_ms + self.delay_ms
        while (left := due - self.now_ms()) > 0:
            if self.stop is not None and self.stop.wait(min(left, 1000) / 1000):
                raise KeyboardInterrupt("stop requested")
            if self.stop is None:
                time.sleep(min(left, 1000) / 1000)


class ReplayClock:
    """Replay: bar ``bar_ts`` has closed once the paper exchange is advanced to the next bar's open."""

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange

    def now_ms(self) -> int:
        now = self.exchange.now
        if now is None:
            raise ConfigError("the paper exchange's clock has not started: call exchange.advance(first_open) first")
        return int(now)

    def wait_for_close(self, bar_ts: int, tf_ms: int) -> None:
        if self.exchange.now is None or self.exchange.now < bar_ts + tf_ms:
            self.exchange.advance(bar_ts + tf_ms)


def client_order_id(run_id: str, bar_ts: int, symbol: str, attempt: int = 0) -> str:
    """Deterministic client order id of (run, bar, symbol, attempt): ``fg`` + 22 hex digits (fits every
    exchange's length and charset limits)."""
    digest = hashlib.sha256(f"{run_id}|{int(bar_ts)}|{symbol}|{int(attempt)}".encode()).hexdigest()
    return "fg" + digest[:22]


def obs_hash(obs: Any) -> str:
    """sha256 of an observation's float32 bytes (dict observations: keys in order)."""
    if isinstance(obs, dict):
        return hashlib.sha256(b"".join(np.ascontiguousarray(obs[k], np.float32).tobytes() for k in sorted(obs))).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(obs, np.float32).tobytes()).hexdigest()


def market_rules_from_markets(markets: dict[str, dict], symbols: list[str]) -> dict[str, dict]:
    """``tensor.meta['market_rules']``-shaped rules from ccxt markets (precision as steps, limits, fees)."""
    rules = {}
    for sym in symbols:
        m = markets.get(sym) or {}
        prec, lim = m.get("precision") or {}, m.get("limits") or {}
        rules[sym] = {"amount_step": prec.get("amount"), "price_step": prec.get("price"),
                      "min_amount": (lim.get("amount") or {}).get("min"), "min_notional": (lim.get("cost") or {}).get("min"),
                      "taker_fee": m.get("taker"), "maker_fee": m.get("maker")}
    return rules


def fill_bar_record(out: np.ndarray, carried: np.ndarray, bar: np.ndarray, tradable: np.ndarray) -> None:
    """Write the fill bar's ``PRICE`` record [A, len(PRICE)] into ``out`` in place: row 1 of the env's
    ``price_records`` over two bars, the first a bar at the mark ``carried`` (tradable where > 0), the
    second ``bar`` (OHLCV [A, 5], tradable where ``tradable``), without building the two-bar arrays
    (tested bit-identical). Untradable: the mark is carried, open = low = high = mark, no volume; no
    funding. (Compiled: one call instead of a dozen numpy calls or a Python loop over the assets.)"""
    global _fill_record_nb
    if _fill_record_nb is None:  # (imported on first use: numba loads with it; once, not a bar)
        from factorgym.envs.live.paper_kernel import fill_record_nb as _fill_record_nb
    _fill_record_nb(out, np.asarray(carried, dtype=np.float64), np.asarray(bar, dtype=np.float64),
                    np.asarray(tradable, dtype=np.bool_))


_fill_record_nb = None


def target_weights(config: np.ndarray, action: np.ndarray, n_assets: int) -> np.ndarray:
    """Target weights [A] of ``action`` (float64 [K]) by the env's own ``map_actions_nb`` on a one-lane
    block; NaN where a direct-mapping action holds. Raises ``ValueError`` for a malformed action."""
    from factorgym.envs.live.paper_kernel import target_weights_nb

    out = np.empty(n_assets)
    if target_weights_nb(config, np.asarray(action, dtype=np.float64), n_assets, out) != 0.0:
        raise ValueError(f"action {np.asarray(action).tolist()} is not in the action space (NaN, or a bad discrete index)")
    return out


def error_name(exc: BaseException) -> str:
    """The ccxt-style class name of an error (the first class in its MRO with a known name)."""
    known = REJECTIONS + ("NetworkError", "RequestTimeout", "RateLimitExceeded", "ExchangeNotAvailable",
                          "AuthenticationError", "ExchangeError")
    for cls in type(exc).__mro__:
        if cls.__name__ in known:
            return cls.__name__
    return type(exc).__name__


def catch_up_book(config: np.ndarray, saved: dict, cash: float, positions: np.ndarray, marks: Any, bar_ts: int,
                  peak: float, mean: float, square: float) -> tuple[float, float, float]:
    """Peak and differential-Sharpe statistics after the bars settled since the loop's book ``saved``
    was written (a crash between a bar's fills and the book): the kernel's per-bar updates
    (``_finish``) over the account as it is now, marked at each such bar's close. ``marks``: ``(bar
    open time, mark [A])`` of the bars fed; ``config``: the env's engine config."""
    from factorgym.envs.execution import REWARD_SHARPE
    from factorgym.envs.layouts import CONFIG

    sharpe = int(config[CONFIG.reward]) == REWARD_SHARPE
    eta = float(config[CONFIG.sharpe_eta])
    prev = float(saved.get("equity", 0.0))
    for ts, mark in marks:
        if not saved["bar_ts"] < ts <= bar_ts:
            continue
        equity = cash  # (the kernel's sum: cash + q x mark over held assets, in asset order)
        for q, m in zip(np.asarray(positions).tolist(), np.asarray(mark).tolist()):
            if q != 0.0:
                equity += q * m
        if sharpe and prev > 0.0:
            r = equity / prev - 1.0
            mean, square = mean + eta * (r - mean), square + eta * (r * r - square)
        peak = equity if equity > peak else peak
        prev = equity
    return peak, mean, square
