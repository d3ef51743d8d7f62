"""Trading environments over a FactorTensor: single env, vector env, one execution core.

``gymnasium.make("factorgym/CryptoTrading-v0", tensor=...)`` or the classes directly.
"""

from __future__ import annotations

import gymnasium

from factorgym.envs.config import ExecutionConfig, RewardConfig
from factorgym.envs.core import PortfolioCore
from factorgym.envs.trades import Trades
from factorgym.envs.trading_env import CryptoTradingEnv

__all__ = ["CryptoTradingEnv", "ExecutionConfig", "RewardConfig", "PortfolioCore", "Trades",
           "CryptoTradingVectorEnv", "BacktestResult", "run_baselines", "format_table", "compute_metrics"]

# name -> module, imported on first use (the backtest imports pandas and, for reports, matplotlib).
# The function ``backtest`` is not re-exported: its name is its module's, which the import system
# would put here instead. The SB3 VecEnv view is factorgym.agents.sb3_vec.make_vec_env (envs
# imports no SB3).
_LAZY = {
    "CryptoTradingVectorEnv": "factorgym.envs.vector_env",
    "BacktestResult": "factorgym.envs.backtest",
    "run_baselines": "factorgym.envs.baselines",
    "format_table": "factorgym.envs.baselines",
    "compute_metrics": "factorgym.envs.metrics",
}

ENV_ID = "factorgym/CryptoTrading-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point="factorgym.envs.trading_env:CryptoTradingEnv")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'factorgym.envs' has no attribute {name!r}")
