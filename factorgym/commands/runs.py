"""``factorgym runs list``: the ledger of every training run, fold, seed and tuning trial."""

from __future__ import annotations

import argparse
import json

from factorgym.commands import HelpFormatter


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "runs",
        help="show the ledger of training runs, walk-forward folds, seeds and tuning trials",
        description="The ledger (<runs-dir>/ledger.sqlite) records every training run, walk-forward fold, "
        "seed and tuning trial: config hash, seed, data and factor-set hashes, summary metrics and the "
        "per-bar out-of-sample returns. The deflated Sharpe ratio counts its trials from it.",
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="runs_command", metavar="ACTION")
    ls = sub.add_parser("list", help="list the recorded runs, oldest first", formatter_class=HelpFormatter,
                        description="List the ledger's runs with their trial counts per data set.")
    ls.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder holding ledger.sqlite")
    ls.add_argument("--kind", default=None, choices=["train", "fold", "tuning", "baseline"], help="only runs of this kind")
    ls.add_argument("--study", default=None, help="only runs of this study (an evaluation's name)")
    ls.add_argument("--data-hash", default=None, help="only runs on this data hash")
    ls.add_argument("--limit", type=int, default=50, help="show the last N runs (0 = all)")
    ls.add_argument("--json", action="store_true", help="print one JSON object per run instead of a table")
    ls.set_defaults(func=run_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_list(args: argparse.Namespace) -> int:
    from factorgym.agents.ledger import Ledger

    led = Ledger(args.runs_dir)
    runs = led.runs(kind=args.kind, study=args.study, data_hash=args.data_hash)
    shown = runs[-args.limit:] if args.limit and args.limit > 0 else runs
    if args.json:
        for r in shown:
            print(json.dumps(r.__dict__, default=str))
        return 0
    if not runs:
        print(f"no runs recorded in {led.path}")
        return 0
    header = ["id", "created (UTC)", "kind", "study", "config", "seed", "fold", "data", "bars", "SR/bar", "run dir"]
    rows = [[str(r.id), r.created_at, r.kind, r.study or "-", r.config_hash, _s(r.seed), _s(r.fold),
             (r.data_hash or "-")[:12], str(r.n_obs), "-" if r.sharpe is None else f"{r.sharpe:.4f}", r.run_dir or "-"]
            for r in shown]
    widths = [max(len(x[j]) for x in [header, *rows]) for j in range(len(header))]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    groups = sorted({(r.data_hash, r.factor_set_hash) for r in runs})
    print(f"\n{len(runs)} runs ({len(shown)} shown) in {led.path}")
    for data_hash, fs_hash in groups:
        st = led.trial_stats(data_hash=data_hash, factor_set_hash=fs_hash)
        print(f"data {str(data_hash)[:12]} factors {str(fs_hash)[:12]}: {st.n_trials} trials (config x seed), "
              f"variance of their per-bar Sharpe ratios {st.sr_variance:.3g}")
    return 0


def _s(v) -> str:
    return "-" if v is None else str(v)
