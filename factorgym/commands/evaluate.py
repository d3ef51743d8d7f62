"""``factorgym evaluate``: walk-forward retraining over K folds and S seeds, with baselines, the ledger,
the deflated Sharpe ratio and PBO, in one evaluation folder."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from factorgym.commands import HelpFormatter

DESCRIPTION = """\
Walk-forward evaluation. For each of K folds (test blocks tiling the end of the data, in time
order) and each of S seeds: train from scratch on the bars before the fold's validation block,
choose the checkpoint on that validation block, then run the frozen policy on the test block.
An embargo of N bars separates training, validation and test; nothing at or after the test
block's start minus the embargo reaches training or the checkpoint choice.

The config (YAML) names the data and the trainer:
  tensor: tensors/bitfinex_1h        # a saved FactorTensor folder, or
  build: configs/factors/build_sample_bitfinex.yaml   # a build config, built once into <out>/tensor
  trainer: auto                      # auto | sb3 | entry_point (factorgym.agents.train.train)
  train_config: configs/train/x.yaml # for entry_point (and auto, when that entry point is installed)
  train: {algorithm: PPO, total_timesteps: 50000, n_envs: 8, checkpoints: 4,
          env: {window: 24, episode_length: 720}, execution: {taker_fee: 0.001}, algo_kwargs: {...}}
  evaluate: {folds: 3, seeds: 2, embargo: 24, test_bars: 2000, scheme: expanding}   # defaults for the flags

Output folder: report.html, metrics.json, oos_returns.npz, folds/fold<i>_seed<s>/ (each fold's run
directory). Every fold and seed is recorded in <runs-dir>/ledger.sqlite (see `factorgym runs list`);
the DSR and PBO count the trials it holds for the same data and factor set.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="walk-forward retraining with seeds, baselines, DSR and PBO",
                              description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, metavar="YAML", help="evaluation config (see above)")
    p.add_argument("--folds", type=int, default=None, help="number of folds K (default: config evaluate.folds, else 3)")
    p.add_argument("--scheme", choices=["expanding", "rolling"], default=None,
                   help="expanding: train on all bars before the fold; rolling: on a fixed-length window (default expanding)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per fold S, seeds 0..S-1 (default: config, else 1)")
    p.add_argument("--embargo", type=int, default=None, help="bars dropped between train, validation and test (default: config, else 0)")
    p.add_argument("--test-bars", type=int, default=None, help="bars per test block M (default: bars // (K + 2))")
    p.add_argument("--val-bars", type=int, default=None, help="bars per validation block (default: half a test block)")
    p.add_argument("--train-bars", type=int, default=None, help="rolling scheme: training bars per fold (default: the first fold's)")
    p.add_argument("--normalise", choices=["none", "train"], default=None,
                   help="train: z-score features with each fold's training statistics; none: keep the tensor's point-in-time normalisation (default none)")
    p.add_argument("--timesteps", type=int, default=None, help="override the training timesteps per run")
    p.add_argument("--out", default=None, metavar="DIR", help="evaluation folder (default: <runs-dir>/evaluate/<config name>-<UTC time>)")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="runs folder holding the ledger")
    p.add_argument("--benchmark", default=None, help="equal_weight or a symbol such as BTC (default equal_weight)")
    p.add_argument("--tensor", default=None, metavar="DIR", help="saved tensor folder; overrides the config's tensor/build")
    p.add_argument("--json", action="store_true", help="print metrics.json's headline numbers as one JSON object")
    p.set_defaults(func=run)


def _load_config(path: str) -> dict:
    import yaml

    from factorgym.errors import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {path}: no such file")
    cfg = yaml.safe_load(p.read_text()) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"--config {path}: expected a mapping at the top level")
    unknown = sorted(set(cfg) - {"tensor", "build", "trainer", "train_config", "train", "evaluate"})
    if unknown:
        raise ConfigError(f"--config {path}: unknown keys {unknown}; expected tensor or build, trainer, train_config, train, evaluate")
    base = p.parent
    for k in ("tensor", "build", "train_config"):
        if cfg.get(k) and not Path(cfg[k]).is_absolute() and not Path(cfg[k]).exists() and (base / cfg[k]).exists():
            cfg[k] = str(base / cfg[k])
    return cfg


def _tensor(cfg: dict, args, out: Path):
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.errors import ConfigError

    if args.tensor or cfg.get("tensor"):
        return FactorTensor.load(args.tensor or cfg["tensor"])
    if not cfg.get("build"):
        raise ConfigError(f"--config {args.config}: give tensor (a saved tensor folder) or build (a build config)")
    from factorgym.agents.quickstart import packaged_config
    from factorgym.data_layer.build import build_from_config

    build = Path(cfg["build"])
    if not build.exists():
        build = packaged_config(cfg["build"].split("configs/", 1)[-1])
    if (out / "tensor" / "meta.json").exists():
        return FactorTensor.load(out / "tensor")
    tensor = build_from_config(build, store=out / "store", progress=False)
    tensor.save(out / "tensor")
    return tensor


def run(args: argparse.Namespace) -> int:
    from factorgym.agents.walk_forward_report import evaluate
    from factorgym.agents.walk_forward_trainers import make_trainer

    cfg = _load_config(args.config)
    ev_cfg = dict(cfg.get("evaluate") or {})
    pick = lambda flag, key, default: flag if flag is not None else ev_cfg.get(key, default)  # noqa: E731
    out = Path(args.out) if args.out else Path(args.runs_dir) / "evaluate" / f"{Path(args.config).stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    out.mkdir(parents=True, exist_ok=True)
    tensor = _tensor(cfg, args, out)
    trainer = make_trainer(cfg, total_timesteps=args.timesteps)
    n_seeds = int(pick(args.seeds, "seeds", 1))
    ev = evaluate(tensor, trainer, n_folds=int(pick(args.folds, "folds", 3)), out_dir=out, runs_dir=args.runs_dir,
                  seeds=range(n_seeds), test_bars=pick(args.test_bars, "test_bars", None), val_bars=pick(args.val_bars, "val_bars", None),
                  embargo=int(pick(args.embargo, "embargo", 0)), scheme=pick(args.scheme, "scheme", "expanding"),
                  train_bars=pick(args.train_bars, "train_bars", None), normalise=pick(args.normalise, "normalise", "none"),
                  benchmark=pick(args.benchmark, "benchmark", "equal_weight"))
    s = ev.summary
    head = {"agent_sharpe": s["agent"]["sharpe"], "agent_sharpe_ci": [s["agent"]["sharpe_ci_low"], s["agent"]["sharpe_ci_high"]],
            "dsr": s["dsr"]["dsr"], "dsr_trials": s["dsr"]["n_trials"], "pbo": s["pbo"]["pbo"], "pbo_trials": s["pbo"]["n_trials"],
            "baselines": {k: v["sharpe"] for k, v in s["baselines"].items()}, "report": str(ev.report_path)}
    if args.json:
        from factorgym.agents.walk_forward_report import _j

        print(json.dumps(_j(head)))
        return 0
    print(f"walk-forward {s['study']}: {s['settings']['folds']} folds x {len(s['settings']['seeds'])} seeds, "
          f"{ev.agent_returns.shape[0]} out-of-sample bars")
    for r in s["folds"]:
        print(f"  fold {r['fold']} seed {r['seed']}: test {r['test_start']} .. {r['test_end']}, checkpoint {r['checkpoint']}, "
              f"test Sharpe {_f(r['test']['sharpe'])}, return {_f(r['test']['total_return'], pct=True)}, train {r['train_seconds']:.0f}s")
    a = s["agent"]
    print(f"agent: mean OOS Sharpe {_f(a['sharpe'])} (95% CI {_f(a['sharpe_ci_low'])} .. {_f(a['sharpe_ci_high'])})")
    for k, b in s["baselines"].items():
        print(f"{k}: OOS Sharpe {_f(b['sharpe'])} (95% CI {_f(b['sharpe_ci_low'])} .. {_f(b['sharpe_ci_high'])})")
    print(f"DSR {_f(s['dsr']['dsr'])} counting {s['dsr']['n_trials']} trials; PBO {_f(s['pbo']['pbo'])} over {s['pbo']['n_trials']} trials")
    print(f"report: {ev.report_path}", file=sys.stderr)
    return 0


def _f(v, pct: bool = False) -> str:
    if v is None or v != v:
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:.3f}"
