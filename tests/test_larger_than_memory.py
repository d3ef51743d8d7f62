"""Done-when test of issue 16: PPO trains through the SB3 adapter over a memory-mapped tensor whose
feature array is never loaded whole (the process's private memory grows by far less than its size)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from factorgym.data_layer.tensor import FORMAT_VERSION, write_meta

T, A, F = 8_000, 5, 1_250  # 200 MB of float32 features
W = 2


def _write_mapped_tensor(path) -> int:
    """A saved tensor whose features are written chunk by chunk (never whole in this process)."""
    path.mkdir()
    rng = np.random.default_rng(0)
    feats = np.lib.format.open_memmap(path / "features.npy", mode="w+", dtype=np.float32, shape=(T, A, F))
    for i in range(0, T, 1_000):
        block = rng.standard_normal((1_000, A, F), dtype=np.float32)
        block[rng.random(block.shape) < 0.01] = np.nan
        feats[i:i + 1_000] = block
    nbytes = feats.nbytes
    feats.flush()
    del feats
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    np.save(path / "prices.npy", np.stack([close, close * 1.01, close * 0.99, close, np.full((T, A), 1e6)], axis=-1))
    np.save(path / "timestamps.npy", np.arange(T, dtype=np.int64) * 60_000)
    np.save(path / "tradable.npy", np.ones((T, A), dtype=bool))
    write_meta(path, {"format_version": FORMAT_VERSION, "timeframe": "1m", "symbols": [f"S{a}/USDT" for a in range(A)],
                      "feature_names": [f"f{k}" for k in range(F)], "shape": [T, A, F]})
    return nbytes


CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from factorgym.agents.sb3_vec import make_vec_env
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs.core import is_mapped

    torch.set_num_threads(1)

    def anon_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024

    def train(tensor):
        venv = make_vec_env(tensor, 2, seed=0, window={W}, episode_length=64)
        model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu",
                    policy_kwargs={{"net_arch": [8]}})
        model.learn(128)
        return model.num_timesteps

    tensor = FactorTensor.load(sys.argv[1], mmap=True)
    T, A, F = tensor.features.shape
    # the same shapes in memory first: compiled kernels and torch's first allocations are not data
    small = FactorTensor.from_arrays(np.zeros((200, A, F), np.float32), np.ones((200, A)), np.arange(200) * 60_000)
    train(small)
    before = anon_mb()
    steps = train(tensor)
    print(json.dumps({{"growth_mb": anon_mb() - before, "steps": steps, "mapped": is_mapped(tensor.features)}}))
""")


@pytest.mark.slow  # (a child process: torch, SB3 and the kernels of a new shape; ~1 min on 2 cores)
def test_ppo_trains_over_a_mapped_tensor_without_loading_its_features(tmp_path, subprocess_env):
    nbytes = _write_mapped_tensor(tmp_path / "tensor")
    code = CHILD.format(W=W)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tensor")], env=subprocess_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["mapped"] and res["steps"] >= 128
    # a copy of the features (what the env made before) would add at least their size
    assert res["growth_mb"] < 0.25 * nbytes / 2**20, res
