"""Data layer: candle sources -> Parquet store -> validation -> factors -> FactorTensor.

Imports neither ``factorgym.envs`` nor ``factorgym.agents``.
"""
