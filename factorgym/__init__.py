"""factorgym: reinforcement-learning crypto trading, point in time.

Layers (arrows point down only)::

    factorgym.data_layer  ->  FactorTensor  ->  factorgym.envs  ->  Gymnasium API  ->  factorgym.agents

The main names are importable from here and imported on first use::

    from factorgym import FactorTensor, CryptoTradingEnv, ExecutionConfig, backtest
"""

from factorgym._lazy import export_lazily

__version__ = "0.1.0"


def _silence_gym_notice() -> None:
    """The unmaintained ``gym`` (a dependency of pyqlib, imported by SB3 when installed) prints a
    banner from ``gym_notices`` on import. factorgym uses Gymnasium only, so that notice is never
    about our code: empty the notice table before anything imports gym."""
    import importlib.util
    import sys

    if "gym" in sys.modules or importlib.util.find_spec("gym_notices") is None:
        return
    try:
        import gym_notices.notices as notices
    except ImportError:
        return
    notices.notices.clear()


_silence_gym_notice()

__all__ = ["__version__"]

# name -> "module:attribute"; add a line to export one more name.
_EXPORTS = {
    # data layer
    "FactorTensor": "factorgym.data_layer.tensor:FactorTensor",
    "CandleStore": "factorgym.data_layer.store:CandleStore",
    "build_from_config": "factorgym.data_layer.build:build_from_config",
    "build_tensor": "factorgym.data_layer.build:build_tensor",
    "import_candle_file": "factorgym.data_layer.sources.files:import_candle_file",
    "SyntheticSource": "factorgym.data_layer.sources.synthetic:SyntheticSource",
    # environments
    "CryptoTradingEnv": "factorgym.envs.trading_env:CryptoTradingEnv",
    "CryptoTradingVectorEnv": "factorgym.envs.vector_env:CryptoTradingVectorEnv",
    "ExecutionConfig": "factorgym.envs.config:ExecutionConfig",
    "RewardConfig": "factorgym.envs.config:RewardConfig",
    "backtest": "factorgym.envs.backtest:backtest",
    "BacktestResult": "factorgym.envs.backtest:BacktestResult",
    "run_baselines": "factorgym.envs.baselines:run_baselines",
    "compute_metrics": "factorgym.envs.metrics:compute_metrics",
}
export_lazily(__name__, _EXPORTS)
