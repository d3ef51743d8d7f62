"""Cold compile cost of the env's step kernels over the env shapes the test suite builds.

Each case runs in a fresh Python process with an empty numba cache directory (``NUMBA_CACHE_DIR``
set to a new temporary folder), builds one env per shape of :data:`SHAPES` (assets, action mapping,
number of envs: single env, block of 8, or vector env, block of 16), steps each once with float64
actions and once with float32 actions, then reports:

- ``signatures``: the compiled specialisations of ``step_batch_nb`` and ``step_blocks_nb`` (goal:
  one of ``step_blocks_nb`` per number of assets, and of ``step_batch_nb`` one per number of assets
  and action dtype, whatever the mappings and numbers of envs);
- ``cold_compile_s``: wall seconds of the first step of every shape and dtype (each compile it
  triggers), and of the paper kernel (``orders_nb`` + ``close_nb``) for one shape.

The reference counts the distinct (assets, action size, block size) cases: the number of
``step_blocks_nb`` signatures when the kernels specialised on all three (blocks of 16 from 64 envs).

Prints one JSON line per figure:
    python benchmarks/kernel_compile.py [--shapes N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

#: (assets, mapping, n_envs): 2 and 3 assets, action size A or A + 1, single envs and vector envs
SHAPES = ((2, "simplex", 1), (2, "direct", 1), (2, "signed", 64), (3, "direct", 8), (3, "simplex", 64))

PROBE = r"""
import json, sys, time
import numpy as np
from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingVectorEnv
from factorgym.envs import kernels

from factorgym.envs.layouts import price_records

shapes = json.loads(sys.argv[1])
out = {"step_s": 0.0}
for A, mapping, n in shapes:
    T = 40
    rng = np.random.default_rng(A)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    t = FactorTensor.from_arrays(rng.normal(size=(T, A, 2)).astype(np.float32), close,
                                 np.arange(T, dtype=np.int64) * 3_600_000, symbols=[f"S{i}/USDT" for i in range(A)])
    env = CryptoTradingVectorEnv(t, n, mapping=mapping, window=4)
    env.reset(seed=0)
    for dtype in (np.float64, np.float32):
        act = np.asarray(env.action_space.sample(), dtype=dtype)
        t0 = time.perf_counter()
        env.step(act)
        out["step_s"] += time.perf_counter() - t0
A = 2
t0 = time.perf_counter()
from factorgym.envs.live.paper_kernel import new_block, orders_nb, close_nb
t = FactorTensor.from_arrays(np.zeros((4, A, 1), dtype=np.float32), np.full((4, A), 100.0),
                             np.arange(4, dtype=np.int64) * 3_600_000, symbols=["A/USDT", "B/USDT"])
e = CryptoTradingVectorEnv(t, 1, mapping="direct", window=1)
config, record = e.core.config, np.asarray(e.core.prices[1])
block = new_block(A)
orders_nb(config, record, 1000.0, np.zeros(A), np.full(A, 0.3), block)
close_nb(config, 1000.0, np.zeros(A), block, np.zeros(4))
out["paper_s"] = time.perf_counter() - t0
out["step_batch_nb"] = len(kernels.step_batch_nb.signatures)
out["step_blocks_nb"] = len(kernels.step_blocks_nb.signatures)
print(json.dumps(out))
"""


def run(shapes) -> dict:
    with tempfile.TemporaryDirectory(prefix="fg-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(shapes)], env=env, capture_output=True,
                             text=True, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"the probe failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def emit(case: str, metric: str, value, goal, meets, reference: dict) -> None:
    print(json.dumps({"bench": "kernel_compile", "case": case, "metric": metric, "value": value, "goal": goal,
                      "meets_goal": meets, "reference": reference}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, default=len(SHAPES), help=f"use the first N of the {len(SHAPES)} shapes")
    args = ap.parse_args(argv)
    shapes = [list(s) for s in SHAPES[:args.shapes]]
    res = run(shapes)
    cases = {(A, A + 1 if m == "simplex" else A, 8 if n < 64 else 16) for A, m, n in shapes}
    n_assets = len({A for A, _, _ in shapes})
    ref = {"shapes": shapes, "distinct_A_K_B": len(cases), "distinct_A": n_assets}
    emit("step_batch_nb", "signatures", res["step_batch_nb"], 2 * n_assets, res["step_batch_nb"] <= 2 * n_assets, ref)
    emit("step_blocks_nb", "signatures", res["step_blocks_nb"], n_assets, res["step_blocks_nb"] <= n_assets, ref)
    emit("first_steps", "cold_compile_s", round(res["step_s"], 1), None, None, ref)
    emit("paper_kernel", "cold_compile_s", round(res["paper_s"], 1), None, None, {"assets": 2})
    return 0


if __name__ == "__main__":
    sys.exit(main())
