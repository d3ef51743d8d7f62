"""The default test suite's time (issue 17: `make test` within 240 s on a quiet 2-core machine), one
JSON line per figure: wall seconds (the goal), CPU seconds of pytest and every process it waited for,
the machine's load average at start and end (a busy machine inflates wall, not CPU), and the ten
slowest files.

    python benchmarks/suite_time.py [--workers 2] [--cold] [--reference] [-- PYTEST ARGS]

``--cold``: numba's cache in a new empty folder (NUMBA_CACHE_DIR), as in a clean clone; otherwise the
checkout's warm cache. ``--reference``: also the same suite in one process (PYTEST_WORKERS=0), measured
in the same run. Minutes per run, so not in `make bench`: `make suite-time`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 240.0
DURATION = re.compile(r"^([0-9.]+)s (?:call|setup|teardown)\s+(tests/[^:]+)::")


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_suite(workers: int, cold: bool, extra: list[str]) -> dict:
    """Run the default suite as `make test` does; wall and CPU seconds, load, summary, per-file seconds."""
    argv = [sys.executable, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider", "--durations=0"]
    if workers:
        argv += ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="suite-time-numba-") if cold else contextlib.nullcontext() as cache:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        load0, cpu0, t0 = os.getloadavg()[0], _cpu_children(), time.perf_counter()
        p = subprocess.run(argv + extra, cwd=REPO, env=env, capture_output=True, text=True)
        wall, cpu, load1 = time.perf_counter() - t0, _cpu_children() - cpu0, os.getloadavg()[0]
    files: dict[str, float] = defaultdict(float)
    for line in p.stdout.splitlines():
        m = DURATION.match(line)
        if m:
            files[m.group(2)] += float(m.group(1))
    summary = next((ln.strip("= ") for ln in reversed(p.stdout.splitlines()) if " in " in ln and "passed" in ln), "")
    if p.returncode != 0:  # the failures themselves, not the durations table after them
        out = p.stdout
        start, end = out.find("= FAILURES ="), out.find("slowest durations")
        sys.stderr.write((out[start:end] if start >= 0 else out[-4000:])[-20000:] + p.stderr[-2000:])
    return {"wall": wall, "cpu": cpu, "load_start": load0, "load_end": load1, "rc": p.returncode,
            "summary": summary, "files": dict(sorted(files.items(), key=lambda kv: -kv[1]))}


def emit(case, metric, value, goal=None, **ref):
    meets = None if goal is None else bool(value <= goal)
    print(json.dumps({"bench": "suite_time", "case": case, "metric": metric, "value": round(value, 1), "goal": goal,
                      "meets_goal": meets, "reference": ref}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers, as `make test` (0: one process)")
    ap.add_argument("--cold", action="store_true", help="numba's cache in a new empty folder (a clean clone's cold start)")
    ap.add_argument("--reference", action="store_true", help="also run the suite in one process, for comparison")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest after `--` (e.g. a subset of files)")
    args = ap.parse_args(argv)
    case = f"{'subset' if args.pytest_args else 'default'}_{'cold' if args.cold else 'warm'}"  # the goal is the whole suite's
    runs = [(args.workers, case)] + ([(0, case + "_one_process")] if args.reference and args.workers else [])
    rc = 0
    results = {}
    for workers, name in runs:
        r = results[name] = run_suite(workers, args.cold, args.pytest_args)
        rc |= r["rc"]
        ref = {"workers": workers, "cpu_s": round(r["cpu"], 1), "load_start": round(r["load_start"], 2),
               "load_end": round(r["load_end"], 2), "cores": os.cpu_count(), "tests": r["summary"], "rc": r["rc"]}
        if name != case and case in results:
            ref[f"{case}_s"] = round(results[case]["wall"], 1)
        emit(name, "seconds", r["wall"], GOAL_S if workers == args.workers and not args.pytest_args else None, **ref)
        for path, secs in list(r["files"].items())[:10]:
            emit(f"{name}:{Path(path).name}", "seconds", secs, workers=workers)
    return rc


if __name__ == "__main__":
    sys.exit(main())
