"""The shared-data guard: a missing ``../shared/data`` skips on a developer's machine, fails under CI."""

from __future__ import annotations

import pytest

import conftest


def test_missing_shared_data_skips_without_ci_and_fails_with_it(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "absent")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent"):
        conftest.require_shared_data("x.csv")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set and .*absent.*x.csv"):
        conftest.require_shared_data("x.csv")
    (tmp_path / "absent").mkdir()
    (tmp_path / "absent" / "x.csv").write_text("")
    assert conftest.require_shared_data("x.csv") == tmp_path / "absent" / "x.csv"
