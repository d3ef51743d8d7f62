"""Shared fixtures. The network guard: pytest-socket (configured in pyproject.toml) allows only
loopback inside the test process; ``subprocess_env`` gives child processes the same guard.

Hypothesis profiles (``HYPOTHESIS_PROFILE``): ``default`` (the tests' own settings), ``mutation``
(``make mutation``: no shrinking and a fixed seed, so a planted bug is reported in seconds and the
same examples run for every mutant).

``shared_data`` (and :func:`require_shared_data`): the real exchange files beside the checkout;
missing, the tests that need them skip, except under ``CI`` (any non-empty value), where a missing
folder is a failure with a clear message, not a silent pass.

Nothing is left in /tmp: SB3's default logger (a model's ``learn()`` without a logger) makes a
folder ``SB3-<date>`` in ``SB3_LOGDIR``, else in the system temp dir; the suite points it at one
pytest temp folder for the session (this process and the subprocesses it starts).

Under pytest-xdist (``make test`` runs 2 workers, whole files per worker: ``--dist loadfile``) the
slowest files are handed out first (:data:`SLOW_FILES_FIRST`; the Makefile passes
``--no-loadscope-reorder`` so xdist keeps this order), so no worker is left alone with a
long file at the end, and files that share a session fixture (:data:`SAME_WORKER`) go to one worker;
a run in one process keeps the files' own order."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import Phase, settings

settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], derandomize=True,
                          database=None, print_blob=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GUARD_DIR = Path(__file__).resolve().parent / "_loopback_guard"

#: the default suite's longest files (measured: benchmarks/results/suite_time.md), slowest first
SLOW_FILES_FIRST = ("test_paper_cli.py", "test_tune.py", "test_factors_qlib.py", "test_paper_live_candles.py",
                    "test_online_parity.py", "test_paper_exchange.py", "test_download.py", "test_train.py")
#: files that share a session fixture run in one worker (else each worker builds it): file -> group
SAME_WORKER = {"test_paper_cli.py": "paper", "test_paper_live_candles.py": "paper"}


@pytest.hookimpl(optionalhook=True)  # a venv without pytest-xdist (make test-rllib's) loads this file too
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, with the files of :data:`SAME_WORKER` handed to one worker together."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return SAME_WORKER.get(Path(scope).name, scope)

    return SharedFixtureFileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """In an xdist worker, move the slowest files to the front (every worker sorts the same way)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


@pytest.fixture(scope="session", autouse=True)
def _sb3_logs_in_pytest_tmp(tmp_path_factory):
    before = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3-logs"))
    yield
    if before is None:
        os.environ.pop("SB3_LOGDIR", None)
    else:
        os.environ["SB3_LOGDIR"] = before


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for ``subprocess`` calls: the loopback-only socket guard is preloaded."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def require_shared_data(name: str | None = None) -> Path:
    """``../shared/data`` (or the file ``name`` in it). Missing: a skip on a developer's machine, a
    failure under ``CI`` (there the data must be provided, or the tests it guards would pass unseen)."""
    path = SHARED_DATA / name if name else SHARED_DATA
    if not path.exists():
        msg = f"{path} not present (the real exchange files are expected beside the checkout, in ../shared/data)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and {msg}; provide the folder or unset CI to skip these tests", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data() -> Path:
    """Folder of the real exchange candles shipped beside the repository (``../shared/data``)."""
    return require_shared_data()


PYTHON = sys.executable
