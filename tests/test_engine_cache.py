"""The engine's compiled kernels never go stale: editing any engine source recompiles them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# one market buy through the env; prints the fill price (MAX_SLIP caps the slippage fraction)
PROBE = """
import numpy as np
from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig
import factorgym.envs.execution as ex
assert ex.__file__.startswith({root!r}), ex.__file__
close = np.full((4, 1), 100.0)
t = FactorTensor.from_arrays(np.zeros((4, 1, 1)), close, np.arange(4) * 3_600_000)
env = CryptoTradingEnv(t, mapping="direct", random_start=False,
                       execution=ExecutionConfig.frictionless(slippage_bps=100.0))
env.reset()
print(env.step(np.array([0.5]))[4]["trades"][0]["price"])
"""


def _package_copy(tmp: Path) -> Path:
    """The package laid out as installed (factorgym/, factorgym/envs, ...) under ``tmp``."""
    pkg = tmp / "factorgym"
    shutil.copytree(ROOT / "factorgym", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for src, dst in (("envs", "envs"), ("data_layer", "data_layer"), ("agents", "agents"), ("configs", "configs")):
        shutil.copytree(ROOT / src, pkg / dst, ignore=shutil.ignore_patterns("__pycache__", "sample_data"))
    return tmp


def _run(root: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": ""}
    env.pop("NUMBA_DISABLE_JIT", None)
    res = subprocess.run([sys.executable, "-c", PROBE.format(root=str(root))], env=env, capture_output=True,
                         text=True, timeout=1200, cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    return float(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(2400)  # two cold compiles of a kernel (about 30 s each on a quiet machine)
def test_editing_an_engine_constant_recompiles_the_kernels(tmp_path):
    root = _package_copy(tmp_path)
    assert _run(root) == pytest.approx(101.0)  # 100 bps of slippage on an open of 100; warms the cache
    assert list((root / "factorgym" / "envs" / "__pycache__").glob("kernels.*.nbi"))  # cached on disk
    execution = root / "factorgym" / "envs" / "execution.py"
    text = execution.read_text()
    assert "MAX_SLIP = 0.5\n" in text
    execution.write_text(text.replace("MAX_SLIP = 0.5\n", "MAX_SLIP = 0.001\n"))
    assert _run(root) == pytest.approx(100.1)  # the new cap, in a fresh process, no cache deleted


def test_the_engine_locator_names_the_source_file_as_numba_expects():
    """numba reads ``locator._py_file`` when it warns that a function cannot be cached; without it
    that warning became an AttributeError."""
    from factorgym.envs import execution
    from factorgym.envs.jit import EngineCacheLocator

    fn = execution.process_order.py_func
    locator = EngineCacheLocator.from_function(fn, execution.__file__)
    assert locator is not None and locator._py_file == execution.__file__
    stamp = locator.get_source_stamp()
    assert stamp == locator.get_source_stamp() and len(stamp.split(":")[0]) == 64


def test_the_cache_stamp_changes_with_bounds_checking_and_the_stack_poison(monkeypatch):
    """Kernels compiled with numba's bounds checks or with poisoned stack arrays (tests/test_engine_bounds.py)
    are other code: a cache written under either setting must not serve a run without it (numba's own
    index key holds neither)."""
    from numba.core import config

    from factorgym.envs import execution, intrinsics
    from factorgym.envs.jit import EngineCacheLocator, engine_sources_hash

    locator = EngineCacheLocator.from_function(execution.process_order.py_func, execution.__file__)
    monkeypatch.setattr(config, "BOUNDSCHECK", None)
    monkeypatch.setattr(intrinsics, "POISON_STACK", False)
    plain = locator.get_source_stamp()
    assert plain.startswith(engine_sources_hash())
    monkeypatch.setattr(config, "BOUNDSCHECK", 1)
    checked = locator.get_source_stamp()
    monkeypatch.setattr(intrinsics, "POISON_STACK", True)
    assert len({plain, checked, locator.get_source_stamp()}) == 3


def test_an_engine_file_reached_through_a_symlinked_folder_gets_the_engine_locator(tmp_path):
    """The package can be laid out with symlinks (factorgym/envs -> ../envs, as the mutation snapshot
    does): numba then names the file by the link's path. The engine locator must still claim it, or
    the kernel's cache is stamped by its own file only and a kernel compiled before an edit of
    execution.py is served after it (a stale kernel)."""
    from factorgym.envs import execution
    from factorgym.envs.jit import EngineCacheLocator

    link = tmp_path / "envs"
    link.symlink_to(Path(execution.__file__).resolve().parent, target_is_directory=True)
    via_link = str(link / "execution.py")
    assert os.path.realpath(via_link) == str(Path(execution.__file__).resolve())  # the same file
    locator = EngineCacheLocator.from_function(execution.process_order.py_func, via_link)
    assert locator is not None  # old code (abspath) returned None: numba's own per-file locator took over
    assert locator.get_source_stamp() == EngineCacheLocator.from_function(
        execution.process_order.py_func, execution.__file__).get_source_stamp()
