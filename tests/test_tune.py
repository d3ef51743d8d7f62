"""factorgym tune: search files checked before Ray starts, the missing-extra message, Ray's temp folder,
and a real 2-trial Tune search run by the CLI inside a loopback-only network namespace (tests/_netns.py):
both run directories, both ledger rows, the best bundle backtests, no Ray process or temp folder left."""

from __future__ import annotations

import errno
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from factorgym.agents import tune_space
from factorgym.agents.ray_session import short_temp_dir
from factorgym.cli import main
from factorgym.data_layer.tensor import FactorTensor
from factorgym.errors import ConfigError

from _netns import netns_unavailable, ray_env, require_netns, run_in_netns

PY = sys.executable
BASE = {"name": "tiny", "n_envs": 2, "window": 4, "episode_length": 32, "eval_freq": 32, "checkpoint_freq": 0,
        "torch_threads": 1, "policy_kwargs": {"net_arch": [8]}, "n_steps": 16, "batch_size": 32, "n_epochs": 1,
        "total_timesteps": 64}


@pytest.fixture(scope="module")
def tensor_dir(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    T, A = 300, 2
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    t = FactorTensor.from_arrays(rng.normal(size=(T, A, 3)), close, np.arange(T) * 3_600_000, symbols=["S0/USDT", "S1/USDT"])
    return t.save(tmp_path_factory.mktemp("tune_tensor") / "t")


def _files(tmp_path, tensor_dir, space, **extra):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "tensor": str(tensor_dir)}))
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"space": space, **extra}))
    return cfg, search


# ---------------------------------------------------------------------- before Ray starts
@pytest.fixture(autouse=True)
def no_ray_in_this_process(monkeypatch):
    """Ray may start only inside the namespace (a subprocess); here it would reach the host's network."""
    import factorgym.agents.ray_session as rs

    def refuse(*a, **k):
        raise AssertionError("a test started Ray outside the loopback-only namespace")

    monkeypatch.setattr(rs, "_start_local", refuse)


@pytest.mark.parametrize("space, message", [
    ({"learnig_rate": {"loguniform": [1e-4, 1e-3]}}, "unknown key 'learnig_rate' (did you mean 'learning_rate'?)"),
    ({"learning_rate": {"logunifrom": [1e-4, 1e-3]}}, "'logunifrom' is not a distribution (did you mean 'loguniform'?)"),
    ({"learning_rate": {"loguniform": [0, 1e-3]}}, "loguniform needs low > 0"),
    ({"n_epochs": {"int": [3, 1]}}, "int needs finite low < high"),
    ({"n_epochs": {"uniform": [1, 4]}}, "space.n_epochs = 1.0 is not a valid run config value: n_epochs: 1.0 is float; expected an integer"),
    ({"mapping": {"choice": ["simplex", "sined"]}}, "space.mapping = 'sined'"),
    ({"seed": {"int": [0, 9]}}, "space.seed: not searchable"),
    ({"execution.taker_fe": {"uniform": [0.0, 0.001]}}, "execution.taker_fe is unknown (did you mean 'taker_fee'?)"),
])
def test_a_bad_search_file_is_one_line_naming_the_key(tmp_path, tensor_dir, space, message, capsys):
    cfg, search = _files(tmp_path, tensor_dir, space)
    rc = main(["tune", "--config", str(cfg), "--search", str(search), "--num-samples", "2", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "runs" / "tune").exists() or not any((tmp_path / "runs" / "tune").iterdir())


def test_search_file_parses_to_the_documented_distributions():
    spec = tune_space.load_search(Path(__file__).parents[1] / "configs" / "tune" / "ppo_search.yaml")
    kinds = {d.key: (d.kind, d.args) for d in spec.dists}
    assert kinds["learning_rate"] == ("loguniform", (1e-5, 1e-3))
    assert kinds["n_epochs"] == ("int", (2, 8))
    assert kinds["policy_kwargs.net_arch"][0] == "choice"
    assert (spec.grace_period, spec.reduction_factor, spec.sampler_seed) == (2, 2, 0)
    with pytest.raises(ConfigError, match="unknown section 'ashaa'"):
        tune_space.parse_search({"space": {"gamma": {"uniform": [0.9, 0.99]}}, "ashaa": {}})


def test_without_the_extra_the_message_names_it(tmp_path, tensor_dir, monkeypatch, capsys):
    cfg, search = _files(tmp_path, tensor_dir, {"gamma": {"uniform": [0.9, 0.99]}})
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    rc = main(["tune", "--config", str(cfg), "--search", str(search), "--num-samples", "1"])
    err = capsys.readouterr().err
    assert rc != 0 and "pip install 'factorgym[ray]'" in err and err.strip().count("\n") == 0, err


def test_ray_temp_folder_is_short_enough_for_its_sockets(tmp_path):
    deep = tmp_path / ("x" * 60)
    d, made = short_temp_dir(deep)
    try:
        assert made and len(str(d)) < 40 and d.name.startswith("fg-ray-") and not deep.exists()
    finally:
        d.rmdir()
    d, made = short_temp_dir("/tmp/fgt")  # short: used as given; made here, so deleted afterwards
    assert (d, made) == (Path("/tmp/fgt"), True)
    assert short_temp_dir("/tmp/fgt") == (d, False)  # already there: the user's, kept
    d.rmdir()


# ---------------------------------------------------------------------- inside the namespace
PROBE = """
import errno, socket, sys
out = {}
for host in ("169.254.169.254", "1.1.1.1", "8.8.8.8"):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, 80)); out[host] = 0
    except OSError as e:
        out[host] = e.errno
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=3); out["loopback"] = "ok"
print(out)
"""


def test_the_namespace_lets_nothing_off_loopback():
    require_netns()
    p = run_in_netns([PY, "-c", PROBE], env=ray_env(), timeout=60)  # no socket guard here: the namespace alone
    assert p.returncode == 0, p.stderr
    out = eval(p.stdout.strip().splitlines()[-1])
    assert out["loopback"] == "ok"
    for host in ("169.254.169.254", "1.1.1.1", "8.8.8.8"):
        assert out[host] == errno.ENETUNREACH, (host, out)


def _ray_pids() -> set[int]:
    import psutil

    pids = set()
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        text = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
        if "raylet" in text or "gcs_server" in text or "ray::" in text or "ray/dashboard" in text or "ray/_private" in text:
            pids.add(p.info["pid"])
    return pids


def test_two_trial_search_in_the_namespace_lands_in_the_ledger_and_backtests(tmp_path, tensor_dir):
    require_netns()
    from factorgym.agents.bundle import load_policy
    from factorgym.agents.ledger import Ledger
    from factorgym.agents.policy_backtest import backtest_policy
    from factorgym.agents.train import build_config, make_splits

    cfg, search = _files(tmp_path, tensor_dir, {"learning_rate": {"loguniform": [1e-4, 1e-3]}, "n_epochs": {"int": [1, 2]}},
                         asha={"grace_period": 1, "reduction_factor": 2}, sampler_seed=0)
    runs = tmp_path / "runs"
    before_pids, before_tmp = _ray_pids(), set(glob.glob("/tmp/fg-ray-*"))
    t0 = time.perf_counter()
    p = run_in_netns([PY, "-m", "factorgym.cli", "tune", "--config", cfg, "--search", search, "--num-samples", "2",
                      "--max-concurrent", "2", "--cpus", "2", "--runs-dir", runs, "--name", "s"],
                     env=ray_env(), cwd=tmp_path, timeout=420)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    print(f"2-trial tune wall {wall:.1f} s")

    run_dirs = sorted(d for d in runs.glob("s-*") if d.is_dir())
    assert len(run_dirs) == 2 and all((d / "config.yaml").is_file() and (d / "eval.jsonl").is_file() for d in run_dirs)
    lrs = {yaml.safe_load((d / "config.yaml").read_text())["learning_rate"] for d in run_dirs}
    assert len(lrs) == 2 and all(1e-4 <= lr <= 1e-3 for lr in lrs)  # the searcher's values reached train()
    rows = Ledger(runs).runs()
    assert sorted(Path(r.run_dir).name for r in rows) == [d.name for d in run_dirs]
    assert all(r.kind == "train" and r.study == "s" and r.n_obs > 10 for r in rows)

    best_line = next(line for line in p.stdout.splitlines() if line.strip().startswith("bundle:"))
    bundle = Path(best_line.split("bundle:", 1)[1].strip())
    assert bundle.parent.parent in run_dirs
    best_sharpes = {d: max(json.loads(x)["eval/sharpe"] or 0.0 for x in (d / "eval.jsonl").read_text().splitlines()) for d in run_dirs}
    assert bundle.parent.parent == max(best_sharpes, key=best_sharpes.get)  # the table's best is the best run
    full = build_config(str(cfg))
    res = backtest_policy(load_policy(bundle), make_splits(FactorTensor.load(tensor_dir), full)["test"], name="best")
    assert np.isfinite(res.equity).all() and len(res.equity) > 10

    deadline = time.time() + 20
    while (_ray_pids() - before_pids) and time.time() < deadline:
        time.sleep(0.5)
    assert not (_ray_pids() - before_pids), "Ray processes outlived the command"
    assert set(glob.glob("/tmp/fg-ray-*")) == before_tmp, "Ray's temp folder was left in /tmp"


def test_ray_tests_say_why_they_skip():
    reason = netns_unavailable()
    assert reason is None or reason.strip() and "\n" not in reason
