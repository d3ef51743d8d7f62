"""The evaluation folder, the ledger it fills and the CLI, with a fast rule trainer and a tiny SB3 one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factorgym.agents.ledger import Ledger
from factorgym.agents.walk_forward import FoldModel
from factorgym.agents.walk_forward_report import evaluate
from factorgym.cli import main
from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs.config import ExecutionConfig
from factorgym.envs.metrics import sharpe

H = 3_600_000


def _market(T=400, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, size=(T, 2)), axis=0))
    return FactorTensor.from_arrays(rng.normal(size=(T, 2, 2)), close, np.arange(T) * H, symbols=["BTC/USDT", "ETH/USDT"],
                                    meta={"data_hash": "market0", "factor_set_hash": "fs0"})


class Weights:
    def __init__(self, w):
        self.w = np.asarray(w, float)

    def __call__(self, obs):
        return self.w


class TiltTrainer:
    """A rule 'trainer': the seed picks a tilt, validation picks between it and equal weight."""

    def __init__(self, tilt=0.7):
        self.config = {"rule": "tilt", "tilt": tilt}

    def __call__(self, data):
        rng = np.random.default_rng(data.seed)
        a = float(np.clip(self.config["tilt"] + rng.normal(0, 0.2), 0, 1))
        return FoldModel(Weights([a, 1 - a]), {"window": 1, "mapping": "direct", "execution": ExecutionConfig()},
                         checkpoint=f"a={a:.2f}", validation={"sharpe": 0.0})


def test_evaluate_writes_the_folder_and_fills_the_ledger(tmp_path):
    tensor = _market()
    ev = evaluate(tensor, TiltTrainer(), n_folds=3, out_dir=tmp_path / "ev1", runs_dir=tmp_path, seeds=[0, 1],
                  test_bars=60, val_bars=40, embargo=4, n_boot=200)
    out = tmp_path / "ev1"
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file() and (out / "oos_returns.npz").is_file()
    assert sorted(p.name for p in (out / "folds").iterdir()) == [f"fold{f}_seed{s}" for f in range(3) for s in (0, 1)]
    m = json.loads((out / "metrics.json").read_text())
    # stitched bars: the last 3 x 60 bars, every seed; the mean Sharpe is the mean of the seeds' Sharpe ratios
    assert ev.agent_returns.shape == (180, 2)
    assert np.array_equal(ev.timestamps, tensor.timestamps[-180:])
    per_seed = [sharpe(ev.agent_returns[:, j], 8760.0) for j in range(2)]
    assert m["agent"]["sharpe"] == pytest.approx(np.mean(per_seed))
    assert m["agent"]["sharpe_ci_low"] < m["agent"]["sharpe"] < m["agent"]["sharpe_ci_high"]
    assert set(m["baselines"]) == {"cash", "buy_and_hold", "equal_weight", "random"}
    assert m["baselines"]["cash"]["total_return"] == 0.0
    # the ledger: 3 folds x 2 seeds + 3 folds x 4 baselines; 2 trials (one config x 2 seeds)
    led = Ledger(tmp_path)
    assert len(led.runs(kind="fold")) == 6 and len(led.runs(kind="baseline")) == 12
    assert m["dsr"]["n_trials"] == 2 and m["pbo"]["n_trials"] == 2
    assert 0 <= m["dsr"]["dsr"] <= 1 and m["pbo"]["n_splits"] > 1
    html = (out / "report.html").read_text()
    assert "2 trials</b>" in html and "DSR" in html and "PBO" in html and "equal_weight" in html
    assert m["timings"]["train_seconds"] >= 0 and 0 < m["timings"]["evaluation_overhead_fraction"] <= 1
    # a second configuration on the same data: the trial count grows, DSR deflates harder
    m2 = evaluate(tensor, TiltTrainer(0.2), n_folds=3, out_dir=tmp_path / "ev2", runs_dir=tmp_path, seeds=[0, 1],
                  test_bars=60, val_bars=40, embargo=4, n_boot=200).summary
    assert m2["dsr"]["n_trials"] == 4 and m2["pbo"]["n_trials"] == 4


def test_baselines_run_on_the_same_test_blocks(tmp_path):
    tensor = _market()
    ev = evaluate(tensor, TiltTrainer(), n_folds=2, out_dir=tmp_path / "e", runs_dir=tmp_path, seeds=[0],
                  test_bars=50, val_bars=30, baselines=("equal_weight",), n_boot=100)
    # an agent whose weights equal the baseline's gives the baseline's returns bar for bar
    class Equal(TiltTrainer):
        def __call__(self, data):
            return FoldModel(Weights([0.5, 0.5]), {"window": 1, "mapping": "direct", "execution": ExecutionConfig()})
    ev2 = evaluate(tensor, Equal(), n_folds=2, out_dir=tmp_path / "e2", runs_dir=tmp_path / "r2", seeds=[0],
                   test_bars=50, val_bars=30, baselines=("equal_weight",), n_boot=100)
    assert np.allclose(ev2.agent_returns[:, 0], ev2.baseline_returns["equal_weight"], atol=1e-12)
    assert np.array_equal(ev.timestamps, ev2.timestamps)


def test_cli_evaluate_with_a_tiny_sb3_trainer(tmp_path, capsys):
    tensor = _market(T=300)
    tensor.save(tmp_path / "t")
    cfg = tmp_path / "ev.yaml"
    cfg.write_text(
        "tensor: t\n"
        "trainer: sb3\n"
        "train: {total_timesteps: 256, n_envs: 2, checkpoints: 2, env: {window: 2, episode_length: 32},\n"
        "        algo_kwargs: {n_steps: 64, batch_size: 64, n_epochs: 1}}\n"
        "evaluate: {folds: 2, seeds: 1, embargo: 2, test_bars: 40}\n")
    rc = main(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert rc == 0
    head = json.loads(capsys.readouterr().out)
    assert head["dsr_trials"] == 1 and head["report"].endswith("report.html")
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [f["checkpoint"] for f in m["folds"]][0].startswith("step_")
    assert (tmp_path / "out" / "folds" / "fold0_seed0" / "checkpoints").is_dir()
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "1 trials (config x seed)" in capsys.readouterr().out


def test_cli_evaluate_refuses_a_bad_config(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tensr: x\n")
    assert main(["evaluate", "--config", str(cfg)]) == 1
    assert "unknown keys ['tensr']" in capsys.readouterr().err


def test_cli_evaluate_through_the_training_entry_point(tmp_path, capsys):
    tensor = _market(T=400)
    tensor.save(tmp_path / "t")
    (tmp_path / "train.yaml").write_text(
        "algorithm: PPO\ntotal_timesteps: 64\nn_envs: 2\nwindow: 4\nepisode_length: 32\neval_freq: 32\ncheckpoint_freq: 0\n"
        "n_steps: 16\nbatch_size: 32\nn_epochs: 1\npolicy_kwargs: {net_arch: [16]}\n")
    cfg = tmp_path / "ev.yaml"
    cfg.write_text("tensor: t\ntrainer: entry_point\ntrain_config: train.yaml\n"
                   "evaluate: {folds: 2, seeds: 2, embargo: 2, test_bars: 40, val_bars: 40}\n")
    assert main(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    head = json.loads(capsys.readouterr().out)
    assert head["dsr_trials"] == 2 and head["pbo_trials"] == 2
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    fold = tmp_path / "out" / "folds" / "fold1_seed1"
    assert (fold / "run" / "bundles" / "final").is_dir() and (fold / "tensor" / "meta.json").is_file()
    # the fold's training run saw only its history: its tensor ends before the test block minus the embargo
    saved = FactorTensor.load(fold / "tensor")
    assert saved.timestamps[-1] < tensor.timestamps[m["folds"][-1]["test_rows"][0] - 2]
    # train's own hook wrote the fold's run into the fold's folder, not the evaluation's ledger
    assert len(Ledger(tmp_path / "runs").runs(kind="train")) == 0
    assert len(Ledger(fold).runs(kind="train")) == 1
