"""A search file: which run-config keys ``factorgym tune`` searches, and how, in plain YAML.

::

    space:                                  # run-config keys (dotted keys reach into mappings)
      learning_rate: {loguniform: [1.0e-5, 1.0e-3]}
      gamma: {uniform: [0.95, 0.999]}
      n_epochs: {int: [2, 8]}               # integers, both ends included
      batch_size: {choice: [512, 1024, 2048]}
      policy_kwargs.net_arch: {choice: [[64, 64], [128, 128]]}
    asha: {grace_period: 2, reduction_factor: 2}   # optional; validations before a trial may be stopped
    sampler_seed: 0                                  # optional; Optuna TPE's seed

Every key and every value a distribution can produce (both ends of a range, every choice) is
checked against the run config before Ray starts: a bad one is a one-line error naming it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from factorgym.agents import config as C
from factorgym.errors import ConfigError

KINDS = ("choice", "uniform", "loguniform", "int", "logint")
TOP_KEYS = ("space", "asha", "sampler_seed")
ASHA_KEYS = {"grace_period": 1, "reduction_factor": 2}


@dataclasses.dataclass(frozen=True)
class Dist:
    key: str
    kind: str
    args: tuple

    def values_to_check(self) -> list:
        """Every choice, or both ends of a range as the distribution yields them (floats or ints)."""
        if self.kind == "choice":
            return list(self.args)
        cast = float if self.kind in ("uniform", "loguniform") else int
        return [cast(self.args[0]), cast(self.args[1])]

    def to_tune(self):
        from ray import tune

        lo, hi = (self.args + (None, None))[:2]
        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "uniform":
            return tune.uniform(float(lo), float(hi))
        if self.kind == "loguniform":
            return tune.loguniform(float(lo), float(hi))
        if self.kind == "int":
            return tune.randint(int(lo), int(hi) + 1)  # tune's upper bound is exclusive
        return tune.lograndint(int(lo), int(hi) + 1)


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    dists: tuple[Dist, ...]
    grace_period: int = ASHA_KEYS["grace_period"]
    reduction_factor: int = ASHA_KEYS["reduction_factor"]
    sampler_seed: int | None = None

    def tune_space(self) -> dict:
        return {d.key: d.to_tune() for d in self.dists}


def _parse_dist(key: str, spec: Any, where: str) -> Dist:
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise ConfigError(f"{where}: space.{key}: expected one of {{{', '.join(k + ': ...' for k in KINDS)}}}, got {spec!r}")
    (kind, args), = spec.items()
    if kind not in KINDS:
        raise ConfigError(f"{where}: space.{key}: {kind!r} is not a distribution{C._suggest(str(kind), KINDS)}; "
                          f"use one of {', '.join(KINDS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: space.{key}: choice needs a non-empty list of values, got {args!r}")
        return Dist(key, kind, tuple(args))
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        raise ConfigError(f"{where}: space.{key}: {kind} needs [low, high] numbers, got {args!r}")
    lo, hi = args
    if kind in ("int", "logint") and not all(isinstance(a, int) or float(a).is_integer() for a in args):
        raise ConfigError(f"{where}: space.{key}: {kind} needs integer bounds, got {args!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"{where}: space.{key}: {kind} needs finite low < high, got {args!r}")
    if kind in ("loguniform", "logint") and lo <= 0:
        raise ConfigError(f"{where}: space.{key}: {kind} needs low > 0, got {args!r}")
    if kind in ("int", "logint"):
        lo, hi = int(lo), int(hi)
    return Dist(key, kind, (lo, hi))


def parse_search(doc: Any, where: str = "search") -> SearchSpec:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a search file is a mapping with a `space:` section, got {type(doc).__name__}")
    bad = [k for k in doc if k not in TOP_KEYS]
    if bad:
        raise ConfigError(f"{where}: unknown section {bad[0]!r}{C._suggest(str(bad[0]), TOP_KEYS)}; sections: {', '.join(TOP_KEYS)}")
    space = doc.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: `space:` must map run-config keys to distributions, e.g. learning_rate: {{loguniform: [1.0e-5, 1.0e-3]}}")
    dists = tuple(_parse_dist(str(k), v, where) for k, v in space.items())
    asha = doc.get("asha") or {}
    if not isinstance(asha, dict) or any(k not in ASHA_KEYS for k in asha):
        raise ConfigError(f"{where}: asha: expected a mapping with {', '.join(ASHA_KEYS)}, got {asha!r}")
    for k, v in asha.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < ASHA_KEYS[k]:
            raise ConfigError(f"{where}: asha.{k}: {v!r} must be an integer >= {ASHA_KEYS[k]}")
    seed = doc.get("sampler_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ConfigError(f"{where}: sampler_seed: {seed!r} must be an integer")
    return SearchSpec(dists, sampler_seed=seed, **asha)


def load_search(path: str | Path) -> SearchSpec:
    return parse_search(C.load_yaml(path), where=str(path))


def check_against(spec: SearchSpec, raw_config: dict, where: str = "search") -> None:
    """Every value each distribution can produce resolves as a run config (the run config's own
    checks: unknown keys, types, allowed values). Raises ConfigError naming the search key."""
    for d in spec.dists:
        if d.key in ("seed", "name", "tensor", "build", "total_timesteps"):
            raise ConfigError(f"{where}: space.{d.key}: not searchable (factorgym tune sets it per trial; "
                              f"use --seeds for seeds and the run config for data and budget)")
        for v in d.values_to_check():
            try:
                C.resolve(C.apply_overrides(raw_config, {d.key: v}))
            except ConfigError as exc:
                raise ConfigError(f"{where}: space.{d.key} = {v!r} is not a valid run config value: {exc}") from None
