"""The SQLite ledger: rows round-trip, trials group by (config, seed) per data set, and the CLI lists them."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from factorgym.agents.ledger import Ledger, config_hash
from factorgym.agents.stats import probability_of_backtest_overfitting
from factorgym.cli import main
from factorgym.errors import ConfigError

H = 3_600_000


def test_config_hash_is_canonical():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 16


def test_record_and_read_back(tmp_path):
    led = Ledger(tmp_path)
    r = np.array([0.01, -0.005, 0.02, 0.0])
    ts = np.arange(4) * H + 10 * H
    rid = led.record(kind="fold", config={"lr": 1e-3}, seed=3, study="ev1", fold=2, data_hash="D", factor_set_hash="F",
                     run_dir=tmp_path / "f2", metrics={"sharpe": 1.5, "bad": float("nan")}, returns=r, timestamps=ts)
    (run,) = led.runs()
    assert run.id == rid and run.kind == "fold" and run.seed == 3 and run.fold == 2 and run.study == "ev1"
    assert run.config_hash == config_hash({"lr": 1e-3}) and led.config(rid) == {"lr": 1e-3}
    assert run.metrics == {"sharpe": 1.5, "bad": None}
    assert run.n_obs == 4 and run.oos_start == ts[0] and run.oos_end == ts[-1]
    assert run.sharpe == pytest.approx(r.mean() / r.std(ddof=1))
    ts2, r2 = led.returns(rid)
    assert np.array_equal(ts2, ts) and np.array_equal(r2, r)
    # it is a plain SQLite file any tool can read
    con = sqlite3.connect(led.path)
    assert con.execute("SELECT COUNT(*), MAX(seed) FROM runs").fetchone() == (1, 3)
    con.close()


def test_returns_by_pointer(tmp_path):
    led = Ledger(tmp_path)
    p = tmp_path / "oos.npz"
    np.savez(p, returns=np.array([0.1, 0.2, -0.1]), timestamps=np.array([1, 2, 3]) * H)
    rid = led.record(kind="train", config={}, returns_path=p)
    assert led.runs()[0].n_obs == 3
    assert np.allclose(led.returns(rid)[1], [0.1, 0.2, -0.1])


def test_bad_records_are_refused(tmp_path):
    led = Ledger(tmp_path)
    with pytest.raises(ConfigError, match="kind"):
        led.record(kind="guess", config={})
    with pytest.raises(ConfigError, match="timestamps"):
        led.record(kind="fold", config={}, returns=[0.1, 0.2])
    with pytest.raises(ConfigError, match="2 returns but 3"):
        led.record(kind="fold", config={}, returns=[0.1, 0.2], timestamps=[1, 2, 3])
    with pytest.raises(ConfigError, match="increase"):
        led.record(kind="fold", config={}, returns=[0.1, 0.2], timestamps=[2, 1])
    assert led.runs() == []


def test_trials_group_by_config_and_seed_and_stitch_folds(tmp_path):
    led = Ledger(tmp_path)
    rng = np.random.default_rng(0)
    ts = np.arange(300) * H
    full = {}
    for cfg in ({"lr": 1}, {"lr": 2}):
        for seed in (0, 1):
            r = rng.normal(0.001 * cfg["lr"], 0.01, 300)
            full[(config_hash(cfg), seed)] = r
            for fold in range(3):  # folds recorded out of order still stitch in time order
                sl = slice(100 * (2 - fold), 100 * (3 - fold))
                led.record(kind="fold", config=cfg, seed=seed, fold=2 - fold, data_hash="D", returns=r[sl], timestamps=ts[sl])
    led.record(kind="fold", config={"lr": 9}, seed=0, data_hash="OTHER", returns=[0.1, 0.2], timestamps=[1, 2])
    led.record(kind="baseline", config={"name": "cash"}, data_hash="D", returns=np.zeros(300), timestamps=ts)
    st = led.trial_stats(data_hash="D")
    assert st.n_trials == 4
    srs = [r.mean() / r.std(ddof=1) for r in full.values()]
    assert st.sr_variance == pytest.approx(np.var(srs, ddof=1))
    assert st.sharpes[(config_hash({"lr": 2}), 1)] == pytest.approx(srs[3])
    common, M, keys = led.returns_matrix(data_hash="D")
    assert M.shape == (300, 4) and np.array_equal(common, ts)
    assert np.array_equal(M[:, keys.index((config_hash({"lr": 1}), 0))], full[(config_hash({"lr": 1}), 0)])
    assert 0.0 <= probability_of_backtest_overfitting(M, n_blocks=4).pbo <= 1.0
    assert led.trial_stats(data_hash="OTHER").n_trials == 1 and led.trial_stats(data_hash="OTHER").sr_variance == 0.0


def test_cli_runs_list(tmp_path, capsys):
    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    assert "no runs recorded" in capsys.readouterr().out
    led = Ledger(tmp_path)
    for seed in range(3):
        led.record(kind="fold", config={"a": seed % 2}, seed=seed, study="demo", data_hash="abc", factor_set_hash="f",
                   returns=[0.01, 0.02, -0.01], timestamps=[1, 2, 3])
    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "3 runs (3 shown)" in out and "3 trials (config x seed)" in out
    assert main(["runs", "list", "--runs-dir", str(tmp_path), "--json", "--limit", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and '"seed": 2' in lines[0]
    assert main(["runs"]) == 2


def test_module_example_runs():
    import doctest

    import factorgym.agents.ledger as mod

    assert doctest.testmod(mod).failed == 0


def test_every_training_run_lands_in_the_ledger(tmp_path):
    from factorgym.agents.train import train
    from factorgym.data_layer.tensor import FactorTensor

    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (300, 2)), axis=0))
    tdir = FactorTensor.from_arrays(rng.normal(size=(300, 2, 3)), close, np.arange(300) * H,
                                    meta={"data_hash": "D0", "factor_set_hash": "F0"}).save(tmp_path / "t")
    cfg = {"n_envs": 2, "window": 4, "episode_length": 32, "eval_freq": 0, "checkpoint_freq": 0, "torch_threads": 1,
           "policy_kwargs": {"net_arch": [16]}, "algorithm": "PPO", "total_timesteps": 64, "n_steps": 16, "batch_size": 32,
           "n_epochs": 1}
    r0 = train(cfg, tensor_dir=tdir, run_dir=tmp_path / "runs" / "a", seed=0)
    train(cfg, tensor_dir=tdir, run_dir=tmp_path / "runs" / "b", seed=1)
    led = Ledger(tmp_path / "runs")
    rows = led.runs(kind="train")
    assert [r.seed for r in rows] == [0, 1] and rows[0].config_hash == rows[1].config_hash
    assert rows[0].run_dir == str(r0.run_dir) and rows[0].data_hash == "D0" and rows[0].factor_set_hash == "F0"
    # the out-of-sample returns are the best bundle's on the validation split (15 % of 300 bars, window 4)
    ts, r = led.returns(rows[0].id)
    assert r.size > 20 and np.all(np.diff(ts) > 0)
    st = led.trial_stats(data_hash="D0", factor_set_hash="F0")
    assert st.n_trials == 2 and st.sr_variance >= 0


def test_trials_without_returns_still_count(tmp_path):
    led = Ledger(tmp_path)
    led.record(kind="tuning", config={"lr": 1}, seed=0, data_hash="D")
    led.record(kind="tuning", config={"lr": 2}, seed=0, data_hash="D", returns=[0.1, -0.1, 0.2], timestamps=[1, 2, 3])
    st = led.trial_stats(data_hash="D")
    assert st.n_trials == 2 and len(st.sharpes) == 1 and st.sr_variance == 0.0
