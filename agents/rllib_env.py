"""The trading env for RLlib: an env creator registered with Ray's registry, single and vector.

``env_config`` (RLlib's ``config.environment(env="factorgym", env_config={...})``)::

    run_config: configs/train/ppo_fast.yaml   # a factorgym run config (file, preset name or mapping)
    tensor: tensors/btc_1h                    # optional: replaces the run config's data
    part: train                               # the split to trade: train, validation or test
    num_envs: 8                               # set by RLlib's vector entry point

The env's keyword arguments come from the run config exactly as ``factorgym train`` builds them
(:func:`factorgym.agents.train.env_kwargs`), so an RLlib policy sees the observations an SB3 one does.

Vector entry point: RLlib's ``SingleAgentEnvRunner`` (new API stack, Ray 2.60) assumes Gymnasium's
next-step autoreset: after an episode ends it expects the *next* ``step`` to return the reset
observation. ``CryptoTradingVectorEnv`` resets in the same step (the final observation is in
``infos["final_obs"]``), which RLlib would record one step off at every episode boundary. So with
``num_envs`` the creator returns Gymnasium's ``SyncVectorEnv`` (next-step autoreset) over that many
``CryptoTradingEnv``s. Works on Gymnasium 1.2 (``ray[rllib]``'s pin) and 1.4 (ours).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENV_NAME = "factorgym"
_CACHE: dict = {}


def _parts(env_config: Mapping) -> tuple[dict, Any]:
    from factorgym.agents.train import build_config, load_tensor, make_splits

    key = (repr(env_config.get("run_config")), env_config.get("tensor"), env_config.get("part", "train"))
    if key not in _CACHE:  # one tensor load per process, however many envs it builds
        cfg = build_config(env_config.get("run_config"), tensor_dir=env_config.get("tensor"))
        tensor, _ = load_tensor(cfg)
        parts = make_splits(tensor, cfg)
        part = env_config.get("part", "train")
        if part not in parts:
            from factorgym.errors import ConfigError

            raise ConfigError(f"env_config part: {part!r} is not one of {', '.join(parts)}")
        _CACHE.clear()
        _CACHE[key] = (cfg, parts[part])
    return _CACHE[key]


def make_env(env_config: Mapping | None = None):
    """One ``CryptoTradingEnv`` (or, when ``env_config["num_envs"]`` is set, a next-step-autoreset
    ``SyncVectorEnv`` of that many, for RLlib's ``gym_env_vectorize_mode="vector_entry_point"``)."""
    from factorgym.agents.train import env_kwargs
    from factorgym.envs.trading_env import CryptoTradingEnv

    env_config = dict(env_config or {})
    cfg, part = _parts(env_config)
    kw = env_kwargs(cfg, training=env_config.get("part", "train") == "train")
    n = env_config.get("num_envs")
    if n is None:
        return CryptoTradingEnv(part, **kw)
    import gymnasium as gym

    return gym.vector.SyncVectorEnv([lambda: CryptoTradingEnv(part, **kw) for _ in range(int(n))],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


def register(name: str = ENV_NAME) -> str:
    """Register :func:`make_env` with Ray's registry (``tune.register_env``); returns ``name``."""
    from ray.tune.registry import register_env

    register_env(name, make_env)
    return name
