"""Mutation testing (``make mutation``): plant one small bug at a time with cosmic-ray and run the
fast tests that guard that code; a mutant the tests do not fail on "survived".

Each module is its own cosmic-ray session (runs/mutation/<module>.sqlite, ignored by git) and runs
the tests of :data:`MODULE_TESTS` against each of its mutants: the tests that hold that module's
code against an independent answer (a hand-worked case, the plain-Python reference model, pandas),
fastest and most likely to fail first; ``pytest -x`` stops at the first failure. Groups name sets of
modules: ``engine`` (the compiled step: execution, actions, phases, kernels), ``env`` (the Python
around it: core, trading_env, vector_env, backtest, metrics), ``factors`` (custom factors and
normalisation) and ``store`` (the store's merge).

numba: every mutant's test run gets its own ``NUMBA_CACHE_DIR``. A mutant of a module numba compiles
(:data:`COMPILED`) starts from an empty one, so a mutated kernel can never be served from a cache of
other source (it would recompile every kernel anyway: the engine's cache is keyed by the hash of all
its sources, envs/jit.py). A mutant of a Python module gets a copy of a cache compiled once from
the unmutated source at the start of the run (which also checks the tests pass there).
``NUMBA_DISABLE_JIT=1`` is not an option: the kernels call LLVM intrinsics (envs/intrinsics.py)
that exist only compiled. Hypothesis runs the profile ``mutation`` (fixed examples, no shrinking).
Mutants inside type annotations are skipped (never evaluated: every module here has ``from
__future__ import annotations``).

Usage::

    python scripts/mutation.py [GROUP|MODULE ...] [--sample N] [--seed S]   # init, exec, report
    python scripts/mutation.py --report [GROUP|MODULE ...]                  # reports of finished runs

``--sample N`` runs a seeded uniform random sample of N mutants per module; the report gives the
score with a 95% (Wilson) interval. Mutants judged equivalent (no behaviour of the program changes)
are listed with the reason in :data:`EQUIVALENT` and left out of the score.

cosmic-ray edits the module file in place while it runs and restores it after each mutant: do not
edit it meanwhile (after an interrupted run, ``git checkout`` it: the mutant in progress stays
applied). A run refuses to start while the modules have uncommitted changes.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
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
WARM_CACHE = OUT / "numba-warm"

# operators left out: variable insertion/replacement and decorator removal (mostly equivalent or
# nonsensical mutants: removing @numba.njit changes speed, not results), exception-type swaps, and
# binary operators replaced by bitwise, shift, modulo, floor-division or power operators (on floats
# they raise or give absurd values that any test catches; they would triple the run for nothing)
EXCLUDED_OPERATORS = [r"core/VariableInserter", r"core/VariableReplacer", r"core/RemoveDecorator",
                      r"core/ExceptionReplacer",
                      r"core/ReplaceBinaryOperator_.*_(LShift|RShift|BitOr|BitXor|BitAnd|Mod|FloorDiv|Pow|MatMult)$"]

# the reference-based engine tests: one kernel shape family (2 assets), so a mutant compiles once
_BY_HAND = "tests/test_money_paths_by_hand.py"
_REFERENCE = ["tests/test_reference_step.py", "tests/test_autoreset.py"]

#: module -> the tests run against each of its mutants (in this order; pytest stops at the first failure)
MODULE_TESTS: dict[str, list[str]] = {
    "envs/execution.py": ["tests/test_process_order.py", _BY_HAND, *_REFERENCE],
    "envs/actions.py": [_BY_HAND, *_REFERENCE],
    "envs/phases.py": [_BY_HAND, *_REFERENCE],
    "envs/kernels.py": [_BY_HAND, *_REFERENCE],
    "envs/core.py": [_BY_HAND, *_REFERENCE],
    "envs/trading_env.py": [_BY_HAND, "tests/test_action_inputs.py", *_REFERENCE],
    "envs/vector_env.py": [*_REFERENCE],
    "envs/backtest.py": ["tests/test_backtest.py", *_REFERENCE],
    "envs/metrics.py": ["tests/test_metrics.py", "tests/test_backtest.py"],
    "data_layer/factors/custom.py": ["tests/test_factors_custom.py", "tests/test_factor_values.py"],
    "data_layer/factors/normalise.py": ["tests/test_normalise.py", "tests/test_factors_custom.py"],
    "data_layer/store_merge.py": ["tests/test_store.py", "tests/test_no_silent_data_mistakes.py"],
}

GROUPS: dict[str, list[str]] = {
    "engine": ["envs/execution.py", "envs/actions.py", "envs/phases.py", "envs/kernels.py"],
    "env": ["envs/core.py", "envs/trading_env.py", "envs/vector_env.py", "envs/backtest.py", "envs/metrics.py"],
    "factors": ["data_layer/factors/custom.py", "data_layer/factors/normalise.py"],
    "store": ["data_layer/store_merge.py"],
}

#: modules with numba-compiled functions: their mutants start from an empty numba cache
COMPILED = {*GROUPS["engine"], "data_layer/factors/normalise.py"}

#: per-mutant timeout (s): a cold compile of the step kernels on a busy machine, and the tests. A
#: mutant that times out is reported apart (not counted as killed): on a shared machine it says little
TIMEOUT = {"engine": 1800, "env": 900, "factors": 300, "store": 300}



def _listing(name: str) -> dict[str, str]:
    path = REPO / "scripts" / name
    return json.loads(path.read_text()) if path.exists() else {}


#: survivors judged equivalent ("module:line operator #occurrence" -> why no behaviour changes) and
#: survivors that a test added after the run kills (-> that test; checked by applying the mutant);
#: line numbers are those of the commit the run was made on
EQUIVALENT: dict[str, str] = _listing("mutation_equivalent.json")
KILLED_BY_ADDED_TEST: dict[str, str] = _listing("mutation_killed_by_added_tests.json")


def _group_of(module: str) -> str:
    return next(g for g, mods in GROUPS.items() if module in mods)


def _stem(module: str) -> str:
    return module.replace("/", "_").removesuffix(".py")


def _pytest(module: str, cache: str, quiet_out: bool = True) -> int:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, HYPOTHESIS_PROFILE="mutation", PYTHONDONTWRITEBYTECODE="1")
    cmd = [str(BIN / "python"), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
           *MODULE_TESTS[module]]
    out = subprocess.DEVNULL if quiet_out else None
    return subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=out).returncode


def run_tests(module: str) -> int:
    """The test command of one mutant: its own copy of the warm numba cache, the mutation
    hypothesis profile, stop at the first failure."""
    cache = tempfile.mkdtemp(prefix="numba-mutant-")
    try:
        if module not in COMPILED and WARM_CACHE.exists():
            shutil.copytree(WARM_CACHE, cache, dirs_exist_ok=True)
        return _pytest(module, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def warm_up(modules: list[str]) -> None:
    """Compile the kernels once from the unmutated source into :data:`WARM_CACHE`, running every
    module's tests there: a test that fails without a mutant would 'kill' every mutant."""
    shutil.rmtree(WARM_CACHE, ignore_errors=True)
    WARM_CACHE.mkdir(parents=True)
    tests = list(dict.fromkeys(t for m in modules for t in MODULE_TESTS[m]))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(WARM_CACHE), HYPOTHESIS_PROFILE="mutation")
    rc = subprocess.run([str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                         *tests], cwd=REPO, env=env).returncode
    if rc != 0:
        sys.exit(f"the mutation tests fail on the unmutated source (pytest exit {rc}); fix them first")


def _config(module: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{_stem(module)}.toml"
    excluded = ", ".join(f'"{e}"' for e in EXCLUDED_OPERATORS)
    path.write_text(f"""[cosmic-ray]
module-path = ["{module}"]
timeout = {TIMEOUT[_group_of(module)]}.0
excluded-modules = []
test-command = "{BIN / 'python'} {Path(__file__).resolve()} --run-tests {module}"

[cosmic-ray.distributor]
name = "local"

[cosmic-ray.filters.operators-filter]
exclude-operators = [{excluded}]
""")
    return path


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


def _annotation_spans(module: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of the type annotations of ``module``: with ``from __future__ import
    annotations`` they are never evaluated, so every mutant inside one is equivalent."""
    tree = ast.parse((REPO / module).read_text())
    nodes = []
    for n in ast.walk(tree):
        if isinstance(n, ast.arg) and n.annotation is not None:
            nodes.append(n.annotation)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns is not None:
            nodes.append(n.returns)
        elif isinstance(n, ast.AnnAssign):
            nodes.append(n.annotation)
    return [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in nodes]


def start(module: str, sample: int | None, seed: int) -> None:
    cfg = _config(module)
    db = OUT / f"{_stem(module)}.sqlite"
    db.unlink(missing_ok=True)
    quiet = dict(cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(BIN / "cosmic-ray"), "init", str(cfg), str(db)], **quiet)
    subprocess.run([str(BIN / "cr-filter-operators"), str(db), str(cfg)], **quiet)
    subprocess.run([str(BIN / "cr-filter-pragma"), str(db)], **quiet)
    if "from __future__ import annotations" in (REPO / module).read_text():
        spans = _annotation_spans(module)
        _skip(db, lambda it: not any(a <= tuple(it.mutations[0].start_pos) < b for a, b in spans))
    if sample:
        from cosmic_ray.work_db import WorkDB, use_db

        with use_db(str(db), WorkDB.Mode.open) as d:
            ids = sorted(it.job_id for it in d.pending_work_items)
        chosen = set(random.Random(f"{seed}:{module}").sample(ids, min(sample, len(ids))))
        _skip(db, lambda it: it.job_id in chosen)
    subprocess.run([str(BIN / "cosmic-ray"), "exec", str(cfg), str(db)], cwd=REPO, check=True)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _key(m) -> str:
    return f"{m.module_path}:{m.start_pos[0]} {m.operator_name} #{m.occurrence}"


def report(module: str) -> dict | None:
    """Score and surviving mutants (module:line operator, and the diff) of one module's last run."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    db_path = OUT / f"{_stem(module)}.sqlite"
    if not db_path.exists():
        print(f"# {module}: no run")
        return None
    killed = survived = equivalent = timeouts = 0
    survivors = []
    with use_db(str(db_path), WorkDB.Mode.open) as db:
        total = db.num_work_items
        skipped = 0
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                skipped += 1
                continue
            m = item.mutations[0]
            if result.test_outcome == TestOutcome.SURVIVED:
                if _key(m) in EQUIVALENT:
                    equivalent += 1
                else:
                    survived += 1
                    survivors.append((m, result))
            elif result.output == "timeout":
                timeouts += 1
            else:  # killed, or incompetent (the mutant does not import or compile)
                killed += 1
        pending = total - db.num_results
    n = killed + survived
    lo, hi = wilson(killed, n)
    later = sum(_key(m) in KILLED_BY_ADDED_TEST for m, _ in survivors)
    lo2, hi2 = wilson(killed + later, n)
    row = dict(module=module, mutants=total, run=n + equivalent + timeouts, equivalent=equivalent, timeouts=timeouts,
               killed=killed,
               survived=survived, pending=pending, score=killed / n if n else None, ci95=[lo, hi],
               killed_by_added_tests=later, score_now=(killed + later) / n if n else None, ci95_now=[lo2, hi2])
    score = f"{killed}/{n} = {killed / n:.1%} (95% CI {lo:.0%}-{hi:.0%})" if n else "n/a"
    now = f"; with the tests added since: {killed + later}/{n} = {(killed + later) / n:.1%}" if later else ""
    print(f"# {module}: {total} mutants, {n + equivalent + timeouts} run ({equivalent} equivalent, {timeouts} "
          f"timed out), {pending} pending; "
          f"killed {score}{now}")
    for m, result in survivors:
        print(f"  SURVIVED {_key(m)}" + (f" -> killed now by {KILLED_BY_ADDED_TEST[_key(m)]}"
                                         if _key(m) in KILLED_BY_ADDED_TEST else ""))
        print("\n".join("    " + line for line in (result.diff or "").splitlines()
                        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))))
    return row


def _modules(names: list[str], ap) -> list[str]:
    out: list[str] = []
    for name in names:
        if name in GROUPS:
            out += GROUPS[name]
        elif name in MODULE_TESTS:
            out.append(name)
        else:
            ap.error(f"unknown group or module {name!r}; expected one of {list(GROUPS)} or {list(MODULE_TESTS)}")
    return list(dict.fromkeys(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", default=list(GROUPS),
                    help=f"groups ({', '.join(GROUPS)}) or module paths to run (default: every group)")
    ap.add_argument("--sample", type=int, default=None, help="run only N randomly chosen mutants per module")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --sample choice")
    ap.add_argument("--report", action="store_true", help="only print the reports of the modules' last runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-module rows to this JSON file")
    ap.add_argument("--run-tests", metavar="MODULE", help=argparse.SUPPRESS)  # the per-mutant test command
    args = ap.parse_args()
    if args.run_tests:
        return run_tests(args.run_tests)
    modules = _modules(args.names, ap)
    if not args.report:
        dirty = subprocess.run(["git", "diff", "--quiet", "--", *modules], cwd=REPO).returncode != 0
        if dirty:
            sys.exit(f"{modules} have uncommitted changes (a mutant left by an interrupted run?); "
                     f"commit or `git checkout` them first")
        warm_up(modules)
        for module in modules:
            start(module, args.sample, args.seed)
    rows = [r for r in (report(m) for m in modules) if r]
    n = sum(r["killed"] + r["survived"] for r in rows)
    if len(rows) > 1 and n:
        k, later = sum(r["killed"] for r in rows), sum(r["killed_by_added_tests"] for r in rows)
        (lo, hi), (lo2, hi2) = wilson(k, n), wilson(k + later, n)
        print(f"# all: killed {k}/{n} = {k / n:.1%} (95% CI {lo:.0%}-{hi:.0%}); with the tests added since: "
              f"{k + later}/{n} = {(k + later) / n:.1%} (95% CI {lo2:.0%}-{hi2:.0%}); equivalent "
              f"{sum(r['equivalent'] for r in rows)} (samples per module are not weighted by module size)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
