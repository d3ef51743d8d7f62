"""Option groups of the trading environment: how orders execute and how the reward is computed.

Both are frozen dataclasses with visible defaults. Per-symbol values (fees, lot rules) may be a
single number for every symbol, a ``{symbol: value}`` mapping, or ``None`` to take them from
``tensor.meta["market_rules"]`` (``{symbol: MarketRules.to_dict()}``, as the data layer writes it)
and finally from the documented default (10 bps taker and maker fees, no lot rules).

Units: fees and rates are fractions (0.001 = 10 bps); ``*_bps`` fields are basis points;
quantities are base-currency units; notionals are quote-currency units; rates ``*_per_bar`` apply
once per bar held.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np

from factorgym.errors import ConfigError

PerSymbol = Union[float, Mapping[str, float], None]

UNTRADABLE_POLICIES = ("freeze", "close")
REWARD_KINDS = ("log_return", "differential_sharpe", "drawdown_penalty", "turnover_penalty")
DEFAULT_FEE = 0.001  # Binance spot base tier, same as data_layer.sources.base.default_rules


@dataclasses.dataclass(frozen=True)
class ExecutionConfig:
    """How an order decided at the close of bar t fills at the open of bar t+1.

    Fill price of a buy (sell) = open x (1 + s) (x (1 - s)), with the slippage fraction
    ``s = (slippage_bps + half_spread_bps) / 1e4 + impact_coef * (qty / bar_volume) ** impact_exponent``
    (the impact term is skipped when the bar's volume is 0 or unknown; ``s`` is capped at 0.5).

    Attributes:
        taker_fee: fee fraction of traded notional for market orders (per symbol; None = market rules).
        maker_fee: fee fraction used instead when ``fee_side == "maker"`` (per symbol; None = market rules).
        fee_side: ``"taker"`` (orders at the open are market orders, the default) or ``"maker"``.
        slippage_bps: fixed slippage per fill, bps of the open price.
        half_spread_bps: half the bid/ask spread paid per fill, bps.
        impact_coef: market-impact coefficient (fraction of price at 100% participation).
            0.01 ~ an hourly crypto bar's volatility, the square-root law's usual scale.
        impact_exponent: participation exponent of the impact term (0.5 = square-root law).
        lot_step: quantity step, base units (per symbol; None = market rules; 0 = no rounding).
        min_amount: smallest order quantity, base units (per symbol; None = market rules).
        min_notional: smallest order value, quote units (per symbol; None = market rules).
        price_step: price precision, quote units (per symbol; None = market rules; 0 = none).
        borrow_rate_per_bar: fraction of short notional and of borrowed cash paid each bar.
        max_leverage: cap on gross exposure sum(|w|) as a multiple of equity (long-only: <= 1).
        maintenance_margin: liquidate when equity < maintenance_margin x gross exposure
            (checked at each bar's close; long/short only).
        on_untradable: ``"freeze"`` keeps a position in an asset that stops trading, valued at its
            last close; ``"close"`` sells/covers it at that last close (taker fee, no slippage).
        use_market_rules: read per-symbol values from ``tensor.meta["market_rules"]`` when a field is None.
    """

    taker_fee: PerSymbol = None
    maker_fee: PerSymbol = None
    fee_side: str = "taker"
    slippage_bps: float = 0.0
    half_spread_bps: float = 1.0
    impact_coef: float = 0.01
    impact_exponent: float = 0.5
    lot_step: PerSymbol = None
    min_amount: PerSymbol = None
    min_notional: PerSymbol = None
    price_step: PerSymbol = None
    borrow_rate_per_bar: float = 0.0
    max_leverage: float = 1.0
    maintenance_margin: float = 0.05
    on_untradable: str = "freeze"
    use_market_rules: bool = True

    def __post_init__(self) -> None:
        if self.fee_side not in ("taker", "maker"):
            raise ConfigError(f"execution.fee_side={self.fee_side!r}; expected 'taker' or 'maker'")
        if self.on_untradable not in UNTRADABLE_POLICIES:
            raise ConfigError(f"execution.on_untradable={self.on_untradable!r}; expected one of {UNTRADABLE_POLICIES}")
        for name in ("slippage_bps", "half_spread_bps", "impact_coef", "borrow_rate_per_bar", "maintenance_margin"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"execution.{name}={v!r}; expected a finite number >= 0")
        if not (math.isfinite(self.max_leverage) and self.max_leverage > 0):
            raise ConfigError(f"execution.max_leverage={self.max_leverage!r}; expected a finite number > 0")
        if not (math.isfinite(self.impact_exponent) and self.impact_exponent > 0):
            raise ConfigError(f"execution.impact_exponent={self.impact_exponent!r}; expected > 0")

    @classmethod
    def frictionless(cls, **overrides: Any) -> "ExecutionConfig":
        """No fees, no slippage, no lot rules (for tests and idealised baselines)."""
        base = dict(taker_fee=0.0, maker_fee=0.0, slippage_bps=0.0, half_spread_bps=0.0, impact_coef=0.0,
                    lot_step=0.0, min_amount=0.0, min_notional=0.0, price_step=0.0, use_market_rules=False)
        return cls(**{**base, **overrides})


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Which reward the env returns after each step (all in log/return units per bar).

    Attributes:
        kind: ``"log_return"``: log(E_t+1 / E_t) of equity E (the default).
            ``"differential_sharpe"``: Moody & Saffell (1998) differential Sharpe ratio of the simple
            return with EMA rate ``sharpe_eta``.
            ``"drawdown_penalty"``: log return - ``drawdown_penalty`` x drawdown after the step
            (drawdown = 1 - E / running peak, a fraction).
            ``"turnover_penalty"``: log return - ``turnover_penalty`` x turnover (traded notional /
            equity at the fill, a fraction).
        drawdown_penalty: weight of the drawdown term.
        turnover_penalty: weight of the turnover term.
        sharpe_eta: EMA rate of the differential Sharpe ratio, in (0, 1).
        scale: every reward is multiplied by this.
    """

    kind: str = "log_return"
    drawdown_penalty: float = 0.1
    turnover_penalty: float = 0.001
    sharpe_eta: float = 0.01
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ConfigError(f"reward kind {self.kind!r} is unknown; expected one of {REWARD_KINDS} or a callable")
        if not 0.0 < self.sharpe_eta < 1.0:
            raise ConfigError(f"reward.sharpe_eta={self.sharpe_eta!r}; expected 0 < eta < 1")
        for name in ("drawdown_penalty", "turnover_penalty", "scale"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"reward.{name} must be finite")


# ---------------------------------------------------------------------- per-symbol resolution
_RULE_KEYS = {  # ExecutionConfig field -> MarketRules.to_dict() key
    "taker_fee": "taker_fee", "maker_fee": "maker_fee", "lot_step": "amount_step",
    "min_amount": "min_amount", "min_notional": "min_notional", "price_step": "price_step",
}
_DEFAULTS = {"taker_fee": DEFAULT_FEE, "maker_fee": DEFAULT_FEE, "lot_step": 0.0,
             "min_amount": 0.0, "min_notional": 0.0, "price_step": 0.0}


def resolve_per_symbol(cfg: ExecutionConfig, symbols: Sequence[str], meta: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """float64 [A] arrays for fee, lot_step, min_amount, min_notional, price_step.

    Precedence per field: explicit scalar/mapping in ``cfg`` > ``meta["market_rules"][symbol]`` > default.
    """
    rules = (meta or {}).get("market_rules") or {} if cfg.use_market_rules else {}
    if not isinstance(rules, Mapping):
        raise ConfigError(f"tensor.meta['market_rules'] must be {{symbol: MarketRules.to_dict()}}, got {type(rules).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, rule_key in _RULE_KEYS.items():
        value = getattr(cfg, name)
        arr = np.empty(len(symbols), dtype=np.float64)
        for i, sym in enumerate(symbols):
            if isinstance(value, Mapping):
                if sym not in value:
                    raise ConfigError(f"execution.{name} has no entry for symbol {sym!r}; give one per symbol or a single number")
                v = value[sym]
            elif value is not None:
                v = value
            elif sym in rules and rules[sym].get(rule_key) is not None:
                v = rules[sym][rule_key]
            else:
                v = _DEFAULTS[name]
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"execution.{name} for {sym!r} must be a number, got {v!r}") from None
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"execution.{name} for {sym!r} is {v!r}; expected a finite number >= 0")
            arr[i] = v
        out[name] = arr
    if np.any(out["taker_fee"] >= 1) or np.any(out["maker_fee"] >= 1):
        raise ConfigError("fees are fractions (0.001 = 10 bps); a fee >= 1 was given")
    out["fee"] = out["maker_fee"] if cfg.fee_side == "maker" else out["taker_fee"]
    return out
