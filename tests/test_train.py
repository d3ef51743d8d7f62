"""Training: every algorithm family to a bundle that backtests, resume, determinism, config errors, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factorgym.agents.bundle import load_policy
from factorgym.agents.train import train
from factorgym.cli import main
from factorgym.data_layer.tensor import FactorTensor

TINY = {"n_envs": 2, "window": 4, "episode_length": 32, "eval_freq": 0, "checkpoint_freq": 0, "torch_threads": 1,
        "policy_kwargs": {"net_arch": [16]}}
ON_POLICY = {"n_steps": 16, "batch_size": 32, "n_epochs": 1}
OFF_POLICY = {"learning_starts": 16, "batch_size": 16, "buffer_size": 500, "train_freq": 8, "gradient_steps": 1}


def _tensor(T=300, A=2, F=3, seed=0, **meta) -> FactorTensor:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    return FactorTensor.from_arrays(rng.normal(size=(T, A, F)), close, np.arange(T) * 3_600_000,
                                    symbols=[f"S{i}/USDT" for i in range(A)], meta=meta)


@pytest.fixture(scope="module")
def tensors(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensors")
    return {"two": _tensor().save(root / "two"), "one": _tensor(A=1, seed=1).save(root / "one")}


def _backtests(run_dir, tensor_dir):
    from factorgym.agents.policy_backtest import backtest_run

    results, files = backtest_run(run_dir, tensor_dir=tensor_dir, split="test", report=False)
    assert set(results) >= {"agent", "buy_and_hold", "cash"}
    assert len(results["agent"].equity) == len(results["buy_and_hold"].equity) > 10
    assert json.loads(files["metrics"].read_text())["agent"]["final_equity"] > 0
    return results["agent"]


@pytest.mark.parametrize("algorithm, extra, assets", [
    ("PPO", ON_POLICY, "two"),
    ("A2C", {"n_steps": 8}, "two"),
    ("RecurrentPPO", {**ON_POLICY, "policy_kwargs": {"lstm_hidden_size": 8, "net_arch": [8]}}, "two"),
    ("SAC", OFF_POLICY, "two"),
    ("TD3", OFF_POLICY, "two"),
    ("DDPG", OFF_POLICY, "two"),
    ("TQC", {**OFF_POLICY, "policy_kwargs": {"net_arch": [16], "n_quantiles": 5}}, "two"),
    ("DQN", {"learning_starts": 16, "batch_size": 16, "buffer_size": 500, "train_freq": 8, "action_scheme": "discrete",
             "levels": [0, 1]}, "one"),
])
def test_every_algorithm_trains_to_a_bundle_that_backtests(tmp_path, tensors, algorithm, extra, assets):
    cfg = {**TINY, "algorithm": algorithm, "total_timesteps": 64, **extra}
    res = train(cfg, tensor_dir=tensors[assets], run_dir=tmp_path / "run")
    assert res.num_timesteps >= 64 and res.bundle_path.is_dir()
    assert "eval/sharpe" in res.validation  # the final validation backtest ran
    policy = load_policy(res.run_dir)
    assert policy.spec.extra["algorithm"] == algorithm
    agent = _backtests(res.run_dir, tensors[assets])
    assert np.isfinite(agent.equity).all()


def test_resume_continues_after_ctrl_c(tmp_path, tensors, monkeypatch):
    from factorgym.agents import callbacks

    cfg = {**TINY, **ON_POLICY, "total_timesteps": 192, "checkpoint_freq": 64}
    calls = {"n": 0}
    original = callbacks.RolloutMetricsCallback._on_rollout_end

    def stop_on_third(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(callbacks.RolloutMetricsCallback, "_on_rollout_end", stop_on_third)
    first = train(cfg, tensor_dir=tensors["two"], run_dir=tmp_path / "run")
    assert first.interrupted and 64 <= first.num_timesteps < 192
    assert (tmp_path / "run" / "checkpoints" / f"step_{first.num_timesteps}" / "state.json").is_file()
    monkeypatch.setattr(callbacks.RolloutMetricsCallback, "_on_rollout_end", original)
    second = train(resume=tmp_path / "run")
    assert not second.interrupted and second.num_timesteps == 192
    # TensorBoard steps continue where the first part stopped
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # in the order they were written: file names sort by their counter as text ("10" < "9"), so use wall time
    points = []
    for ev in (tmp_path / "run" / "tb").glob("events.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        points += [(s.wall_time, s.step) for s in acc.Scalars("time/fps")] if "time/fps" in acc.Tags()["scalars"] else []
    steps = [step for _, step in sorted(points)]
    assert steps == sorted(steps) and steps[-1] >= 160


def test_same_seed_same_actions_on_the_test_split(tmp_path, tensors):
    cfg = {**TINY, **ON_POLICY, "total_timesteps": 128, "seed": 7}
    a = _backtests(train(cfg, tensor_dir=tensors["two"], run_dir=tmp_path / "a").run_dir, tensors["two"])
    b = _backtests(train(cfg, tensor_dir=tensors["two"], run_dir=tmp_path / "b").run_dir, tensors["two"])
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.equity, b.equity)
    c = _backtests(train({**cfg, "seed": 8}, tensor_dir=tensors["two"], run_dir=tmp_path / "c").run_dir, tensors["two"])
    assert not np.array_equal(a.weights, c.weights)  # the comparison can fail


def test_tensorboard_has_trading_metrics(tmp_path, tensors):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = train({**TINY, **ON_POLICY, "total_timesteps": 128, "eval_freq": 64}, tensor_dir=tensors["two"], run_dir=tmp_path / "r")
    tags = set()
    for ev in (res.run_dir / "tb").glob("events.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for tag in ("eval/sharpe", "eval/max_drawdown", "eval/turnover", "eval/fees", "eval/exposure", "eval/equity",
                "eval/weight/S0/USDT", "rollout/ep_sharpe_mean", "rollout/ep_return_mean", "train/value_loss"):
        assert tag in tags, tag
    lines = (res.run_dir / "eval.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [64, 128]
    for name in ("config.yaml", "versions.json", "data.json"):
        assert (res.run_dir / name).is_file()


def _cli_error(capsys, *argv) -> str:
    rc = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1, err
    assert len(err) == 1, err
    return err[0]


def test_config_errors_are_one_line(tmp_path, tensors, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("algorithm: PPO\nlearning_rat: 0.001\n")
    t = str(tensors["two"])
    assert "unknown key 'learning_rat' (did you mean 'learning_rate'?)" in _cli_error(capsys, "train", "--config", str(cfg), "--tensor", t)
    cfg.write_text("algorithm: DQN\n")
    assert "DQN cannot act in a Box action space" in _cli_error(capsys, "train", "--config", str(cfg), "--tensor", t)
    cfg.write_text("algorithm: DQN\naction_scheme: discrete\n")
    assert "one asset (this tensor has 2)" in _cli_error(capsys, "train", "--config", str(cfg), "--tensor", t)
    cfg.write_text("algorithm: SAC\naction_scheme: discrete\n")
    assert "SAC cannot act in a MultiDiscrete action space" in _cli_error(capsys, "train", "--config", str(cfg), "--tensor", t)
    cfg.write_text("algorithm: PPO\nepisode_length: 32\n")
    assert "does not exist" in _cli_error(capsys, "train", "--config", str(cfg), "--tensor", str(tmp_path / "none"))
    assert "window: 60 bars is longer than the validation split" in _cli_error(
        capsys, "train", "--config", str(cfg), "--tensor", t, "--set", "window=60")
    assert "n_envs: 'abc' is str; expected an integer" in _cli_error(
        capsys, "train", "--config", str(cfg), "--tensor", t, "--set", "n_envs=abc")
    assert "execution.taker_fees is unknown (did you mean 'taker_fee'?)" in _cli_error(
        capsys, "train", "--config", str(cfg), "--tensor", t, "--set", "execution.taker_fees=0.001")
    assert "episode_length: 256 is longer than the train split allows (194 steps" in _cli_error(
        capsys, "train", "--config", str(cfg), "--tensor", t, "--set", "episode_length=256")
    cfg.write_text("algorithm: PPOO\n")
    assert "algorithm: 'PPOO' is unknown (did you mean 'PPO'?)" in _cli_error(capsys, "train", "--config", str(cfg), "--tensor", t)


def test_set_overrides_are_typed(tensors):
    from factorgym.agents.train import build_config

    cfg = build_config({"algorithm": "PPO"}, tensor_dir=tensors["two"],
                       overrides=["learning_rate=1e-4", "n_steps=64", "policy_kwargs.net_arch=[8, 8]", "execution.taker_fee=0.0005"])
    assert cfg["learning_rate"] == 1e-4 and cfg["n_steps"] == 64 and cfg["policy_kwargs"] == {"net_arch": [8, 8]}
    assert cfg["execution"] == {"taker_fee": 0.0005}


def test_cli_train_then_backtest_and_mismatch(tmp_path, tensors, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({**TINY, **ON_POLICY, "total_timesteps": 64}))  # JSON is YAML
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--tensor", str(tensors["two"]), "--run-dir", str(run), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "tensorboard --logdir" in out and "final bundle" in out
    assert main(["backtest", "--run", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(data) >= {"agent", "buy_and_hold", "equal_weight", "random", "cash"}
    other = _tensor(A=3).save(tmp_path / "three")
    msg = _cli_error(capsys, "backtest", "--run", str(run), "--tensor", str(other))
    assert "symbols differ" in msg


@pytest.mark.parametrize("preset", sorted(p.name for p in (__import__("pathlib").Path(__file__).parents[1] / "configs" / "train").glob("*.yaml")
                                          if p.name != "quickstart_build.yaml"))
def test_presets_validate(preset, tensors):
    from pathlib import Path

    from factorgym.agents.train import build_config, check_data, load_tensor, make_splits

    path = Path(__file__).parents[1] / "configs" / "train" / preset
    cfg = build_config(path, tensor_dir=tensors["one"], overrides={"episode_length": 32, "embargo": 2})
    tensor, _ = load_tensor(cfg)
    check_data(cfg, make_splits(tensor, cfg))
    assert cfg["torch_threads"] == 1 and cfg["name"]


def test_preset_by_name(tensors):
    from factorgym.agents.train import build_config
    from factorgym.errors import ConfigError

    assert build_config("ppo_fast", tensor_dir=tensors["two"])["name"] == "ppo_fast"
    with pytest.raises(ConfigError, match="did you mean 'ppo_fast'"):
        build_config("ppo_fats", tensor_dir=tensors["two"])


def test_train_on_a_tensor_in_memory(tmp_path):
    t = _tensor(seed=3)
    res = train({**TINY, **ON_POLICY, "total_timesteps": 64}, tensor_dir=t, run_dir=tmp_path / "run",
                overrides={"seed": 1})
    saved = FactorTensor.load(tmp_path / "run" / "tensor")
    assert saved.content_hash() == t.content_hash() and res.config["tensor"] == str((tmp_path / "run" / "tensor").resolve())
    load_policy(res.run_dir, tensor=saved)


def test_per_asset_extractor_from_the_config(tmp_path, tensors):
    """`features_extractor: asset_conv` on flat observations: window and n_assets come from the run."""
    cfg = {**TINY, "algorithm": "PPO", "total_timesteps": 32, **ON_POLICY, "features_extractor": "asset_conv",
           "features_extractor_kwargs": {"hidden": 8, "embed": 8}}
    res = train(cfg, tensor_dir=tensors["two"], run_dir=tmp_path / "run")
    policy = load_policy(res.run_dir)
    assert type(policy.model.policy.features_extractor).__name__ == "AssetConvExtractor"
    assert np.isfinite(_backtests(res.run_dir, tensors["two"]).equity).all()
