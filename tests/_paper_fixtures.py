"""A tensor built from candles (saved) and a tiny PPO bundle trained on it, made once per test session
for every paper-trading test file (test_paper_cli.py, test_paper_live_candles.py)."""

from __future__ import annotations

from pathlib import Path

_MADE: dict[str, tuple] = {}


def trained_bundle(tmp_path_factory) -> tuple:
    """``(tensor, tensor_dir, bundle_dir)``, trained on the first call of the session."""
    if "bundle" not in _MADE:
        import torch
        from stable_baselines3 import PPO

        from factorgym.agents.bundle import PolicySpec
        from factorgym.agents.sb3_policy import save_sb3_bundle
        from factorgym.agents.sb3_vec import make_vec_env
        from factorgym.data_layer.build import build_tensor_from_candles
        from factorgym.data_layer.tensor import FactorTensor
        from test_live_env import EXECUTION, FACTOR_SET, _candles

        torch.set_num_threads(1)
        root = tmp_path_factory.mktemp("paper_bundle")
        built = build_tensor_from_candles(_candles(), "1h", FACTOR_SET)
        tdir = built.save(root / "tensor")
        tensor = FactorTensor.load(tdir)
        venv = make_vec_env(tensor, 2, seed=0, window=4, episode_length=20, execution=EXECUTION)
        model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
        model.learn(64)
        bundle = save_sb3_bundle(root / "bundle", model, PolicySpec.from_env(venv, tensor), "PPO")
        _MADE["bundle"] = (tensor, Path(tdir), bundle)
    return _MADE["bundle"]
