"""Train RLlib PPO with N env runners on the trading env and write a factorgym bundle.

    .venv-rllib/bin/python scripts/rllib_ppo.py --config configs/rllib/ppo.yaml [--tensor DIR] [--set key=value]

Ray starts locally with factorgym's settings (no usage stats, no dashboard, capped object store);
for a machine that must send nothing off loopback, run it under `unshare -n` (README "Scale out on Ray").
"""

from __future__ import annotations

import argparse
import json
import sys

from factorgym.agents import config as C
from factorgym.agents.rllib_train import train_rllib
from factorgym.errors import ConfigError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="RLlib YAML (configs/rllib/ppo.yaml)")
    p.add_argument("--tensor", default=None, help="saved tensor, replacing the run config's data")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (repeatable)")
    a = p.parse_args(argv)
    try:
        cfg = C.apply_overrides(C.load_yaml(a.config), list(a.set))
        if a.tensor:
            cfg["tensor"] = a.tensor
        summary = train_rllib(cfg)
    except ConfigError as exc:
        print(f"rllib_ppo: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
