"""Mutation testing (``make mutation``): plant one small bug at a time with cosmic-ray and run the
fast tests that guard that code; a mutant the tests do not fail on "survived".

The run mutates a snapshot, never the worktree: HEAD's files are copied to runs/mutation/tree
(``git archive``; the package layout rebuilt with symlinks, imported through ``PYTHONPATH``), so
tests can be written while a run goes on, and an interrupted run leaves nothing behind in the
checkout. Each module is a cosmic-ray session (runs/mutation/<module>.sqlite, ignored by git: init,
operator and pragma filters, and the results); this script applies the chosen mutants ONE AT A TIME,
in a seeded random order across all the modules, and stores each result as soon as it is known (and
one line per mutant in runs/mutation/results.jsonl), so a run stopped early (``--stop-at``) is still a
random part of its sample and ``--resume`` continues it.

Which tests run against a mutant: those of the default suite (``-m "not slow"``, as ``make test``)
that run its line, and its module's :data:`MODULE_TESTS` (the tests that hold that module's code
against an independent answer: a hand-worked case, the plain-Python reference model, pandas). The
suite is run ONCE per snapshot under coverage (``--coverage-map``, or by the run when the snapshot
has no map), each test in its own coverage context, subprocesses included
(scripts/mutation_coverage.py), and stored as line -> tests (and each test's seconds) in
runs/mutation/coverage/<source key>.json. A mutant of a Python module runs MODULE_TESTS and the
tests covering its statement, grouped by file, the cheapest files first; ``pytest -x`` stops at the
first failure. A line run at import (a module or class attribute, a function's default values or
decorators) is run by every import, so coverage cannot tell who depends on it: a default value takes
the tests that run its function, anything else every test that runs the module. A mutant on a line
no test runs survives without a run ("not covered"). A mutant of a compiled module
(:data:`COMPILED`; coverage cannot see numba-compiled lines run) runs MODULE_TESTS as they are, then
the tests covering its line if it is Python-level code. Groups name sets of modules: ``engine`` (the
compiled step: execution, actions, phases, kernels, layouts, intrinsics), ``env`` (the Python around
it: core, trading_env, vector_env, backtest, metrics), ``factors`` (custom factors and
normalisation) and ``store`` (the store's merge).

Samples: ``--sample N`` runs N mutants per module (uniform); ``--stratified N`` runs N in all,
allocated to the modules in proportion to their numbers of mutants (largest remainder, at least one
each), so the pooled score is an unbiased estimate over the whole population. The report gives the
score with a 95% (Wilson) interval.

numba: every mutant's test run gets its own ``NUMBA_CACHE_DIR``. A mutant of a module numba compiles
(:data:`COMPILED`) starts from an empty one, so a mutated kernel can never be served from a cache of
other source (it would recompile every kernel anyway: the engine's cache is keyed by the hash of all
its sources, envs/jit.py). A mutant of a Python module gets a copy of a cache compiled from the
unmutated source by the coverage map's run (every kernel signature the suite compiles), to which the
run's start adds its MODULE_TESTS (which also checks they pass there).
``NUMBA_DISABLE_JIT=1`` is not an option: the kernels call LLVM intrinsics (envs/intrinsics.py)
that exist only compiled. Hypothesis runs the profile ``mutation`` (fixed examples, no shrinking).
Mutants inside type annotations are skipped (never evaluated: every module here has ``from
__future__ import annotations``). A test run longer than the module's :data:`TIMEOUT` plus twice the
seconds its tests took in the map's run is stopped and reported apart (not counted as killed).

Usage::

    python scripts/mutation.py [GROUP|MODULE ...] [--stratified N | --sample N] [--seed S] [--stop-at HH:MM]
    python scripts/mutation.py [GROUP|MODULE ...] --resume [--stop-at HH:MM]   # continue a stopped run
    python scripts/mutation.py --report [GROUP|MODULE ...]                     # reports of finished runs
    python scripts/mutation.py --check "envs/core.py:142 core/NumberReplacer #61" tests/test_x.py [--mutant-only]
    python scripts/mutation.py --check "envs/core.py:142 core/NumberReplacer #61"   # the run's selection, today
    python scripts/mutation.py --coverage-map [--workers 2]                       # (re)build HEAD's map

Mutants judged equivalent (no behaviour of the program changes) are listed with the reason in
:data:`EQUIVALENT` and left out of the score.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "mutation"
TREE = OUT / "tree"  # the snapshot the run mutates (runs/mutation/tree/../shared links the shared data)
RESULTS = OUT / "results.jsonl"
BIN = Path(sys.executable).parent
WARM_CACHE = OUT / "numba-warm"
COVERAGE = OUT / "coverage"  # coverage maps (<source key>.json) and their numba caches (<source key>/numba)
NOT_COVERED = "not covered"  # the outcome of a mutant no test of the default suite runs (survives unrun)
#: import names under factorgym. that live in top-level folders (pyproject's package-dir)
LAYERS = ("envs", "data_layer", "agents", "configs")

# operators left out: variable insertion/replacement and decorator removal (mostly equivalent or
# nonsensical mutants: removing @numba.njit changes speed, not results), exception-type swaps, and
# binary operators replaced by bitwise, shift, modulo, floor-division or power operators (on floats
# they raise or give absurd values that any test catches; they would triple the run for nothing)
EXCLUDED_OPERATORS = [r"core/VariableInserter", r"core/VariableReplacer", r"core/RemoveDecorator",
                      r"core/ExceptionReplacer",
                      r"core/ReplaceBinaryOperator_.*_(LShift|RShift|BitOr|BitXor|BitAnd|Mod|FloorDiv|Pow|MatMult)$"]

# the reference-based engine tests: one kernel shape family (2 assets), so a mutant compiles few
# signatures; the hand-worked case first (one signature, ~50 s cold), the random references after
_BY_HAND = "tests/test_money_paths_by_hand.py"
_REFERENCE = ["tests/test_reference_step.py", "tests/test_autoreset.py"]
# existing tests that killed survivors of the session-7 sample (fills, rounding, the five-bar run,
# hypothesis invariants; mapped vs in-memory runs of every env): last, as they compile more signatures
_WIDER = ["tests/test_execution.py", "tests/test_env_mmap.py"]
# the engine's documented rules at their boundaries, by hand (session 11; ~4 s warm, ~75 s from an empty cache)
_RULES = [f"tests/test_engine_rules_{part}.py" for part in ("execution", "actions", "step", "settle", "layouts", "constants")]
_ENGINE = [_BY_HAND, *_REFERENCE, *_RULES, "tests/test_mutants_engine.py", "tests/test_mutants_s10.py",
           "tests/test_mutants_s11.py", "tests/test_mutants_s12.py", *_WIDER]
_ENV_ADDED = "tests/test_mutants_env.py"  # (tests written for survivors of earlier runs)
_CONFIG_ERRORS = "tests/test_env_api.py::test_bad_configuration_gives_clear_errors"  # (1 s; the file: 2 min)
_VECTOR = "tests/test_vector_env.py"  # vector vs single env, batch layouts, autoreset (~6 s warm)
_PARALLEL = "tests/test_vector_env.py::test_parallel_kernel_gives_the_same_trajectories_bit_for_bit"

# every kernel path under numba's bounds checking, in a child with an empty cache (~30 s): last, for
# the compiled modules (an out-of-bounds read whose value goes unused changes no result)
_BOUNDS = "tests/test_engine_bounds.py"

#: module -> the tests run against each of its mutants (in this order; pytest stops at the first failure)
MODULE_TESTS: dict[str, list[str]] = {
    "envs/execution.py": ["tests/test_process_order.py", *_ENGINE, _BOUNDS],
    "envs/actions.py": [*_ENGINE, _BOUNDS],
    "envs/phases.py": [*_ENGINE, _BOUNDS],
    # (+ the wrong-length action test of the single env's fast path, which hands it to the kernel as it is)
    # (+ the parallel kernel against the serial one: it compiles one more kernel)
    "envs/kernels.py": [*_ENGINE,
                        "tests/test_mutants_env.py::test_a_box_action_of_the_wrong_length_is_refused_and_moves_nothing",
                        _PARALLEL, _BOUNDS],
    "envs/layouts.py": [*_ENGINE[:-2], _VECTOR, *_WIDER, _BOUNDS],
    "envs/intrinsics.py": [*_ENGINE, _BOUNDS],
    "envs/core.py": [*_ENGINE[:-2], _ENV_ADDED, _VECTOR, *_WIDER],
    "envs/trading_env.py": [_BY_HAND, "tests/test_action_inputs.py", _CONFIG_ERRORS, *_REFERENCE, _ENV_ADDED, *_WIDER],
    "envs/vector_env.py": [*_REFERENCE, "tests/test_mutants_engine.py", _ENV_ADDED, _VECTOR, *_WIDER],
    "envs/backtest.py": ["tests/test_backtest.py", *_REFERENCE, _ENV_ADDED, *_WIDER],
    "envs/metrics.py": ["tests/test_metrics.py", "tests/test_short_spans.py", "tests/test_backtest.py", _ENV_ADDED],
    "data_layer/factors/custom.py": ["tests/test_factors_custom.py", "tests/test_factor_values.py",
                                     "tests/test_mutants_factors.py", "tests/test_factor_contract.py"],
    "data_layer/factors/normalise.py": ["tests/test_normalise.py", "tests/test_factors_custom.py",
                                        "tests/test_mutants_factors.py", "tests/test_normalise_contract.py"],
    "data_layer/store_merge.py": ["tests/test_store.py", "tests/test_store_partitions.py",
                                  "tests/test_no_silent_data_mistakes.py", "tests/test_mutants_store.py",
                                  "tests/test_store_merge_contract.py"],
}

GROUPS: dict[str, list[str]] = {
    "engine": ["envs/execution.py", "envs/actions.py", "envs/phases.py", "envs/kernels.py", "envs/layouts.py",
               "envs/intrinsics.py"],
    "env": ["envs/core.py", "envs/trading_env.py", "envs/vector_env.py", "envs/backtest.py", "envs/metrics.py"],
    "factors": ["data_layer/factors/custom.py", "data_layer/factors/normalise.py"],
    "store": ["data_layer/store_merge.py"],
}

#: modules with numba-compiled functions: their mutants start from an empty numba cache
COMPILED = {*GROUPS["engine"], "data_layer/factors/normalise.py"}

#: per-mutant limit (s) on the test run: a cold compile of the step kernels on a busy machine (~1-4
#: min), and the tests. A mutant that runs longer (a loop that never ends) is reported apart
TIMEOUT = {"engine": 900, "env": 600, "factors": 300, "store": 300}


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


def _db(module: str) -> Path:
    return OUT / f"{_stem(module)}.sqlite"


def snapshot(tree: Path = TREE, worktree: bool = False) -> str:
    """Copy HEAD's files (``worktree``: the checkout's tracked and untracked files as they are now,
    so a test not yet committed can be checked) to ``tree`` with the package layout of the editable
    install (symlinks factorgym/<layer> -> ../<layer>); returns HEAD's commit."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    if worktree:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.split("\0")
        for f in filter(None, files):
            if (REPO / f).is_file() and not (REPO / f).is_symlink():
                (tree / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / f, tree / f)
    else:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for layer in LAYERS:
        link = tree / "factorgym" / layer
        if not link.exists():
            link.symlink_to(Path("..") / layer)
    shared = tree.parent / "shared"  # the tests find the shared data at <repo>/../shared
    if not shared.is_symlink() and (REPO.parent / "shared").exists():
        shared.symlink_to(REPO.parent / "shared")
    return head.strip()


def _pytest(module: str, cache: str, timeout: float | None = None, tests: list[str] | None = None,
            tree: Path = TREE, quiet: bool = True, markers: str = "not slow", log=None) -> int | None:
    """Run ``module``'s tests in the snapshot (``-x``); the exit code, or None past ``timeout``
    (``log``: a file that gets the output)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, HYPOTHESIS_PROFILE="mutation", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(tree))
    cmd = [str(BIN / "python"), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", markers,
           *(tests or MODULE_TESTS[module])]
    try:
        out = log if log is not None else subprocess.DEVNULL if quiet else None
        return subprocess.run(cmd, cwd=tree, env=env, stdout=out, stderr=out, timeout=timeout).returncode
    except subprocess.TimeoutExpired:  # (subprocess.run has killed pytest)
        return None


# --- which tests run against a mutant: coverage of the whole default suite --------------------------------
#: decorators whose functions numba compiles: coverage never sees their lines run (nor their decorators'
#: effect), so a mutant there runs the module's MODULE_TESTS, whatever coverage says
JIT_DECORATORS = {"jit", "njit", "intrinsic", "register_jitable", "overload", "overload_method", "vectorize",
                  "guvectorize", "cfunc", "stencil", "generated_jit"}
#: coverage warnings that would reach the stderr of a measured subprocess (tests check some stderr is empty)
_QUIET_COVERAGE = "no-data-collected, module-not-imported, module-not-measured, include-ignored, already-imported"


def file_hashes(tree: Path = TREE) -> dict[str, str]:
    """sha256 of every file of a snapshot (links not followed), by relative path."""
    import hashlib

    out = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not path.is_symlink():
                out[str(path.relative_to(tree))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def source_key(tree: Path = TREE) -> str:
    """Hash of every file of a snapshot: a coverage map holds for this key only."""
    import hashlib

    return hashlib.sha256(json.dumps(file_hashes(tree), sort_keys=True).encode()).hexdigest()[:16]


def _map_path(key: str) -> Path:
    return COVERAGE / f"{key}.json"


def _under_coverage(work: Path, tree: Path, workers: int, files: list[str] | None) -> tuple:
    """Run the default suite's tests (``files``: only these test files) under coverage in ``tree``:
    pytest's exit code, wall seconds, {test id: [seconds, passed]}, {module: {line: {test ids}}}."""
    import time

    import coverage

    (work / "plugin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "scripts" / "mutation_coverage.py", work / "plugin")  # (scripts/ itself not on the path)
    real = tree.resolve()
    rc_file = work / "coveragerc"
    include = "".join(f"\n    {real / m}" for m in MODULE_TESTS)
    rc_file.write_text(f"[run]\ndata_file = {work / 'data'}\nparallel = True\ninclude ={include}\n"
                       f"context = ${{MUTATION_COV_TEST}}\ndisable_warnings = {_QUIET_COVERAGE}\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(work / "numba"), HYPOTHESIS_PROFILE="mutation",
               PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join([str(tree), str(work / "plugin")]),
               COVERAGE_PROCESS_START=str(rc_file), MUTATION_COV_DIR=str(work))
    for name in [v for v in env if v.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))] + ["MUTATION_COV_TEST"]:
        env.pop(name, None)  # (run from a test, itself maybe in an xdist worker or measured)
    xdist = ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"] if workers else []
    cmd = [str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
           "-p", "mutation_coverage", *xdist, *(files or [])]
    t0 = time.time()
    with open(work / "pytest.log", "w") as log:
        rc = subprocess.run(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.time() - t0
    tests: dict[str, list] = {}
    for f in sorted(work.glob("tests-*.json")):
        tests.update(json.loads(f.read_text()))
        f.unlink()
    cov = coverage.Coverage(config_file=str(rc_file))
    cov.combine(data_paths=[str(work)], keep=False)
    data = cov.get_data()
    lines: dict[str, dict[int, set[str]]] = {}
    for f in data.measured_files():
        rel = os.path.relpath(f, real)
        if rel in MODULE_TESTS:
            lines[rel] = {n: {c for c in ctx if c in tests} for n, ctx in data.contexts_by_lineno(f).items()}
    for f in work.glob("data*"):
        f.unlink()
    return rc, seconds, tests, lines


#: files a map's lines depend on beyond the tests themselves: a change to any rebuilds the whole map
_MAP_BASIS = ("tests/conftest.py", "pyproject.toml")


def _rerun_files(old: dict[str, str], new: dict[str, str], tree: Path, named: bool = True) -> list[str] | None:
    """The test files to run again to bring a map of snapshot ``old`` (file hashes) up to ``new``:
    new or changed test files, and those that name a changed file (a module, a helper, README: its
    name without the extension, as a word); None when a file of :data:`_MAP_BASIS` changed (a
    fixture may have changed anything: a full build). ``named`` False: only changed files under
    tests/ count (a production change outside the mutated modules is taken to leave their coverage
    as it was, and a changed line of a mutated module takes the tests of the lines it replaced:
    quicker). (A changed mutated module: :func:`_line_map`.)"""
    changed = {f for f in set(old) | set(new) if old.get(f) != new.get(f)}
    if any(f in _MAP_BASIS for f in changed):
        return None
    tests = sorted(f for f in new if f.startswith("tests/") and Path(f).name.startswith("test_") and f.endswith(".py"))
    # (a changed package's __init__ goes by the package's name; README.md by README: test_readme names it)
    stems = {Path(f).parent.name if Path(f).name == "__init__.py" else Path(f).stem for f in changed
             if f not in tests and f not in MODULE_TESTS and (named or f.startswith("tests/"))} - {""}
    words = re.compile(r"\b(" + "|".join(map(re.escape, sorted(stems))) + r")\b") if stems else None
    return [f for f in tests if f in changed or words and words.search((tree / f).read_text())]


def _line_map(old_src: str, new_src: str) -> tuple[dict[int, int], set[int], dict[int, set[int]]]:
    """A mutated module changed: old line -> new line for the lines the diff leaves as they were; the
    old lines it touches (changed or deleted, and the line either side of each change); and for each
    new or changed line, the old lines its change touched. The tests that ran a touched line run
    again (or, in a quick update, a changed line takes the tests of the old lines it replaced and
    their neighbours); every other test's coverage moves with its lines."""
    import difflib

    a, b = old_src.splitlines(), new_src.splitlines()
    same: dict[int, int] = {}
    touched: set[int] = set()
    fresh: dict[int, set[int]] = {}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            same.update({i + 1: j1 + (i - i1) + 1 for i in range(i1, i2)})
        else:  # (1-based, the changed lines are i1 + 1 .. i2: with their neighbours, i1 .. i2 + 1)
            touched.update(range(i1, i2 + 2))
            fresh.update({j + 1: set(range(i1, i2 + 2)) for j in range(j1, j2)})
    return same, touched, fresh


def _unresolved(tree: Path, ids: list[str]) -> list[str]:
    """The test ids pytest cannot find when given as arguments in ``tree`` (unmutated; a mutant's run
    passes the ids, and an unknown one is a usage error, exit 4, which would count as a kill)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([str(BIN / "python"), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", "not slow", *ids], cwd=tree, env=env, capture_output=True, text=True)
    return [] if out.returncode == 0 else [t for t in ids if t not in out.stdout.splitlines()]


def build_coverage_map(key: str, tree: Path = TREE, workers: int = 2, base: dict | None = None,
                       named: bool = True) -> dict:
    """Run the default suite (``-m "not slow"``, as ``make test``) ONCE on the unmutated snapshot under
    coverage, each test in its own context (scripts/mutation_coverage.py; subprocesses measured too),
    restricted to the mutated modules; store line -> the tests that ran it, and each test's seconds and
    outcome, as runs/mutation/coverage/<key>.json. Its numba cache (every kernel signature the suite
    compiles) starts the warm cache of the Python modules' mutants. ``base``: a map of an earlier
    snapshot: only the test files :func:`_rerun_files` names and the tests that ran a line a changed
    mutated module changed (:func:`_line_map`) run; the others' coverage is taken from it (a
    production change outside the mutated modules that changes which of their lines an unchanged,
    unnamed test runs is not seen)."""
    work = COVERAGE / key
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    hashes = file_hashes(tree)
    files = _rerun_files(base["files"], hashes, tree, named) if base else None
    moved = [m for m in MODULE_TESTS if base and base["files"].get(m) != hashes.get(m)]
    if files is not None and not all(m in base.get("sources", {}) for m in moved):
        files = None
    tests: dict[str, list] = {}
    lines: dict[str, dict[int, set[str]]] = {}
    run: list[str] | None = None
    if files is not None:  # start from the base map, less the tests that run again
        if (COVERAGE / base["key"] / "numba").exists():
            shutil.copytree(COVERAGE / base["key"] / "numba", work / "numba")
        ids = [t for t, _, _ in base["tests"]]
        remap, again, inherit = {}, set(), {}
        for m in moved:
            remap[m], touched, inherit[m] = _line_map(base["sources"][m], (tree / m).read_text())
            if named:
                again |= {ids[i] for n in touched for i in base["lines"].get(m, {}).get(str(n), [])}
        still = set(hashes) - set(files)  # (test files that are there and do not run again whole)
        again = {t for t in again if t.split("::")[0] in still}
        keep = {t for t in ids if t.split("::")[0] in still and t not in again}
        tests = {t: [s, ok] for t, s, ok in base["tests"] if t in keep}
        for m, by in base["lines"].items():
            move = remap.get(m)
            lines[m] = {(move[int(n)] if move else int(n)): {ids[i] for i in v} & keep for n, v in by.items()
                        if not move or int(n) in move}
            if not named:  # (a quick update: a changed line inherits the tests of what it replaced)
                for n, olds in inherit.get(m, {}).items():
                    lines[m][n] = {ids[i] for o in olds for i in by.get(str(o), [])} & keep
        run = files + sorted(again)
        print(f"# coverage map: updating {base['key']} ({len(files)} test files and {len(again)} tests that ran "
              f"lines changed in {moved} to run again: {files})", flush=True)
    else:
        print(f"# coverage map: the default suite under coverage in {tree} ({workers or 'no'} xdist workers) ...",
              flush=True)
    rc, seconds, new_tests, new_lines = (_under_coverage(work, tree, workers, run) if run != []
                                         else (0, 0.0, {}, {}))
    tests.update(new_tests)
    for m, by in new_lines.items():
        for n, ids in by.items():
            lines.setdefault(m, {}).setdefault(n, set()).update(ids)
    for t in _unresolved(tree, list(tests)):  # (pytest would stop with a usage error: a false kill)
        tests[t][1] = False
    index = {t: i for i, t in enumerate(tests)}
    failed = [t for t, (_, ok) in tests.items() if not ok]
    cmap = dict(key=key, base=base["key"] if files is not None else None, rerun=run, named=named, pytest_exit=rc,
                seconds=round(seconds), tests=[[t, s, ok] for t, (s, ok) in tests.items()],
                lines={m: {str(n): sorted(index[t] for t in ids) for n, ids in sorted(by.items()) if ids}
                       for m, by in lines.items()},
                failed=failed, files=hashes, sources={m: (tree / m).read_text() for m in MODULE_TESTS})
    _map_path(key).write_text(json.dumps(cmap))
    print(f"# coverage map {key}: {len(tests)} tests ({len(new_tests)} run, {seconds:.0f} s, pytest exit {rc}), "
          f"{sum(map(len, cmap['lines'].values()))} covered lines in {len(lines)} modules"
          + (f"; {len(failed)} tests FAILED unmutated and are never selected: {failed[:10]}" if failed else ""),
          flush=True)
    return cmap


def coverage_map(key: str, tree: Path = TREE, rebuild: bool = False, workers: int = 2, named: bool = True) -> dict:
    """The coverage map of the snapshot whose source key is ``key``: stored, else updated from the
    newest stored map of the same mutated modules, else built (``rebuild``: built in full)."""
    if not rebuild and _map_path(key).exists():
        return json.loads(_map_path(key).read_text())
    base, hashes = None, file_hashes(tree)
    if not rebuild:
        for path in sorted(COVERAGE.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
            old = json.loads(path.read_text())
            if "files" in old and _rerun_files(old["files"], hashes, tree) is not None:
                base = old
                break
    return build_coverage_map(key, tree, workers, base, named)


def _start(node) -> int:
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])


def _children(node):
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        for c in getattr(node, field, None) or []:
            if hasattr(c, "lineno"):
                yield c


def _is_jit(node) -> bool:
    for d in getattr(node, "decorator_list", []):
        f = d.func if isinstance(d, ast.Call) else d
        if (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")) in JIT_DECORATORS:
            return True
    return False


def line_scope(module_ast: ast.Module, line: int) -> dict:
    """Where a source line runs. ``span``: the lines of its statement (or of its compound statement's
    header), whose coverage stands for it; ``import_time``: the line runs when the module is imported
    (a module- or class-level statement, or the header of a function defined there: its decorators and
    default values), so a test's coverage of it says nothing; ``body``: for such a function header,
    the lines of the function (the tests that call it see its defaults); ``jit``: inside (or the
    decorator of) a function numba compiles."""
    node, functions, jit = module_ast, 0, False
    while True:
        inner = next((c for c in _children(node) if _start(c) <= line <= c.end_lineno), None)
        if inner is None:
            break
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions += 1  # (the line is in node's body)
        node = inner
        jit = jit or _is_jit(node)
    kids = list(_children(node))
    if node is module_ast:
        return dict(span=[line], import_time=True, body=None, jit=False)
    in_blocks = bool(kids) and line >= _start(kids[0])  # (a blank, comment or else: line between blocks)
    span = [line] if in_blocks else list(range(_start(node), (_start(kids[0]) - 1 if kids else node.end_lineno) + 1))
    is_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    import_time = functions == 0 and not (is_def and in_blocks)
    body = list(range(_start(kids[0]), node.end_lineno + 1)) if is_def and kids and not in_blocks else None
    return dict(span=span, import_time=import_time, body=body if import_time else None, jit=jit)



#: covering tests slower than this in the map's run (s) are left out unless in MODULE_TESTS: the
#: ~2% of the suite that are end-to-end runs (Ray Tune, training, paper CLI children, downloads) cost
#: as much as all the others together, and a survivor would run every one of them
MAX_TEST_SECONDS = 10.0


class Selection:
    """Per-mutant tests from a coverage map: the tests covering the mutated lines, and MODULE_TESTS."""

    def __init__(self, cmap: dict, tree: Path = TREE, max_seconds: float | None = MAX_TEST_SECONDS):
        self.tests = [t for t, _, ok in cmap["tests"]]
        self.seconds = {t: s for t, s, _ in cmap["tests"]}
        self.too_slow = {t for t, s in self.seconds.items() if max_seconds is not None and s > max_seconds}
        self.left_out = 0  # covering tests the last select() left out as too slow
        self.order = {t: i for i, t in enumerate(self.tests)}
        self.by_file: dict[str, list[str]] = {}
        for t in self.tests:
            self.by_file.setdefault(t.split("::")[0], []).append(t)
        failed = {t for t, _, ok in cmap["tests"] if not ok}
        self.lines = {m: {int(k): {self.tests[i] for i in v} - failed for k, v in by_line.items()}
                      for m, by_line in cmap["lines"].items()}
        self.any_line = {m: set().union(*by_line.values()) if by_line else set() for m, by_line in self.lines.items()}
        self.tree = tree
        self._ast: dict[str, ast.Module] = {}

    def _module_ast(self, module: str) -> ast.Module:
        if module not in self._ast:
            self._ast[module] = ast.parse((self.tree / module).read_text())
        return self._ast[module]

    def _expand(self, entry: str) -> list[str]:
        """A MODULE_TESTS entry (a file, or a test id) as the map's test ids (the entry itself if none)."""
        if entry in self.seconds:
            return [entry]
        ids = [t for t in self.by_file.get(entry.split("::")[0], []) if t == entry or t.startswith((entry + "::", entry + "["))]
        return ids or [entry]

    def covering(self, module: str, lines: list[int]) -> tuple[set[str], bool]:
        """The tests that cover ``lines`` of ``module``, and whether MODULE_TESTS must run whatever
        coverage says (compiled code, or code run at import)."""
        by_line = self.lines.get(module, {})
        tests: set[str] = set()
        must = module in COMPILED
        for line in lines:
            scope = line_scope(self._module_ast(module), line)
            for n in scope["span"]:
                tests |= by_line.get(n, set())
            must = must or scope["jit"] or scope["import_time"]
            if scope["import_time"]:
                tests |= (set().union(*(by_line.get(n, set()) for n in scope["body"])) if scope["body"]
                          else self.any_line.get(module, set()))
        return tests, must

    def select(self, module: str, lines: list[int]) -> list[str] | None:
        """The tests to run against a mutant of ``lines`` of ``module``, in order (None: no test covers
        them, the mutant survives unrun). A Python module: MODULE_TESTS and the covering tests, as
        test ids grouped by file, the files with the fewest seconds first. A compiled module:
        MODULE_TESTS as they are (their order: the hand-worked case compiles the fewest kernels),
        then the other covering tests, likewise. Covering tests over ``max_seconds`` are left out
        (counted in ``left_out``) unless only such tests run the line."""
        covering, must = self.covering(module, lines)
        if covering - self.too_slow or must:  # (only slow tests run the line: they run)
            self.left_out = len(covering & self.too_slow)
            covering -= self.too_slow
        else:
            self.left_out = 0
        if not covering and not must:
            return None
        if module in COMPILED:
            head = list(MODULE_TESTS[module])
            ran = {t for e in head for t in self._expand(e)}
            return head + self._by_file(covering - ran)
        ids = {t for e in MODULE_TESTS[module] for t in self._expand(e)} | covering
        return self._by_file(ids)

    def _by_file(self, ids: set[str]) -> list[str]:
        files: dict[str, list[str]] = {}
        for t in sorted(ids, key=lambda t: self.order.get(t, len(self.order))):
            files.setdefault(t.split("::")[0], []).append(t)
        cost = {f: sum(self.seconds.get(t, 0.0) for t in ts) for f, ts in files.items()}
        return [t for f in sorted(files, key=lambda f: cost[f]) for t in files[f]]

    def exclude(self, test: str) -> None:
        """Never select ``test`` again (it fails on the unmutated source, alone)."""
        for by_line in self.lines.values():
            for ids in by_line.values():
                ids.discard(test)
        for ids in self.any_line.values():
            ids.discard(test)

    def in_module_tests(self, module: str, test: str) -> bool:
        """Whether ``test`` (an id) is one of ``module``'s MODULE_TESTS (the selection before coverage)."""
        return any(test == e or test.startswith((e + "::", e + "[")) for e in MODULE_TESTS[module])

    def count(self, selected: list[str]) -> int:
        """How many tests a selection runs (a file or test id of MODULE_TESTS counts its tests)."""
        return len({t for e in selected for t in self._expand(e)})

    def cost(self, selected: list[str]) -> float:
        """Seconds the selection took in the map's run (0 for tests the map does not know)."""
        return sum(self.seconds.get(t, 0.0) for t in {t for e in selected for t in self._expand(e)})


def run_tests(module: str, tests: list[str], timeout: float) -> tuple[int | None, str | None]:
    """The tests of one mutant: its own numba cache (empty, or a copy of the warm one), the mutation
    hypothesis profile, stop at the first failure. Returns pytest's exit code (None: timed out) and
    the test that failed (pytest's first FAILED or ERROR line), if any."""
    cache = tempfile.mkdtemp(prefix="numba-mutant-")
    try:
        if module not in COMPILED and WARM_CACHE.exists():
            shutil.copytree(WARM_CACHE, cache, dirs_exist_ok=True)
        with tempfile.TemporaryFile("w+") as log:
            rc = _pytest(module, cache, timeout, tests=tests, log=log)
            log.seek(0)
            failed = re.search(r"^(?:FAILED|ERROR) (\S+)", log.read(), re.M)
        if module not in COMPILED and rc is not None:
            # the kernels it compiled are of unmutated source (a Python module has no numba function:
            # tests/test_mutation_script.py checks): the next mutants need not compile them again
            shutil.copytree(cache, WARM_CACHE, dirs_exist_ok=True)
        return rc, failed.group(1) if failed else None
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def warm_up(modules: list[str], key: str) -> None:
    """Start :data:`WARM_CACHE` from the coverage map's numba cache (every kernel the default suite
    compiles from the unmutated snapshot) and run every module's MODULE_TESTS there: a test that fails
    without a mutant would 'kill' every mutant (the map's run left out the tests that failed in it)."""
    shutil.rmtree(WARM_CACHE, ignore_errors=True)
    if (COVERAGE / key / "numba").exists():
        shutil.copytree(COVERAGE / key / "numba", WARM_CACHE)
    WARM_CACHE.mkdir(parents=True, exist_ok=True)
    tests = list(dict.fromkeys(t for m in modules for t in MODULE_TESTS[m]))
    rc = _pytest(modules[0], str(WARM_CACHE), tests=tests)
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
test-command = "false"

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


def _pending(module: str) -> list[str]:
    from cosmic_ray.work_db import WorkDB, use_db

    with use_db(str(_db(module)), WorkDB.Mode.open) as db:
        return sorted(it.job_id for it in db.pending_work_items)


def _annotation_spans(module: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of the type annotations of ``module``: with ``from __future__ import
    annotations`` they are never evaluated, so every mutant inside one is equivalent."""
    tree = ast.parse((TREE / module).read_text())
    nodes = []
    for n in ast.walk(tree):
        if isinstance(n, ast.arg) and n.annotation is not None:
            nodes.append(n.annotation)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns is not None:
            nodes.append(n.returns)
        elif isinstance(n, ast.AnnAssign):
            nodes.append(n.annotation)
    return [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in nodes]


def init(module: str) -> int:
    """A fresh cosmic-ray session of ``module`` in the snapshot; returns its number of mutants."""
    cfg = _config(module)
    db = _db(module)
    db.unlink(missing_ok=True)
    quiet = dict(cwd=TREE, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(BIN / "cosmic-ray"), "init", str(cfg), str(db)], **quiet)
    subprocess.run([str(BIN / "cr-filter-operators"), str(db), str(cfg)], **quiet)
    subprocess.run([str(BIN / "cr-filter-pragma"), str(db)], **quiet)
    if "from __future__ import annotations" in (TREE / module).read_text():
        spans = _annotation_spans(module)
        _skip(db, lambda it: not any(a <= tuple(it.mutations[0].start_pos) < b for a, b in spans))
    return len(_pending(module))


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """``total`` draws spread over the modules in proportion to their sizes (largest remainder), at
    least one per module with mutants when ``total`` allows."""
    pop = sum(sizes.values())
    quota = {m: total * n / pop for m, n in sizes.items()}
    out = {m: min(n, max(int(quota[m]), 1 if n and total >= len(sizes) else 0)) for m, n in sizes.items()}
    for m in sorted(sizes, key=lambda m: quota[m] - int(quota[m]), reverse=True):
        if sum(out.values()) >= total:
            break
        if out[m] < sizes[m]:
            out[m] += 1
    return out


def sample_keys(module: str, keys: list[str], k: int, seed: int) -> set[str]:
    """A seeded uniform sample of ``k`` of a module's mutant keys. Drawn from the keys sorted (module,
    line, operator, occurrence: fixed by the source), not from cosmic-ray's job ids (random uuids
    at each init): the same seed on the same source draws the same mutants in any checkout."""
    ordered = sorted(keys)
    return set(random.Random(f"{seed}:{module}").sample(ordered, min(k, len(ordered))))


def choose(modules: list[str], per_module: dict[str, int], seed: int) -> None:
    """Keep a seeded uniform sample of ``per_module[m]`` mutants of each module (the rest skipped)."""
    from cosmic_ray.work_db import WorkDB, use_db

    for m in modules:
        with use_db(str(_db(m)), WorkDB.Mode.open) as db:
            keys = [_key(it.mutations[0]) for it in db.pending_work_items]
        chosen = sample_keys(m, keys, per_module[m], seed)
        _skip(_db(m), lambda it: _key(it.mutations[0]) in chosen)


_ALONE: dict[str, bool] = {}


def _passes_alone(test: str, selection: Selection) -> bool:
    """Whether ``test`` (a test id of the map) passes run by itself on the unmutated snapshot (once per
    test; a failing one is excluded from ``selection``). An id pytest's summary cut short (a space in
    a parameter) is not in the map: trusted."""
    if test not in selection.seconds:
        return True
    if test not in _ALONE:
        cache = tempfile.mkdtemp(prefix="numba-alone-")
        try:
            shutil.copytree(WARM_CACHE, cache, dirs_exist_ok=True)
            _ALONE[test] = _pytest("", cache, 600, tests=[test]) == 0
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if not _ALONE[test]:
            selection.exclude(test)
    return _ALONE[test]


def execute(modules: list[str], seed: int, stop_at: float | None) -> None:
    """Run every pending mutant of ``modules``, one at a time, in a seeded order across modules;
    each result is stored at once (the module's session and a line in :data:`RESULTS`)."""
    import time

    import cosmic_ray.plugins
    from cosmic_ray.mutating import _make_diff, use_mutation
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    todo = []
    for m in modules:
        with use_db(str(_db(m)), WorkDB.Mode.open) as db:
            todo += [(m, it) for it in db.pending_work_items]
    todo.sort(key=lambda t: (t[0], _key(t[1].mutations[0])))  # (not the job ids: random at each init)
    random.Random(f"{seed}:order").shuffle(todo)
    run = json.loads((OUT / "run.json").read_text())
    selection = Selection(coverage_map(run["source_key"]), max_seconds=run.get("max_test_seconds", MAX_TEST_SECONDS))
    print(f"# {len(selection.too_slow)} tests slower than {run.get('max_test_seconds', MAX_TEST_SECONDS)} s in the "
          f"map's run are selected only through MODULE_TESTS: {sorted(selection.too_slow)}", flush=True)
    os.chdir(TREE)  # cosmic-ray's module paths are relative to the snapshot
    for i, (module, item) in enumerate(todo):
        if stop_at is not None and time.time() >= stop_at:
            print(f"# stopped at --stop-at with {len(todo) - i} mutants left (--resume continues)")
            return
        spec = item.mutations[0]
        operator = cosmic_ray.plugins.get_operator(spec.operator_name)(**spec.operator_args)
        t0 = time.time()
        for attempt in range(4):  # (a rerun only after a kill by a test that fails alone unmutated)
            tests = selection.select(module, list(range(spec.start_pos[0], spec.end_pos[0] + 1)))
            n_tests = selection.count(tests) if tests else 0
            killer = None
            with use_mutation(spec.module_path, operator, spec.occurrence) as (before, after):
                if after is None:
                    result = WorkResult(worker_outcome=WorkerOutcome.NO_TEST)
                    break
                if tests is None:  # no test of the default suite runs the line: nothing can fail
                    rc, output = 0, NOT_COVERED
                else:
                    rc, killer = run_tests(module, tests, TIMEOUT[_group_of(module)] + 2 * selection.cost(tests))
                    output = f"{'timeout' if rc is None else f'pytest exit {rc}'} ({n_tests} tests)"
                outcome = TestOutcome.SURVIVED if rc == 0 else TestOutcome.KILLED
                result = WorkResult(output=output, test_outcome=outcome, worker_outcome=WorkerOutcome.NORMAL,
                                    diff="\n".join(_make_diff(before, after, spec.module_path)))
            # a kill by a test that MODULE_TESTS' warm-up did not check: it must pass alone unmutated,
            # else (it depends on the tests the full suite runs before it) it kills nothing: drop it, run again
            if (killer is None or attempt == 3 or selection.in_module_tests(module, killer)
                    or _passes_alone(killer, selection)):
                break
            print(f"# {killer} fails unmutated when run alone: never selected again", flush=True)
        with use_db(str(_db(module)), WorkDB.Mode.open) as db:
            db.set_result(item.job_id, result)
        line = dict(module=module, mutant=_key(spec), outcome=result.output or result.worker_outcome.value,
                    survived=result.test_outcome == TestOutcome.SURVIVED, seconds=round(time.time() - t0, 1),
                    tests=n_tests, failed_test=killer,
                    module_test=None if killer is None else selection.in_module_tests(module, killer),
                    diff=[d for d in (result.diff or "").splitlines() if d[:1] in "+-" and d[:3] not in ("+++", "---")])
        line["slow_tests_left_out"] = selection.left_out
        with RESULTS.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"[{i + 1}/{len(todo)}] {'SURVIVED' if line['survived'] else line['outcome'].split(' (')[0]:<13} "
              f"{line['seconds']:6.0f}s {n_tests:5d} tests  {line['mutant']}"
              + (" (not covered)" if result.output == NOT_COVERED else ""), flush=True)


def parse_key(key: str) -> tuple[str, int, str, int]:
    """``"envs/core.py:142 core/NumberReplacer #61"`` (or ``envs/core.py:142:core/NumberReplacer:61``)
    -> (module, line, operator, occurrence)."""
    parts = key.replace(" #", ":").replace(" ", ":").split(":")
    if len(parts) != 4:
        raise ValueError(f"not a mutant key (module:line operator #occurrence): {key!r}")
    module, line, operator, occurrence = parts
    return module, int(line), operator, int(occurrence)


def check(key: str, tests: list[str], mutant_only: bool = False, slow: bool = False, workers: int = 2,
          exclude: list[str] | None = None) -> int:
    """Apply ONE mutant to a fresh snapshot of the checkout (runs/mutation/check, uncommitted tests
    included) and run ``tests`` against it: 0 when the tests pass unmutated (unless ``mutant_only``)
    and fail mutated (the mutant is killed), 1 otherwise. Proves a test written for a survivor kills
    it for the line the run reported (the mutated line is checked against the key). ``slow``: run
    the tests marked slow too (the run leaves them out). No ``tests``: the tests a run selects for
    this mutant now (the coverage map of the checkout's snapshot, built if missing): re-judges an
    older run's survivor under today's suite and selection; ``exclude``: test ids (or files) left out
    of that selection (the tests written for it: would the wider selection alone have killed it?)."""
    markers = "" if slow else "not slow"
    import cosmic_ray.plugins
    from cosmic_ray.mutating import _make_diff, use_mutation

    import fcntl

    module, line, op_name, occurrence = parse_key(key)
    (OUT / "check").mkdir(parents=True, exist_ok=True)
    lock = open(OUT / "check" / "lock", "w")  # one check at a time: each rebuilds the one check tree
    fcntl.flock(lock, fcntl.LOCK_EX)
    tree = OUT / "check" / "tree"
    warm = OUT / "check" / "numba-warm"
    snapshot(tree, worktree=True)
    if not tests:
        source = source_key(tree)
        selection = Selection(coverage_map(source, tree, workers=workers), tree)
        for test in selection.tests:
            if any(test == e or test.startswith((e + "::", e + "[")) for e in exclude or []):
                selection.exclude(test)
        selected = selection.select(module, [line])
        if selected and exclude:  # (MODULE_TESTS entries too)
            selected = [t for e in selected for t in selection._expand(e)
                        if not any(t == x or t.startswith((x + "::", x + "[")) for x in exclude)]
        if selected is None:
            print(f"# {NOT_COVERED}: no test of the default suite runs {module}:{line} -> NOT killed")
            return 1
        tests = selected
        print(f"# the run's selection: {len(tests)} test ids or files", flush=True)
        if (COVERAGE / source / "numba").exists() and not warm.exists():
            shutil.copytree(COVERAGE / source / "numba", warm)
    if not mutant_only:
        warm.mkdir(parents=True, exist_ok=True)
        rc = _pytest(module, str(warm), tests=tests, tree=tree, quiet=False, markers=markers)
        print(f"# unmutated: pytest exit {rc}", flush=True)
        if rc != 0:
            return 1
    operator = cosmic_ray.plugins.get_operator(op_name)()
    cwd = os.getcwd()
    os.chdir(tree)
    try:
        with use_mutation(Path(module), operator, occurrence) as (before, after):
            if after is None:
                sys.exit(f"no occurrence {occurrence} of {op_name} in {module}")
            diff = [d for d in _make_diff(before, after, module) if d[:1] in "+-" and d[:3] not in ("+++", "---")]
            changed = [i + 1 for i, (a, b) in enumerate(zip(before.split("\n"), after.split("\n"))) if a != b]
            print("# mutant:\n" + "\n".join("    " + d for d in diff), flush=True)
            if line not in changed:
                sys.exit(f"the mutant changes line(s) {changed}, not {line}: the source moved since the run")
            cache = tempfile.mkdtemp(prefix="numba-check-")
            try:
                if module not in COMPILED and warm.exists():
                    shutil.copytree(warm, cache, dirs_exist_ok=True)
                rc = _pytest(module, cache, TIMEOUT[_group_of(module)], tests=tests, tree=tree, quiet=False,
                             markers=markers)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        os.chdir(cwd)
    print(f"# mutated: pytest exit {rc} -> {'KILLED' if rc not in (0, None) else 'NOT killed'}")
    return 0 if rc not in (0, None) else 1


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
    killed = survived = equivalent = timeouts = not_covered = 0
    survivors, equivalents, n_tests = [], [], []
    with use_db(str(db_path), WorkDB.Mode.open) as db:
        total = db.num_work_items
        skipped = 0
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                skipped += 1
                continue
            m = item.mutations[0]
            ran = re.search(r"\((\d+) tests\)", result.output or "")
            if ran:
                n_tests.append(int(ran.group(1)))
            not_covered += result.output == NOT_COVERED and _key(m) not in EQUIVALENT
            if result.test_outcome == TestOutcome.SURVIVED:
                if _key(m) in EQUIVALENT:
                    equivalent += 1
                    equivalents.append((m, result))
                else:
                    survived += 1
                    survivors.append((m, result))
            elif (result.output or "").startswith("timeout"):
                timeouts += 1
            else:  # killed, or incompetent (the mutant does not import or compile)
                killed += 1
        pending = total - db.num_results
    run_info = OUT / "run.json"  # the population after the operator, pragma and annotation filters
    if run_info.exists():
        total = json.loads(run_info.read_text()).get("mutants", {}).get(module, total)
    n = killed + survived
    lo, hi = wilson(killed, n)
    later = sum(_key(m) in KILLED_BY_ADDED_TEST for m, _ in survivors)
    lo2, hi2 = wilson(killed + later, n)
    row = dict(module=module, mutants=total, run=n + equivalent + timeouts, equivalent=equivalent, timeouts=timeouts,
               killed=killed,
               survived=survived, not_covered=not_covered, pending=pending, score=killed / n if n else None, ci95=[lo, hi],
               tests_median=statistics.median(n_tests) if n_tests else None, tests_max=max(n_tests, default=None),
               killed_by_added_tests=later, score_now=(killed + later) / n if n else None, ci95_now=[lo2, hi2])
    score = f"{killed}/{n} = {killed / n:.1%} (95% CI {lo:.0%}-{hi:.0%})" if n else "n/a"
    now = f"; with the tests added since: {killed + later}/{n} = {(killed + later) / n:.1%}" if later else ""
    print(f"# {module}: {total} mutants, {n + equivalent + timeouts} run ({equivalent} equivalent, {timeouts} "
          f"timed out, {not_covered} not covered), {pending} pending; "
          f"killed {score}{now}"
          + (f"; tests per mutant run: median {row['tests_median']:g}, max {row['tests_max']}" if n_tests else ""))
    # (the reason beside the diff: a listing keyed by the line numbers of an older commit could name
    # another mutant once the code moved; a reason that does not fit its diff shows it)
    for what, items in (("SURVIVED", survivors), ("EQUIVALENT", equivalents)):
        for m, result in items:
            why = (f" -> killed now by {KILLED_BY_ADDED_TEST[_key(m)]}" if _key(m) in KILLED_BY_ADDED_TEST else "") \
                if what == "SURVIVED" else f": {EQUIVALENT[_key(m)]}"
            print(f"  {what} {_key(m)}{' (not covered)' if result.output == NOT_COVERED else ''}{why}")
            print("\n".join("    " + line for line in (result.diff or "").splitlines()
                            if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))))
    return row


def markdown_table(rows: list[dict]) -> str:
    """The per-module rows and their total as a Markdown table (benchmarks/results/mutation.md)."""
    def pct(k, n, ci):
        return f"{k / n:.0%} ({ci[0]:.0%}-{ci[1]:.0%})" if n else "n/a"

    out = ["| module | mutants | run | equivalent | timed out | killed | survived | of which not covered "
           "| tests per mutant (median) | score as run (95% CI) | killed by tests added | score now (95% CI) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    tot = dict.fromkeys(("mutants", "run", "equivalent", "timeouts", "killed", "survived", "not_covered",
                         "killed_by_added_tests"), 0)
    for r in rows:
        n = r["killed"] + r["survived"]
        med = "" if r.get("tests_median") is None else f"{r['tests_median']:g}"
        out.append(f"| {r['module']} | {r['mutants']} | {r['run']} | {r['equivalent']} | {r['timeouts']} | {r['killed']} "
                   f"| {r['survived']} | {r.get('not_covered', 0)} | {med} | {pct(r['killed'], n, r['ci95'])} "
                   f"| {r['killed_by_added_tests']} | {pct(r['killed'] + r['killed_by_added_tests'], n, r['ci95_now'])} |")
        for k in tot:
            tot[k] += r.get(k, 0)
    n = tot["killed"] + tot["survived"]
    k2 = tot["killed"] + tot["killed_by_added_tests"]
    out.append(f"| **all** | {tot['mutants']} | {tot['run']} | {tot['equivalent']} | {tot['timeouts']} | {tot['killed']} "
               f"| {tot['survived']} | {tot['not_covered']} | | **{pct(tot['killed'], n, wilson(tot['killed'], n))}** "
               f"| {tot['killed_by_added_tests']} | **{pct(k2, n, wilson(k2, n))}** |")
    return "\n".join(out)


def print_costs(modules: list[str]) -> None:
    """Seconds and tests per mutant of the last run (runs/mutation/results.jsonl), by group and outcome,
    and which kills a test of MODULE_TESTS made (the rest: a test only the coverage selection runs)."""
    lines = [json.loads(x) for x in RESULTS.read_text().splitlines() if x.strip()]
    lines = [r for r in lines if r["module"] in modules]
    for g, mods in GROUPS.items():
        for what, sel in (("killed", lambda r: not r["survived"]), ("survived", lambda r: r["survived"])):
            rs = [r for r in lines if r["module"] in mods and sel(r)]
            if rs:
                secs, tests = [r["seconds"] for r in rs], [r.get("tests", 0) for r in rs]
                print(f"# {g}: {len(rs)} {what}, median {statistics.median(secs):.0f} s per mutant "
                      f"(max {max(secs):.0f} s), median {statistics.median(tests):g} tests selected (max {max(tests)})")
    if lines:
        secs = [r["seconds"] for r in lines]
        print(f"# all: {len(lines)} mutants, {sum(secs) / len(secs):.1f} s per mutant on average "
              f"({sum(secs) / 60:.0f} min in all)")
        by = [r.get("module_test") for r in lines if not r["survived"] and r.get("failed_test")]
        if by:
            print(f"# kills by a test of MODULE_TESTS: {sum(by)}; by a test only the coverage selection runs: "
                  f"{len(by) - sum(by)} (it ran first; MODULE_TESTS alone may kill those too)")


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


def _stop_time(hhmm: str | None) -> float | None:
    """--stop-at HH:MM (UTC, today, or tomorrow if already past) as a timestamp."""
    import datetime as dt

    if hhmm is None:
        return None
    now = dt.datetime.now(dt.timezone.utc)
    h, m = (int(x) for x in hhmm.split(":"))
    t = now.replace(hour=h, minute=m, second=0, microsecond=0)
    return (t if t > now else t + dt.timedelta(days=1)).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", default=list(GROUPS),
                    help=f"groups ({', '.join(GROUPS)}) or module paths to run (default: every group)")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--sample", type=int, default=None, help="run N randomly chosen mutants of each module")
    how.add_argument("--stratified", type=int, default=None, metavar="N",
                     help="run N randomly chosen mutants in all, allocated to the modules in proportion to their sizes")
    how.add_argument("--resume", action="store_true", help="continue the pending mutants of the last run (same snapshot)")
    how.add_argument("--report", action="store_true", help="only print the reports of the modules' last runs")
    how.add_argument("--check", metavar="MUTANT", help="apply this one mutant ('module:line operator #occurrence', as "
                     "the report prints it) to a snapshot of the checkout and run the test files given as names")
    how.add_argument("--coverage-map", action="store_true", help="(re)build the coverage map of HEAD's snapshot "
                     "(the default suite under coverage, once; a run builds it itself when missing) and stop")
    ap.add_argument("--exclude", nargs="+", default=None, metavar="TEST",
                    help="with --check and no test files: leave these test ids or files out of the selection")
    ap.add_argument("--map-changed-tests-only", action="store_true", help="updating an earlier snapshot's coverage "
                    "map: run only new or changed test files, not also those naming a changed production file")
    ap.add_argument("--max-test-seconds", type=float, default=MAX_TEST_SECONDS, metavar="S",
                    help="leave out covering tests that took longer than S in the map's run, unless in MODULE_TESTS")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers of the coverage map's run (0: none)")
    ap.add_argument("--mutant-only", action="store_true", help="with --check: skip the run on the unmutated source")
    ap.add_argument("--slow", action="store_true", help="with --check: run the tests marked slow too")
    ap.add_argument("--module-tests", action="store_true", help="with --check: run the module's MODULE_TESTS (the "
                    "selection before coverage: did a kill need the wider selection?)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample and of the order the mutants run in")
    ap.add_argument("--stop-at", metavar="HH:MM", help="start no mutant after this UTC time (then --resume continues)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-module rows to this JSON file")
    ap.add_argument("--markdown", action="store_true", help="also print the per-module table in Markdown")
    args = ap.parse_args()
    if args.json:  # (resolved now: the run works in its snapshot's folder)
        args.json = args.json.resolve()
    if args.check:
        # (no test files named: the run's selection, from the coverage map of the checkout's snapshot)
        tests = [] if args.names == list(GROUPS) else args.names
        if args.module_tests:
            tests = MODULE_TESTS[parse_key(args.check)[0]]
        return check(args.check, tests, args.mutant_only, args.slow, args.workers, args.exclude)
    modules = _modules(args.names, ap)
    if args.coverage_map:
        head = snapshot()
        coverage_map(source_key(), rebuild=True, workers=args.workers)
        return 0
    if not (args.report or args.resume):
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *modules], cwd=REPO).returncode != 0
        if dirty:
            print(f"# note: {modules} have uncommitted changes; the run mutates HEAD's version", file=sys.stderr)
        head = snapshot()
        key = source_key()
        coverage_map(key, workers=args.workers, named=not args.map_changed_tests_only)  # (when this snapshot has none)
        RESULTS.unlink(missing_ok=True)
        sizes = {m: init(m) for m in modules}
        total = sum(sizes.values())
        per = (allocate(sizes, args.stratified) if args.stratified
               else {m: args.sample or n for m, n in sizes.items()})
        choose(modules, per, args.seed)
        (OUT / "run.json").write_text(json.dumps(dict(commit=head, source_key=key, max_test_seconds=args.max_test_seconds,
                                                      seed=args.seed, stratified=args.stratified,
                                                      sample=args.sample, mutants=sizes, chosen=per), indent=1) + "\n")
        print(f"# {total} mutants in {len(modules)} modules at {head[:10]}; running {sum(per.values())}: {per}")
        warm_up(modules, key)
    if not args.report:
        if not TREE.exists():
            sys.exit("no snapshot to resume (runs/mutation/tree); start a run first")
        execute(modules, args.seed, _stop_time(args.stop_at))
    rows = [r for r in (report(m) for m in modules) if r]
    n = sum(r["killed"] + r["survived"] for r in rows)
    if len(rows) > 1 and n:
        k, later = sum(r["killed"] for r in rows), sum(r["killed_by_added_tests"] for r in rows)
        (lo, hi), (lo2, hi2) = wilson(k, n), wilson(k + later, n)
        print(f"# all: killed {k}/{n} = {k / n:.1%} (95% CI {lo:.0%}-{hi:.0%}); with the tests added since: "
              f"{k + later}/{n} = {(k + later) / n:.1%} (95% CI {lo2:.0%}-{hi2:.0%}); equivalent "
              f"{sum(r['equivalent'] for r in rows)} (pooled: an estimate for all the modules' mutants when the sample was --stratified)")
    if RESULTS.exists():
        print_costs(modules)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
