"""`factorgym quickstart`: data -> factors -> PPO -> backtest beside the baselines, deterministic."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_quickstart_trains_and_is_deterministic(tmp_path):
    from factorgym.agents.quickstart import run_quickstart

    texts = [run_quickstart(tmp_path / name, progress=False, total_timesteps=8192) for name in ("a", "b")]
    for name, text in zip(("a", "b"), texts):
        assert "tensorboard --logdir" in text and "buy_and_hold" in text and "agent" in text
        assert (tmp_path / name / "run" / "backtest" / "test" / "report.html").is_file()
        assert (tmp_path / name / "run" / "bundles" / "final" / "bundle.json").is_file()
    a, b = (json.loads((tmp_path / n / "run" / "backtest" / "test" / "metrics.json").read_text()) for n in ("a", "b"))
    assert a == b


@pytest.mark.slow
def test_train_from_a_build_config(tmp_path, monkeypatch):
    """`build:` instead of `tensor:`: the run builds the tensor, keeps it in the run dir, and resumes from it."""
    from pathlib import Path

    from factorgym.agents.train import train

    monkeypatch.setenv("FACTORGYM_STORE", str(tmp_path / "store"))
    build = Path(__file__).parents[1] / "configs" / "factors" / "build_sample_bitstamp.yaml"
    cfg = {"build": str(build), "n_envs": 2, "n_steps": 16, "batch_size": 32, "n_epochs": 1, "total_timesteps": 64,
           "window": 4, "episode_length": 32, "embargo": 7, "eval_freq": 0, "checkpoint_freq": 0}
    res = train(cfg, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "tensor" / "meta.json").is_file()
    assert res.config["tensor"] == str((tmp_path / "run" / "tensor").resolve())
    again = train(resume=tmp_path / "run", total_timesteps=128)
    assert again.num_timesteps == 128
