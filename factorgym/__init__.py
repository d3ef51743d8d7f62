"""factorgym: reinforcement-learning crypto trading, point in time.

Layers (arrows point down only)::

    factorgym.data_layer  ->  FactorTensor  ->  factorgym.envs  ->  Gymnasium API  ->  factorgym.agents
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
