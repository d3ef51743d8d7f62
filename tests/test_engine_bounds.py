"""The engine reads and writes only inside its arrays, and reads nothing it has not written: every
compiled kernel run under numba's bounds checking (``NUMBA_BOUNDSCHECK=1``) and with its stack arrays
filled with NaN where they are allocated (``FACTORGYM_POISON_STACK=1``), in a child process with its
own empty cache, gives the same results, bit for bit, as the kernels the package runs.

The kernels are compiled without bounds checks (and with numpy's error model) for speed, so an index
one past an array's end reads another array's memory (or the heap's) silently: no test of the
results would see it where the value read is not used (a padding lane's action, a done env's row).
Here every index is checked; one out of range raises IndexError. Their scratch rows live on the stack,
uninitialised: a row read before the step writes it would hold whatever an earlier call left there
(usually a harmless old value); poisoned, it holds NaN, which changes the results. The run passes through every
path that indexes something of its own: blocks of envs with padding lanes, autoresets, long/short
fills with every market rule, untradable closes, liquidations, a wrong-length action, both action
layouts (simplex K = A + 1, signed K = A). ~30 s of compiling from an empty cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HOUR = 3_600_000


def _probe() -> dict:
    """The env paths above, with counts that show each one was taken and a digest of every result
    (observations, rewards, flags, infos, trades, the raw fill rows)."""
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv, ExecutionConfig
    from factorgym.envs.execution import ENV_LIQUIDATED

    rng = np.random.default_rng(7)
    T, A = 160, 3
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.06, (T, A)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.02, (T, A)))
    prices = np.stack([open_, np.maximum(open_, close) * 1.1, np.minimum(open_, close) * 0.9, close,
                       rng.uniform(50, 500, (T, A))], axis=-1)
    tensor = FactorTensor.from_arrays(rng.normal(size=(T, A, 2)), prices, np.arange(T) * HOUR,
                                      tradable=rng.random((T, A)) > 0.1)
    cfg = ExecutionConfig(taker_fee=0.001, slippage_bps=2.0, impact_coef=0.02, lot_step=0.01, min_notional=5.0,
                          price_step=0.01, borrow_rate_per_bar=1e-3, max_leverage=3.0, maintenance_margin=0.2,
                          on_untradable="close")
    seen = {"steps": 0, "liquidated": 0, "untradable_close": 0, "liquidation_fills": 0, "autoresets": 0,
            "bad_shape_refused": 0}
    digest = hashlib.sha256()

    def add(*arrays) -> None:
        for a in arrays:
            digest.update(np.ascontiguousarray(a).tobytes())

    def count(trades: list[dict]) -> None:
        digest.update(repr(trades).encode())
        for tr in trades:
            seen["untradable_close"] += tr["kind"] == "untradable_close"
            seen["liquidation_fills"] += tr["kind"] == "liquidation"

    # 11 envs: a full block of envs and a partial one (padding lanes), signed weights (K = A)
    venv = CryptoTradingVectorEnv(tensor, 11, window=3, execution=cfg, episode_length=12, mapping="signed",
                                  long_only=False)
    venv.reset(seed=3)
    for _ in range(60):
        obs, reward, term, trunc, info = venv.step(rng.uniform(-1, 1, (11, A)).astype(np.float32))
        add(obs, reward, term, trunc, venv.core.fills, *(info[k] for k in sorted(info) if k[0] != "_" and "final" not in k))
        seen["steps"] += 11
        seen["autoresets"] += int(np.sum(term | trunc))
        seen["liquidated"] += int(np.sum(info["status"] == ENV_LIQUIDATED))
        for n in range(11):
            count(venv.trades(n))
    # one env (a block of one env and its padding lanes), simplex weights (K = A + 1), and a refused
    # action of the wrong length on the fast path
    env = CryptoTradingEnv(tensor, window=2, execution=cfg, episode_length=40)
    env.reset(seed=5)
    for k in range(120):
        if k == 10:
            try:
                env.step(np.full(A + 3, 0.25, np.float32))
            except ValueError:
                seen["bad_shape_refused"] += 1
            continue
        obs, reward, term, trunc, info = env.step(rng.dirichlet(np.ones(A + 1)).astype(np.float32))
        add(obs, np.float64(reward), env.core.fills, info["equity"], info["cash"], info["weights"], info["positions"])
        seen["steps"] += 1
        count(info["trades"])
        if term or trunc:
            seen["liquidated"] += info["status"] == "liquidated"
            add(env.reset()[0])
    seen["digest"] = digest.hexdigest()
    return seen


def test_every_kernel_path_stays_inside_its_arrays_and_reads_only_what_it_wrote(tmp_path):
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", FACTORGYM_POISON_STACK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "tests.test_engine_bounds"], env=env, capture_output=True, text=True,
                         timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen.pop("stack_poisoned") is True
    assert list((tmp_path / "numba").rglob("*.nbi")), "the child did not compile into its own cache"
    # every path was taken (a probe that skips them would prove nothing)
    for key in seen:
        assert seen[key] != 0, seen
    # the same results as the kernels the package runs (this process: no checks, no poison)
    assert _probe() == seen


def _stack_is_poisoned() -> bool:
    """In the child: a stack array of 5 x 7 elements, as the kernels get theirs, holds NaN in every
    element (the poison covers whole arrays, not their first bytes)."""
    import numba

    from factorgym.envs.intrinsics import POISON_STACK, stack_block_intrinsic

    stack_nb = stack_block_intrinsic(lambda a, b: a * b)

    @numba.njit
    def first_values(dims):
        block = stack_nb(dims)
        out = np.empty(block.shape[0])
        for k in range(block.shape[0]):
            out[k] = block[k]
        return out

    values = first_values(((0.0,) * 5, (0.0,) * 7))
    return POISON_STACK and values.shape == (35,) and bool(np.isnan(values).all())


if __name__ == "__main__":
    print(json.dumps({**_probe(), "stack_poisoned": _stack_is_poisoned()}))
