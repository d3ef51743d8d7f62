"""``factorgym tune``: a Ray Tune search (Optuna TPE + ASHA) over a run config's keys."""

from __future__ import annotations

import argparse

from factorgym.commands import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search a run config's keys with Ray Tune (Optuna TPE, ASHA early stopping); needs factorgym[ray]",
        description="Search run-config values with Ray Tune: Optuna's TPE proposes them from a search file\n"
        "(configs/tune/*.yaml: choice, uniform, loguniform, int ranges over the run config's keys), ASHA\n"
        "stops trials whose best validation Sharpe trails. Every trial is a normal training run: its own\n"
        "run directory (<runs>/<study>-<trial id>) and a ledger row, so the deflated Sharpe counts it.\n"
        "Prints a results table and the best run; --seeds S then retrains the best configuration with S\n"
        "new seeds and prints the spread. Ray starts locally without usage stats or dashboard (README\n"
        "\"Scale out on Ray\"); --address joins a cluster. Needs: pip install 'factorgym[ray]'.\n\n"
        "examples:\n"
        "  factorgym tune --config ppo_fast --tensor tensors/btc_1h --search configs/tune/ppo_search.yaml --num-samples 16\n"
        "  factorgym tune --config ppo_fast --search configs/tune/ppo_search.yaml --num-samples 16 \\\n"
        "      --storage runs/tune --name ppo-search      # run the same line again to resume it",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--config", metavar="YAML", required=True, help="run config file or preset name (as for factorgym train)")
    p.add_argument("--search", metavar="YAML", required=True, help="search file: `space:` of run-config keys to distributions")
    p.add_argument("--num-samples", type=int, required=True, metavar="N", help="trials to run")
    p.add_argument("--seeds", type=int, default=0, metavar="S",
                   help="after the search, train the best configuration with S new seeds and report the spread")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                   help="trials at once (default: as many as Ray's CPUs allow, one CPU each)")
    p.add_argument("--address", default=None, metavar="ray://HOST:PORT",
                   help="a running Ray cluster to use (its nodes must see --runs-dir and the tensor); default: a local Ray")
    p.add_argument("--storage", default=None, metavar="DIR",
                   help="Tune's state folder (default <runs-dir>/tune); with --name, running again resumes the search")
    p.add_argument("--name", default=None, help="study name (default <config name>-tune-<UTC time>); names the run dirs too")
    p.add_argument("--tensor", metavar="DIR", default=None, help="saved tensor to train on, replacing the config's data")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a base config key for every trial (repeatable), e.g. --set total_timesteps=200000")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="where trial run directories and ledger.sqlite go")
    p.add_argument("--cpus", type=int, default=None, metavar="N", help="CPUs of the local Ray (default: all)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C", help="CPUs Ray reserves per trial")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from factorgym.agents.tune import summary, tune

    result = tune(args.config, args.search, num_samples=args.num_samples, seeds=args.seeds,
                  max_concurrent=args.max_concurrent, address=args.address, storage=args.storage, name=args.name,
                  runs_dir=args.runs_dir, tensor_dir=args.tensor, overrides=list(args.overrides),
                  num_cpus=args.cpus, cpus_per_trial=args.cpus_per_trial)
    print(summary(result))
    return 0
