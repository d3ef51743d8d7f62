"""The out-of-core build gives the in-memory build's tensor bit for bit, on the shipped samples and
on the hard cases (listings, gaps, cross-sectional transforms, every normalisation, funding)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _factor_data import frames, random_ohlcv
from factorgym.data_layer import funding as fstore
from factorgym.data_layer.build import build_from_config, build_tensor
from factorgym.data_layer.build_disk import build_from_config_to_disk, build_tensor_to_disk
from factorgym.data_layer.store import CandleStore
from factorgym.data_layer.tensor import FactorTensor

ARRAYS = ("features", "prices", "timestamps", "tradable")


def assert_same_tensor(disk: FactorTensor, mem: FactorTensor) -> None:
    for name in ARRAYS + (("funding",) if mem.funding is not None else ()):
        a, b = np.asarray(getattr(disk, name)), np.asarray(getattr(mem, name))
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), f"{name} differs"  # bit for bit, NaN included
    assert (disk.funding is None) == (mem.funding is None)
    assert disk.symbols == mem.symbols and disk.feature_names == mem.feature_names
    assert disk.meta["content_hash"] == mem.content_hash() == disk.content_hash()
    skip = {"build_seconds", "content_hash", "format_version"}  # format_version: written by every save
    mine = {k: v for k, v in disk.meta.items() if k not in skip}
    theirs = json.loads(json.dumps({k: v for k, v in mem.meta.items() if k not in skip}, default=float))
    assert mine == theirs


@pytest.mark.parametrize("config, chunk_rows", [
    ("configs/factors/build_sample_bitfinex.yaml", 997),   # 17,583 hourly bars, TA-Lib default set
    ("configs/factors/build_sample_bitstamp.yaml", 101),   # 3 assets listed at different dates, rank
])
def test_out_of_core_build_equals_the_in_memory_build_on_the_samples(tmp_path, config, chunk_rows):
    store = tmp_path / "store"
    mem = build_from_config(config, store=store)
    disk = build_from_config_to_disk(config, tmp_path / "t", store=store, chunk_rows=chunk_rows)
    assert isinstance(disk.features, np.memmap)
    assert_same_tensor(disk, mem)
    again = build_from_config_to_disk(config, tmp_path / "t", store=store)  # default chunking, folder replaced
    assert_same_tensor(again, mem)
    assert not list(tmp_path.glob(".t.*"))  # no scratch or temp folder left behind


SETS = {
    "rolling_rank_zscore": {
        "factors": [{"kind": "custom", "name": "log_return", "params": {"periods": 3}},
                    {"kind": "talib", "name": "RSI", "params": {"timeperiod": 14}, "cross_sectional": "zscore"},
                    {"kind": "talib", "name": "MACD", "cross_sectional": "rank"},
                    {"kind": "custom", "name": "realized_vol", "params": {"window": 12}, "normalise": False}],
        "normalise": {"method": "rolling", "window": 50, "min_periods": 20, "clip": 3.0},
    },
    "train_per_asset": {
        "factors": [{"kind": "talib", "name": "NATR"}, {"kind": "custom", "name": "volume_zscore", "params": {"window": 10}}],
        "normalise": {"method": "train", "fit_end": 250 * 3_600_000, "per_asset": True, "clip": None},
    },
    "train_pooled": {
        "factors": [{"kind": "talib", "name": "ADX"}, {"kind": "custom", "name": "candle_shape"}],
        "normalise": {"method": "train", "fit_start": "1970-01-06T10:00Z", "fit_end": "1970-01-13T12:00Z"},
    },
    "none": {"factors": [{"kind": "talib", "name": "BBANDS", "scale": "rel_close"}], "normalise": {"method": "none"}},
}


@pytest.mark.parametrize("name", sorted(SETS))
def test_hard_cases_bit_for_bit(tmp_path, name):
    x = random_ohlcv(500, 4, seed=11)
    x[:120, 1] = np.nan          # listed late
    x[[200, 201, 333], 2] = np.nan  # missing bars
    x[420:, 3] = np.nan          # delisted
    store = CandleStore(tmp_path / "s")
    syms = ["A/USDT:USDT", "B/USDT:USDT", "C/USDT", "D/USDT"]
    for (old, frame), sym in zip(frames(x).items(), syms):
        store.write("ex", sym, "1h", frame)
    for sym in syms[:2]:
        fstore.write_funding(store, "ex", sym, fstore.empty_funding().assign(
            timestamp=np.arange(0, 500, 8) * 3_600_000 + 7, funding_rate=np.linspace(-2e-4, 4e-4, 63)))
    mem = build_tensor(store, "ex", syms, "1h", SETS[name])
    for chunk in (1, 7, 10_000):
        disk = build_tensor_to_disk(store, "ex", syms, "1h", SETS[name], tmp_path / f"t{chunk}", chunk_rows=chunk)
        assert_same_tensor(disk, mem)
    assert mem.funding is not None and np.count_nonzero(mem.funding)


class MarketReturn:
    """A factor that reads every asset at once (no ``compute_series``): the mean 1-bar log return."""

    names = ["market_return"]
    warmup = 1

    def compute(self, panel):
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.log(panel.close[1:] / panel.close[:-1])
        m = np.nanmean(np.where(np.isfinite(r), r, np.nan), axis=1) if r.size else r
        out = np.full((panel.n_bars, panel.n_assets, 1), np.nan)
        out[1:, :, 0] = m[:, None]
        return out

    def online(self, symbols):  # pragma: no cover - not used by builds
        raise NotImplementedError


def test_a_factor_that_needs_the_whole_panel(tmp_path):
    from factorgym.data_layer.factors.base import register_factor

    register_factor("test_market_return")(lambda config: MarketReturn())
    fs = {"factors": [{"kind": "talib", "name": "RSI"}, {"kind": "test_market_return"},
                      {"kind": "custom", "name": "log_return", "params": {"periods": 2}, "cross_sectional": "zscore"}],
          "normalise": {"method": "expanding", "min_periods": 20}}
    x = random_ohlcv(300, 3, seed=6)
    x[:40, 2] = np.nan
    store = CandleStore(tmp_path / "s")
    for sym, frame in frames(x).items():
        store.write("ex", sym, "1h", frame)
    syms = list(frames(x))
    mem = build_tensor(store, "ex", syms, "1h", fs)
    assert_same_tensor(build_tensor_to_disk(store, "ex", syms, "1h", fs, tmp_path / "t", chunk_rows=33), mem)


@pytest.mark.slow
def test_a_factor_that_needs_the_whole_panel_qlib(tmp_path):
    pytest.importorskip("qlib")
    fs = {"factors": [{"kind": "qlib", "expr": "$close/Ref($close, 5) - 1", "name": "ret_5"},
                      {"kind": "talib", "name": "RSI"},
                      {"kind": "qlib", "expr": "Std($close/Ref($close, 1) - 1, 10)", "name": "vol_10", "cross_sectional": "rank"}],
          "normalise": {"method": "expanding", "min_periods": 30}}
    x = random_ohlcv(300, 3, seed=5)
    x[:40, 2] = np.nan
    store = CandleStore(tmp_path / "s")
    for sym, frame in frames(x).items():
        store.write("ex", sym, "1h", frame)
    syms = list(frames(x))
    mem = build_tensor(store, "ex", syms, "1h", fs)
    assert_same_tensor(build_tensor_to_disk(store, "ex", syms, "1h", fs, tmp_path / "t", chunk_rows=64), mem)


def test_cli_build_out_of_core(tmp_path, capsys):
    from factorgym.cli import main

    cfg, store = "configs/factors/build_sample_bitstamp.yaml", str(tmp_path / "s")
    assert main(["build", "--config", cfg, "--out", str(tmp_path / "mem"), "--store", store, "--no-progress"]) == 0
    assert main(["build", "--config", cfg, "--out", str(tmp_path / "disk"), "--store", store, "--no-progress",
                 "--out-of-core", "--chunk-rows", "500"]) == 0
    a, b = FactorTensor.load(tmp_path / "mem"), FactorTensor.load(tmp_path / "disk")
    assert a.meta["content_hash"] == b.meta["content_hash"] == b.content_hash()
    assert "saved" in capsys.readouterr().out
