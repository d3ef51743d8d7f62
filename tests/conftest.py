"""Shared fixtures. The network guard: pytest-socket (configured in pyproject.toml) allows only
loopback inside the test process; ``subprocess_env`` gives child processes the same guard."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GUARD_DIR = Path(__file__).resolve().parent / "_loopback_guard"


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for ``subprocess`` calls: the loopback-only socket guard is preloaded."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def shared_data() -> Path:
    """Folder of the real exchange candles shipped beside the repository (``../shared/data``)."""
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


PYTHON = sys.executable
