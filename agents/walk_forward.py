"""Walk-forward evaluation: retrain from scratch per fold, choose the checkpoint on a validation block
before the test block, run the frozen policy on the test block; several seeds per fold.

Fold ``i`` of ``K`` (test blocks tile the last ``K x test_bars`` bars, in time order)::

    |<- train ->|embargo|<- validation ->|embargo|<- test i ->|
    train_lo    train_hi    val_lo    val_hi       test_lo    test_hi

* ``expanding``: ``train_lo = 0``; ``rolling``: every fold trains on the same number of bars
  (``train_bars``, default the first fold's), ending at ``train_hi``.
* The trainer is handed only ``history = bars [train_lo, val_hi)``: nothing at or after
  ``test_lo - embargo`` reaches training or the checkpoint choice (tests poison those bars and show
  both unchanged).
* ``normalise="train"`` z-scores each feature column per asset with the mean and standard deviation
  of the fold's **training rows only** and applies them to the validation and test bars; ``"none"``
  keeps the tensor's own point-in-time normalisation (expanding or rolling). A tensor normalised with
  ``method: train`` over a range reaching past a fold's training end is refused.
* The test run decides at the close of bar ``test_lo - 1`` (its observation window ends there) and
  fills from ``test_lo``'s open, so the ``test_bars`` returns of consecutive folds tile without gaps;
  each fold starts again from the initial cash and the stitched curve compounds the fold returns.

Trainers implement :class:`Trainer`; :mod:`factorgym.agents.walk_forward_trainers` adapts the
training entry point. The run and its summary live in :func:`run_walk_forward`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from factorgym.data_layer.tensor import FactorTensor
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMES = ("expanding", "rolling")
NORMALISE = ("none", "train")


@dataclass(frozen=True)
class FoldPlan:
    """Bar ranges of one fold, half-open ``(lo, hi)`` indices into the evaluated tensor."""

    index: int
    train: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int]
    embargo: int

    @property
    def history(self) -> tuple[int, int]:
        """Everything the fold may read while training and choosing its checkpoint."""
        return self.train[0], self.validation[1]


def plan_folds(n_bars: int, n_folds: int, test_bars: int, *, val_bars: int, embargo: int = 0,
               scheme: str = "expanding", train_bars: int | None = None, min_train_bars: int = 2) -> list[FoldPlan]:
    """The folds' bar ranges (see the module doc). Raises a one-line error naming what does not fit."""
    if scheme not in SCHEMES:
        raise ConfigError(f"scheme {scheme!r} is unknown; expected one of {SCHEMES}")
    for name, v, low in (("folds", n_folds, 1), ("test_bars", test_bars, 2), ("val_bars", val_bars, 2), ("embargo", embargo, 0)):
        if int(v) != v or v < low:
            raise ConfigError(f"{name}={v!r}: expected a whole number >= {low}")
    first_test = n_bars - n_folds * test_bars
    first_train_hi = first_test - 2 * embargo - val_bars
    if first_train_hi < min_train_bars:
        raise ConfigError(f"{n_folds} folds x {test_bars} test bars, {val_bars} validation bars and embargo {embargo} "
                          f"leave {max(first_train_hi, 0)} training bars in the first fold of a {n_bars}-bar tensor "
                          f"(need >= {min_train_bars}): use fewer folds or shorter test blocks")
    if scheme == "rolling":
        train_bars = first_train_hi if train_bars is None else int(train_bars)
        if not min_train_bars <= train_bars <= first_train_hi:
            raise ConfigError(f"train_bars={train_bars}: expected {min_train_bars} .. {first_train_hi} (the first fold's room)")
    plans = []
    for i in range(n_folds):
        t0 = first_test + i * test_bars
        v1 = t0 - embargo
        v0 = v1 - val_bars
        tr1 = v0 - embargo
        tr0 = 0 if scheme == "expanding" else tr1 - int(train_bars)
        plans.append(FoldPlan(i, (tr0, tr1), (v0, v1), (t0, t0 + test_bars), embargo))
    return plans


def fit_fold_normalisation(features: np.ndarray, tradable: np.ndarray) -> dict[str, np.ndarray]:
    """Per asset and feature: mean and standard deviation (ddof=0) of the finite values on tradable
    bars of ``features`` [T, A, F] -- pass the training rows only. Flat columns get std 1."""
    x = np.asarray(features, dtype=np.float64)
    ok = np.isfinite(x) & np.asarray(tradable, dtype=bool)[:, :, None]
    n = ok.sum(axis=0)
    xs = np.where(ok, x, 0.0)
    mean = xs.sum(axis=0) / np.maximum(n, 1)
    var = np.where(ok, (x - mean) ** 2, 0.0).sum(axis=0) / np.maximum(n, 1)
    std = np.sqrt(var)
    std = np.where(std > 1e-12, std, 1.0)
    return {"mean": mean, "std": std, "count": n}


def apply_fold_normalisation(tensor: FactorTensor, stats: dict[str, np.ndarray], clip: float = 10.0) -> FactorTensor:
    """A copy of ``tensor`` with features ``clip((x - mean) / std)`` (non-finite stays as is)."""
    z = (np.asarray(tensor.features, dtype=np.float64) - stats["mean"]) / stats["std"]
    z = np.clip(z, -clip, clip) if clip > 0 else z
    meta = dict(tensor.meta)
    meta["fold_normalisation"] = {"method": "train", "clip": clip}
    return dataclasses.replace(tensor, features=z.astype(np.float32), meta=meta)


def check_tensor_normalisation(tensor: FactorTensor, plans: list[FoldPlan]) -> None:
    """Refuse a tensor whose ``method: train`` normalisation was fitted past the first fold's training end."""
    norm = tensor.meta.get("normalisation") or {}
    if norm.get("method") != "train" or norm.get("fit_end") is None:
        return
    first_end = plans[0].train[1]
    ts = int(tensor.timestamps[first_end]) if first_end < tensor.n_bars else None
    if ts is not None and int(norm["fit_end"]) > ts:
        from factorgym.data_layer.timeframes import ms_to_iso

        raise ConfigError(f"the tensor was normalised with statistics fitted up to {ms_to_iso(int(norm['fit_end']))}, past "
                          f"fold 0's training end {ms_to_iso(ts)}: rebuild it with normalise.method expanding or rolling "
                          f"(or fit_end <= {ms_to_iso(ts)}), and use --normalise train for per-fold statistics")


@dataclass(frozen=True)
class FoldData:
    """What a trainer receives for one fold and seed: ``history`` ends before the test block minus
    the embargo. ``train_rows`` and ``val_rows`` index into ``history``."""

    fold: int
    seed: int
    history: FactorTensor
    train_rows: tuple[int, int]
    val_rows: tuple[int, int]
    run_dir: Path

    @property
    def train(self) -> FactorTensor:
        return self.history.slice_bars(*self.train_rows)

    def validation(self, window: int = 1) -> FactorTensor:
        """Validation bars with ``window - 1`` bars before them for the observation window; the first
        decision bar is index ``window - 1``."""
        lo = max(0, self.val_rows[0] - (window - 1))
        return self.history.slice_bars(lo, self.val_rows[1])


@dataclass
class FoldModel:
    """What a trainer returns: the frozen policy and how to run it.

    ``env_kwargs``: ``CryptoTradingEnv`` arguments the policy was trained with (window,
    action_scheme, mapping, execution, initial_cash, ...). ``checkpoint``: which one validation
    chose; ``validation``: its validation metrics.
    """

    policy: Callable[[Any], Any]
    env_kwargs: dict[str, Any]
    checkpoint: str | None = None
    validation: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Trainer(Protocol):
    """Trains from scratch on ``data.train``, chooses a checkpoint on ``data.validation(...)``.
    ``config`` is what the ledger hashes as this trial's configuration."""

    config: dict

    def __call__(self, data: FoldData) -> FoldModel: ...


def backtest_frozen(tensor: FactorTensor, policy, env_kwargs: dict[str, Any], *, start: int, name: str = "policy"):
    """Backtest ``policy`` over ``tensor`` from decision bar ``start`` in the env ``env_kwargs`` describe
    (``CryptoTradingEnv`` arguments; training-only ones such as ``episode_length`` are dropped)."""
    from factorgym.envs.backtest import backtest

    kw = dict(env_kwargs)
    window = int(kw.pop("window", 1))
    bt = {k: kw.pop(k) for k in ("action_scheme", "mapping", "execution", "initial_cash") if k in kw}
    for k in ("episode_length", "random_start"):
        kw.pop(k, None)
    return backtest(tensor, policy, window=window, start=start, env_kwargs=kw, name=name, **bt)


def backtest_test_block(tensor: FactorTensor, plan: FoldPlan, model: FoldModel, *, name: str = "policy"):
    """Run the frozen policy over the fold's test block (decisions from the close of ``test_lo - 1``)."""
    window = int(model.env_kwargs.get("window", 1))
    lo, hi = plan.test
    first = lo - 1 - (window - 1)
    if first < 0:
        raise ConfigError(f"fold {plan.index}: the window of {window} bars reaches before the tensor's first bar")
    return backtest_frozen(tensor.slice_bars(first, hi), model.policy, model.env_kwargs, start=window - 1, name=name)


def fold_returns(result, n_bars: int) -> np.ndarray:
    """The backtest's per-bar simple returns, padded with 0 after an early end (ruin) to ``n_bars``."""
    from factorgym.envs.metrics import simple_returns

    r = simple_returns(result.equity)
    return np.concatenate([r, np.zeros(n_bars - r.size)]) if r.size < n_bars else r[:n_bars]


def prepare_fold(tensor: FactorTensor, plan: FoldPlan, normalise: str) -> tuple[FactorTensor, FactorTensor, dict | None]:
    """``(history, test tensor, stats)``: the fold's readable history and the bars its test run needs,
    both normalised with statistics fitted on the fold's training rows when ``normalise="train"``.
    The test tensor is the whole ``tensor`` up to the test end (the policy only reads its window)."""
    if normalise not in NORMALISE:
        raise ConfigError(f"normalise {normalise!r} is unknown; expected one of {NORMALISE}")
    h0, h1 = plan.history
    history = tensor.slice_bars(h0, h1)
    test = tensor.slice_bars(0, plan.test[1])
    if normalise == "none":
        return history, test, None
    tr0, tr1 = plan.train
    stats = fit_fold_normalisation(tensor.features[tr0:tr1], tensor.tradable[tr0:tr1])
    return apply_fold_normalisation(history, stats), apply_fold_normalisation(test, stats), stats


def run_folds(tensor: FactorTensor, trainer: Trainer, plans: list[FoldPlan], seeds: list[int], out_dir: Path, *,
              normalise: str = "none", on_fold: Callable[[dict], None] | None = None) -> list[dict]:
    """Train and test every (fold, seed); one row per pair with the test backtest and timings."""
    check_tensor_normalisation(tensor, plans)
    rows = []
    for plan in plans:
        history, test_tensor, stats = prepare_fold(tensor, plan, normalise)
        h0 = plan.history[0]
        for seed in seeds:
            run_dir = out_dir / "folds" / f"fold{plan.index}_seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            data = FoldData(plan.index, int(seed), history, (plan.train[0] - h0, plan.train[1] - h0),
                            (plan.validation[0] - h0, plan.validation[1] - h0), run_dir)
            t0 = time.perf_counter()
            model = trainer(data)
            t_train = time.perf_counter() - t0
            res = backtest_test_block(test_tensor, plan, model, name=f"fold{plan.index}/seed{seed}")
            t_test = time.perf_counter() - t0 - t_train
            row = {"fold": plan.index, "seed": int(seed), "plan": plan, "model": model, "result": res,
                   "returns": fold_returns(res, plan.test[1] - plan.test[0]),
                   "timestamps": np.asarray(tensor.timestamps[plan.test[0]:plan.test[1]], dtype=np.int64),
                   "train_seconds": t_train, "test_seconds": t_test, "run_dir": run_dir, "norm_stats": stats}
            log.info("fold %d seed %d: trained in %.1fs, checkpoint %s, test Sharpe %.3f", plan.index, seed, t_train,
                     model.checkpoint, res.metrics.get("sharpe", float("nan")))
            rows.append(row)
            if on_fold is not None:
                on_fold(row)
    return rows
