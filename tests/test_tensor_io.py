"""Save / memory-mapped load round trip, and a > 2 GB memory-mapped tensor that is not read whole."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _factor_data import frames, random_ohlcv
from factorgym.data_layer.build import build_tensor_from_candles
from factorgym.data_layer.tensor import FactorTensor


def test_saved_and_mmapped_tensor_is_identical(tmp_path):
    x = random_ohlcv(300, 3, seed=4)
    x[:50, 2] = np.nan
    t = build_tensor_from_candles(frames(x), "1h", "custom_example")
    loaded = FactorTensor.load(t.save(tmp_path / "t"), mmap=True)
    assert isinstance(loaded.features, np.memmap)
    for name in ("features", "prices", "timestamps", "tradable"):
        np.testing.assert_array_equal(np.asarray(getattr(loaded, name)), getattr(t, name))
    assert loaded.symbols == t.symbols and loaded.feature_names == t.feature_names
    assert loaded.content_hash() == t.content_hash() == loaded.meta["content_hash"]
    assert loaded.meta["factor_set_hash"] == t.meta["factor_set_hash"] == loaded.factor_set_hash
    assert loaded.meta["normalisation"] == json.loads(json.dumps(t.meta["normalisation"]))
    eager = FactorTensor.load(tmp_path / "t", mmap=False)
    assert not isinstance(eager.features, np.memmap) and eager.content_hash() == t.content_hash()
    pd_frame = loaded.to_frame()
    assert len(pd_frame) == t.n_bars * 3 and "log_return_1" in pd_frame.columns


def test_mmap_load_of_a_2gb_tensor_maps_and_does_not_read_it(tmp_path):
    """(The RSS growth of reading one window is a figure of benchmarks/data_io.py.)"""
    T, A, F = 1 << 20, 2, 260  # features: 2.18 GB float32, written as a sparse file (no disk blocks)
    d = tmp_path / "big"
    d.mkdir()
    feats = np.lib.format.open_memmap(d / "features.npy", mode="w+", dtype=np.float32, shape=(T, A, F))
    feats[-1, -1, -1] = 7.0
    feats[1000, 0, 3] = 2.5
    feats.flush()
    del feats
    prices = np.lib.format.open_memmap(d / "prices.npy", mode="w+", dtype=np.float64, shape=(T, A, 5))
    del prices
    np.save(d / "timestamps.npy", np.arange(T, dtype=np.int64) * 3_600_000)
    np.save(d / "tradable.npy", np.zeros((T, A), dtype=bool))
    (d / "meta.json").write_text(json.dumps({"timeframe": "1h", "symbols": ["A", "B"],
                                             "feature_names": [f"f{j}" for j in range(F)]}))
    assert (d / "features.npy").stat().st_size > 2 * 1024**3
    t = FactorTensor.load(d, mmap=True)
    assert isinstance(t.features, np.memmap) and isinstance(t.prices, np.memmap)
    assert t.features[-1, -1, -1] == 7.0 and t.n_bars == T
    window = np.asarray(t.features[1000:1064])  # what an env reads for one observation window
    assert window.shape == (64, A, F) and window[0, 0, 3] == 2.5 and np.count_nonzero(window) == 1
