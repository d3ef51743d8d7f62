"""Walk-forward evaluation figures, one JSON line each (format: README, Benchmarks).

* Wall time per fold of ``factorgym evaluate``'s engine on the shipped Bitfinex BTC/USD hourly data
  (PPO through ``factorgym.agents.train.train``, the demo's settings), beside the training time it
  contains.
* Evaluation overhead beyond training: (wall - training) / wall, goal <= 10 %. Training is each
  ``train`` call (its validation backtests and best-bundle choice included, and saving the fold's
  history tensor); the overhead is the test-block runs, the baselines
  on the same blocks, the ledger, DSR/PBO, the bootstrap intervals and the report.
* The statistics alone: PBO over 50 configurations x 4000 bars with 16 blocks (12,870 splits), and
  a 2000-draw block bootstrap of the mean Sharpe of 2 seeds over 6000 bars.

Run: ``.venv/bin/python benchmarks/evaluate.py [--folds 3 --seeds 1 --timesteps 30000]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def emit(case: str, metric: str, value: float, goal=None, higher_is_better=False, **reference) -> None:
    rec = {"bench": "evaluate", "case": case, "metric": metric, "value": round(float(value), 6)}
    if goal is not None:
        rec["goal"] = goal
        rec["meets_goal"] = bool(value >= goal if higher_is_better else value <= goal)
    if reference:
        rec["reference"] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in reference.items()}
    print(json.dumps(rec), flush=True)


def bench_walk_forward(folds: int, seeds: int, timesteps: int) -> None:
    import yaml

    from factorgym.agents.walk_forward_report import evaluate
    from factorgym.agents.walk_forward_trainers import make_trainer
    from factorgym.data_layer.build import build_from_config

    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "configs" / "evaluate" / "demo.yaml").read_text())
    cfg["train_config"] = str(root / "configs" / "evaluate" / cfg["train_config"])
    trainer = make_trainer(cfg, total_timesteps=timesteps)
    ev_cfg = cfg["evaluate"]
    with tempfile.TemporaryDirectory() as tmp:
        tensor = build_from_config(root / cfg["build"], store=Path(tmp) / "store")
        ev = evaluate(tensor, trainer, n_folds=folds, out_dir=Path(tmp) / "ev", runs_dir=tmp,
                      seeds=range(seeds), test_bars=ev_cfg["test_bars"], val_bars=ev_cfg["val_bars"], embargo=ev_cfg["embargo"])
    t = ev.summary["timings"]
    case = f"{folds} folds x {seeds} seeds, PPO {timesteps} steps per run, bitfinex BTC/USD 1h ({tensor.n_bars} bars)"
    emit(case, "seconds_per_fold", t["seconds_per_fold"], train_seconds_per_run=t["train_seconds_per_run"],
         wall_seconds=t["wall_seconds"])
    emit(case, "evaluation_overhead_fraction", t["evaluation_overhead_fraction"], goal=0.10,
         train_seconds=t["train_seconds"], overhead_seconds=t["evaluation_overhead_seconds"])


def bench_statistics() -> None:
    from factorgym.agents.stats import block_bootstrap_ci, probability_of_backtest_overfitting

    rng = np.random.default_rng(0)
    M = rng.normal(0, 0.01, size=(4000, 50))
    t0 = time.perf_counter()
    probability_of_backtest_overfitting(M, n_blocks=16)
    pbo_s = time.perf_counter() - t0
    emit("PBO: 50 configurations x 4000 bars, 16 blocks (12,870 splits)", "seconds", pbo_s)
    R = rng.normal(0, 0.01, size=(6000, 2))
    t0 = time.perf_counter()
    block_bootstrap_ci(R, n_boot=2000)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    block_bootstrap_ci(R[:, 0], lambda x: x.mean() / x.std(ddof=1), n_boot=2000)
    slow = time.perf_counter() - t0
    emit("block bootstrap: 2000 draws, mean Sharpe of 2 seeds over 6000 bars", "seconds", fast,
         explicit_resample_one_seed_seconds=slow)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--timesteps", type=int, default=30_000)
    ap.add_argument("--stats-only", action="store_true", help="skip the walk-forward run")
    args = ap.parse_args()
    bench_statistics()
    if not args.stats_only:
        bench_walk_forward(args.folds, args.seeds, args.timesteps)


if __name__ == "__main__":
    main()
