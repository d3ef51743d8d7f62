"""``LiveTradingEnv``: the training env's spaces and accounting, bar by bar, over an ``Exchange``.

One step (the action chosen at the close of bar t):

1. **size** the orders with the env's own kernel: a one-env :class:`CryptoTradingEnv` (the "shadow",
   over a window of W + 1 bars) is put in the account's state (cash and positions read from the
   exchange) and stepped once with the fill bar priced at its open (the forming candle's open: the
   first price after the decision, which is public when the order is sent). Its fills are the orders:
   the env's target quantities, lot steps, minimums, sells before buys, long-only buy scaling;
2. **submit** them, sells first then buys, each with a client id from (run, bar, symbol, attempt), so
   a resent order is never a second order; a rejection (``InsufficientFunds``, ``InvalidOrder``, a
   delisted symbol) is an event and the loop goes on; wait for fills or time out and cancel
   (``order_flow.py``);
3. **wait** for bar t+1 to close (the injected clock), fetch the candles; a bar the exchange never
   delivers is the store's gap bar (open = high = low = close = last close, volume 0, untradable),
   so the online feature rows equal the offline tensor's;
4. **account**: the shadow is stepped again from the same state with the full bar t+1 (the
   backtest's step exactly: fills, borrow/funding, mark, reward, observation); the exchange is the
   source of truth: its balances replace the shadow's and any difference is a ``reconcile`` event.

Parity: against :class:`~factorgym.envs.live.paper.PaperExchange` replaying a tensor's candles, the
observations, actions and equity equal ``backtest()``'s bit for bit when ``impact_coef`` is 0 (or
no buy is scaled to the cash): the impact term needs the fill bar's volume, which the order sizing
cannot know; it uses the previous bar's. Funding is not known ahead either: the exchange charges it
and the reconciliation takes it in.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np

from factorgym.envs.config import ExecutionConfig, resolve_per_symbol
from factorgym.envs.layouts import PRICE, STATE, STATE_POSITIONS
from factorgym.envs.live.candle_panel import CandlePanel, fetch_panel
from factorgym.envs.live.loop_parts import (  # noqa: F401 - Clock, SystemClock, ReplayClock, obs_hash: public here too
    Clock, ReplayClock, SystemClock, catch_up_book, fill_bar_record, market_rules_from_markets, obs_hash,
)
from factorgym.envs.live.order_flow import DONE_STATUSES, OrderFlow  # noqa: F401 - DONE_STATUSES: public here too
from factorgym.envs.live.paper_kernel import feed_row_nb
from factorgym.envs.spaces import split_obs
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)
#: ``online(ts, bar [A, 5] float64 OHLCV (NaN = no bar), store_ok bool [A]) -> (row float64 [A, F], tradable bool [A])``
OnlineRows = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class LiveTradingEnv(OrderFlow, gym.Env):
    """A policy's training env, live: same observation and action spaces, same order sizing and
    accounting, over an :class:`~factorgym.envs.live.exchange.Exchange` (paper or ccxt).

    Args:
        exchange: the exchange port; ``exchange.events`` (an ``EventLog``), when present, gets the
            loop's events (decisions, orders, rejections, reconciliations).
        symbols, feature_names, timeframe, window: the policy's (``PolicySpec``).
        online: feature rows of one closed bar (the data layer's ``OnlineFactors``, handed in).
        clock: :class:`SystemClock` live, :class:`ReplayClock` on a paper replay.
        env_kwargs: the training env's arguments (``PolicySpec.env_kwargs()``).
        market_rules: ``{symbol: {amount_step, price_step, min_amount, min_notional, taker_fee, ...}}``
            (``tensor.meta['market_rules']``); default from ``exchange.load_markets()``.
        run_id: part of every client order id.
        history: bars of history fed to ``online`` at reset; None = all the exchange has.
        start_ts: replay: the first decision bar (its open time); default the last closed bar.
        fill_timeout_s, poll_s: how long to wait for a submitted order to fill, and how often to look.
        quote: the cash currency (default: the symbols' quote).
        order_mode: ``"weights"``: one order per tradable asset carrying its target weight
            (``params["targetWeight"]``), sized by the exchange at the fill bar's open with the env's
            sizing (the paper exchange: exact parity with ``backtest()``); ``"amounts"``: base-unit
            market orders sized here (any exchange); ``"auto"``: weights on the paper exchange.
    """

    metadata = {"render_modes": []}

    def __init__(self, exchange: Any, *, symbols: list[str], feature_names: list[str], timeframe: str, window: int,
                 online: OnlineRows, clock: Clock, env_kwargs: dict | None = None, market_rules: dict | None = None,
                 run_id: str = "live", history: int | None = None, start_ts: int | None = None,
                 fill_timeout_s: float = 30.0, poll_s: float = 0.5, quote: str | None = None,
                 order_mode: str = "auto") -> None:
        from factorgym.data_layer.timeframes import timeframe_to_ms

        self.exchange, self.online, self.clock = exchange, online, clock
        self.symbols, self.feature_names = list(symbols), list(feature_names)
        self.timeframe, self.tf_ms, self.window = timeframe, int(timeframe_to_ms(timeframe)), int(window)
        self.run_id, self.history, self.start_ts = str(run_id), history, start_ts
        self.fill_timeout_s, self.poll_s = float(fill_timeout_s), float(poll_s)
        quotes = {s.split("/")[1].split(":")[0] for s in self.symbols if "/" in s}
        if quote is None and len(quotes) != 1:
            raise ConfigError(f"symbols {self.symbols} do not share one quote currency; pass quote=")
        self.quote = quote or quotes.pop()
        self.bases = [s.split("/")[0] for s in self.symbols]
        kw = dict(env_kwargs or {})
        for k in ("episode_length", "random_start", "window"):
            kw.pop(k, None)
        kw.setdefault("execution", ExecutionConfig())
        if market_rules is None:
            market_rules = market_rules_from_markets(exchange.load_markets(), self.symbols)
        A, F, W = len(self.symbols), len(self.feature_names), self.window
        self._meta = {"market_rules": market_rules, "timeframe": timeframe}
        self._shadow = self._make_shadow(A, F, W, kw)
        self._shadow_obs: np.ndarray | None = None  # (scratch: the shadow's first observation, unused)
        self.initial_cash = self._shadow.initial_cash
        self.execution = self._shadow.execution
        self.action_space = self._shadow.action_space
        self.observation_space = self._shadow.observation_space
        self._dict_obs = self._shadow._dict_obs
        # the last W + 1 feature rows (masked) and mask rows, oldest first, zeros before the first bar fed
        # (outside every observation); shifted in place a bar at a time: no stacking per bar
        self._feat = np.zeros((W + 1, A, F), np.float32)
        self._mask = np.zeros((W + 1, A), np.float32)
        self._n_fed = 0
        self._obs_buf = np.zeros(W * A * F + W * A + A + 3, np.float32)
        self._obs_hash: str | None = None  # of the observation last returned (reset / step)
        self._panel_fn: Any = None  # the exchange's ohlcv_panel for this timeframe (False: it has none)
        self._marks: deque[tuple[int, np.ndarray]] = deque(maxlen=10_000)  # (bar, mark [A]) of the bars fed
        self._last_close = np.zeros(A)       # the env's mark: last tradable close (0 before the first)
        self._prev_mark = np.zeros(A)
        self._last_raw_close = np.zeros(A)   # last delivered close (what a gap bar carries)
        self._seen = np.zeros(A, dtype=bool) # a bar has been delivered (gaps come after it)
        self._last_volume = np.zeros(A)
        self._delivered = np.zeros(A, dtype=bool)
        self.bar_ts: int | None = None                    # open time of the last closed bar
        self._forming: dict[int, float] = {}              # asset -> open of the forming bar
        self._book: dict[str, Any] | None = None
        self.events = getattr(exchange, "events", None)
        if order_mode == "auto":
            order_mode = "weights" if getattr(exchange, "id", None) == "paper" else "amounts"
        if order_mode not in ("weights", "amounts"):
            raise ConfigError(f"order_mode={order_mode!r}; expected 'auto', 'weights' or 'amounts'")
        self.order_mode = order_mode
        self.last_orders: list[dict] = []
        self.last_decision_ms = 0.0

    # ------------------------------------------------------------------ shadow env (the env's own code)
    def _make_shadow(self, A: int, F: int, W: int, kw: dict):
        from factorgym.envs.trading_env import CryptoTradingEnv

        T = W + 1
        mini = SimpleNamespace(features=np.zeros((T, A, F), np.float32), prices=np.ones((T, A, 5)),
                               timestamps=np.arange(T, dtype=np.int64) * self.tf_ms, tradable=np.ones((T, A), bool),
                               symbols=self.symbols, feature_names=self.feature_names, meta=self._meta)
        shadow = CryptoTradingEnv(mini, window=W, episode_length=None, random_start=False, **kw)
        per = resolve_per_symbol(shadow.execution, self.symbols, self._meta)
        self.fee = per["fee"]
        return shadow

    def _load_shadow(self, fill_row_is_last: bool, carried: np.ndarray, bar: np.ndarray, tradable: np.ndarray,
                     fill_ts: int) -> None:
        """Put W + 1 feature rows in the shadow: the decision bar's window, then the fill bar's row (the
        last row fed when ``fill_row_is_last``: settling; else the decision bar's row again: sizing),
        and the fill bar's price record (``fill_bar_record``: the env's ``price_records`` of the two
        bars, from the mark ``carried`` over an untradable fill bar and the fill bar's ``bar``)."""
        core = self._shadow.core
        W = self.window
        n = self._feat[0].size
        # the core keeps its arrays read-only (one compiled kernel); the shadow's own copies are refilled here
        core.data.flags.writeable = core.prices.flags.writeable = True
        try:
            if fill_row_is_last:
                core.data[:] = self._feat.reshape(-1)
                core.prices[:W, :, PRICE.tradable] = self._mask[:W]  # the window's mask rows
            else:
                core.data[:W * n] = self._feat[1:].reshape(-1)
                core.data[W * n:] = self._feat[W].reshape(-1)
                core.prices[:W, :, PRICE.tradable] = self._mask[1:]
            fill_bar_record(core.prices[W], carried, bar, tradable)
        finally:
            core.data.flags.writeable = core.prices.flags.writeable = False
        self._shadow._ts[W] = int(fill_ts)

    def _shadow_step(self, action, book: dict[str, Any]):
        """Step the shadow from ``book`` (cash, positions, equity, peak, sharpe stats) over its loaded bar."""
        env, W = self._shadow, self.window
        if self._shadow_obs is None:  # (the first time through reset(): it checks the bounds)
            env.reset(options={"start": W - 1, "end": W})
            self._shadow_obs = np.empty(env._obs_dim, np.float32)
        else:
            env._start_episode(W - 1, W, self._shadow_obs)
        work = env.core.work
        work[STATE.cash, 0], work[STATE.equity, 0], work[STATE.peak, 0] = book["cash"], book["equity"], book["peak"]
        work[STATE.initial_cash, 0] = book["initial_cash"]  # the account's start, not the training env's
        work[STATE.sharpe_mean, 0], work[STATE.sharpe_square, 0] = book["sharpe_mean"], book["sharpe_square"]
        work[STATE_POSITIONS:STATE_POSITIONS + len(self.symbols), 0] = book["positions"]
        return env.step(action)

    # ------------------------------------------------------------------ candles
    def _fetch(self, since: int) -> CandlePanel:
        """Every candle the exchange has from ``since`` (paged), as one panel: through the exchange's
        ``ohlcv_panel`` (all symbols in one call: the paper exchange) or ``ohlcv_arrays`` (numpy
        columns) when it has one, else ccxt's ``fetch_ohlcv``."""
        tf = self.timeframe
        panel = self._panel_fn
        if panel is None:  # (resolved once: the loop fetches every bar)
            own = getattr(self.exchange, "ohlcv_panel", None)
            panel = self._panel_fn = False if own is None else (
                lambda s, since, limit: own(s, tf, since=since, limit=limit))
        if panel:
            return fetch_panel(self.symbols, since, self.tf_ms, ohlcv_panel=panel)
        arrays = getattr(self.exchange, "ohlcv_arrays", None)
        if arrays is not None:
            return fetch_panel(self.symbols, since, self.tf_ms,
                               ohlcv_arrays=lambda s, since, limit: arrays(s, tf, since=since, limit=limit))
        return fetch_panel(self.symbols, since, self.tf_ms,
                           fetch_ohlcv=lambda s, since, limit: self.exchange.fetch_ohlcv(s, tf, since=since, limit=limit))

    def _feed(self, ts: int, fetched: CandlePanel) -> None:
        """Feed closed bar ``ts`` (a missing bar as the store's gap policy marks it) to the online
        factors; shift its feature row and mask into the window; update the marks."""
        bar = fetched.bar(ts)
        total = float(bar.sum())
        if total - total == 0.0:  # (the common case: every value finite; a NaN or inf makes the sum one)
            ok = np.ones(len(bar), dtype=bool)
            self._seen[:] = True
            self._last_raw_close = bar[:, 3].copy()
        else:
            ok = np.isfinite(bar).all(axis=1)
            gap = ~ok & self._seen  # the store's "mark" policy: last close carried, volume 0, untradable
            bar[~ok] = np.nan
            bar[gap, :4] = self._last_raw_close[gap, None]
            bar[gap, 4] = 0.0
            self._seen |= ok
            self._last_raw_close = np.where(ok, bar[:, 3], self._last_raw_close)
        row, tradable = self.online(int(ts), bar, ok)
        tradable = np.asarray(tradable, dtype=bool) & ok
        feats = row if type(row) is np.ndarray and row.dtype == np.float64 else np.asarray(row, dtype=np.float64)
        if feats.shape != self._feat.shape[1:] or not feats.flags.c_contiguous:  # (numpy's broadcasting rules)
            feats = np.ascontiguousarray(np.broadcast_to(feats, self._feat.shape[1:]))
        close, volume = np.empty(len(bar)), np.empty(len(bar))
        # the window shifted, the masked row in; the env's mark (last tradable close) and last volume
        feed_row_nb(self._feat, self._mask, feats, tradable, bar, self._last_close, self._last_volume, close, volume)
        self._n_fed += 1
        self._prev_mark = self._last_close
        self._last_close, self._last_volume = close, volume
        self._bar, self._tradable, self._delivered = bar, tradable, ok
        self._marks.append((int(ts), self._last_close))
        self.bar_ts = int(ts)

    def _catch_up(self, since: int, until: int) -> None:
        """Feed every closed bar after the last one fed (from ``since`` on the first call) up to
        ``until`` (open time); remember the forming bar's opens."""
        first = since if self.bar_ts is None else self.bar_ts + self.tf_ms
        fetched = self._fetch(first)
        if self.bar_ts is None:
            start = fetched.first_time()
            if start is None:
                raise ConfigError(f"the exchange returned no candles for {self.symbols} ({self.timeframe}) since {since}")
            first = max(first, start)
        for ts in range(int(first), int(until) + 1, self.tf_ms):
            self._feed(ts, fetched)
        self._forming = fetched.opens(int(until) + self.tf_ms)

    def _last_closed(self) -> int:
        now = int(self.clock.now_ms())
        return now // self.tf_ms * self.tf_ms - self.tf_ms

    # ------------------------------------------------------------------ account
    def _balances(self) -> tuple[float, np.ndarray]:
        totals = self.__dict__.get("_totals_fn", False)
        if totals is False:  # (resolved once: the paper exchange's totals, without ccxt's whole structure)
            totals = self._totals_fn = getattr(self.exchange, "balance_totals", None)
        total = totals() if callable(totals) else (self.exchange.fetch_balance().get("total") or {})
        return float(total.get(self.quote, 0.0) or 0.0), np.array([float(total.get(b, 0.0) or 0.0) for b in self.bases])

    def _mark(self, cash: float, positions: np.ndarray) -> float:
        equity = cash  # (the kernel's sum: cash + q x mark over held assets, in asset order)
        for q, m in zip(positions.tolist(), self._last_close.tolist()):
            if q != 0.0:
                equity += q * m
        return equity

    def _weights(self) -> np.ndarray:
        b = self._book
        inv = 1.0 / b["equity"] if b["equity"] > 0.0 else 0.0
        return np.array([q * m * inv for q, m in zip(b["positions"].tolist(), self._last_close.tolist())])

    def _obs(self) -> Any:
        """The observation of the last closed bar (the kernel's ``write_obs_nb``, in Python)."""
        b = self._book
        A, W = len(self.symbols), self.window
        equity = b["equity"]
        inv = 1.0 / equity if equity > 0.0 else 0.0
        obs = self._obs_buf
        n_feat, n_mask = self._feat[1:].size, self._mask[1:].size
        obs[:n_feat] = self._feat[1:].reshape(-1)
        obs[n_feat:n_feat + n_mask] = self._mask[1:].reshape(-1)
        port = n_feat + n_mask
        for i, (q, m) in enumerate(zip(b["positions"].tolist(), self._last_close.tolist())):
            obs[port + i] = q * m * inv
        obs[port + A] = b["cash"] * inv
        obs[port + A + 1] = equity / b["initial_cash"]
        obs[port + A + 2] = 1.0 - equity / b["peak"] if b["peak"] > 0.0 else 0.0
        out = obs.copy()
        return split_obs(out, W, A, len(self.feature_names)) if self._dict_obs else out

    def _returned(self, obs: Any) -> Any:
        """Hash the observation handed to the caller once, for the decision taken on it."""
        self._obs_hash = obs_hash(obs)
        return obs

    def _event(self, kind: str, ts: int, **data: Any) -> None:
        if self.events is not None:
            self.events.append(kind, int(ts), **data)

    def book(self) -> dict[str, Any]:
        """The loop's own state (JSON-able): what a restart passes back as ``reset(options={"book": ...})``."""
        b = self._book or {}
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in b.items()} | {"bar_ts": self.bar_ts}

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Fetch the history, feed it to the online factors, read the account; the first observation is
        that of the last closed bar (``start_ts`` on a replay). ``options["book"]`` (from :meth:`book`)
        restores the loop's peak equity and Sharpe statistics after a restart."""
        super().reset(seed=seed)
        options = options or {}
        until = self.start_ts if self.start_ts is not None else self._last_closed()
        since = 0 if self.history is None else until - (self.history - 1) * self.tf_ms
        self.bar_ts = None
        self._feat[:] = 0.0
        self._mask[:] = 0.0
        self._n_fed = 0
        self._marks.clear()
        self._catch_up(since, until)
        if self._n_fed < self.window:
            raise ConfigError(f"the exchange gave {self._n_fed} closed bars; the policy's window needs {self.window}")
        cash, positions = self._balances()
        equity = self._mark(cash, positions)
        saved = options.get("book") or {}
        peak = float(saved.get("peak", equity))
        mean, square = float(saved.get("sharpe_mean", 0.0)), float(saved.get("sharpe_square", 0.0))
        if saved and saved.get("bar_ts") is not None and saved["bar_ts"] != self.bar_ts:
            # bars settled after the saved book (a crash before it was written): the kernel's per-bar
            # updates of the peak and the Sharpe statistics, over the account marked at each bar's close
            peak, mean, square = catch_up_book(self._shadow.core.config, saved, cash, positions, self._marks,
                                               self.bar_ts, peak, mean, square)
        self._book = {"cash": cash, "positions": positions, "equity": equity,
                      "peak": peak, "initial_cash": float(saved.get("initial_cash", equity)),
                      "sharpe_mean": mean, "sharpe_square": square}
        info = {"timestamp": self.bar_ts, "equity": equity, "cash": cash, "positions": positions.copy(),
                "weights": self._weights(), "fees": 0.0, "slippage_cost": 0.0, "borrow_cost": 0.0, "funding": 0.0,
                "turnover": 0.0, "trades": [], "status": "ok"}
        return self._returned(self._obs()), info

    def decide(self, action) -> list[dict]:
        """Record the decision (observation hash, action), plan and submit its orders; the first half
        of :meth:`step` (a runner that restarts mid-bar calls it again: the client ids repeat)."""
        t0 = time.perf_counter()
        act = np.asarray(action, dtype=np.float64).reshape(-1).tolist()
        h = self._obs_hash if self._obs_hash is not None else obs_hash(self._obs())
        record = getattr(self.exchange, "record_decision", None)
        with self._batch():  # the decision and its orders: one commit, before the orders fill
            if record is not None:
                record(self.bar_ts, h, act)  # (a list: used as it is)
            else:
                self._event("decision", self.bar_ts, obs_hash=h, action=act)
            self._before = dict(self._book, positions=self._book["positions"].copy())
            orders = self.plan_orders(action)
            self.last_decision_ms = (time.perf_counter() - t0) * 1000
            self._planned = orders
            self.last_orders = self.submit(orders)
        return self.last_orders

    def _batch(self):
        """The exchange's group commit (``PaperExchange.batch``: the block's events are committed
        together when it ends, none if it raises); no grouping on an exchange without one."""
        batch = getattr(self.exchange, "batch", None)
        return batch() if callable(batch) else contextlib.nullcontext()

    def settle(self, action):
        """Wait for the fill bar to close and account for it: the second half of :meth:`step`. On a
        paper exchange the bar's fills, charges and the loop's ``loop_book`` are one commit. A clock with
        ``before_close`` (live candles) waits and fetches there, outside that commit."""
        before = getattr(self.clock, "before_close", None)
        if callable(before):
            before(self.bar_ts + self.tf_ms, self.tf_ms)
        with self._batch():
            return self._settle(action)

    def _settle(self, action):
        A, W = len(self.symbols), self.window
        fill_ts = self.bar_ts + self.tf_ms
        self.clock.wait_for_close(fill_ts, self.tf_ms)
        self.last_orders = [self._wait_fill(order, o) for order, o in zip(self.last_orders, self._planned)]
        self._catch_up(fill_ts, fill_ts)
        self._load_shadow(True, self._prev_mark, self._bar, self._tradable, fill_ts)
        before = self._before
        obs, reward, terminated, _, info = self._shadow_step(action, before)
        work = self._shadow.core.work
        book = {"cash": float(work[STATE.cash, 0]), "positions": work[STATE_POSITIONS:STATE_POSITIONS + A, 0].copy(),
                "equity": float(work[STATE.equity, 0]), "peak": float(work[STATE.peak, 0]),
                "initial_cash": before["initial_cash"], "sharpe_mean": float(work[STATE.sharpe_mean, 0]),
                "sharpe_square": float(work[STATE.sharpe_square, 0])}
        cash, positions = self._balances()
        self._book = book
        if cash != book["cash"] or positions.tolist() != book["positions"].tolist():
            self._event("reconcile", fill_ts, cash=cash, expected_cash=book["cash"], positions=positions.tolist(),
                        expected_positions=book["positions"].tolist())
            equity = self._mark(cash, positions)
            book.update(cash=cash, positions=positions, equity=equity, peak=max(before["peak"], equity))
            obs = self._obs()
            info.update(equity=equity, cash=cash, positions=positions.copy(), weights=self._weights())
        info["timestamp"] = fill_ts
        info["orders"] = self.last_orders
        self._event("loop_book", fill_ts, **self.book())
        return self._returned(obs), reward, terminated, False, info

    def step(self, action):
        if self._book is None:
            raise RuntimeError("step() before reset()")
        self.decide(action)
        return self.settle(action)

    def close(self) -> None:
        pass
