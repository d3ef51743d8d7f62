"""The command line of the custom PPO (``python -m factorgym.agents.custom.ppo``): every field of
:class:`~factorgym.agents.custom.ppo.Args` is an option whose help is the field's docstring."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect

from factorgym.agents.custom import ppo
from factorgym.agents.custom.ppo import Args, save, spec_of, train


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string literal after its annotation)."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    return {a.target.id: b.value.value for a, b in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)}


def parse_args(argv: list[str] | None = None) -> Args:
    """``Args`` from the command line; every field is an option, its docstring the help."""
    p = argparse.ArgumentParser(prog="python -m factorgym.agents.custom.ppo", description=ppo.__doc__.split("\n\n")[0])
    docs, defaults = field_docs(Args), Args()
    for f in dataclasses.fields(Args):
        if f.name == "env_kwargs":
            continue
        d, flag = getattr(defaults, f.name), "--" + f.name.replace("_", "-")
        if isinstance(d, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=d, help=docs[f.name])
        elif isinstance(d, tuple):
            p.add_argument(flag, type=int, nargs="+", default=d, help=f"{docs[f.name]} (default {d})")
        else:
            p.add_argument(flag, type=type(d), default=d, help=f"{docs[f.name]} (default {d})")
    ns = p.parse_args(argv)
    return Args(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(ns).items()})


def main(argv: list[str] | None = None) -> int:
    """Train on a tensor folder's leading bars, backtest on the rest beside buy-and-hold, save the bundle."""
    import sys

    from factorgym.data_layer.splits import split_fractions
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.agents.policy_backtest import beside_baselines
    from factorgym.envs.baselines import format_table

    args = parse_args(argv)
    if not args.tensor:
        raise SystemExit("--tensor DIR is required (a saved FactorTensor folder)")
    if not 0.0 < args.train_fraction < 1.0:
        raise SystemExit(f"--train-fraction {args.train_fraction}; expected a number in (0, 1)")
    tensor = FactorTensor.load(args.tensor)
    parts = split_fractions(tensor, (args.train_fraction, 1.0 - args.train_fraction))
    every = max(1, args.total_timesteps // (args.num_envs * args.num_steps) // 20)
    report = lambda s: s["update"] % every or print(  # noqa: E731
        f"steps {s['env_steps']:>9,}  {s['sps']:>8,.0f} steps/s  mean reward {s['mean_reward']:+.2e}", file=sys.stderr)
    result = train(args, parts["train"], on_update=report)
    policy = result.policy(spec_of(result, tensor))
    results = beside_baselines(policy, parts["validation"], name="ppo", baselines=("buy_and_hold", "cash"))
    print(format_table(results, keys=("total_return", "sharpe", "max_drawdown", "turnover", "n_trades")))
    if args.out:
        print(f"bundle: {save(result, args.out, tensor)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
