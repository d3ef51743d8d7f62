"""``factorgym quickstart``: the main job end to end on the embedded sample data, no network.

Steps (the job grows as the project does):
1. load the shipped real candles (Bitfinex BTC/USD 1h, Bitstamp BTC/ETH/LTC daily) into a store, validated;
2. build a point-in-time factor tensor from a TA-Lib factor set;
3. split it in time (train / validation / test with an embargo) and backtest the baselines on the test
   split through the trading environment, printing their metrics and writing an HTML report.
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
                   help="one build config to run instead of the two packaged sample configs "
                        "(configs/factors/build_sample_bitfinex.yaml and build_sample_bitstamp.yaml)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from factorgym.agents.quickstart import run_quickstart

    summary = run_quickstart(out=args.out, config=args.config, progress=not args.no_progress)
    print(summary)
    return 0
