"""scripts/mutation.py's own arithmetic: the Wilson interval, the annotation filter, the test mapping."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "scripts" / "mutation.py")
M = importlib.util.module_from_spec(spec)
spec.loader.exec_module(M)


def test_wilson_interval_against_hand_values():
    # k = 9 of n = 10 at z = 1.96: centre (0.9 + 0.19208) / 1.38416, half-width 0.255 / 1.38416
    lo, hi = M.wilson(9, 10)
    assert lo == pytest.approx(0.5958, abs=1e-4) and hi == pytest.approx(0.9821, abs=1e-4)
    assert M.wilson(0, 0) == (0.0, 1.0)
    assert M.wilson(10, 10)[1] == 1.0 and M.wilson(0, 10)[0] == 0.0


def test_annotation_spans_cover_annotations_only(tmp_path, monkeypatch):
    src = "from __future__ import annotations\ndef f(a: int | None, b=1) -> list[int]:\n    x: dict = {}\n    return [a | b]\n"
    (tmp_path / "m.py").write_text(src)
    monkeypatch.setattr(M, "TREE", tmp_path)  # (the run reads modules from its snapshot)
    spans = M._annotation_spans("m.py")
    texts = sorted(src.splitlines()[a[0] - 1][a[1]:b[1]] for a, b in spans)
    assert texts == ["dict", "int | None", "list[int]"]  # the body's a | b is not an annotation


def test_every_module_maps_to_existing_tests_and_listed_mutants_name_real_lines():
    for module, tests in M.MODULE_TESTS.items():
        assert (ROOT / module).exists(), module
        assert tests and all((ROOT / t.split("::")[0]).exists() for t in tests), module  # (a file or a test id)
    assert {m for mods in M.GROUPS.values() for m in mods} == set(M.MODULE_TESTS)
    for name in ("mutation_equivalent.json", "mutation_killed_by_added_tests.json"):
        for key in json.loads((ROOT / "scripts" / name).read_text()):
            module, line = key.split(" ")[0].split(":")
            assert module in M.MODULE_TESTS and 0 < int(line) <= len((ROOT / module).read_text().splitlines()), key


def test_stratified_allocation_is_proportional_with_at_least_one_per_module():
    # quotas 160 x size / 5892: 29.3, 22.7, 3.0, 1.5 (min 1) ... -> largest remainders, total exact
    sizes = {"a": 1080, "b": 836, "c": 110, "d": 56, "e": 3810}
    got = M.allocate(sizes, 160)
    assert sum(got.values()) == 160 and got["a"] == 29 and got["b"] == 23 and got["c"] == 3 and got["d"] == 2
    assert M.allocate({"a": 100, "b": 1}, 10) == {"a": 9, "b": 1}


def test_a_seed_draws_the_same_mutants_whatever_order_the_session_lists_them_in():
    """cosmic-ray's job ids are random at each init: the sample is drawn from the keys, so a seed
    names the same mutants in another checkout of the same source (and another seed others)."""
    keys = [f"envs/x.py:{line} core/NumberReplacer #{n}" for n, line in enumerate(range(10, 60))]
    a = M.sample_keys("envs/x.py", keys, 7, seed=11001)
    b = M.sample_keys("envs/x.py", list(reversed(keys)), 7, seed=11001)
    assert a == b and len(a) == 7 and a <= set(keys)
    assert M.sample_keys("envs/x.py", keys, 7, seed=11002) != a
    assert M.sample_keys("envs/x.py", keys[:3], 7, seed=11001) == set(keys[:3])


def test_a_mutant_key_parses_as_the_report_prints_it_and_in_colon_form():
    assert M.parse_key("envs/core.py:142 core/NumberReplacer #61") == ("envs/core.py", 142, "core/NumberReplacer", 61)
    assert M.parse_key("envs/core.py:142:core/NumberReplacer:61") == ("envs/core.py", 142, "core/NumberReplacer", 61)
    with pytest.raises(ValueError):
        M.parse_key("envs/core.py:142 core/NumberReplacer")  # no occurrence: ambiguous


def test_every_test_that_killed_a_survivor_runs_against_its_modules_mutants():
    """A test written for a survivor (or found to kill one) is in MODULE_TESTS of the mutant's module,
    as its file or its id, so later runs count it; only tests marked slow (which the run leaves out)
    are exempt, and their entry says so."""
    listed = json.loads((ROOT / "scripts" / "mutation_killed_by_added_tests.json").read_text())
    for key, entry in listed.items():
        module, test = key.split(":")[0], entry.split(" ")[0]  # (an entry may add a note after the id)
        if "marked slow" in entry:
            continue
        run = M.MODULE_TESTS[module]
        assert any(test == t or test.split("::")[0] == t or test.startswith(t + "::") or test.startswith(t + "[")
                   for t in run), (key, test)


# --- per-mutant selection by coverage of the default suite -----------------------------------------------

TOY = '''from __future__ import annotations
import numba

LIMIT = 3


def clip(x, hi=LIMIT):
    if x > hi:
        return hi
    return x


def never_called(x):
    return x + 1


def caller(x):
    def inner(y, z=2):
        return y * z
    return inner(x)


@numba.njit(cache=True)
def kernel(x):
    return x * 2
'''


def _scope(line_text: str, nth: int = 0) -> dict:
    import ast

    lines = [i + 1 for i, t in enumerate(TOY.splitlines()) if line_text in t]
    return M.line_scope(ast.parse(TOY), lines[nth])


def test_line_scope_tells_import_time_header_body_and_compiled_lines():
    assert _scope("LIMIT = 3")["import_time"]  # a module-level constant: runs at import
    header = _scope("def clip(x, hi=LIMIT)")  # a default value: evaluated at import, seen by callers
    assert header["import_time"] and header["body"] == [8, 9, 10] and not header["jit"]
    body = _scope("if x > hi")
    assert not body["import_time"] and body["span"] == [8] and body["body"] is None
    nested = _scope("def inner(y, z=2)")  # a def inside a function runs when the function does
    assert not nested["import_time"] and nested["body"] is None
    assert _scope("return x * 2")["jit"] and _scope("@numba.njit")["jit"]
    assert not _scope("return x + 1")["jit"]


def _toy_map(tests: dict[str, float], lines: dict[int, list[str]], module: str = "pkg/toy.py") -> dict:
    ids = list(tests)
    return dict(tests=[[t, s, True] for t, s in tests.items()],
                lines={module: {str(n): [ids.index(t) for t in ts] for n, ts in lines.items()}})


@pytest.fixture
def toy_tree(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "toy.py").write_text(TOY)
    (tmp_path / "pkg" / "kern.py").write_text(TOY)
    monkeypatch.setattr(M, "MODULE_TESTS", {"pkg/toy.py": ["tests/test_own.py"], "pkg/kern.py": ["tests/test_own.py"]})
    monkeypatch.setattr(M, "COMPILED", {"pkg/kern.py"})
    return tmp_path


TESTS = {"tests/test_own.py::test_a": 0.5, "tests/test_own.py::test_b": 0.1, "tests/test_cli.py::test_c": 3.0,
         "tests/test_fast.py::test_d": 0.01, "tests/test_fast.py::test_e": 0.02}


def test_a_mutant_on_a_line_no_test_covers_survives_unrun(toy_tree):
    sel = M.Selection(_toy_map(TESTS, {8: ["tests/test_cli.py::test_c"]}), toy_tree)
    assert sel.select("pkg/toy.py", [14]) is None  # never_called's body: nothing can fail


def test_a_covered_line_runs_its_covering_tests_and_the_modules_own_fastest_file_first(toy_tree):
    cmap = _toy_map(TESTS, {8: ["tests/test_cli.py::test_c", "tests/test_fast.py::test_e"],
                            9: ["tests/test_fast.py::test_d"]})
    sel = M.Selection(cmap, toy_tree)
    got = sel.select("pkg/toy.py", [8])
    # test_d covers line 9 only: not selected; MODULE_TESTS' file expands to its test ids
    assert got == ["tests/test_fast.py::test_e", "tests/test_own.py::test_a", "tests/test_own.py::test_b",
                   "tests/test_cli.py::test_c"]
    assert sel.count(got) == 4 and sel.cost(got) == pytest.approx(3.62)


def test_a_default_value_runs_the_tests_that_call_the_function_and_a_constant_every_test_of_the_module(toy_tree):
    cmap = _toy_map(TESTS, {8: ["tests/test_fast.py::test_d"], 10: ["tests/test_fast.py::test_e"],
                            20: ["tests/test_cli.py::test_c"]})
    sel = M.Selection(cmap, toy_tree)
    # import-time lines are covered by every import: coverage of the line itself cannot tell, so the
    # header's function body decides, and a module-level constant takes every test that runs the module
    assert set(sel.select("pkg/toy.py", [7])) == {"tests/test_fast.py::test_d", "tests/test_fast.py::test_e",
                                                  *[t for t in TESTS if "test_own" in t]}
    assert set(sel.select("pkg/toy.py", [4])) == set(TESTS)  # (d, e, c run the module; a, b: MODULE_TESTS)


def test_compiled_modules_keep_module_tests_first_whatever_coverage_says(toy_tree):
    sel = M.Selection(_toy_map(TESTS, {8: ["tests/test_cli.py::test_c"]}, module="pkg/kern.py"), toy_tree)
    assert sel.select("pkg/kern.py", [25]) == ["tests/test_own.py"]  # the kernel's body: coverage is blind there
    assert sel.select("pkg/kern.py", [8]) == ["tests/test_own.py", "tests/test_cli.py::test_c"]
    assert sel.select("pkg/kern.py", [14]) == ["tests/test_own.py"]  # uncovered, yet run


def _require_coverage() -> None:
    """coverage is in the [dev] extra (make install); a venv made before it was added skips, CI fails."""
    try:
        import coverage  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("coverage is not installed: `make install` (the [dev] extra) adds it")


def test_the_coverage_map_of_a_toy_project_names_each_lines_tests_subprocesses_included(tmp_path, monkeypatch):
    """The real map builder on a toy snapshot: pytest under coverage, one context per test, a test
    that runs the module in a child Python process credited with the child's lines."""
    _require_coverage()
    tree = tmp_path / "tree"
    (tree / "tests").mkdir(parents=True)
    (tree / "toy.py").write_text("def double(x):\n    return 2 * x\n\n\ndef negate(x):\n    return -x\n")
    (tree / "tests" / "test_toy.py").write_text(
        "import os, subprocess, sys\nimport toy\n\n\n"
        "def test_double():\n    assert toy.double(2) == 4\n\n\n"
        "def test_negate_in_a_child():\n"
        "    code = 'import toy; assert toy.negate(1) == -1'\n"
        "    subprocess.run([sys.executable, '-c', code], check=True, env=dict(os.environ, PYTHONPATH='.'))\n")
    monkeypatch.setattr(M, "MODULE_TESTS", {"toy.py": []})
    monkeypatch.setattr(M, "COVERAGE", tmp_path / "coverage")
    cmap = M.build_coverage_map("k", tree, workers=0)
    assert cmap["pytest_exit"] == 0 and {t for t, _, ok in cmap["tests"] if ok} == {
        "tests/test_toy.py::test_double", "tests/test_toy.py::test_negate_in_a_child"}
    ids = [t for t, _, _ in cmap["tests"]]
    by_line = {int(n): {ids[i] for i in v} for n, v in cmap["lines"]["toy.py"].items()}
    assert by_line[2] == {"tests/test_toy.py::test_double"}
    assert by_line[6] == {"tests/test_toy.py::test_negate_in_a_child"}  # (run in the child only)
    assert M.coverage_map("k", tree) == json.loads((tmp_path / "coverage" / "k.json").read_text())
    # a new test file: the map is brought up to date by running that file alone
    (tree / "tests" / "test_more.py").write_text("import toy\n\n\ndef test_negate():\n    assert toy.negate(2) == -2\n")
    new = M.coverage_map(M.source_key(tree), tree)
    assert new["base"] == "k" and new["rerun"] == ["tests/test_more.py"] and len(new["tests"]) == 3
    ids = [t for t, _, _ in new["tests"]]
    by_line = {int(n): {ids[i] for i in v} for n, v in new["lines"]["toy.py"].items()}
    assert by_line[2] == {"tests/test_toy.py::test_double"}  # (from the base map)
    assert by_line[6] == {"tests/test_toy.py::test_negate_in_a_child", "tests/test_more.py::test_negate"}
    # the mutated module changes: double's body rewritten, a blank line inserted above negate; only the
    # tests that ran the changed lines (or their neighbours) run again; test_more's coverage of negate
    # moves down one line with it
    (tree / "toy.py").write_text("def double(x):\n    return x + x\n\n\n\ndef negate(x):\n    return -x\n")
    moved = M.coverage_map(M.source_key(tree), tree)
    # (the child's import of toy ran line 1, `def double`, beside the change: it runs again too)
    assert moved["rerun"] == ["tests/test_toy.py::test_double", "tests/test_toy.py::test_negate_in_a_child"]
    ids = [t for t, _, _ in moved["tests"]]
    by_line = {int(n): {ids[i] for i in v} for n, v in moved["lines"]["toy.py"].items()}
    assert by_line[2] == {"tests/test_toy.py::test_double"}
    assert by_line[7] == {"tests/test_toy.py::test_negate_in_a_child", "tests/test_more.py::test_negate"}


def test_line_map_moves_unchanged_lines_and_names_the_changed_ones_with_their_neighbours():
    same, touched, fresh = M._line_map("a\nb\nc\nd\ne\n", "a\nB\nc\nx\nd\ne\n")
    assert same == {1: 1, 3: 3, 4: 5, 5: 6}
    assert touched == {1, 2, 3, 4}  # b replaced (1-3), x inserted between c and d (3-4)
    assert fresh == {2: {1, 2, 3}, 4: {3, 4}}  # (a quick update: what the new lines inherit from)


def test_a_map_update_reruns_changed_tests_and_those_naming_a_changed_module_but_not_after_a_conftest_change(
        tmp_path, monkeypatch):
    monkeypatch.setattr(M, "MODULE_TESTS", {"toy.py": []})
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test(): pass\n")
    (tmp_path / "tests" / "test_b.py").write_text("from helper import x\n")
    (tmp_path / "tests" / "test_c.py").write_text("import helpers\n")  # (another word)
    old = {"toy.py": "1", "helper.py": "1", "tests/test_a.py": "1", "tests/test_b.py": "1", "tests/test_c.py": "1",
           "tests/conftest.py": "1", "README.md": "1"}
    assert M._rerun_files(old, dict(old, **{"README.md": "2"}), tmp_path) == []  # (no test names README)
    assert M._rerun_files(old, dict(old, **{"tests/test_a.py": "2"}), tmp_path) == ["tests/test_a.py"]
    assert M._rerun_files(old, dict(old, **{"helper.py": "2"}), tmp_path) == ["tests/test_b.py"]
    assert M._rerun_files(old, dict(old, **{"helper.py": "2"}), tmp_path, named=False) == []
    assert M._rerun_files(old, dict(old, **{"toy.py": "2"}), tmp_path) == []  # (a mutated module: _line_map)
    assert M._rerun_files(old, dict(old, **{"tests/conftest.py": "2"}), tmp_path) is None


def test_a_test_excluded_as_failing_alone_is_never_selected_again(toy_tree):
    sel = M.Selection(_toy_map(TESTS, {8: ["tests/test_cli.py::test_c"], 10: ["tests/test_cli.py::test_c",
                                                                              "tests/test_fast.py::test_d"]}), toy_tree)
    sel.exclude("tests/test_cli.py::test_c")
    assert sel.select("pkg/toy.py", [8]) is None  # its only covering test is gone: not covered
    assert "tests/test_cli.py::test_c" not in sel.select("pkg/toy.py", [10])
    assert sel.in_module_tests("pkg/toy.py", "tests/test_own.py::test_a")
    assert not sel.in_module_tests("pkg/toy.py", "tests/test_own_other.py::test_a")


def test_no_python_module_has_a_numba_function():
    """A Python module's mutant copies its numba cache back into the warm one (its kernels are of
    unmutated source); a numba function in such a module would be cached mutated: it must be in
    COMPILED instead. (And every compiled module has one, or it needs no empty cache.)"""
    import ast

    for module in M.MODULE_TESTS:
        tree = ast.parse((ROOT / module).read_text())
        jitted = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and M._is_jit(n)]
        assert bool(jitted) == (module in M.COMPILED), (module, jitted)


def test_slow_covering_tests_are_left_out_unless_they_alone_run_the_line(toy_tree):
    tests = dict(TESTS, **{"tests/test_cli.py::test_slow": 60.0})
    sel = M.Selection(_toy_map(tests, {8: ["tests/test_cli.py::test_slow", "tests/test_fast.py::test_d"],
                                       14: ["tests/test_cli.py::test_slow"]}), toy_tree, max_seconds=10)
    assert "tests/test_cli.py::test_slow" not in sel.select("pkg/toy.py", [8]) and sel.left_out == 1
    assert "tests/test_cli.py::test_slow" in sel.select("pkg/toy.py", [14]) and sel.left_out == 0
    assert "tests/test_cli.py::test_slow" in M.Selection(_toy_map(tests, {8: ["tests/test_cli.py::test_slow"]}),
                                                         toy_tree, max_seconds=None).select("pkg/toy.py", [8])
