"""RLlib policies as factorgym bundles: the deterministic action of a trained RLlib (new API stack,
torch) module, exported as TorchScript, so ``load_policy`` / ``factorgym backtest`` read it with
torch alone (no Ray, no RLlib: the default venv can backtest what the ``[rllib]`` venv trained).

The exported function is what RLlib's env runner does with ``explore=False`` for a Box action space:
the Gaussian's mean (the first half of ``action_dist_inputs``), clipped to [-1, 1] and mapped to the
space's bounds (RLlib's ``normalize_actions``, on by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from factorgym.agents.bundle import BundleError, PolicySpec, register_policy_loader, save_bundle

MODEL_KIND = "rllib-torchscript"
MODEL_FILE = "policy.pt"


def _deterministic(module: Any, action_space: Any):
    import torch

    low = torch.as_tensor(np.asarray(action_space.low, dtype=np.float32))
    high = torch.as_tensor(np.asarray(action_space.high, dtype=np.float32))
    dim = int(np.prod(action_space.shape))

    class Deterministic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module
            self.register_buffer("low", low)
            self.register_buffer("high", high)

        def forward(self, obs):
            mean = self.module.forward_inference({"obs": obs})["action_dist_inputs"][..., :dim]
            a = torch.clamp(mean, -1.0, 1.0)
            return self.low + (a + 1.0) * (self.high - self.low) / 2.0

    return Deterministic().eval()


def save_rllib_bundle(path: str | Path, module: Any, spec: PolicySpec, action_space: Any, obs_example: np.ndarray) -> Path:
    """Trace ``module``'s deterministic action on ``obs_example`` ([1, obs_dim]) and write a bundle."""
    import torch

    if action_space.__class__.__name__ != "Box":
        raise BundleError(f"RLlib export supports Box action spaces (weights), got {action_space}")
    wrapped = _deterministic(module, action_space)
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, torch.as_tensor(np.asarray(obs_example, dtype=np.float32)), check_trace=False)
    return save_bundle(path, spec=spec, model_kind=MODEL_KIND, write_model=lambda d: traced.save(str(d / MODEL_FILE)))


class TorchScriptPolicy:
    """``policy(obs)``: one observation (or a batch) to the action(s) the exported module takes."""

    def __init__(self, model: Any, spec: PolicySpec) -> None:
        self.model, self.spec = model, spec

    def reset(self) -> None:
        pass

    def __call__(self, obs: Any) -> np.ndarray:
        import torch

        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        with torch.no_grad():
            a = self.model(torch.as_tensor(x[None] if single else x)).numpy()
        return a[0] if single else a


def _load(model_dir: Path, spec: PolicySpec) -> TorchScriptPolicy:
    import torch

    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: the bundle's TorchScript policy")
    return TorchScriptPolicy(torch.jit.load(str(path), map_location="cpu").eval(), spec)


register_policy_loader(MODEL_KIND, _load)
