"""The store's merge, function by function (data_layer/store_merge.py): every overlap class of a
stored and a new bar (same, differing, gap filled, placeholder over a real bar, placeholder over a
placeholder) under each policy, with the exact rows kept and the exact report; the refusal messages;
the report's summary; the merge's union, order and count of new timestamps. The answers are written
out by hand for a few bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from factorgym.data_layer.store_merge import (
    CONFLICT_POLICIES,
    WriteReport,
    merge_tables,
    resolve_conflicts,
)
from factorgym.errors import ConfigError, DataValidationError

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000


def _bars(ts, close, tradable=None, volume=None) -> pa.Table:
    """Bars at ``ts`` (hours after T0) with open = high = low = close; volume 1 unless given."""
    close = [float(c) for c in close]
    cols = {"timestamp": pa.array([T0 + H * t for t in ts], pa.int64()),
            **{c: pa.array(close, pa.float64()) for c in ("open", "high", "low", "close")},
            "volume": pa.array([1.0] * len(ts) if volume is None else [float(v) for v in volume], pa.float64())}
    if tradable is not None:
        cols["tradable"] = pa.array(tradable, pa.bool_())
    return pa.table(cols)


def _policy(name: str) -> str:
    return "".join(list(name))  # a new str object, as read from a CLI flag or a config file


def _rows(t: pa.Table) -> list[tuple]:
    ts = [(x - T0) // H for x in t.column("timestamp").to_pylist()]
    trad = t.column("tradable").to_pylist() if "tradable" in t.column_names else [None] * t.num_rows
    return list(zip(ts, t.column("close").to_pylist(), trad))


def test_the_policies_and_the_report_defaults():
    assert CONFLICT_POLICIES == ("error", "replace", "keep")
    assert WriteReport(3) == WriteReport(added=3, replaced=0, kept=0, filled=0)


@pytest.mark.parametrize("report, text", [
    (WriteReport(0), "0 new bar(s)"),
    (WriteReport(5), "5 new bar(s)"),
    (WriteReport(2, replaced=1), "2 new bar(s), 1 conflicting bar(s) replaced"),
    (WriteReport(0, kept=3), "0 new bar(s), 3 conflicting bar(s) kept as stored"),
    (WriteReport(1, filled=2), "1 new bar(s), 2 gap bar(s) filled"),
    (WriteReport(4, replaced=1, kept=2, filled=3),
     "4 new bar(s), 1 conflicting bar(s) replaced, 2 conflicting bar(s) kept as stored, 3 gap bar(s) filled"),
])
def test_the_summary_names_the_new_bars_and_each_nonzero_count(report, text):
    assert report.summary() == text


@pytest.mark.parametrize("policy", ["ignore", "Replace", "", "error "])
def test_an_unknown_policy_is_refused_naming_it_and_the_policies(policy):
    for old in (None, _bars([0], [1.0])):
        with pytest.raises(ConfigError) as e:
            resolve_conflicts(old, _bars([1], [2.0]), policy, "s/A-B/1h")
        assert str(e.value) == f"on_conflict {policy!r} is not one of error, replace, keep"


@pytest.mark.parametrize("policy", CONFLICT_POLICIES)
def test_without_stored_bars_the_new_ones_come_back_one_per_timestamp_sorted_the_later_winning(policy):
    new = _bars([3, 1, 3, 2, 1], [30.0, 10.0, 31.0, 20.0, 11.0])
    for old in (None, _bars([], [])):
        rows, report = resolve_conflicts(old, new, _policy(policy), "w")
        assert _rows(rows) == [(1, 11.0, None), (2, 20.0, None), (3, 31.0, None)]
        assert report == WriteReport(0)
    rows, report = resolve_conflicts(_bars([0], [1.0]), _bars([], []), _policy(policy), "w")
    assert rows.num_rows == 0 and report == WriteReport(0)


@pytest.mark.parametrize("policy", CONFLICT_POLICIES)
def test_new_bars_beside_the_stored_ones_pass_through_with_an_empty_report(policy):
    rows, report = resolve_conflicts(_bars([0, 1], [1.0, 2.0]), _bars([3, 2], [4.0, 3.0]), _policy(policy), "w")
    assert _rows(rows) == [(2, 3.0, None), (3, 4.0, None)] and report == WriteReport(0)


@pytest.mark.parametrize("policy", CONFLICT_POLICIES)
def test_bars_equal_to_the_stored_ones_are_no_conflict_nan_volume_included(policy):
    old = _bars([0, 1, 2], [1.0, 2.0, 3.0], volume=[1.0, np.nan, 2.0])
    new = _bars([1, 2, 3], [2.0, 3.0, 4.0], volume=[np.nan, 2.0, 5.0])
    rows, report = resolve_conflicts(old, new, _policy(policy), "w")
    assert _rows(rows) == [(1, 2.0, None), (2, 3.0, None), (3, 4.0, None)] and report == WriteReport(0)


def test_differing_bars_under_each_policy():
    old = _bars([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    new = _bars([1, 2, 3, 4], [2.0, 3.5, 4.5, 5.0])  # bar 1 the same; bars 2 and 3 differ; bar 4 new
    rows, report = resolve_conflicts(old, new, _policy("replace"), "w")
    assert _rows(rows) == [(1, 2.0, None), (2, 3.5, None), (3, 4.5, None), (4, 5.0, None)]
    assert report == WriteReport(0, replaced=2)
    rows, report = resolve_conflicts(old, new, _policy("keep"), "w")
    assert _rows(rows) == [(1, 2.0, None), (4, 5.0, None)] and report == WriteReport(0, kept=2)
    with pytest.raises(DataValidationError) as e:
        resolve_conflicts(old, new, _policy("error"), "mine/A-B/1h")
    assert str(e.value) == (
        "mine/A-B/1h: 2 bar(s) already stored with different values, first 2024-01-01 02:00 UTC: stored "
        "open=3.0 high=3.0 low=3.0 close=3.0 volume=1.0; new open=3.5 high=3.5 low=3.5 close=3.5 volume=1.0. "
        "Choose --on-conflict replace (new values win) or keep (stored values stay)")


@pytest.mark.parametrize("policy", CONFLICT_POLICIES)
def test_gap_placeholders_and_real_bars_under_each_policy(policy):
    """A real bar fills a stored placeholder (counted, whatever the policy); a placeholder never
    overwrites a real bar (dropped, not counted); a placeholder over a placeholder and a real bar
    over an equal real bar are no change; only real over a different real bar is a conflict."""
    old = _bars([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], tradable=[False, True, False, True])
    new = _bars([0, 1, 2, 3], [1.5, 2.5, 3.5, 4.0], tradable=[True, False, False, True])
    rows, report = resolve_conflicts(old, new, _policy(policy), "w")
    assert _rows(rows) == [(0, 1.5, True), (2, 3.5, False), (3, 4.0, True)]
    assert report == WriteReport(0, filled=1)


def test_the_same_values_with_another_tradable_flag_are_a_fill_or_are_ignored():
    old = _bars([0, 1], [1.0, 2.0], tradable=[False, True])
    new = _bars([0, 1], [1.0, 2.0], tradable=[True, False])
    rows, report = resolve_conflicts(old, new, _policy("error"), "w")
    assert _rows(rows) == [(0, 1.0, True)] and report == WriteReport(0, filled=1)


@pytest.mark.parametrize("policy, kept_rows, report", [
    ("replace", [(0, 1.5, None), (1, 2.5, None)], WriteReport(0, replaced=2)),
    ("keep", [], WriteReport(0, kept=2)),
])
def test_tables_without_a_tradable_column_are_all_real_bars(policy, kept_rows, report):
    rows, got = resolve_conflicts(_bars([0, 1], [1.0, 2.0]), _bars([0, 1], [1.5, 2.5]), _policy(policy), "w")
    assert _rows(rows) == kept_rows and got == report


def test_a_single_stored_bar_is_checked_like_any_other():
    old = _bars([0], [1.0])
    new = _bars([0, 1], [1.5, 2.0])
    with pytest.raises(DataValidationError, match=r"^w: 1 bar\(s\) already stored with different values"):
        resolve_conflicts(old, new, "error", "w")
    rows, report = resolve_conflicts(old, new, _policy("keep"), "w")
    assert _rows(rows) == [(1, 2.0, None)] and report == WriteReport(0, kept=1)
    rows, report = resolve_conflicts(old, new, _policy("replace"), "w")
    assert _rows(rows) == [(0, 1.5, None), (1, 2.0, None)] and report == WriteReport(0, replaced=1)


def test_a_conflict_under_error_names_the_first_conflicting_bar_in_time_not_in_input_order():
    old = _bars([0, 1, 2], [1.0, 2.0, 3.0])
    new = _bars([2, 1], [9.0, 8.0])
    with pytest.raises(DataValidationError, match=r"^w: 2 bar\(s\) already stored with different values, first "
                                                  r"2024-01-01 01:00 UTC: stored open=2.0 .* new open=8.0 "):
        resolve_conflicts(old, new, "error", "w")


# --------------------------------------------------------------------------- merge_tables


def test_merge_is_the_sorted_union_with_new_rows_winning_and_counts_new_timestamps():
    old = _bars([0, 2, 4], [1.0, 3.0, 5.0])
    new = _bars([5, 2, 1, 5], [6.0, 30.0, 2.0, 60.0])
    merged, added = merge_tables(old, new)
    assert _rows(merged) == [(0, 1.0, None), (1, 2.0, None), (2, 30.0, None), (4, 5.0, None), (5, 60.0, None)]
    assert added == 2 and merged.column_names == old.column_names


def test_merge_into_nothing_is_the_new_bars_deduplicated():
    merged, added = merge_tables(None, _bars([2, 1, 2], [1.0, 2.0, 3.0]))
    assert _rows(merged) == [(1, 2.0, None), (2, 3.0, None)] and added == 2
    merged, added = merge_tables(_bars([], []), _bars([0], [1.0]))
    assert _rows(merged) == [(0, 1.0, None)] and added == 1


def test_merge_takes_the_stored_column_order():
    old = _bars([0], [1.0], tradable=[True])
    new = _bars([1], [2.0], tradable=[False]).select(["tradable", "close", "volume", "timestamp", "open", "high", "low"])
    merged, added = merge_tables(old, new)
    assert merged.column_names == old.column_names and _rows(merged) == [(0, 1.0, True), (1, 2.0, False)]


@pytest.mark.parametrize("policy", ["replace", "keep"])
def test_the_store_counts_replaced_and_kept_bars_for_a_policy_read_from_a_command_line(tmp_path, policy):
    """Through CandleStore.merge with the policy a new str object (argparse's, not the literal)."""
    from factorgym.data_layer.store import CandleStore

    def frame(close):
        return pd.DataFrame({"timestamp": [T0, T0 + H], **{c: close for c in ("open", "high", "low", "close")},
                             "volume": [1.0, 1.0]})

    cs = CandleStore(tmp_path)
    cs.write("s", "A/B", "1h", frame([1.0, 2.0]))
    report = cs.merge("s", "A/B", "1h", frame([1.0, 2.5]), on_conflict=_policy(policy))
    assert report == (WriteReport(0, replaced=1) if policy == "replace" else WriteReport(0, kept=1))
    assert cs.read("s", "A/B", "1h")["close"].tolist() == [1.0, 2.5 if policy == "replace" else 2.0]
