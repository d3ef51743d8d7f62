"""Install and output hygiene (issue 11, item 8): no banner from the unmaintained gym, an install
that says what it is doing, progress bars that stay out of logs and pipes, tensor folders that
follow the umask, and a description in every subcommand's --help."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factorgym import progress
from factorgym.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
BANNER = "Gym has been unmaintained"


@pytest.mark.skipif(importlib.util.find_spec("gym") is None, reason="gym is not installed (nothing to silence)")
def test_no_gym_banner_on_any_import_or_command(subprocess_env):
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import factorgym
        packages = [importlib.import_module(f"factorgym.{p}") for p in ("data_layer", "envs", "agents", "commands")]
        for info in [i for pkg in [factorgym, *packages] for i in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]:
            if info.name.endswith("__main__"):
                continue  # runs the CLI
            try:
                importlib.import_module(info.name)
            except ImportError:
                pass  # an optional extra; what matters is what gets printed
        import stable_baselines3  # imports gym when it is installed
        import gym  # even a direct import after factorgym's
        print(len([m for m in sys.modules if m.startswith("factorgym.")]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert BANNER not in out.stderr and BANNER not in out.stdout
    assert int(out.stdout.split()[-1]) > 40  # every layer's modules were imported
    cli = subprocess.run([sys.executable, "-m", "factorgym", "--help"], capture_output=True, text=True,
                         env=subprocess_env, timeout=120)
    assert cli.returncode == 0 and BANNER not in cli.stderr


def test_install_says_what_it_is_doing():
    out = subprocess.run(["make", "-n", "-B", "install"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for step in ("[1/3] upgrading pip", "[2/3] installing torch", "[3/3] installing factorgym", "a few minutes"):
        assert step in out.stdout, step


def test_progress_is_line_based_when_stderr_is_not_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="factorgym.progress"):
        bar = progress.progress_bar(total=4, desc="pages", unit="bar")
        assert isinstance(bar, progress.LineProgress)
        for _ in range(4):
            bar.update(1)
        bar.close()
    assert caplog.messages[-1] == "pages: 4/4 bar (100%)"
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    from tqdm import tqdm

    bar = progress.progress_bar(total=2, desc="x")
    assert isinstance(bar, tqdm)
    bar.close()
    quiet = progress.progress_bar([1, 2], enabled=False)
    assert list(quiet) == [1, 2]


def test_import_writes_no_bar_into_a_pipe(tmp_path, subprocess_env):
    idx = pd.date_range("2024-01-01", periods=30, freq="D").strftime("%Y-%m-%d")
    cols = {"date": idx}
    for a in ("BTC", "ETH", "LTC"):
        cols.update({f"{a}:open": 10.0, f"{a}:high": 11.0, f"{a}:low": 9.0, f"{a}:close": 10.5, f"{a}:volume": 1.0})
    f = tmp_path / "three_usd_1d.csv"
    pd.DataFrame(cols).to_csv(f, index=False)
    out = subprocess.run([sys.executable, "-m", "factorgym", "import", str(f), "--store", str(tmp_path / "s")],
                         capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "writing:" not in out.stdout
    assert "INFO factorgym.progress: writing: 3/3 symbol (100%)" in out.stderr


def test_tensor_folder_follows_the_umask(tmp_path):
    from factorgym.data_layer.tensor import FactorTensor

    t = FactorTensor.from_arrays(np.zeros((5, 1, 1)), np.full((5, 1), 100.0), np.arange(5) * 3_600_000)
    old = os.umask(0o022)
    try:
        out = t.save(tmp_path / "tensor")
        plain = tmp_path / "plain"
        plain.mkdir()
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o755
    from factorgym.fsutil import temp_dir_beside  # what every atomic folder write uses (tensors, bundles)

    old = os.umask(0o027)
    try:
        assert temp_dir_beside(tmp_path / "bundle").stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(old)


def _subparsers(parser: argparse.ArgumentParser, path=("factorgym",)):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield path + (name,), sub
                yield from _subparsers(sub, path + (name,))


def test_every_subcommand_help_has_a_description():
    found = list(_subparsers(build_parser()))
    assert {("factorgym", "data", "rm"), ("factorgym", "data", "list"), ("factorgym", "import")} <= {p for p, _ in found}
    for path, sub in found:
        assert sub.description and len(sub.description.strip()) > 10, " ".join(path)
        assert sub.format_help().count("\n\n") >= 2, " ".join(path)


def test_sb3_default_logger_writes_under_pytest_tmp(tmp_path_factory):
    # a model's learn() without a logger calls configure(None): its folder must not land in /tmp
    from stable_baselines3.common.logger import configure

    logger = configure(None, [""])
    assert Path(logger.dir).resolve().is_relative_to(tmp_path_factory.getbasetemp().resolve()), logger.dir
