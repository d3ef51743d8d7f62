"""``factorgym backtest-baselines``: backtest the rule-based baselines on a saved tensor."""

from __future__ import annotations

import argparse
import json
import math
import sys

from factorgym.commands import HelpFormatter


def add_parser(subparsers) -> None:
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
