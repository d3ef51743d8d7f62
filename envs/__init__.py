"""Trading environments over a FactorTensor: single env, vector env, one execution core.

``gymnasium.make("factorgym/CryptoTrading-v0", tensor=...)`` or the classes directly.
"""

from __future__ import annotations

import gymnasium

from factorgym.envs.config import ExecutionConfig, RewardConfig
from factorgym.envs.core import PortfolioCore, Trades
from factorgym.envs.trading_env import CryptoTradingEnv

__all__ = ["CryptoTradingEnv", "ExecutionConfig", "RewardConfig", "PortfolioCore", "Trades", "make_vec_env",
           "CryptoTradingVectorEnv"]

ENV_ID = "factorgym/CryptoTrading-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point="factorgym.envs.trading_env:CryptoTradingEnv")


def __getattr__(name: str):
    # the vector env modules are imported on first use (the SB3 adapter imports stable_baselines3)
    if name == "CryptoTradingVectorEnv":
        from factorgym.envs.vector_env import CryptoTradingVectorEnv

        return CryptoTradingVectorEnv
    if name == "make_vec_env":
        from factorgym.envs.vector_env import make_vec_env

        return make_vec_env
    raise AttributeError(f"module 'factorgym.envs' has no attribute {name!r}")
