"""Ray Tune figures (one JSON line each): 2 trials in parallel vs one after the other on 2 cores
(goal >= 1.6x), Tune's overhead per trial against the same train() without Ray, memory per trial worker.

    python benchmarks/tune.py [--steps 4096]

Ray runs inside a loopback-only network namespace (``unshare -n``; the script re-runs itself there)
with the tests' import shim (tests/_ray_fast_import: skips rfc3987-syntax's ~4 s grammar build per
Ray process, else Ray's node does not start in time on a busy machine). Prints the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path



def emit(case, metric, value, goal=None, meets=None, **ref):
    print(json.dumps({"bench": "tune", "case": case, "metric": metric, "value": round(value, 4) if isinstance(value, float) else value,
                      "goal": goal, "meets_goal": meets, "reference": ref}), flush=True)


def _tensor(root: Path) -> Path:
    import numpy as np

    from factorgym.data_layer.tensor import FactorTensor

    rng = np.random.default_rng(0)
    T, A = 2000, 2
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    return FactorTensor.from_arrays(rng.normal(size=(T, A, 8)), close, np.arange(T) * 3_600_000,
                                    symbols=["S0/USDT", "S1/USDT"]).save(root / "tensor")


class RssSampler(threading.Thread):
    """Peak RSS of Ray's trial worker processes (their process title names the trainable)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            for p in psutil.process_iter(["pid", "cmdline"]):
                try:
                    title = " ".join(p.info["cmdline"] or [])
                    if "run_trial" in title or "ImplicitFunc" in title:
                        self.peak[p.info["pid"]] = max(self.peak.get(p.info["pid"], 0), p.memory_info().rss)
                except Exception:  # a process that just ended
                    pass
            time.sleep(0.5)


def inner(steps: int) -> None:
    import yaml

    from factorgym.agents.train import train
    from factorgym.agents.tune import tune

    load0 = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="fgb-", dir=os.environ.get("FG_BENCH_DIR")))
    try:
        tdir = _tensor(root)
        cfg = {"name": "bench", "tensor": str(tdir), "n_envs": 8, "window": 8, "episode_length": 256, "eval_freq": steps // 2,
               "checkpoint_freq": 0, "torch_threads": 1, "n_steps": 128, "batch_size": 512, "n_epochs": 4,
               "total_timesteps": steps, "policy_kwargs": {"net_arch": [64, 64]}}
        (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        search = {"space": {"learning_rate": {"loguniform": [1e-4, 1e-3]}}, "asha": {"grace_period": 2}, "sampler_seed": 0}
        (root / "search.yaml").write_text(yaml.safe_dump(search))
        t0 = time.perf_counter()
        train(str(root / "cfg.yaml"), run_dir=root / "plain")  # also warms numba's disk cache for the trials
        plain_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        train(str(root / "cfg.yaml"), run_dir=root / "plain2")
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()  # the same run in a fresh interpreter, as a trial's worker process starts
        subprocess.run([sys.executable, "-m", "factorgym.cli", "train", "--config", str(root / "cfg.yaml"),
                        "--run-dir", str(root / "plain3"), "--no-progress"], check=True, capture_output=True)
        fresh = time.perf_counter() - t0
        walls, mem = {}, {}
        for k in (1, 2):
            sampler = RssSampler()
            sampler.start()
            res = tune(str(root / "cfg.yaml"), root / "search.yaml", num_samples=2, max_concurrent=k, num_cpus=2,
                       runs_dir=root / f"runs{k}", name=f"c{k}")
            sampler.stop.set()
            walls[k] = (res.search_s, res.wall_s)
            mem[k] = sorted(sampler.peak.values())
        load1 = os.getloadavg()
        ref = {"steps_per_trial": steps, "load_avg_1m_before_after": [round(load0[0], 2), round(load1[0], 2)],
               "cpus": os.cpu_count(), "note": "shared machine; Ray inside unshare -n"}
        speed = walls[1][0] / walls[2][0]
        emit("2 trials, 2 cores", "speedup parallel vs sequential (Tune fit wall)", speed, 1.6, speed >= 1.6,
             sequential_s=round(walls[1][0], 2), parallel_s=round(walls[2][0], 2), **ref)
        emit("ray start + shutdown", "seconds", walls[1][1] - walls[1][0], None, None,
             note="tune() wall minus the search's fit: Ray's local node start, ledger rows, shutdown")
        per_trial = walls[1][0] / 2 - fresh
        emit("Tune overhead per trial", "seconds (sequential trial wall - the same `factorgym train` in a fresh process)",
             per_trial, None, None, fresh_process_train_s=round(fresh, 2), in_process_warm_train_s=round(plain, 2),
             first_train_s=round(plain_first, 2), **ref)
        peaks = mem[2] or mem[1]
        emit("trial worker memory", "peak RSS MiB per trial worker", max(peaks) / 2**20 if peaks else float("nan"), None, None,
             workers_seen=len(peaks), all_mib=[round(p / 2**20) for p in peaks])
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4096, help="env steps per trial")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        inner(a.steps)
        return 0
    if shutil.which("unshare") is None:
        print(json.dumps({"bench": "tune", "skipped": "unshare is not available: Ray is only run in a loopback-only namespace"}))
        return 0
    from _ray_netns import rerun_in_netns

    return rerun_in_netns(__file__, "--steps", str(a.steps))

if __name__ == "__main__":
    sys.exit(main())
