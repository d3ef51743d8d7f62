"""Trading environments over a FactorTensor: single env, vector env, one execution core.

``gymnasium.make("factorgym/CryptoTrading-v0", tensor=...)`` or the classes directly.
"""

from __future__ import annotations

import gymnasium

from factorgym._lazy import export_lazily

# name -> "module:attribute", imported on first use (the backtest imports pandas, the report
# matplotlib); add a line to export one more name. The SB3 VecEnv view is
# factorgym.agents.sb3_vec.make_vec_env (envs imports no SB3).
_EXPORTS = {
    "CryptoTradingEnv": "factorgym.envs.trading_env:CryptoTradingEnv",
    "ExecutionConfig": "factorgym.envs.config:ExecutionConfig",
    "RewardConfig": "factorgym.envs.config:RewardConfig",
    "PortfolioCore": "factorgym.envs.core:PortfolioCore",
    "Trades": "factorgym.envs.trades:Trades",
    "CryptoTradingVectorEnv": "factorgym.envs.vector_env:CryptoTradingVectorEnv",
    "backtest": "factorgym.envs.backtest:backtest",  # the function (see factorgym/_lazy.py)
    "BacktestResult": "factorgym.envs.backtest:BacktestResult",
    "run_baselines": "factorgym.envs.baselines:run_baselines",
    "make_baseline": "factorgym.envs.baselines:make_baseline",
    "format_table": "factorgym.envs.baselines:format_table",
    "compute_metrics": "factorgym.envs.metrics:compute_metrics",
    "write_html_report": "factorgym.envs.report:write_html_report",
}
export_lazily(__name__, _EXPORTS)

ENV_ID = "factorgym/CryptoTrading-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point="factorgym.envs.trading_env:CryptoTradingEnv")

