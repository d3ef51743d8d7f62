"""benchmarks/env_speed.py measures with OpenBLAS's tuning variables removed, and says so in each line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "env_speed.py"

PROBE = f"""
import importlib.util, json, os
spec = importlib.util.spec_from_file_location("env_speed", {str(BENCH)!r})
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
print(json.dumps({{"left": [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]}}))
bench.emit("probe", "steps_per_s", 1.0, None, None, {{"ratio": 1.0}})
"""


def _run(extra_env: dict[str, str]) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_openblas_variables_dropped_and_named_in_the_reference():
    left, line = _run({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"})
    assert left == {"left": []}  # (gone before numpy loaded OpenBLAS: the module drops them on import)
    ref = line["reference"]
    assert ref["openblas_env_dropped"] == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}
    assert isinstance(ref["load_1min"], float) and ref["load_1min"] >= 0.0
    assert ref["ratio"] == 1.0  # (the figure's own reference is kept)


def test_nothing_dropped_when_unset():
    _, line = _run({})
    assert line["reference"]["openblas_env_dropped"] == {}
