"""scripts/mutation.py's own arithmetic: the Wilson interval, the annotation filter, the test mapping."""

from __future__ import annotations

import importlib.util
import json
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
