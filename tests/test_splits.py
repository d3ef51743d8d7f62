"""Time splits with an embargo and walk-forward folds."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.splits import split, split_fractions, walk_forward
from factorgym.data_layer.tensor import FactorTensor
from factorgym.errors import ConfigError

H = 3_600_000


def _tensor(T=100, meta=None):
    ts = np.arange(T, dtype=np.int64) * H
    return FactorTensor.from_arrays(np.zeros((T, 2, 1)), np.ones((T, 2)), ts, meta=meta)


def test_split_by_time_with_embargo():
    t = _tensor()
    s = split(t, (None, 60 * H), (60 * H, 80 * H), (80 * H, None), embargo=3)
    assert list(s) == ["train", "validation", "test"]
    assert s["train"].timestamps[0] == 0 and s["train"].timestamps[-1] == 59 * H
    assert s["validation"].timestamps[0] == 63 * H and s["validation"].timestamps[-1] == 79 * H
    assert s["test"].timestamps[0] == 83 * H and s["test"].timestamps[-1] == 99 * H
    assert np.shares_memory(s["test"].features, t.features)  # views, not copies
    assert t.split(("1970-01-01", 50 * H), embargo=0)["train"].n_bars == 50


def test_split_fractions_and_errors():
    s = split_fractions(_tensor(), (0.6, 0.2, 0.2), embargo=2)
    assert [v.n_bars for v in s.values()] == [60, 18, 18]
    with pytest.raises(ConfigError, match="overlap"):
        split(_tensor(), (None, 60 * H), (50 * H, 70 * H))
    with pytest.raises(ConfigError, match="no bars"):
        split(_tensor(), (None, 98 * H), (98 * H, None), embargo=5)
    with pytest.raises(ConfigError, match="fractions"):
        split_fractions(_tensor(), (0.9, 0.3))


def test_train_normalisation_fit_range_leak_is_refused():
    t = _tensor(meta={"normalisation": {"method": "train", "fit_end": 70 * H}})
    with pytest.raises(ConfigError, match="fit range"):
        split(t, (None, 60 * H), (60 * H, None))
    assert split(t, (None, 70 * H), (70 * H, None))["validation"].n_bars == 30


def test_walk_forward_folds():
    t = _tensor()
    folds = walk_forward(t, n_folds=3, test_bars=10, embargo=2)
    assert [f.test_rows for f in folds] == [(70, 80), (80, 90), (90, 100)]
    assert [f.train_rows for f in folds] == [(0, 68), (0, 78), (0, 88)]
    rolling = t.walk_forward(3, 10, train_bars=20, embargo=2)
    assert [f.train_rows for f in rolling] == [(48, 68), (58, 78), (68, 88)]
    for f in folds:  # train ends before test starts, embargo apart
        assert f.train.timestamps[-1] + 2 * H < f.test.timestamps[0]
    with pytest.raises(ConfigError, match="need more"):
        walk_forward(t, 10, 10)


def test_slice_does_not_inherit_parent_content_hash(tmp_path):
    t = _tensor()
    t.meta["content_hash"] = t.content_hash()
    part = t.slice_bars(0, 50)
    assert "content_hash" not in part.meta
    loaded = FactorTensor.load(part.save(tmp_path / "p"))
    assert loaded.meta["content_hash"] == part.content_hash() != t.meta["content_hash"]
