"""pytest plugin of ``scripts/mutation.py --coverage-map``: which test runs which line of the mutated modules.

Loaded with ``-p mutation_coverage`` (in every xdist worker too) when ``MUTATION_COV_DIR`` names the
output folder and ``COVERAGE_PROCESS_START`` the coverage config (written by mutation.py). Each test
(setup, call and teardown) is measured in its own coverage context, named by its node id; subprocesses
are measured too: the config's static context is ``${MUTATION_COV_TEST}``, which this plugin sets to
the running test's id before the test starts, so a child started during a test (a CLI run) reads it
from its environment (coverage's .pth starts coverage in any Python child that inherits
``COVERAGE_PROCESS_START``). Each process also writes the seconds and outcome of its tests to
``tests-<pid>.json`` when its session finishes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

_ENABLED = bool(os.environ.get("MUTATION_COV_DIR"))
_times: dict[str, float] = {}
_failed: set[str] = set()
_cov = None


def pytest_configure(config):
    global _cov
    if not _ENABLED or os.environ.get("PYTEST_XDIST_WORKER") is None and config.getoption("numprocesses", None):
        return  # (the xdist controller runs no test)
    import coverage

    _cov = coverage.Coverage.current()  # (a worker started by xdist is already measured by coverage's .pth)
    if _cov is None:
        _cov = coverage.Coverage(config_file=os.environ["COVERAGE_PROCESS_START"])
        _cov.start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _cov is None:
        yield
        return
    os.environ["MUTATION_COV_TEST"] = item.nodeid
    _cov.switch_context(item.nodeid)
    t0 = time.perf_counter()
    yield
    _times[item.nodeid] = time.perf_counter() - t0
    _cov.switch_context("")
    os.environ.pop("MUTATION_COV_TEST", None)


def pytest_runtest_logreport(report):
    if _cov is not None and report.failed:
        _failed.add(report.nodeid)


def pytest_sessionfinish(session):
    # (not at unconfigure: an xdist worker may be shut down as soon as it reports the session finished,
    # which xdist's own hook does after this one)
    global _cov
    if _cov is None:
        return
    _cov.stop()
    _cov.save()
    out = Path(os.environ["MUTATION_COV_DIR"]) / f"tests-{os.getpid()}.json"
    out.write_text(json.dumps({t: [round(s, 4), t not in _failed] for t, s in _times.items()}))
    _cov = None
