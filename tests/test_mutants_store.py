"""The store's merge: paths that the mutation run (scripts/mutation.py) found unchecked, each test
failing for a planted bug the suite let through."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("old_has_mask", [False, True])
def test_merging_bars_with_and_without_a_tradable_column_keeps_every_bars_mask(old_has_mask):
    """Stored bars without a 'tradable' column are all tradable; merged with new bars that carry one
    (a placeholder bar marked untradable), either way round, the result has the column with each
    bar's own value."""
    import pyarrow as pa

    from factorgym.data_layer.store_merge import merge_tables

    def bars(ts, tradable=None):
        cols = {"timestamp": pa.array(ts, pa.int64()), **{c: pa.array([1.0] * len(ts)) for c in
                                                           ("open", "high", "low", "close", "volume")}}
        if tradable is not None:
            cols["tradable"] = pa.array(tradable, pa.bool_())
        return pa.table(cols)

    with_mask, without = bars([3, 4], [False, True]), bars([0, 1, 2])
    old, new = (with_mask, without) if old_has_mask else (without, with_mask)
    merged, added = merge_tables(old, new)
    assert merged.column("timestamp").to_pylist() == [0, 1, 2, 3, 4]
    assert merged.column("tradable").to_pylist() == [True, True, True, False, True]
    assert added == new.num_rows
