"""Candle sources behind the :class:`OHLCVSource` port: ccxt exchanges, files, a synthetic market."""

from factorgym.data_layer.sources.base import MarketRules, OHLCVSource, default_rules

__all__ = ["MarketRules", "OHLCVSource", "default_rules"]
