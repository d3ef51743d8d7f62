"""The ``OHLCVSource`` port and the per-symbol market rules the environment executes with."""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import pandas as pd


@dataclasses.dataclass(frozen=True)
class MarketRules:
    """Trading rules of one symbol, as ccxt's ``load_markets`` reports them.

    Units: ``amount_step`` and ``min_amount`` in base currency, ``price_step`` in quote currency,
    ``min_notional`` in quote currency, fees as fractions (0.001 = 10 bps). A step of 0 means
    "no rounding".
    """

    symbol: str
    amount_step: float = 0.0
    price_step: float = 0.0
    min_amount: float = 0.0
    min_notional: float = 0.0
    maker_fee: float = 0.001
    taker_fee: float = 0.001
    origin: str = "default"  # "ccxt:<exchange>" when read from an exchange, else "default"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MarketRules":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def default_rules(symbol: str) -> MarketRules:
    """Documented defaults for files and synthetic data: 10 bps maker and taker, no lot rules.

    10 bps is Binance spot's base tier; lot rules are off because a file does not say them.
    """
    return MarketRules(symbol=symbol)


@runtime_checkable
class OHLCVSource(Protocol):
    """Where candles come from. Every adapter returns closed bars only, in the candle layout of
    :mod:`factorgym.data_layer.candles`, and the market rules of each symbol."""

    name: str

    def symbols(self) -> list[str]:
        """Unified symbols this source can deliver (``BTC/USDT``)."""
        ...

    def fetch(
        self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> pd.DataFrame:
        """Closed candles with ``since <= timestamp < until`` (UTC ms; None = unbounded)."""
        ...

    def market_rules(self, symbol: str) -> MarketRules:
        """Lot, precision and fee rules of ``symbol``."""
        ...
