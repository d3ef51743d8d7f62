"""Re-run a benchmark script inside a loopback-only network namespace (``unshare -n`` + ``ip link set
lo up``) with the tests' Ray import shim (tests/_ray_fast_import), passing its JSON lines through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHIM = Path(__file__).resolve().parents[1] / "tests" / "_ray_fast_import"


def rerun_in_netns(script: str, *args: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(SHIM), PYTHONUNBUFFERED="1")
    cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, script, "--inner", *args]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            print(line)
    if p.returncode:
        sys.stderr.write(p.stderr[-3000:])
    return p.returncode
