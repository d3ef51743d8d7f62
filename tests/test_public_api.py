"""The public API a newcomer can guess: the main names from the top package and from each layer,
imported lazily (``import factorgym`` loads no heavy library)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

TOP = ["FactorTensor", "CryptoTradingEnv", "CryptoTradingVectorEnv", "ExecutionConfig", "RewardConfig",
       "backtest", "BacktestResult", "CandleStore", "build_from_config", "run_baselines", "compute_metrics"]
DATA = ["FactorTensor", "CandleStore", "build_from_config", "build_tensor", "load_factor_set", "import_candle_file",
        "SyntheticSource", "validate_candles", "OnlineFactors", "split"]
ENVS = ["CryptoTradingEnv", "CryptoTradingVectorEnv", "ExecutionConfig", "RewardConfig", "backtest",
        "BacktestResult", "run_baselines", "compute_metrics", "write_html_report"]


@pytest.mark.parametrize("package, names", [("factorgym", TOP), ("factorgym.data_layer", DATA),
                                            ("factorgym.envs", ENVS), ("factorgym.agents", ["make_vec_env"])])
def test_main_names_import(package, names):
    mod = importlib.import_module(package)
    for name in names:
        obj = getattr(mod, name)
        assert not inspect.ismodule(obj), f"{package}.{name} is a module"
        assert name in mod.__all__ and name in dir(mod)
    with pytest.raises(AttributeError, match="no attribute"):
        mod.no_such_name  # noqa: B018


def test_backtest_is_the_function_even_after_its_module_is_imported():
    import factorgym.envs

    backtest_module = importlib.import_module("factorgym.envs.backtest")  # sets the package attribute
    from factorgym.envs import backtest

    assert inspect.isfunction(backtest) and backtest is backtest_module.backtest
    assert factorgym.envs.backtest is backtest_module.backtest
    from factorgym import backtest as top

    assert top is backtest


def test_same_objects_everywhere():
    import factorgym
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs.config import ExecutionConfig

    assert factorgym.FactorTensor is FactorTensor and factorgym.data_layer.FactorTensor is FactorTensor
    assert factorgym.ExecutionConfig is ExecutionConfig


def test_import_factorgym_is_light():
    code = ("import sys, factorgym, factorgym.data_layer, factorgym.agents; "
            "heavy = [m for m in ('torch', 'pandas', 'numba', 'stable_baselines3', 'matplotlib') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
