"""A wheel built from the repository carries every module, config and sample file under the
``factorgym.`` names, and imports from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import GUARD_DIR

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"factorgym": "factorgym", "data_layer": "factorgym/data_layer", "envs": "factorgym/envs",
          "agents": "factorgym/agents", "configs": "factorgym/configs"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # build from a clean copy: setuptools reuses an in-tree build/ folder, which can hold stale files
    src = tmp_path_factory.mktemp("src") / "factorgym"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "store"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    env = dict(os.environ, PYTHONPATH=str(GUARD_DIR))  # loopback-only guard: building needs no network
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    (whl,) = out.glob("factorgym-*.whl")
    return whl


def _expected_files() -> set[str]:
    expected = set()
    for folder, target in LAYERS.items():
        for path in (REPO / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            rel = path.relative_to(REPO / folder).as_posix()
            if path.suffix in (".py", ".yaml") or (folder == "data_layer" and "sample_data" in path.parts):
                expected.add(f"{target}/{rel}")
    return expected


def test_wheel_carries_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_expected_files() - names)
    assert not missing, f"not in the wheel (add the subpackage to pyproject's packages list): {missing}"
    assert not any(n.startswith(("tests/", "benchmarks/", "envs/", "data_layer/")) for n in names)


def test_wheel_imports_outside_the_checkout(wheel, tmp_path, subprocess_env):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, env=subprocess_env, capture_output=True, timeout=300)
    code = (
        "import factorgym, factorgym.data_layer.tensor, factorgym.envs, factorgym.agents, factorgym.cli\n"
        "import factorgym.data_layer.sample as s\n"
        "print(factorgym.__file__)\n"
        "print(len(s.sample_candles('bitstamp_daily')['ETH/USD']))\n"  # package data read from the wheel
    )
    env = dict(subprocess_env, PYTHONPATH=f"{target}:{subprocess_env['PYTHONPATH']}")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout, f"imported from {out.stdout!r}, not from the installed wheel"
    assert out.stdout.strip().endswith("800"), out.stdout  # ETH/USD daily bars of the shipped sample
