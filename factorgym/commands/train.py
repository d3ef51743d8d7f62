"""``factorgym train``: train an SB3 / sb3-contrib agent from a YAML run config."""

from __future__ import annotations

import argparse
import logging
import sys

from factorgym.commands import HelpFormatter

log = logging.getLogger("factorgym.train")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train an RL agent from a YAML run config (SB3 PPO, A2C, SAC, TD3, DDPG, DQN; RecurrentPPO, TQC)",
        description="Train an agent on a saved FactorTensor's train split, validate it on the validation\n"
        "split, and write a run directory (runs/<name>-<UTC time>/): the resolved config, TensorBoard\n"
        "logs (SB3's scalars, rollout/ and eval/ trading metrics), checkpoints, the best bundle by\n"
        "validation Sharpe and the final bundle. Presets: configs/train/*.yaml (or just their name,\n"
        "e.g. --config ppo_fast). Ctrl-C saves a checkpoint; --resume continues the run.\n\n"
        "examples:\n"
        "  factorgym train --config ppo_fast --tensor tensors/btc_1h --set learning_rate=1e-4\n"
        "  factorgym train --resume runs/ppo_fast-20260101T120000Z --total-timesteps 2000000",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--config", metavar="YAML", default=None,
                   help="run config file, or a packaged preset's name (ppo_fast, a2c_fast, sac_fast, "
                        "recurrent_ppo_fast, dqn_single); required unless --resume")
    p.add_argument("--tensor", metavar="DIR", default=None,
                   help="saved tensor to train on, replacing the config's data (its split fractions and embargo apply)")
    p.add_argument("--total-timesteps", type=int, default=None, metavar="N", help="env steps to train for (overrides the config)")
    p.add_argument("--seed", type=int, default=None, help="seed (overrides the config)")
    p.add_argument("--run-dir", default=None, metavar="DIR", help="run directory; default runs/<name>-<UTC time>")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config key, type-checked like the file (repeatable): --set n_envs=32 "
                        "--set execution.taker_fee=0.0005 --set policy_kwargs.net_arch=[64,64]")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a run from its newest checkpoint to its total_timesteps (or --total-timesteps)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from factorgym.agents.train import summary, train
    from factorgym.errors import ConfigError

    if args.config is None and args.resume is None:
        raise ConfigError("--config YAML is required (or --resume RUN_DIR); presets are in configs/train/")
    if args.config is not None and args.resume is not None:
        raise ConfigError("give --config or --resume, not both (a resumed run keeps its config.yaml; use --set to change it)")
    result = train(args.config, tensor_dir=args.tensor, run_dir=args.run_dir, overrides=list(args.overrides),
                   total_timesteps=args.total_timesteps, seed=args.seed, resume=args.resume,
                   progress=not args.no_progress)  # a bar on a terminal, periodic log lines elsewhere
    print(summary(result))
    if result.interrupted:
        print(f"interrupted: continue with `factorgym train --resume {result.run_dir}`", file=sys.stderr)
        return 130
    return 0
