"""Stable-Baselines3 (and sb3-contrib) models as policy bundles.

Model kinds ``sb3-<algorithm>`` (``sb3-ppo``, ``sb3-recurrentppo``, ...): ``model/model.zip`` is the
SB3 save file; the observation normaliser (``VecNormalize``) travels as statistics in the spec,
not as a pickle, and :class:`SB3Policy` applies them before ``model.predict``.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factorgym.agents.bundle import BundleError, ObsNormaliser, PolicySpec, register_policy_loader, save_bundle
from factorgym.errors import ConfigError

#: algorithm name (as in YAML) -> (module, class); sb3-contrib ones are imported only when used
ALGORITHMS: dict[str, tuple[str, str]] = {
    "PPO": ("stable_baselines3", "PPO"),
    "A2C": ("stable_baselines3", "A2C"),
    "SAC": ("stable_baselines3", "SAC"),
    "TD3": ("stable_baselines3", "TD3"),
    "DDPG": ("stable_baselines3", "DDPG"),
    "DQN": ("stable_baselines3", "DQN"),
    "RecurrentPPO": ("sb3_contrib", "RecurrentPPO"),
    "TQC": ("sb3_contrib", "TQC"),
}
MODEL_FILE = "model.zip"


def algorithm_class(name: str) -> type:
    """The SB3 class of an algorithm name (case-insensitive)."""
    canonical = {k.lower(): k for k in ALGORITHMS}.get(str(name).lower())
    if canonical is None:
        raise ConfigError(f"algorithm {name!r} is unknown; expected one of {', '.join(ALGORITHMS)}")
    module, cls = ALGORITHMS[canonical]
    return getattr(importlib.import_module(module), cls)


def model_kind(algorithm: str) -> str:
    return f"sb3-{algorithm.lower()}"


def vecnormalize_stats(venv: Any) -> dict | None:
    """The observation statistics of a ``VecNormalize`` anywhere in a VecEnv wrapper chain (None if
    there is none or it does not normalise observations)."""
    from stable_baselines3.common.vec_env import VecNormalize

    while venv is not None and not isinstance(venv, VecNormalize):
        venv = getattr(venv, "venv", None)
    if venv is None or not venv.norm_obs:
        return None
    rms = venv.obs_rms
    if isinstance(rms, dict):
        keys = venv.norm_obs_keys
        mean, var = {k: rms[k].mean.tolist() for k in keys}, {k: rms[k].var.tolist() for k in keys}
        count = {k: float(rms[k].count) for k in keys}
    else:
        mean, var, count = rms.mean.tolist(), rms.var.tolist(), float(rms.count)
    return {"kind": "vecnormalize", "mean": mean, "var": var, "count": count,
            "clip_obs": float(venv.clip_obs), "epsilon": float(venv.epsilon)}


def save_sb3_bundle(path: str | Path, model: Any, spec: PolicySpec, algorithm: str, venv: Any = None) -> Path:
    """Write ``model`` (an SB3 algorithm) as a bundle; ``venv`` supplies VecNormalize statistics."""
    stats = vecnormalize_stats(venv if venv is not None else model.get_env())
    spec = dataclasses.replace(spec, obs_normaliser=stats, extra={**spec.extra, "algorithm": algorithm})
    return save_bundle(path, spec=spec, model_kind=model_kind(algorithm),
                       write_model=lambda d: model.save(d / MODEL_FILE))


class SB3Policy:
    """A loaded SB3 model acting deterministically; recurrent models keep their state until ``reset()``.

    ``policy(obs)`` takes one observation (or a batch [N, ...]) and returns the action(s): exactly
    ``model.predict(normalised obs, deterministic=True)`` (tests/test_sb3_policy.py), computed by a
    direct no-grad forward pass for flat observations (predict's per-call checks, conversions and
    train-mode switches cost more than a small network's maths when a backtest calls it once a bar)."""

    def __init__(self, model: Any, spec: PolicySpec) -> None:
        self.model, self.spec = model, spec
        self.normalise = ObsNormaliser(spec.obs_normaliser)
        self.recurrent = hasattr(model.policy, "lstm_actor")
        space, act = model.observation_space, model.action_space
        self._fast = not self.recurrent and space.__class__.__name__ == "Box"
        self._box = act.__class__.__name__ == "Box"
        self._squash = bool(getattr(model.policy, "squash_output", False))
        self._act_shape = act.shape
        self._low, self._high = (act.low, act.high) if self._box else (None, None)
        self._mean_ops = _gaussian_mean_ops(model.policy) if self._fast else None
        self.reset()

    def reset(self) -> None:
        self._state = None
        self._start: np.ndarray | None = None

    def __call__(self, obs: Any) -> np.ndarray:
        x = self.normalise(obs)
        if self._fast:
            return self._forward(x)
        if not self.recurrent:
            action, _ = self.model.predict(x, deterministic=True)
            return action
        n = 1 if self._is_single(x) else len(next(iter(x.values())) if isinstance(x, dict) else x)
        if self._start is None:
            self._start = np.ones(n, dtype=bool)
        action, self._state = self.model.predict(x, state=self._state, episode_start=self._start, deterministic=True)
        self._start = np.zeros(n, dtype=bool)
        return action

    def _forward(self, x: Any) -> np.ndarray:
        """What ``model.predict(x, deterministic=True)`` returns, without its per-call bookkeeping."""
        x = np.asarray(x, dtype=np.float32)
        single = x.ndim == 1
        policy = self.model.policy
        if policy.training:
            policy.set_training_mode(False)
        with torch.inference_mode():
            t = torch.from_numpy(x[None] if single else x)
            if self._mean_ops is not None:  # a diagonal Gaussian's mode is its mean: the actor's layers, nothing else
                for op in self._mean_ops:
                    t = op(t)
                a = t.numpy()
            else:
                a = policy._predict(t, deterministic=True).numpy()
        if self._box:
            a = a.reshape((-1, *self._act_shape))
            a = policy.unscale_action(a) if self._squash else np.clip(a, self._low, self._high)
        return a[0] if single else a

    def _is_single(self, x: Any) -> bool:
        space = self.model.observation_space
        if isinstance(x, dict):
            k = next(iter(x))
            return np.ndim(x[k]) == len(space[k].shape)
        return np.ndim(x) == len(space.shape)


def _gaussian_mean_ops(policy: Any) -> list | None:
    """The functions that map a flat observation batch to the mean action of an ``ActorCriticPolicy``
    with a diagonal Gaussian (PPO, A2C): float cast, feature extractor, actor MLP, action head, each
    ``Linear``/``Tanh``/``ReLU``/``Flatten`` as the torch function its module's ``forward`` calls (same
    kernels, same bits, no module-call overhead). None for any other policy."""
    from stable_baselines3.common.distributions import DiagGaussianDistribution
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.preprocessing import is_image_space
    from stable_baselines3.common.torch_layers import MlpExtractor

    if not isinstance(policy, ActorCriticPolicy) or type(policy.action_dist) is not DiagGaussianDistribution:
        return None
    if (is_image_space(policy.observation_space) or type(policy.mlp_extractor) is not MlpExtractor
            or type(policy).extract_features is not ActorCriticPolicy.extract_features):
        return None  # preprocessing or layers this shortcut does not know: predict's own path
    extractor = policy.pi_features_extractor
    return [lambda t: t.float(), *_module_ops(extractor), *_module_ops(policy.mlp_extractor.policy_net),
            *_module_ops(policy.action_net)]


def _module_ops(module: Any) -> list:
    from torch import nn
    from torch.nn import functional as F
    from stable_baselines3.common.torch_layers import FlattenExtractor

    if isinstance(module, FlattenExtractor):
        return _module_ops(module.flatten)
    if isinstance(module, nn.Sequential):
        return [op for child in module for op in _module_ops(child)]
    if type(module) is nn.Linear:
        return [lambda t, w=module.weight, b=module.bias: F.linear(t, w, b)]  # live parameters (updated in place)
    if type(module) is nn.Tanh:
        return [torch.tanh]
    if type(module) is nn.ReLU and not module.inplace:
        return [torch.relu]
    if type(module) is nn.Flatten:
        return [lambda t, m=module: t.flatten(m.start_dim, m.end_dim)]
    return [module]


def _loader(algorithm: str):
    def load(model_dir: Path, spec: PolicySpec) -> SB3Policy:
        path = model_dir / MODEL_FILE
        if not path.is_file():
            raise BundleError(f"{path} is missing: the bundle's SB3 model file")
        model = algorithm_class(algorithm).load(path, device="cpu")
        return SB3Policy(model, spec)
    return load


for _name in ALGORITHMS:
    register_policy_loader(model_kind(_name), _loader(_name))
