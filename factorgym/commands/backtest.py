"""``factorgym backtest --run DIR``: a trained policy beside the baselines; ``factorgym backtest-baselines``:
the rule-based baselines alone on a saved tensor."""

from __future__ import annotations

import argparse
import json
import math
import sys

from factorgym.commands import HelpFormatter


def add_parser(subparsers) -> None:
    _add_run_parser(subparsers)
    p = subparsers.add_parser(
        "backtest-baselines",
        help="backtest cash, buy-and-hold, equal-weight and random baselines on a saved tensor",
        description="Backtest the baseline policies (cash, buy_and_hold, equal_weight, random) through "
        "CryptoTradingEnv on a saved FactorTensor and print their metrics table. Sharpe/Sortino use "
        "simple per-bar returns, risk-free 0, annualised for a 24/7 market.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--tensor", required=True, metavar="DIR", help="folder of a saved FactorTensor (from `factorgym build`)")
    p.add_argument("--start", default=None,
                   help="first decision bar: a UTC time such as 2024-01-01 or 2024-01-01T12:00Z; None = the first bar")
    p.add_argument("--end", default=None, help="exclusive end time, UTC; None = through the last bar")
    p.add_argument("--fee-bps", type=float, default=None,
                   help="taker/maker fee in basis points for every symbol; None = the tensor's market rules, else 10 bps")
    p.add_argument("--slippage-bps", type=float, default=None,
                   help="fixed slippage per fill in basis points; None = ExecutionConfig's default (the half spread and impact terms still apply)")
    p.add_argument("--frictionless", action="store_true",
                   help="no fees, slippage, spread, impact or lot rules (an idealised run; --fee-bps still applies if given)")
    p.add_argument("--initial-cash", type=float, default=10_000.0, help="starting cash, quote currency")
    p.add_argument("--rebalance-every", type=int, default=1, help="bars between rebalances of equal_weight and random")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--baselines", default="cash,buy_and_hold,equal_weight,random",
                   help="comma-separated baselines to run")
    p.add_argument("--report", default=None, metavar="HTML",
                   help="also write a self-contained HTML report (plots, metrics, trades) to this file")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object instead of a table")
    p.set_defaults(func=run)


def _jsonable(v: float):
    """JSON has no NaN/inf: nan -> null, ±inf -> "inf"/"-inf"."""
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def run(args: argparse.Namespace) -> int:
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs.baselines import BASELINE_NAMES, format_table, run_baselines
    from factorgym.envs.config import ExecutionConfig
    from factorgym.envs.report import write_html_report
    from factorgym.errors import ConfigError

    names = tuple(n.strip() for n in args.baselines.split(",") if n.strip())
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown or not names:
        raise ConfigError(f"--baselines {args.baselines!r}: unknown {unknown or 'empty list'}; choose from {','.join(BASELINE_NAMES)}")
    overrides: dict = {}
    make = ExecutionConfig.frictionless if args.frictionless else ExecutionConfig
    if args.fee_bps is not None:
        if not (math.isfinite(args.fee_bps) and 0 <= args.fee_bps < 10_000):
            raise ConfigError(f"--fee-bps {args.fee_bps}: expected basis points in [0, 10000), e.g. 10")
        overrides.update(taker_fee=args.fee_bps / 1e4, maker_fee=args.fee_bps / 1e4)
    if args.slippage_bps is not None:
        overrides["slippage_bps"] = args.slippage_bps
    execution = make(**overrides)
    tensor = FactorTensor.load(args.tensor)
    results = run_baselines(tensor, names=names, start=args.start, end=args.end, execution=execution,
                            initial_cash=args.initial_cash, rebalance_every=args.rebalance_every, seed=args.seed)
    if args.report:
        path = write_html_report(args.report, results)
        print(f"report written to {path}", file=sys.stderr)
    if args.json:
        print(json.dumps({name: {k: _jsonable(v) for k, v in r.metrics.items()} for name, r in results.items()}))
    else:
        first = next(iter(results.values()))
        print(first.summary().splitlines()[0].replace(f"backtest {first.name}:", "baselines:"))
        print(format_table(results))
    return 0


def _add_run_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "backtest",
        help="backtest a trained policy bundle beside the baselines on a split",
        description="Load a run's policy bundle (its best by validation Sharpe, else its final; or any bundle "
        "folder) and backtest it beside every baseline through the same env, fees and starting cash, on a split "
        "of the run's tensor cut as the run's config says, or between two UTC times. Prints a table and writes "
        "report.html (self-contained), metrics.json and trades.csv under <run>/backtest/<split>/. The bundle "
        "refuses a tensor whose features, symbols, timeframe or factor set differ.\n\n"
        "example:\n  factorgym backtest --run runs/ppo_fast-20260101T000000Z --split test",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--run", required=True, metavar="DIR", help="run directory (from `factorgym train`) or a bundle folder")
    p.add_argument("--tensor", default=None, metavar="DIR", help="saved tensor to backtest on; default: the run's own")
    p.add_argument("--split", default="test",
                   help="test, validation or train (cut as the run's config says), or START:END UTC times "
                        "such as 2024-01-01:2024-06-01 (either side may be empty)")
    p.add_argument("--seed", type=int, default=0, help="seed of the env reset and the random baseline")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object instead of a table")
    p.add_argument("--report", default=None, metavar="HTML", help="also copy the HTML report to this file")
    p.set_defaults(func=run_policy)


def run_policy(args: argparse.Namespace) -> int:
    import shutil

    from factorgym.agents.policy_backtest import backtest_run, metrics_json
    from factorgym.envs.baselines import format_table

    results, files = backtest_run(args.run, tensor_dir=args.tensor, split=args.split, seed=args.seed)
    if args.report:
        shutil.copyfile(files["report"], args.report)
    if args.json:
        print(json.dumps(metrics_json(results)))
    else:
        first = results["agent"]
        print(first.summary().splitlines()[0].replace("backtest agent:", f"backtest ({args.split}):"))
        print(format_table(results))
        print(f"report: {args.report or files['report']}  metrics: {files['metrics']}  trades: {files['trades']}")
    return 0
