"""Mutation testing (``make mutation``): plant one small bug at a time with cosmic-ray and run the
fast tests that guard that code; a mutant the tests do not fail on "survived".

Groups (module -> the tests run against each of its mutants):

- ``factors``: data_layer/factors/custom.py and normalise.py
- ``store``: the store's merge (``merge_tables`` and ``CandleStore.write`` in data_layer/store.py)
- ``engine``: envs/ execution.py, kernels.py, core.py, trading_env.py, vector_env.py, backtest.py

Each mutant's test run gets a fresh ``NUMBA_CACHE_DIR`` (a mutated kernel must never be served
from a cache compiled from other source) and the hypothesis profile ``mutation`` (no shrinking,
fixed examples). Engine mutants recompile their kernels (~10-30 s each): use ``--sample N``.

Usage::

    python scripts/mutation.py [GROUP ...] [--sample N] [--seed S]   # init, exec, report
    python scripts/mutation.py --report GROUP                         # the report of a finished run

Sessions live in runs/mutation/<group>.sqlite (ignored by git). cosmic-ray edits the module files in
place while it runs and restores them after each mutant: do not edit them meanwhile (and after an
interrupted run, ``git checkout`` them: the mutant in progress stays applied). A run refuses to start
while the modules have uncommitted changes.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "mutation"
BIN = Path(sys.executable).parent

# operators left out: variable insertion/replacement and decorator removal (mostly equivalent or
# nonsensical mutants: removing @numba.njit changes speed, not results), exception-type swaps, and
# binary operators replaced by bitwise, shift, modulo, floor-division or power operators (on floats
# they raise or give absurd values that any test catches; they would triple the run for nothing)
EXCLUDED_OPERATORS = [r"core/VariableInserter", r"core/VariableReplacer", r"core/RemoveDecorator",
                      r"core/ExceptionReplacer",
                      r"core/ReplaceBinaryOperator_.*_(LShift|RShift|BitOr|BitXor|BitAnd|Mod|FloorDiv|Pow|MatMult)$"]

GROUPS: dict[str, dict] = {
    "factors": {
        "modules": ["data_layer/factors/custom.py", "data_layer/factors/normalise.py"],
        "tests": ["tests/test_factor_values.py", "tests/test_factors_custom.py", "tests/test_normalise.py"],
        "functions": None,
        "timeout": 120,
    },
    "store": {
        "modules": ["data_layer/store.py"],
        "tests": ["tests/test_store.py", "-k", "round_trip or new_rows or overlapping or tradable_column or concurrent"],
        "functions": {"merge_tables", "write"},
        "timeout": 120,
    },
    "engine": {
        "modules": ["envs/execution.py", "envs/kernels.py", "envs/core.py", "envs/trading_env.py",
                    "envs/vector_env.py", "envs/backtest.py"],
        # the reference-based tests: one kernel shape family (2 assets), so a mutant compiles once
        "tests": ["tests/test_money_paths_by_hand.py", "tests/test_reference_step.py", "tests/test_autoreset.py"],
        "functions": None,
        "timeout": 600,
    },
}


def run_tests(group: str) -> int:
    """The test command of one mutant: fresh numba cache, the mutation hypothesis profile, stop at
    the first failure."""
    cache = tempfile.mkdtemp(prefix="numba-mutant-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, HYPOTHESIS_PROFILE="mutation", PYTHONDONTWRITEBYTECODE="1")
    try:
        cmd = [str(BIN / "python"), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
               *GROUPS[group]["tests"]]
        return subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _config(group: str) -> Path:
    g = GROUPS[group]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{group}.toml"
    mods = ", ".join(f'"{m}"' for m in g["modules"])
    excluded = ", ".join(f'"{e}"' for e in EXCLUDED_OPERATORS)
    path.write_text(f"""[cosmic-ray]
module-path = [{mods}]
timeout = {g['timeout']}.0
excluded-modules = []
test-command = "{BIN / 'python'} {Path(__file__).resolve()} --run-tests {group}"

[cosmic-ray.distributor]
name = "local"

[cosmic-ray.filters.operators-filter]
exclude-operators = [{excluded}]
""")
    return path


def _function_lines(module: str, names: set[str]) -> list[tuple[int, int]]:
    tree = ast.parse((REPO / module).read_text())
    return [(n.lineno, n.end_lineno) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name in names]


def _skip(db_path: Path, keep) -> int:
    """Mark the pending work items for which ``keep(item)`` is False as skipped; returns how many."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    n = 0
    with use_db(str(db_path), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            if not keep(item):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
                n += 1
    return n


def start(group: str, sample: int | None, seed: int) -> None:
    g = GROUPS[group]
    if subprocess.run(["git", "diff", "--quiet", "--", *g["modules"]], cwd=REPO).returncode != 0:
        sys.exit(f"{group}: {g['modules']} have uncommitted changes (a mutant left by an interrupted run?); "
                 f"commit or `git checkout` them first")
    cfg = _config(group)
    db = OUT / f"{group}.sqlite"
    db.unlink(missing_ok=True)
    subprocess.run([str(BIN / "cosmic-ray"), "init", str(cfg), str(db)], cwd=REPO, check=True)
    subprocess.run([str(BIN / "cr-filter-operators"), str(db), str(cfg)], cwd=REPO, check=True)
    subprocess.run([str(BIN / "cr-filter-pragma"), str(db)], cwd=REPO, check=True)
    if g["functions"]:
        spans = {m: _function_lines(m, g["functions"]) for m in g["modules"]}
        _skip(db, lambda it: any(a <= it.mutations[0].start_pos[0] <= b
                                 for a, b in spans.get(str(it.mutations[0].module_path), [])))
    if sample:
        from cosmic_ray.work_db import WorkDB, use_db

        with use_db(str(db), WorkDB.Mode.open) as d:
            ids = sorted(it.job_id for it in d.pending_work_items)
        chosen = set(random.Random(seed).sample(ids, min(sample, len(ids))))
        _skip(db, lambda it: it.job_id in chosen)
    subprocess.run(["nice", "-n", "15", str(BIN / "cosmic-ray"), "exec", str(cfg), str(db)], cwd=REPO, check=True)


def report(group: str) -> None:
    """Score and surviving mutants (module:line operator, and the diff)."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    counts: dict[str, int] = {}
    survivors = []
    with use_db(str(OUT / f"{group}.sqlite"), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            key = result.test_outcome.value if result.test_outcome else result.worker_outcome.value
            counts[key] = counts.get(key, 0) + 1
            if result.test_outcome == TestOutcome.SURVIVED:
                survivors.append((item, result))
        pending = db.num_work_items - db.num_results
    done = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("incompetent", 0)
    print(f"# {group}: {done} mutants run, {pending} pending; {counts}")
    if done:
        print(f"# score: {killed}/{done} = {killed / done:.1%} killed (incompetent counted as killed)")
    for item, result in survivors:
        m = item.mutations[0]
        print(f"\n## SURVIVED {m.module_path}:{m.start_pos[0]} {m.operator_name} #{m.occurrence}")
        print("\n".join(line for line in (result.diff or "").splitlines() if line.startswith(("+", "-"))
                        and not line.startswith(("+++", "---"))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("groups", nargs="*", default=list(GROUPS), help=f"groups to run (default all: {list(GROUPS)})")
    ap.add_argument("--sample", type=int, default=None, help="run only N randomly chosen mutants per group")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --sample choice")
    ap.add_argument("--report", action="store_true", help="only print the report of the groups' last runs")
    ap.add_argument("--run-tests", metavar="GROUP", help=argparse.SUPPRESS)  # the per-mutant test command
    args = ap.parse_args()
    if args.run_tests:
        return run_tests(args.run_tests)
    for group in args.groups:
        if group not in GROUPS:
            ap.error(f"unknown group {group!r}; expected one of {list(GROUPS)}")
        if not args.report:
            start(group, args.sample, args.seed)
        report(group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
