"""``factorgym quickstart``: the main job end to end on the embedded sample data, no network.

1. load the shipped real candles into a store, validated;
2. build a point-in-time factor tensor of Bitfinex BTC/USD 1h with TA-Lib factors and Qlib expressions;
3. train PPO with the fast preset (configs/train/ppo_fast.yaml; fixed seed, budget and one torch
   thread, so it is deterministic) into <out>/run;
4. backtest the trained policy beside the baselines on the test split, print the table, the HTML
   report's path and the `tensorboard --logdir` command.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from factorgym.commands import HelpFormatter

log = logging.getLogger("factorgym.quickstart")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="run the main job on the embedded sample data (no network)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"),
                   help="folder for the store, the tensor and the report (default: runs/quickstart)")
    p.add_argument("--config", type=Path, default=None,
                   help="a build config to use instead of the packaged configs/train/quickstart_build.yaml")
    p.add_argument("--total-timesteps", type=int, default=None, metavar="N",
                   help="env steps of training (default: agents.quickstart.QUICKSTART_STEPS, a few minutes on 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from factorgym.agents.quickstart import QUICKSTART_STEPS, run_quickstart

    summary = run_quickstart(out=args.out, config=args.config, progress=not args.no_progress,
                             total_timesteps=args.total_timesteps or QUICKSTART_STEPS, seed=args.seed)
    print(summary)
    return 0
