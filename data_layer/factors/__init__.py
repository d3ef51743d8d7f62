"""Factors: the ``Factor`` port (``base.py``), its adapters (TA-Lib, custom, Qlib), factor sets
from YAML, normalisation, cross-sectional transforms and the online path.

    from factorgym.data_layer.factors import load_factor_set, OnlineFactors
    fs = load_factor_set("talib_default")          # packaged name or YAML path
    block = fs.compute(panel)                       # float64 [T, A, F], before normalisation
"""

from __future__ import annotations

import importlib

from factorgym.data_layer.factors.base import (
    CandlePanel,
    Factor,
    OnlineFactor,
    WindowRecompute,
    factor_from_config,
    register_factor,
    registered_kinds,
)

# heavier modules (numba, TA-Lib, YAML) load on first use
_LAZY = {
    "FactorSet": "factor_set", "load_factor_set": "factor_set",
    "OnlineFactors": "online",
    "NormaliseConfig": "normalise",
    "cross_sectional": "transforms",
    "TalibFactor": "talib_factors",
    "CustomFactor": "custom", "custom_factor": "custom",
}

__all__ = ["CandlePanel", "Factor", "OnlineFactor", "WindowRecompute", "factor_from_config", "register_factor",
           "registered_kinds", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
