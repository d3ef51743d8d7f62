"""Walk-forward folds: bar ranges by hand, and leak-proofness against a poisoned future.

The spy trainer hashes every array it is handed and chooses its "checkpoint" by backtesting
candidates on the validation block, so any bar of the future that reached it would change either.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from factorgym.agents.walk_forward import (
    FoldModel,
    apply_fold_normalisation,
    check_tensor_normalisation,
    fit_fold_normalisation,
    plan_folds,
    run_folds,
)
from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs.backtest import backtest
from factorgym.envs.config import ExecutionConfig
from factorgym.errors import ConfigError

H = 3_600_000
EXEC = ExecutionConfig.frictionless()


def _market(T=260, A=2, F=3, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, size=(T, A)), axis=0))
    feats = rng.normal(size=(T, A, F)) * np.arange(1, F + 1) + 5.0
    return FactorTensor.from_arrays(feats, close, np.arange(T) * H, feature_names=[f"f{i}" for i in range(F)])


class ConstantWeights:
    def __init__(self, w):
        self.w = np.asarray(w, dtype=np.float64)

    def __call__(self, obs):
        return self.w.copy()


class SpyTrainer:
    """Records a digest of everything it is given; picks the best of three weights on validation."""

    config = {"trainer": "spy"}

    def __init__(self):
        self.seen = {}

    def __call__(self, data):
        h = data.history
        digest = hashlib.sha256()
        for arr in (h.features, h.prices, h.timestamps, h.tradable):
            digest.update(np.ascontiguousarray(arr).tobytes())
        tr = data.train
        tilt = float(np.nanmean(tr.features[..., 0]))  # "training": a statistic of the training rows
        val = data.validation(window=2)
        scores = {}
        for w in (0.0, 0.5, 1.0):
            res = backtest(val, ConstantWeights([w, 1 - w]), window=2, mapping="direct", execution=EXEC)
            scores[w] = res.metrics["total_return"]
        best = max(scores, key=scores.get)
        self.seen[(data.fold, data.seed)] = {"digest": digest.hexdigest(), "best": best, "scores": scores, "tilt": tilt,
                                             "last_ts": int(h.timestamps[-1]), "features": np.array(h.features)}
        return FoldModel(ConstantWeights([best, 1 - best]), {"window": 2, "mapping": "direct", "execution": EXEC},
                         checkpoint=f"w={best}", validation={"total_return": scores[best]})


def _poison(tensor, start, seed=99):
    rng = np.random.default_rng(seed)
    f = np.array(tensor.features)
    p = np.array(tensor.prices)
    f[start:] = np.nan
    p[start:] = p[start:][rng.permutation(len(p) - start)] * rng.uniform(0.5, 2.0, size=(len(p) - start, 1, 1))
    return FactorTensor(f, p, np.array(tensor.timestamps), list(tensor.symbols), list(tensor.feature_names),
                        np.array(tensor.tradable), dict(tensor.meta))


# ------------------------------------------------------------------ fold ranges
def test_plan_folds_expanding_by_hand():
    plans = plan_folds(100, 3, 10, val_bars=8, embargo=2)
    assert [(p.train, p.validation, p.test) for p in plans] == [
        ((0, 58), (60, 68), (70, 80)),
        ((0, 68), (70, 78), (80, 90)),
        ((0, 78), (80, 88), (90, 100)),
    ]


def test_plan_folds_rolling_keeps_the_training_length():
    plans = plan_folds(100, 3, 10, val_bars=8, embargo=2, scheme="rolling")
    assert [p.train for p in plans] == [(0, 58), (10, 68), (20, 78)]
    assert [p.train for p in plan_folds(100, 2, 10, val_bars=8, embargo=0, scheme="rolling", train_bars=30)] == [(42, 72), (52, 82)]


@pytest.mark.parametrize("kw, words", [
    (dict(n_bars=50, n_folds=3, test_bars=15, val_bars=8), "training bars"),
    (dict(n_bars=100, n_folds=2, test_bars=10, val_bars=8, scheme="sliding"), "scheme"),
    (dict(n_bars=100, n_folds=0, test_bars=10, val_bars=8), "folds"),
    (dict(n_bars=100, n_folds=2, test_bars=10, val_bars=8, embargo=-1), "embargo"),
    (dict(n_bars=100, n_folds=2, test_bars=10, val_bars=8, scheme="rolling", train_bars=500), "train_bars"),
])
def test_plan_folds_refuses_what_does_not_fit(kw, words):
    n = kw.pop("n_bars")
    with pytest.raises(ConfigError, match=words):
        plan_folds(n, kw.pop("n_folds"), kw.pop("test_bars"), **kw)


# ------------------------------------------------------------------ leak-proof
@pytest.mark.parametrize("normalise", ["none", "train"])
def test_poisoned_future_changes_neither_training_nor_checkpoint(tmp_path, normalise):
    tensor = _market()
    plans = plan_folds(tensor.n_bars, 3, 30, val_bars=40, embargo=5)
    clean = SpyTrainer()
    run_folds(tensor, clean, plans, [0, 1], tmp_path / "clean", normalise=normalise)
    for plan in plans:
        cut = plan.test[0] - plan.embargo
        spy = SpyTrainer()
        rows = run_folds(_poison(tensor, cut), spy, [plan], [0, 1], tmp_path / f"p{plan.index}", normalise=normalise)
        for seed in (0, 1):
            got, want = spy.seen[(plan.index, seed)], clean.seen[(plan.index, seed)]
            assert got["digest"] == want["digest"]
            assert got["best"] == want["best"] and got["scores"] == want["scores"] and got["tilt"] == want["tilt"]
            assert got["last_ts"] < tensor.timestamps[cut]
        # the poisoned test block does change the out-of-sample result: the poison is real
        clean_row = [r for r in run_folds(tensor, SpyTrainer(), [plan], [0], tmp_path / "c2", normalise=normalise)][0]
        assert not np.allclose(rows[0]["returns"], clean_row["returns"])


def test_the_leak_check_is_sharp_one_bar_earlier_is_seen(tmp_path):
    tensor = _market()
    plan = plan_folds(tensor.n_bars, 2, 30, val_bars=40, embargo=5)[1]
    a, b = SpyTrainer(), SpyTrainer()
    run_folds(tensor, a, [plan], [0], tmp_path / "a")
    run_folds(_poison(tensor, plan.test[0] - plan.embargo - 1), b, [plan], [0], tmp_path / "b")
    assert a.seen[(1, 0)]["digest"] != b.seen[(1, 0)]["digest"]


# ------------------------------------------------------------------ per-fold normalisation
def test_fold_normalisation_is_fitted_on_the_training_rows_only(tmp_path):
    tensor = _market()
    plan = plan_folds(tensor.n_bars, 2, 30, val_bars=40, embargo=5)[0]
    tr0, tr1 = plan.train
    x = np.asarray(tensor.features[tr0:tr1], dtype=np.float64)
    stats = fit_fold_normalisation(tensor.features[tr0:tr1], tensor.tradable[tr0:tr1])
    assert np.allclose(stats["mean"], x.mean(axis=0)) and np.allclose(stats["std"], x.std(axis=0))
    spy = SpyTrainer()
    rows = run_folds(tensor, spy, [plan], [0], tmp_path, normalise="train")
    h0 = plan.history[0]
    seen = spy.seen[(0, 0)]["features"]
    expect = np.clip((np.asarray(tensor.features[h0:plan.history[1]], np.float64) - x.mean(axis=0)) / x.std(axis=0), -10, 10)
    assert np.allclose(seen, expect, atol=1e-5)
    # training rows are standardised, the validation rows are not re-fitted
    assert np.allclose(seen[:tr1 - h0].mean(axis=0), 0, atol=1e-5)
    # poisoning everything after the training range (validation included) leaves the statistics alone
    rows_p = run_folds(_poison(tensor, tr1), SpyTrainer(), [plan], [0], tmp_path / "p", normalise="train")
    for k in ("mean", "std"):
        assert np.array_equal(rows[0]["norm_stats"][k], rows_p[0]["norm_stats"][k])


def test_untradable_bars_stay_out_of_the_fold_statistics():
    f = np.array([[[1.0]], [[3.0]], [[1000.0]]], dtype=np.float32)
    trad = np.array([[True], [True], [False]])
    st = fit_fold_normalisation(f, trad)
    assert st["mean"][0, 0] == 2.0 and st["std"][0, 0] == 1.0
    t = FactorTensor.from_arrays(f, np.full((3, 1), 100.0), np.arange(3) * H)
    assert apply_fold_normalisation(t, st).features[:2, 0, 0].tolist() == [-1.0, 1.0]


def test_a_tensor_normalised_past_the_first_training_end_is_refused():
    tensor = _market()
    plans = plan_folds(tensor.n_bars, 2, 30, val_bars=40, embargo=5)
    tensor.meta["normalisation"] = {"method": "train", "fit_end": int(tensor.timestamps[plans[0].train[1] + 3])}
    with pytest.raises(ConfigError, match="rebuild it"):
        check_tensor_normalisation(tensor, plans)
    tensor.meta["normalisation"]["fit_end"] = int(tensor.timestamps[plans[0].train[1]])
    check_tensor_normalisation(tensor, plans)


def test_test_blocks_tile_the_stitched_bars(tmp_path):
    tensor = _market()
    plans = plan_folds(tensor.n_bars, 3, 30, val_bars=40, embargo=5)
    rows = run_folds(tensor, SpyTrainer(), plans, [0], tmp_path)
    ts = np.concatenate([r["timestamps"] for r in rows])
    assert np.array_equal(ts, tensor.timestamps[tensor.n_bars - 90:])
    # each fold's returns are the frozen policy's over exactly its test bars, by hand: with open =
    # close (close-only prices) and no costs, the fill at bar lo's open earns nothing on bar lo, and
    # constant weights rebalanced at each open earn sum_i w_i (c_t / c_{t-1} - 1) on bar t > lo
    r0 = rows[0]
    w = r0["model"].policy.w
    close = tensor.prices[:, :, 3]
    lo, hi = plans[0].test
    expect = [0.0] + [float((w * (close[t] / close[t - 1] - 1)).sum()) for t in range(lo + 1, hi)]
    assert r0["returns"] == pytest.approx(expect, abs=1e-12)
