"""Training run config: flat YAML keys, validated before anything runs.

Keys are factorgym's own (:data:`KEYS`: data, env, run) plus any constructor argument of the chosen
algorithm (``learning_rate``, ``n_steps``, ``batch_size``, ... exactly as SB3 names them). Values are
plain YAML (numbers, strings, lists, mappings), never Python in strings. ``execution`` and
``policy_kwargs`` are mappings; ``--set execution.taker_fee=0.0005`` reaches into them.

Each mistake is one line naming the key: unknown keys (with a did-you-mean), wrong types, an
algorithm that cannot act in the action space, a missing tensor, a window longer than a split.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from factorgym.errors import ConfigError

ANY = object()  # type marker: any plain value


@dataclasses.dataclass(frozen=True)
class Key:
    default: Any
    types: tuple = ()  # accepted Python types; () = the default's type; (ANY,) = anything
    help: str = ""


#: factorgym's own keys: default, accepted types, meaning
KEYS: dict[str, Key] = {
    # run
    "name": Key(None, (str, type(None)), "run name: the run folder is runs/<name>-<UTC time>; null = the config file's stem"),
    "algorithm": Key("PPO", (str,), "PPO, A2C, SAC, TD3, DDPG, DQN (SB3) or RecurrentPPO, TQC (sb3-contrib)"),
    "policy": Key("auto", (str,), "SB3 policy name; auto = MlpPolicy / MultiInputPolicy (Lstm ones for RecurrentPPO)"),
    "total_timesteps": Key(100_000, (int,), "env steps to train for (all envs together)"),
    "seed": Key(0, (int,), "seeds torch, numpy, the env's start bars and the action noise"),
    "n_envs": Key(8, (int,), "envs stepped together in one kernel call"),
    "torch_threads": Key(1, (int,), "torch.set_num_threads; one is often fastest for small nets on busy cores"),
    "device": Key("cpu", (str,), "torch device"),
    "eval_freq": Key(20_000, (int,), "env steps between validation backtests (0 = only at the end)"),
    "checkpoint_freq": Key(50_000, (int,), "env steps between resumable checkpoints (0 = only at the end)"),
    "keep_checkpoints": Key(2, (int,), "checkpoints kept (the newest)"),
    "normalize_obs": Key(True, (bool,), "VecNormalize observations (statistics saved in the bundle)"),
    "normalize_reward": Key(False, (bool,), "VecNormalize rewards (training only)"),
    "clip_obs": Key(10.0, (float, int), "VecNormalize observation clip"),
    "features_extractor": Key(None, (str, type(None)), "feature extractor name from factorgym.agents.extractors; null = SB3's"),
    "features_extractor_kwargs": Key({}, (dict,), "its keyword arguments"),
    # data
    "tensor": Key(None, (str, type(None)), "folder of a saved FactorTensor"),
    "build": Key(None, (str, type(None)), "a build config (configs/factors/*.yaml) to build the tensor from, instead of `tensor`"),
    "split": Key([0.7, 0.15, 0.15], (list, dict), "train/validation/test fractions, or {train: [start, end], validation: ..., test: ...} dates"),
    "embargo": Key(0, (int,), "bars dropped at the start of each split after the first"),
    # env (CryptoTradingEnv arguments)
    "window": Key(16, (int,), "feature rows per observation, bars"),
    "action_scheme": Key("weights", (str,), "weights or discrete"),
    "mapping": Key("simplex", (str,), "simplex (long-only), signed (long/short) or direct"),
    "long_only": Key(None, (bool, type(None)), "null = inferred from mapping/levels"),
    "levels": Key(None, (list, type(None)), "discrete target levels"),
    "level_size": Key(None, (float, int, type(None)), "weight per discrete level unit; null = 1 / assets"),
    "reward": Key("log_return", (str,), "log_return, differential_sharpe, drawdown_penalty, turnover_penalty"),
    "drawdown_penalty": Key(0.1, (float, int), "weight of the drawdown term"),
    "turnover_penalty": Key(0.001, (float, int), "weight of the turnover term"),
    "sharpe_eta": Key(0.01, (float,), "EMA rate of the differential Sharpe reward"),
    "reward_scale": Key(1.0, (float, int), "every reward is multiplied by this"),
    "execution": Key({}, (dict,), "ExecutionConfig fields (fees, slippage, leverage, ...)"),
    "episode_length": Key(256, (int, type(None)), "steps per training episode; null = to the end of the split"),
    "random_start": Key(True, (bool,), "draw each training episode's start bar"),
    "initial_cash": Key(10_000.0, (float, int), "quote currency"),
    "observation": Key("flat", (str,), "flat or dict"),
}
ENV_KEYS = ("window", "action_scheme", "mapping", "long_only", "levels", "level_size", "episode_length",
            "random_start", "initial_cash", "observation")
REWARD_KEYS = {"drawdown_penalty": "drawdown_penalty", "turnover_penalty": "turnover_penalty",
               "sharpe_eta": "sharpe_eta", "reward_scale": "scale"}
#: which action spaces each algorithm can act in
SPACES = {"PPO": ("Box", "Discrete", "MultiDiscrete"), "A2C": ("Box", "Discrete", "MultiDiscrete"),
          "RecurrentPPO": ("Box", "Discrete", "MultiDiscrete"), "SAC": ("Box",), "TD3": ("Box",),
          "DDPG": ("Box",), "TQC": ("Box",), "DQN": ("Discrete",)}
#: constructor arguments the trainer sets itself
_RESERVED = {"policy", "env", "seed", "device", "tensorboard_log", "verbose", "_init_setup_model", "policy_kwargs"}


def algorithm_params(algorithm: str) -> dict[str, inspect.Parameter]:
    """Constructor arguments of an algorithm that a config may set (``policy_kwargs`` included)."""
    from factorgym.agents.sb3_policy import algorithm_class

    sig = inspect.signature(algorithm_class(algorithm).__init__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = {k: p for k, p in sig.parameters.items() if k not in _RESERVED and k != "self" and p.kind in kinds}
    params["policy_kwargs"] = sig.parameters["policy_kwargs"]
    return params


def canonical_algorithm(name: Any) -> str:
    from factorgym.agents.sb3_policy import ALGORITHMS

    canon = {k.lower(): k for k in ALGORITHMS}.get(str(name).lower())
    if canon is None:
        raise ConfigError(f"algorithm: {name!r} is unknown{_suggest(str(name), ALGORITHMS)}; expected one of {', '.join(ALGORITHMS)}")
    return canon


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(types: tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_type(key: str, value: Any, types: tuple) -> Any:
    if ANY in types or not types:
        return value
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{key}: {value!r} is {type(value).__name__}; expected {_type_name(types)}")
    if isinstance(value, int) and float in types and int not in types:
        return float(value)
    if not isinstance(value, types):
        raise ConfigError(f"{key}: {value!r} is {type(value).__name__}; expected {_type_name(types)}")
    return value


def _param_types(p: inspect.Parameter) -> tuple:
    d = p.default
    if d is inspect.Parameter.empty or d is None:
        return (ANY,)
    if isinstance(d, bool):
        return (bool,)
    if isinstance(d, (int, float)):
        return (float, int) if isinstance(d, float) else (int,)
    if isinstance(d, str):
        return (str, float, int)  # SB3 accepts e.g. "auto" or a number for ent_coef / train_freq
    return (ANY,)


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {p} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_set(item: str) -> tuple[str, Any]:
    """``key=value`` (value parsed as YAML: ``3e-4``, ``true``, ``[64, 64]``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set learning_rate=3e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_numeric(value):  # YAML 1.1 reads 3e-4 as a string
        value = float(value)
    return key, value


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return s.strip().lower() not in ("nan", "inf", "-inf", "infinity", "+inf")


def apply_overrides(raw: dict, overrides: Mapping[str, Any] | list[str] | None) -> dict:
    """``raw`` with overrides applied (``{key: value}``, ``["key=value", ...]`` or ``[(key, value), ...]``;
    dotted keys reach into mappings)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    items = ([parse_set(s) if isinstance(s, str) else tuple(s) for s in overrides] if isinstance(overrides, list)
             else list((overrides or {}).items()))
    for key, value in items:
        if "." in key:
            head, sub = key.split(".", 1)
            if head not in ("execution", "policy_kwargs", "features_extractor_kwargs"):
                raise ConfigError(f"--set {key}: only execution.*, policy_kwargs.* and features_extractor_kwargs.* take dotted keys")
            out[head] = {**(out.get(head) or {}), sub: value}
        else:
            out[key] = value
    return out


def resolve(raw: dict, *, base_dir: Path | None = None) -> dict:
    """Validate a raw config; return every key with its value or default (algorithm arguments only
    when given). Raises ConfigError naming the first bad key. Paths are made absolute from ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a run config is a mapping, got {type(raw).__name__}")
    algo = canonical_algorithm(raw.get("algorithm", KEYS["algorithm"].default))
    params = algorithm_params(algo)
    cfg: dict[str, Any] = {}
    for key, value in raw.items():
        if key in KEYS:
            types = KEYS[key].types or (type(KEYS[key].default),)
            cfg[key] = _check_type(key, value, types)
        elif key in params:
            cfg[key] = _check_type(key, value, _param_types(params[key]))
        else:
            raise ConfigError(f"unknown key {key!r}{_suggest(key, list(KEYS) + list(params))} "
                              f"(factorgym keys and {algo}'s constructor arguments are accepted)")
    for key, spec in KEYS.items():
        cfg.setdefault(key, spec.default)
    cfg["algorithm"] = algo
    _check_values(cfg, algo)
    for key in ("tensor", "build"):
        if cfg[key] is not None and base_dir is not None and not Path(cfg[key]).is_absolute():
            cfg[key] = str((base_dir / cfg[key]).resolve()) if (base_dir / cfg[key]).exists() else cfg[key]
    return cfg


def _check_values(cfg: dict, algo: str) -> None:
    from factorgym.envs.config import REWARD_KINDS, ExecutionConfig
    from factorgym.envs.spaces import ACTION_SCHEMES, MAPPINGS, OBSERVATIONS

    for key, choices in (("action_scheme", ACTION_SCHEMES), ("mapping", MAPPINGS), ("reward", REWARD_KINDS),
                         ("observation", OBSERVATIONS)):
        if cfg[key] not in choices:
            raise ConfigError(f"{key}: {cfg[key]!r} is not one of {', '.join(choices)}{_suggest(str(cfg[key]), choices)}")
    for key in ("total_timesteps", "n_envs", "window", "torch_threads", "keep_checkpoints"):
        if cfg[key] < 1:
            raise ConfigError(f"{key}: {cfg[key]} must be >= 1")
    for key in ("eval_freq", "checkpoint_freq", "embargo"):
        if cfg[key] < 0:
            raise ConfigError(f"{key}: {cfg[key]} must be >= 0")
    if cfg["episode_length"] is not None and cfg["episode_length"] < 1:
        raise ConfigError(f"episode_length: {cfg['episode_length']} must be >= 1 or null")
    fields = {f.name for f in dataclasses.fields(ExecutionConfig)}
    for k in cfg["execution"]:
        if k not in fields:
            raise ConfigError(f"execution.{k} is unknown{_suggest(k, fields)}; ExecutionConfig fields: {', '.join(sorted(fields))}")
    split = cfg["split"]
    if isinstance(split, dict):
        bad = set(split) - {"train", "validation", "test"}
        if bad or "train" not in split or "validation" not in split:
            raise ConfigError(f"split: a mapping needs train and validation (and test) ranges, got keys {sorted(split)}")
    elif not (2 <= len(split) <= 3 and all(isinstance(f, (int, float)) and f > 0 for f in split) and sum(split) <= 1 + 1e-9):
        raise ConfigError(f"split: {split!r}; expected 2 or 3 positive fractions summing to <= 1 (train, validation, test)")
    if cfg["tensor"] is None and cfg["build"] is None:
        raise ConfigError("no data: set `tensor` (a saved tensor folder) or `build` (a build config), or pass --tensor DIR")


def check_action_space(cfg: dict, n_assets: int) -> None:
    """The algorithm can act in the env's action space (DQN: discrete with one asset; SAC/TD3/DDPG/TQC: weights)."""
    algo = cfg["algorithm"]
    if cfg["action_scheme"] == "discrete":
        space = "Discrete" if n_assets == 1 else "MultiDiscrete"
    else:
        space = "Box"
    if space not in SPACES[algo]:
        if algo == "DQN":
            why = ("DQN needs a Discrete action space: action_scheme: discrete with one asset"
                   + (f" (this tensor has {n_assets})" if n_assets > 1 and cfg["action_scheme"] == "discrete" else ""))
        else:
            why = f"{algo} needs a Box action space: action_scheme: weights"
        raise ConfigError(f"algorithm: {algo} cannot act in a {space} action space (action_scheme: {cfg['action_scheme']}); {why}")
    if cfg["observation"] == "dict" and cfg["policy"] not in ("auto",) and "MultiInput" not in cfg["policy"]:
        raise ConfigError(f"policy: {cfg['policy']} takes flat observations; with observation: dict use MultiInputPolicy (or policy: auto)")


def policy_name(cfg: dict) -> str:
    if cfg["policy"] != "auto":
        return cfg["policy"]
    lstm = "Lstm" if cfg["algorithm"] == "RecurrentPPO" else ""
    return f"MultiInput{lstm}Policy" if cfg["observation"] == "dict" else f"Mlp{lstm}Policy"


def algorithm_kwargs(cfg: dict, n_assets: int | None = None) -> dict:
    """The algorithm's constructor arguments from the config (``policy_kwargs`` resolved to objects).

    A flat observation does not say its window and asset count, so the per-asset extractors get
    ``window`` (from the config) and ``n_assets`` (from the tensor) unless the config sets them."""
    params = algorithm_params(cfg["algorithm"])
    kw = {k: v for k, v in cfg.items() if k in params and k not in KEYS}
    pk = dict(kw.pop("policy_kwargs", None) or {})
    if "activation_fn" in pk and isinstance(pk["activation_fn"], str):
        import torch.nn as nn

        names = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU}
        if pk["activation_fn"].lower() not in names:
            raise ConfigError(f"policy_kwargs.activation_fn: {pk['activation_fn']!r}; expected one of {', '.join(names)}")
        pk["activation_fn"] = names[pk["activation_fn"].lower()]
    if cfg["features_extractor"]:
        pk["features_extractor_class"] = _extractor(cfg["features_extractor"])
        fek = dict(cfg["features_extractor_kwargs"])
        if n_assets is not None and "n_assets" in inspect.signature(pk["features_extractor_class"].__init__).parameters:
            fek.setdefault("window", cfg["window"])
            fek.setdefault("n_assets", n_assets)
        pk["features_extractor_kwargs"] = fek
    if pk:
        kw["policy_kwargs"] = pk
    return kw


def _extractor(name: str) -> type:
    import importlib

    try:
        mod = importlib.import_module("factorgym.agents.extractors")
    except ModuleNotFoundError:
        raise ConfigError(f"features_extractor: {name!r}, but factorgym.agents.extractors is not available") from None
    table = dict(getattr(mod, "EXTRACTORS", {}))
    if name in table:
        return table[name]
    cls = getattr(mod, name, None)
    if isinstance(cls, type):
        return cls
    raise ConfigError(f"features_extractor: {name!r} is unknown{_suggest(name, table)}; known: {', '.join(table) or '(none)'}")


def to_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
