"""The optional ``funding`` field of the FactorTensor: validation, save / mmap load, slicing, inspect."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.errors import DataValidationError

HOUR = 3_600_000


def _tensor(T: int = 48, A: int = 2, funding="default", **kw) -> FactorTensor:
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    if isinstance(funding, str):
        funding = np.zeros((T, A))
        funding[7::8] = rng.normal(1e-4, 5e-5, funding[7::8].shape)  # one event every 8 bars
    return FactorTensor.from_arrays(rng.normal(size=(T, A, 3)), close, np.arange(T) * HOUR,
                                    symbols=["BTC/USDT:USDT", "ETH/USDT:USDT"][:A], funding=funding, **kw)


def test_spot_tensor_has_no_funding_and_its_hash_is_unchanged(tmp_path):
    spot = _tensor(funding=None)
    assert spot.funding is None and not spot.has_funding and "funding" not in spot.meta
    loaded = FactorTensor.load(spot.save(tmp_path / "spot"))
    assert loaded.funding is None and not (tmp_path / "spot" / "funding.npy").exists()
    perp = FactorTensor(spot.features, spot.prices, spot.timestamps, spot.symbols, spot.feature_names,
                        spot.tradable, {}, np.zeros((spot.n_bars, 2)))
    assert perp.content_hash() != spot.content_hash()  # funding is part of a perpetual's content


def test_funding_round_trips_memory_mapped_and_is_recorded_in_meta(tmp_path):
    t = _tensor()
    assert t.funding.dtype == np.float64 and t.funding.shape == (48, 2)
    assert t.meta["funding"]["source"] == "arrays" and len(t.meta["funding"]["hash"]) == 64
    loaded = FactorTensor.load(t.save(tmp_path / "t"), mmap=True)
    assert isinstance(loaded.funding, np.memmap)
    np.testing.assert_array_equal(np.asarray(loaded.funding), t.funding)
    assert loaded.content_hash() == t.content_hash() == loaded.meta["content_hash"]
    assert loaded.meta["funding"]["hash"] == t.meta["funding"]["hash"]
    eager = FactorTensor.load(tmp_path / "t", mmap=False)
    assert not isinstance(eager.funding, np.memmap)
    assert "funding" in loaded.to_frame().columns


def test_missing_funding_file_is_a_clear_error(tmp_path):
    d = _tensor().save(tmp_path / "t")
    (d / "funding.npy").unlink()
    with pytest.raises(DataValidationError, match="funding.npy is missing"):
        FactorTensor.load(d)


def test_slices_and_splits_carry_funding_rows():
    t = _tensor()
    s = t.slice_bars(10, 30)
    np.testing.assert_array_equal(s.funding, t.funding[10:30])
    assert s.meta["funding"]["hash"] != t.meta["funding"]["hash"]
    parts = t.split((None, 20 * HOUR), (20 * HOUR, 34 * HOUR), (34 * HOUR, None), embargo=2)
    np.testing.assert_array_equal(parts["train"].funding, t.funding[:20])
    np.testing.assert_array_equal(parts["validation"].funding, t.funding[22:34])
    np.testing.assert_array_equal(parts["test"].funding, t.funding[36:])
    for fold in t.walk_forward(2, 8):
        lo, hi = fold.test_rows
        np.testing.assert_array_equal(fold.test.funding, t.funding[lo:hi])


def test_nan_funding_is_zero_where_untradable_and_an_error_where_tradable():
    T, A = 48, 2
    f = np.zeros((T, A))
    tradable = np.ones((T, A), bool)
    tradable[:5, 1] = False
    f[:5, 1] = np.nan  # before listing: no bar, no charge
    t = _tensor(funding=f, tradable=tradable)
    assert np.all(t.funding[:5, 1] == 0) and np.isfinite(t.funding).all()
    assert np.isnan(f[0, 1])  # the caller's array is not changed
    f[20, 0] = np.nan
    with pytest.raises(DataValidationError, match=r"funding of BTC/USDT:USDT at row 20 .* tradable bar"):
        _tensor(funding=f, tradable=tradable)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((47, 2)), r"funding must be \[T, A\] = \(48, 2\)"),
    (np.full((48, 2), 3.0), r"\|rate\| <= 1.0"),
    (np.full((48, 2), np.inf), r"tradable bar"),
])
def test_bad_funding_is_refused_with_a_one_line_error(bad, match):
    with pytest.raises(DataValidationError, match=match):
        _tensor(funding=bad)


def test_direct_construction_checks_dtype_and_shape():
    t = _tensor()
    with pytest.raises(DataValidationError, match="float64"):
        FactorTensor(t.features, t.prices, t.timestamps, t.symbols, t.feature_names, t.tradable, {},
                     t.funding.astype(np.float32))
    with pytest.raises(DataValidationError, match=r"\[T, A\]"):
        FactorTensor(t.features, t.prices, t.timestamps, t.symbols, t.feature_names, t.tradable, {}, t.funding[:, :1])


def test_inspect_shows_funding(tmp_path, capsys):
    from factorgym.cli import main

    d = _tensor().save(tmp_path / "perp")
    assert main(["inspect", str(d)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("funding"))
    assert "BTC/USDT:USDT 6 charges" in line and "source arrays" in line
    _tensor(funding=None).save(tmp_path / "spot")
    assert main(["inspect", str(tmp_path / "spot")]) == 0
    assert "funding      none (spot tensor)" in capsys.readouterr().out
    assert json.loads((d / "meta.json").read_text())["funding"]["source"] == "arrays"
