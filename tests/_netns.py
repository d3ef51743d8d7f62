"""Run a command inside a loopback-only network namespace: ``unshare -n`` (root, or a user namespace),
then ``ip link set lo up``. Ray's processes probe cloud metadata addresses and usage servers from
subprocesses pytest-socket cannot see; inside the namespace no address but loopback is reachable.

Where the namespace cannot be made, :func:`require_netns` skips the test with the reason; under
``CI`` it fails instead (a silent skip there would hide that the Ray tests never ran)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FAST_IMPORT = TESTS / "_ray_fast_import"
SCRIPT = 'ip link set lo up && exec "$@"'


@functools.lru_cache(maxsize=1)
def netns_unavailable() -> str | None:
    """None when a loopback-only namespace can be made here, else why not (one line)."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    try:
        p = subprocess.run(["unshare", "-n", "sh", "-c", SCRIPT, "sh", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`unshare -n` failed: {exc}"
    if p.returncode != 0:
        return f"`unshare -n` + `ip link set lo up` failed: {(p.stderr or p.stdout).strip().splitlines()[-1:] or p.returncode}"
    return None


def require_netns() -> None:
    reason = netns_unavailable()
    if reason is None:
        return
    msg = f"Ray tests need a loopback-only network namespace and cannot make one here: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"!!! CI is set: {msg}. The Ray tests did NOT run; run CI as root or with user namespaces.", pytrace=False)
    pytest.skip(msg)


def ray_env(extra: dict | None = None) -> dict[str, str]:
    """Environment for Ray inside the namespace: usage stats off, the fast-import shim, no RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", PYTHONPATH=str(FAST_IMPORT))
    env.update(extra or {})
    return env


def run_in_netns(argv: list[str], *, env: dict | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-n", "sh", "-c", SCRIPT, "sh", *map(str, argv)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
