"""A plain-Python reference of one trading env, one step at a time: the test oracle of the engine.

Written from the rules documented in ``factorgym.envs.execution`` (order of operations, rounding),
``factorgym.envs.config`` (fees, slippage, impact) and ``factorgym.envs.spaces`` (action mappings,
observation layout), with no code shared with ``factorgym.envs`` but the config dataclasses. One
asset and one order at a time, Python floats, no numpy in the accounting: slow and readable, so a
reader can check each line against the documentation.

Float rules followed literally (they decide lot and price rounding, so they must be the documented
ones): lot rounding ``floor(q * (1 / step) + 1e-9) * step``; price rounding against the trader
(buys ``ceil(p * (1 / step) - 1e-9) * step``, sells ``floor(p * (1 / step) + 1e-9) * step``);
participation ``qty * (1 / volume)``; the long-only scale factor ``cash / cost * (1 - 1e-12)``.
Elsewhere the reference divides where the engine multiplies by a stored reciprocal (turnover,
weights): there the two may differ in the last bit, and the tests compare with a relative
tolerance of 1e-12 (or a few float32 ulps for observations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from factorgym.envs.config import ExecutionConfig, RewardConfig

LOT_EPS = 1e-9  # of one lot / price step: absorbs round-off such as 0.3 / 0.1 = 2.9999999999999996
NOISE = 1e-10  # an order below 1e-10 of the target (or held) quantity is round-off: not sent
CASH_SAFETY = 1e-12
MAX_SLIP = 0.5
LOG_FLOOR = 1e-12
DEFAULT_FEE = 0.001

# order statuses, as the env names them
FILLED, NO_CHANGE, LOT, MIN_AMOUNT, MIN_NOTIONAL, UNTRADABLE = (
    "filled", "ignored_no_change", "ignored_lot", "ignored_min_amount", "ignored_min_notional", "rejected_untradable")


@dataclass
class Rules:
    """One symbol's market rules (a fee fraction; steps and minimums in base / quote units; 0 = none)."""

    fee: float
    lot_step: float
    min_amount: float
    min_notional: float
    price_step: float


@dataclass
class Order:
    """The outcome of one market order."""

    status: str
    qty: float = 0.0  # filled quantity, >= 0
    price: float = 0.0  # fill price
    fee: float = 0.0
    slippage_cost: float = 0.0


@dataclass
class Fill:
    asset: int
    side: str  # "buy" / "sell"
    qty: float
    price: float
    fee: float
    slippage_cost: float
    kind: str  # "order", "untradable_close", "liquidation"


@dataclass
class Account:
    cash: float
    positions: list[float]
    equity: float
    peak: float
    sharpe_a: float = 0.0
    sharpe_b: float = 0.0


@dataclass
class StepInfo:
    """What one step reports (the env's info keys, plus the order statuses)."""

    timestamp: int
    equity: float
    cash: float
    weights: list[float]
    positions: list[float]
    fees: float
    slippage_cost: float
    borrow_cost: float
    turnover: float
    trades: list[Fill]
    status: str
    order_status: list[str] = field(default_factory=list)
    funding: float = 0.0


def resolve_rules(cfg: ExecutionConfig, symbols: Sequence[str]) -> list[Rules]:
    """Per-symbol rules from a config whose fields are numbers or {symbol: number} mappings (None:
    the documented defaults; these tests do not use tensor market rules)."""
    def value(name: str, sym: str, default: float) -> float:
        v = getattr(cfg, name)
        if isinstance(v, Mapping):
            v = v[sym]
        return default if v is None else float(v)

    fee_field = "maker_fee" if cfg.fee_side == "maker" else "taker_fee"
    return [Rules(fee=value(fee_field, s, DEFAULT_FEE), lot_step=value("lot_step", s, 0.0),
                  min_amount=value("min_amount", s, 0.0), min_notional=value("min_notional", s, 0.0),
                  price_step=value("price_step", s, 0.0)) for s in symbols]


def round_down_to_lot(qty: float, step: float) -> float:
    if step <= 0.0:
        return qty
    return math.floor(qty * (1.0 / step) + LOT_EPS) * step


def round_price_against_trader(price: float, step: float, buy: bool) -> float:
    if step <= 0.0:
        return price
    if buy:
        return math.ceil(price * (1.0 / step) - LOT_EPS) * step
    return math.floor(price * (1.0 / step) + LOT_EPS) * step


def market_order(size: float, ref_price: float, volume: float, rules: Rules, cfg: ExecutionConfig,
                 exact: bool) -> Order:
    """Fill ``size`` base units (+ buy, - sell) against ``ref_price``. ``exact``: no lot rounding and
    no minimums (closing a whole position)."""
    q = abs(size)
    if q == 0.0:
        return Order(NO_CHANGE)
    if exact:
        qty = q
    else:
        qty = round_down_to_lot(q, rules.lot_step)
        if qty <= 0.0:
            return Order(LOT)
        if qty < rules.min_amount:
            return Order(MIN_AMOUNT)
        if qty * ref_price < rules.min_notional:
            return Order(MIN_NOTIONAL)
    participation = qty * (1.0 / volume) if volume > 0.0 else 0.0
    impact = 0.0
    if cfg.impact_coef != 0.0 and participation > 0.0:
        impact = math.sqrt(participation) if cfg.impact_exponent == 0.5 else participation ** cfg.impact_exponent
    slip = min((cfg.slippage_bps + cfg.half_spread_bps) / 1e4 + cfg.impact_coef * impact, MAX_SLIP)
    buy = size > 0.0
    price = ref_price * (1.0 + slip) if buy else ref_price * (1.0 - slip)
    price = round_price_against_trader(price, rules.price_step, buy)
    return Order(FILLED, qty, price, qty * price * rules.fee, qty * abs(price - ref_price))


class ReferenceEnv:
    """One env over ``tensor`` (a FactorTensor), stepped by :meth:`step`; ``scheme`` is the resolved
    mapping: "simplex", "signed", "direct" or "discrete"."""

    def __init__(self, tensor: Any, *, window: int, scheme: str, long_only: bool, execution: ExecutionConfig,
                 reward: RewardConfig, initial_cash: float = 10_000.0, levels: Sequence[float] = (),
                 level_size: float = 1.0) -> None:
        self.T, self.A, self.F = tensor.features.shape
        self.window, self.scheme, self.long_only = window, scheme, long_only
        self.cfg, self.reward_cfg, self.initial_cash = execution, reward, float(initial_cash)
        self.levels, self.level_size = [float(x) for x in levels], float(level_size)
        self.rules = resolve_rules(execution, tensor.symbols)
        self.timestamps = [int(x) for x in tensor.timestamps]
        tradable = np.asarray(tensor.tradable, dtype=bool)
        prices = np.asarray(tensor.prices, dtype=np.float64)
        self.tradable = [[bool(tradable[t, i]) for i in range(self.A)] for t in range(self.T)]
        self.open = [[float(prices[t, i, 0]) for i in range(self.A)] for t in range(self.T)]
        self.volume = [[float(prices[t, i, 4]) for i in range(self.A)] for t in range(self.T)]
        # the bar's adverse extremes: a long's low and a short's high (the open and close included)
        self.low = [[min(float(prices[t, i, 2]), self.open[t][i], float(prices[t, i, 3])) for i in range(self.A)]
                    for t in range(self.T)]
        self.high = [[max(float(prices[t, i, 1]), self.open[t][i], float(prices[t, i, 3])) for i in range(self.A)]
                     for t in range(self.T)]
        rates = getattr(tensor, "funding", None)
        self.funding = [[float(rates[t, i]) if rates is not None and self.tradable[t][i] and math.isfinite(rates[t, i])
                         else 0.0 for i in range(self.A)] for t in range(self.T)]
        # the mark: the last close on a tradable bar (carried over untradable bars), 0 before the first
        self.mark = []
        last = [0.0] * self.A
        for t in range(self.T):
            last = [float(prices[t, i, 3]) if self.tradable[t][i] else last[i] for i in range(self.A)]
            self.mark.append(list(last))
        feats = np.asarray(tensor.features, dtype=np.float32)
        ok = np.isfinite(feats) & tradable[..., None]
        self.features = np.where(ok, feats, np.float32(0.0))
        self.mask = tradable.astype(np.float32)

    # ------------------------------------------------------------------ episode
    def reset(self, start: int, end: int) -> tuple[np.ndarray, StepInfo]:
        c = self.initial_cash
        self.t, self.end, self.done = start, end, False
        self.acc = Account(cash=c, positions=[0.0] * self.A, equity=c, peak=c)
        info = StepInfo(self.timestamps[start], c, c, [0.0] * self.A, [0.0] * self.A, 0.0, 0.0, 0.0, 0.0, [], "ok")
        return self.observation(start), info

    def observation(self, t: int) -> np.ndarray:
        """Features rows t-W+1..t [W, A, F], the mask rows [W, A], then weights [A], cash / equity,
        equity / initial cash, drawdown (float32)."""
        lo = t - self.window + 1
        acc = self.acc
        e = acc.equity
        weights = [q * self.mark[t][i] / e if e > 0 else 0.0 for i, q in enumerate(acc.positions)]
        portfolio = weights + [acc.cash / e if e > 0 else 0.0, e / self.initial_cash,
                               1.0 - e / acc.peak if acc.peak > 0 else 0.0]
        return np.concatenate([self.features[lo:t + 1].reshape(-1), self.mask[lo:t + 1].reshape(-1),
                               np.asarray(portfolio, dtype=np.float32)])

    # ------------------------------------------------------------------ actions
    def target_weights(self, action: Sequence[float]) -> list[float]:
        """The action mapped to signed target weights (fractions of equity), clipped to the limits."""
        a = [float(x) for x in np.asarray(action, dtype=np.float64).reshape(-1)]
        cap = self.cfg.max_leverage
        if self.scheme == "simplex":  # slot A is cash; all -1 means all cash
            # (as the engine does today: simplex weights are NOT capped by a max_leverage below 1,
            # although ExecutionConfig documents max_leverage as the cap on gross exposure)
            x = [min(max(v, -1.0), 1.0) + 1.0 for v in a]
            total = sum(x)
            return [x[i] / total if total > 0 else 0.0 for i in range(self.A)]
        if self.scheme == "signed":
            w = [min(max(v, -1.0), 1.0) * cap for v in a]
        elif self.scheme == "discrete":
            w = [self.levels[int(v)] * self.level_size for v in a]
        else:  # direct: the action is the weight vector (NaN = hold that asset)
            w = list(a)
        if self.long_only:
            w = [0.0 if v < 0 else v for v in w]
        limit = min(cap, 1.0) if self.long_only else cap
        gross = sum(abs(v) for v in w if not math.isnan(v))
        if gross > limit:
            w = [v * (limit / gross) for v in w]
        return w

    # ------------------------------------------------------------------ one step
    def step(self, action: Sequence[float]) -> tuple[np.ndarray, float, bool, bool, StepInfo]:
        assert not self.done, "step after the end of the episode"
        cfg, rules, acc, A = self.cfg, self.rules, self.acc, self.A
        f = self.t + 1  # decided at the close of bar t, filled at the open of bar f
        w = self.target_weights(action)
        tradable = self.tradable[f]
        # untradable assets are valued at their last close (the mark) at the open too
        open_ = [self.open[f][i] if tradable[i] else self.mark[f][i] for i in range(A)]
        e_open = acc.cash
        for i in range(A):
            if acc.positions[i] != 0.0:
                e_open += acc.positions[i] * open_[i]

        # orders: target quantity minus held quantity
        orders: list[float] = [0.0] * A
        exact = [w[i] == 0.0 for i in range(A)]
        status = [NO_CHANGE] * A
        for i in range(A):
            q = acc.positions[i]
            if not tradable[i]:
                held_w = q * self.mark[f][i] / e_open if e_open > 0 else 0.0
                if abs(w[i] - held_w) > 1e-12:  # (NaN = hold compares False)
                    status[i] = UNTRADABLE
                continue
            if math.isnan(w[i]):
                continue
            target = w[i] * e_open / open_[i] if e_open > 0 else 0.0
            d = target - q
            if abs(d) <= NOISE * max(abs(target), abs(q)):
                d = 0.0
            if exact[i]:
                d = -q  # a zero target closes the whole position: no dust
            orders[i] = d

        fills: dict[str, list[Fill]] = {"sell": [], "buy": [], "close": [], "liq": []}
        fees = slippage = traded = 0.0
        # sells first, their proceeds pay for the buys
        planned: dict[int, Order] = {}
        for i in range(A):
            d = orders[i]
            if d == 0.0:
                continue
            o = market_order(d, open_[i], self.volume[f][i], rules[i], cfg, exact[i])
            status[i] = o.status
            if o.status != FILLED:
                continue
            if d > 0:
                planned[i] = o
                continue
            acc.cash += o.qty * o.price - o.fee
            acc.positions[i] = 0.0 if exact[i] else acc.positions[i] - o.qty
            fees += o.fee
            slippage += o.slippage_cost
            traded += o.qty * o.price
            fills["sell"].append(Fill(i, "sell", o.qty, o.price, o.fee, o.slippage_cost, "order"))

        # long-only: buys that cost more than the cash are all scaled by one factor, then re-rounded
        cost = 0.0
        for i, o in planned.items():
            cost += o.qty * o.price + o.fee
        if self.long_only and cost > acc.cash and cost > 0.0:
            k = max(acc.cash, 0.0) / cost * (1.0 - CASH_SAFETY)
            for i in list(planned):
                o = market_order(planned[i].qty * k, open_[i], self.volume[f][i], rules[i], cfg, False)
                status[i] = o.status
                if o.status == FILLED:
                    planned[i] = o
                else:
                    del planned[i]
        for i in sorted(planned):
            o = planned[i]
            acc.cash -= o.qty * o.price + o.fee
            acc.positions[i] = 0.0 if w[i] == 0.0 else acc.positions[i] + o.qty
            fees += o.fee
            slippage += o.slippage_cost
            traded += o.qty * o.price
            fills["buy"].append(Fill(i, "buy", o.qty, o.price, o.fee, o.slippage_cost, "order"))

        # positions in assets that do not trade at f: kept (freeze) or closed at the mark, fee paid
        if cfg.on_untradable == "close":
            for i in range(A):
                q = acc.positions[i]
                if q != 0.0 and not tradable[i]:
                    p = self.mark[f][i]
                    fee = abs(q) * p * rules[i].fee
                    acc.cash += q * p - fee
                    acc.positions[i] = 0.0
                    fees += fee
                    traded += abs(q) * p
                    fills["close"].append(Fill(i, "sell" if q > 0 else "buy", abs(q), p, fee, 0.0, "untradable_close"))

        # intrabar liquidation (long/short): each asset at its adverse extreme of bar f (low for a long,
        # high for a short; an untradable one stays at its mark), prices moving in a straight line from
        # the open; if the margin is breached there, every position is closed at the first point of the
        # line where it is (the open itself after a gap), fee and slippage paid
        liquidated = False
        if not self.long_only:
            extreme = [(self.low[f][i] if acc.positions[i] > 0 else self.high[f][i]) if tradable[i] else self.mark[f][i]
                       for i in range(A)]
            surplus = []
            for prices in (open_, extreme):
                e, g = acc.cash, 0.0
                for i in range(A):
                    e += acc.positions[i] * prices[i]
                    g += abs(acc.positions[i]) * prices[i]
                surplus.append(e - cfg.maintenance_margin * g)
            if g > 0.0 and surplus[1] < 0.0:
                liquidated = True
                point = surplus[0] / (surplus[0] - surplus[1]) if surplus[0] > 0.0 else 0.0
                for i in range(A):
                    q = acc.positions[i]
                    if q == 0.0:
                        continue
                    if tradable[i]:
                        o = market_order(-q, open_[i] + point * (extreme[i] - open_[i]), self.volume[f][i],
                                         Rules(rules[i].fee, 0.0, 0.0, 0.0, rules[i].price_step), cfg, True)
                    else:
                        o = Order(FILLED, abs(q), self.mark[f][i], abs(q) * self.mark[f][i] * rules[i].fee, 0.0)
                    acc.cash += q * o.price - o.fee
                    acc.positions[i] = 0.0
                    fees += o.fee
                    slippage += o.slippage_cost
                    traded += o.qty * o.price
                    fills["liq"].append(Fill(i, "sell" if q > 0 else "buy", o.qty, o.price, o.fee, o.slippage_cost,
                                             "liquidation"))

        # borrow on short notional and borrowed cash, at the close of f
        short = 0.0
        for i in range(A):
            if acc.positions[i] < 0.0:
                short -= acc.positions[i] * self.mark[f][i]
        borrow = cfg.borrow_rate_per_bar * (short + max(-acc.cash, 0.0))
        acc.cash -= borrow
        # funding at the close of f on each position's notional (positive rate: longs pay)
        funding = 0.0
        for i in range(A):
            funding += self.funding[f][i] * acc.positions[i] * self.mark[f][i]
        acc.cash -= funding

        # mark to market at the close of f
        equity, gross = acc.cash, 0.0
        for i in range(A):
            q = acc.positions[i]
            if q != 0.0:
                equity += q * self.mark[f][i]
                gross += abs(q) * self.mark[f][i]

        # liquidation (long/short): every position closed at the close, fee and slippage paid
        at_close = not self.long_only and gross > 0.0 and equity < cfg.maintenance_margin * gross
        liquidated = liquidated or at_close
        if at_close:
            for i in range(A):
                q = acc.positions[i]
                if q == 0.0:
                    continue
                if tradable[i]:
                    o = market_order(-q, self.mark[f][i], self.volume[f][i],
                                     Rules(rules[i].fee, 0.0, 0.0, 0.0, rules[i].price_step), cfg, True)
                else:  # an untradable asset is closed at its last close, no slippage
                    o = Order(FILLED, abs(q), self.mark[f][i], abs(q) * self.mark[f][i] * rules[i].fee, 0.0)
                acc.cash += q * o.price - o.fee
                acc.positions[i] = 0.0
                fees += o.fee
                slippage += o.slippage_cost
                traded += o.qty * o.price
                fills["liq"].append(Fill(i, "sell" if q > 0 else "buy", o.qty, o.price, o.fee, o.slippage_cost,
                                         "liquidation"))
            equity = acc.cash

        # status, reward, bookkeeping
        env_status = "liquidated" if liquidated else ("bankrupt" if equity <= 0.0 else "ok")
        prev = acc.equity
        acc.peak = max(acc.peak, equity)
        drawdown = 1.0 - equity / acc.peak
        turnover = traded / e_open if e_open > 0 else 0.0
        reward = self._reward(prev, equity, turnover, drawdown)
        acc.equity = equity
        self.t = f
        terminated = env_status != "ok"
        truncated = f >= self.end
        self.done = terminated or truncated
        weights = [q * self.mark[f][i] / equity if equity > 0 else 0.0 for i, q in enumerate(acc.positions)]
        trades = fills["sell"] + fills["buy"] + fills["close"] + fills["liq"]
        info = StepInfo(self.timestamps[f], equity, acc.cash, weights, list(acc.positions), fees, slippage, borrow,
                        turnover, trades, env_status, status, funding)
        return self.observation(f), reward, terminated, truncated, info

    def _reward(self, prev: float, equity: float, turnover: float, drawdown: float) -> float:
        rc, acc = self.reward_cfg, self.acc
        if rc.kind == "differential_sharpe":  # Moody & Saffell (1998), simple return, EMA rate eta
            r = equity / prev - 1.0
            a, b = acc.sharpe_a, acc.sharpe_b
            var = b - a * a
            reward = (b * (r - a) - 0.5 * a * (r * r - b)) / var ** 1.5 if var > 1e-12 else 0.0
            acc.sharpe_a = a + rc.sharpe_eta * (r - a)
            acc.sharpe_b = b + rc.sharpe_eta * (r * r - b)
            return reward * rc.scale
        log_return = math.log(max(equity / prev, LOG_FLOOR))
        if rc.kind == "drawdown_penalty":
            log_return -= rc.drawdown_penalty * drawdown
        elif rc.kind == "turnover_penalty":
            log_return -= rc.turnover_penalty * turnover
        return log_return * rc.scale
