"""Data layer: candle sources -> Parquet store -> validation -> factors -> FactorTensor.

Imports neither ``factorgym.envs`` nor ``factorgym.agents``. The main names are importable from
here (imported on first use)::

    from factorgym.data_layer import FactorTensor, CandleStore, build_from_config
"""

from factorgym._lazy import export_lazily

# name -> "module:attribute"; add a line to export one more name.
_EXPORTS = {
    "FactorTensor": "factorgym.data_layer.tensor:FactorTensor",
    "CandleStore": "factorgym.data_layer.store:CandleStore",
    "build_from_config": "factorgym.data_layer.build:build_from_config",
    "build_tensor": "factorgym.data_layer.build:build_tensor",
    "build_tensor_from_candles": "factorgym.data_layer.build:build_tensor_from_candles",
    "load_build_config": "factorgym.data_layer.build:load_build_config",
    "FactorSet": "factorgym.data_layer.factors.factor_set:FactorSet",
    "load_factor_set": "factorgym.data_layer.factors.factor_set:load_factor_set",
    "custom_factor": "factorgym.data_layer.factors.custom:custom_factor",
    "OnlineFactors": "factorgym.data_layer.factors.online:OnlineFactors",
    "import_candle_file": "factorgym.data_layer.sources.files:import_candle_file",
    "load_candle_file": "factorgym.data_layer.sources.files:load_candle_file",
    "FileSource": "factorgym.data_layer.sources.files:FileSource",
    "SyntheticSource": "factorgym.data_layer.sources.synthetic:SyntheticSource",
    "CcxtSource": "factorgym.data_layer.sources.ccxt_source:CcxtSource",
    "MarketRules": "factorgym.data_layer.sources.base:MarketRules",
    "validate_candles": "factorgym.data_layer.validate:validate_candles",
    "ValidationReport": "factorgym.data_layer.validate:ValidationReport",
    "split": "factorgym.data_layer.splits:split",
    "walk_forward": "factorgym.data_layer.splits:walk_forward",
    "sample_candles": "factorgym.data_layer.sample:sample_candles",
    "load_sample_into_store": "factorgym.data_layer.sample:load_sample_into_store",
}
export_lazily(__name__, _EXPORTS)
