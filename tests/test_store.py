"""CandleStore: round trips, dedupe, atomicity, pruned range reads, listing, rules, names, errors."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factorgym.data_layer import store as store_mod
from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.sources.base import MarketRules, default_rules
from factorgym.data_layer.store import ROW_GROUP_ROWS, CandleStore, StoreEntry, default_store_root
from factorgym.errors import ConfigError, DataValidationError

H = 3_600_000
T0 = 1_640_995_200_000  # 2022-01-01 00:00 UTC


def candles(ts, salt: float = 0.0) -> pd.DataFrame:
    """Candles whose values are a function of the timestamp (and ``salt``), so any union is well-defined."""
    ts = np.asarray(ts, dtype=np.int64)
    base = 100.0 + (ts - T0) / H * 0.01 + salt
    return pd.DataFrame(
        {"timestamp": ts, "open": base, "high": base + 1, "low": base - 1, "close": base + 0.5, "volume": base * 2}
    )


def grid(n: int, start: int = T0) -> np.ndarray:
    return start + H * np.arange(n, dtype=np.int64)


def test_round_trip_and_return_counts(tmp_path):
    store = CandleStore(tmp_path)
    frame = candles(grid(1000))
    assert store.write("binance", "BTC/USDT", "1h", frame) == 1000
    pd.testing.assert_frame_equal(store.read("binance", "BTC/USDT", "1h"), frame)
    assert store.write("binance", "BTC/USDT", "1h", frame) == 0  # idempotent
    assert store.write("binance", "BTC/USDT", "1h", candles(grid(1100))) == 100
    out = store.read("binance", "BTC/USDT", "1h")
    pd.testing.assert_frame_equal(out, candles(grid(1100)))
    assert out["timestamp"].dtype == np.int64 and list(out.columns) == CANDLE_COLUMNS
    assert store.has("binance", "BTC/USDT", "1h") and not store.has("binance", "BTC/USDT", "4h")
    assert store.last_timestamp("binance", "BTC/USDT", "1h") == T0 + 1099 * H
    assert store.last_timestamp("binance", "ETH/USDT", "1h") is None
    assert store.write("binance", "BTC/USDT", "1h", candles([])) == 0


def test_new_rows_win_when_asked_and_unsorted_input_is_sorted(tmp_path):
    store = CandleStore(tmp_path)
    store.write("x", "A/B", "1h", candles(grid(10)))
    update = candles(grid(5, T0 + 7 * H), salt=50.0).iloc[::-1]  # reversed, overlaps 3 stored bars
    assert store.write("x", "A/B", "1h", update, on_conflict="replace") == 2
    out = store.read("x", "A/B", "1h")
    expected = pd.concat([candles(grid(7)), candles(grid(5, T0 + 7 * H), salt=50.0)], ignore_index=True)
    pd.testing.assert_frame_equal(out, expected)
    # duplicates inside one write: the later row wins
    dup = pd.concat([candles([T0], salt=1.0), candles([T0], salt=2.0)], ignore_index=True)
    store.write("x", "A/B", "1h", dup, on_conflict="replace")
    assert store.read("x", "A/B", "1h", T0, T0 + H)["open"].iloc[0] == candles([T0], salt=2.0)["open"].iloc[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 120)), min_size=1, max_size=6))
def test_random_overlapping_appends_equal_one_write_of_union(chunks):
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(tmp)
        union = set()
        for start, length in chunks:
            ts = grid(length, T0 + start * H)
            union.update(ts.tolist())
            store.write("s", "A/B", "1h", candles(ts))
        if not union:
            assert not store.has("s", "A/B", "1h")
            return
        pd.testing.assert_frame_equal(store.read("s", "A/B", "1h"), candles(sorted(union)))
        one = CandleStore(Path(tmp) / "one")
        assert one.write("s", "A/B", "1h", candles(sorted(union))) == len(union)
        pd.testing.assert_frame_equal(store.read("s", "A/B", "1h"), one.read("s", "A/B", "1h"))


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_crash_at_rename_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    store = CandleStore(tmp_path)
    store.write("b", "BTC/USDT", "1h", candles(grid(100)))
    [path] = store.entries()[0].files
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated power cut")

    monkeypatch.setattr(store_mod.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        store.write("b", "BTC/USDT", "1h", candles(grid(200), salt=9.0), on_conflict="replace")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    pd.testing.assert_frame_equal(store.read("b", "BTC/USDT", "1h"), candles(grid(100)))


def test_crash_mid_parquet_write_keeps_old_file(tmp_path, monkeypatch):
    store = CandleStore(tmp_path)
    store.write("b", "BTC/USDT", "1h", candles(grid(100)))
    real_write = pq.write_table

    def half_write(table, where, **kw):
        real_write(table.slice(0, 10), where, **kw)
        with open(where, "r+b") as fh:
            fh.truncate(50)  # a torn file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.pq, "write_table", half_write)
    with pytest.raises(KeyboardInterrupt):
        store.write("b", "BTC/USDT", "1h", candles(grid(300)))
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    pd.testing.assert_frame_equal(store.read("b", "BTC/USDT", "1h"), candles(grid(100)))


def test_range_reads_match_pandas_filter(tmp_path):
    store = CandleStore(tmp_path)
    ts = np.delete(grid(10_000), np.arange(500, 700))  # a hole in the middle
    full = candles(ts)
    store.write("b", "ETH/USDT", "1h", full)
    cases = [(None, None), (T0, T0 + 10 * H), (T0 + 4095 * H, T0 + 4098 * H), (T0 + 550 * H, T0 + 650 * H),
             (T0 + 9990 * H, None), (None, T0 + 3 * H), (T0 - 100 * H, T0 - 10 * H), (T0 + 20_000 * H, None),
             (T0 + 5 * H, T0 + 5 * H), (T0 + 5 * H + 1, T0 + 7 * H - 1)]
    for start, end in cases:
        mask = np.ones(len(full), dtype=bool)
        if start is not None:
            mask &= full["timestamp"].to_numpy() >= start
        if end is not None:
            mask &= full["timestamp"].to_numpy() < end
        got = store.read("b", "ETH/USDT", "1h", start, end)
        pd.testing.assert_frame_equal(got, full[mask].reset_index(drop=True), obj=f"read({start}, {end})")


def test_range_read_decodes_only_overlapping_row_groups(tmp_path):
    """Proof by sabotage: overwrite the data pages of every row group outside the range with garbage.
    A full read then fails, while the range read still returns the right rows, so it never decoded them."""
    store = CandleStore(tmp_path)
    n, M = 10 * ROW_GROUP_ROWS, 60_000  # 1m bars: 28.4 days, all in the partition of January 2022
    full = candles(T0 + M * np.arange(n))
    store.write("b", "SOL/USDT", "1m", full)
    [path] = store.entries()[0].files
    md = pq.ParquetFile(path).metadata
    assert path.name == "2022-01.parquet" and md.num_row_groups == 10
    start, end = T0 + (3 * ROW_GROUP_ROWS + 100) * M, T0 + (3 * ROW_GROUP_ROWS + 600) * M  # inside group 3
    rng = np.random.default_rng(0)
    with open(path, "r+b") as fh:
        for g in range(md.num_row_groups):
            if g == 3:
                continue
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                first = col.dictionary_page_offset or col.data_page_offset
                fh.seek(first)
                fh.write(rng.integers(0, 256, col.total_compressed_size, dtype=np.uint8).tobytes())
    with pytest.raises(DataValidationError, match="SOL/USDT"):
        store.read("b", "SOL/USDT", "1m")
    got = store.read("b", "SOL/USDT", "1m", start, end)
    mask = (full["timestamp"] >= start) & (full["timestamp"] < end)
    pd.testing.assert_frame_equal(got, full[mask].reset_index(drop=True))
    assert len(got) == 500


def test_entries_and_gap_counts(tmp_path):
    store = CandleStore(tmp_path)
    assert store.entries() == []
    ts = np.delete(grid(100), [10, 11, 12, 50])  # 4 missing bars in two gaps
    store.write("binance", "BTC/USDT", "1h", candles(ts))
    store.write("binance", "ETH/USDT", "4h", candles(T0 + 4 * H * np.arange(20)))
    store.write("file:my data", "BTC/USDT", "1h", candles(grid(5)))
    entries = store.entries()
    assert [(e.source, e.symbol, e.timeframe) for e in entries] == [
        ("binance", "BTC/USDT", "1h"), ("binance", "ETH/USDT", "4h"), ("file:my data", "BTC/USDT", "1h")]
    btc = entries[0]
    assert isinstance(btc, StoreEntry) and btc.path.exists()
    assert (btc.rows, btc.first, btc.last, btc.n_gaps) == (96, T0, T0 + 99 * H, 4)
    assert (entries[1].rows, entries[1].n_gaps) == (20, 0)


def test_tradable_column_round_trip_and_merge(tmp_path):
    store = CandleStore(tmp_path)
    store.write("b", "A/B", "1h", candles(grid(5)))  # no tradable column
    marked = candles(grid(3, T0 + 5 * H)).assign(tradable=[True, False, True])
    store.write("b", "A/B", "1h", marked)
    out = store.read("b", "A/B", "1h")
    assert out["tradable"].tolist() == [True] * 5 + [True, False, True]
    assert out["tradable"].dtype == bool
    # a gap bar kept by validation is present, not missing
    assert store.entries()[0].n_gaps == 0


def test_rules_round_trip_and_defaults(tmp_path):
    store = CandleStore(tmp_path)
    assert store.read_rules("binance", "BTC/USDT") == default_rules("BTC/USDT")
    rules = MarketRules("BTC/USDT", amount_step=1e-5, price_step=0.01, min_amount=1e-5, min_notional=5.0,
                        maker_fee=0.0002, taker_fee=0.0004, origin="ccxt:binance")
    store.write_rules("binance", rules)
    store.write_rules("binance", MarketRules("ETH/USDT:USDT", amount_step=0.001))
    assert store.read_rules("binance", "BTC/USDT") == rules
    assert store.read_rules("binance", "ETH/USDT:USDT").amount_step == 0.001
    assert store.read_rules("kraken", "BTC/USDT") == default_rules("BTC/USDT")
    assert (tmp_path / "binance" / "markets.json").exists()
    store.write_rules("binance", MarketRules("BTC/USDT", taker_fee=0.002))  # replaces
    assert store.read_rules("binance", "BTC/USDT").taker_fee == 0.002
    assert _leftovers(tmp_path) == []


def test_awkward_symbols_and_sources_stay_apart_and_inside_root(tmp_path):
    store = CandleStore(tmp_path / "root")
    names = [("binance", "BTC/USDT:USDT"), ("binance", "BTC/USDT"), ("binance", "BTC_USDT"),
             ("file:../../escape", "X/Y"), ("file:..", "X/Y"), ("file_..", "X/Y"), ("binance", "markets.json")]
    for i, (source, symbol) in enumerate(names):
        store.write(source, symbol, "1h", candles(grid(3), salt=float(i)))
    for i, (source, symbol) in enumerate(names):
        pd.testing.assert_frame_equal(store.read(source, symbol, "1h"), candles(grid(3), salt=float(i)))
    assert sorted((e.source, e.symbol) for e in store.entries()) == sorted(names)
    root = (tmp_path / "root").resolve()
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert root in p.resolve().parents
    assert (tmp_path / "root" / "binance" / "BTC_USDT_USDT" / "1h" / "2022.parquet").exists()
    # a fresh store object (no in-memory state) finds the same files
    pd.testing.assert_frame_equal(CandleStore(tmp_path / "root").read("binance", "BTC_USDT", "1h"),
                                  candles(grid(3), salt=2.0))


def test_clear_errors(tmp_path):
    store = CandleStore(tmp_path)
    with pytest.raises(DataValidationError, match=r"binance BTC/USDT 1h"):
        store.read("binance", "BTC/USDT", "1h")
    with pytest.raises(ConfigError, match="timeframe"):
        store.write("binance", "BTC/USDT", "1 hour", candles(grid(3)))
    with pytest.raises(DataValidationError, match="lacks columns"):
        store.write("binance", "BTC/USDT", "1h", candles(grid(3)).drop(columns="volume"))
    bad_ts = candles(grid(3)).astype({"timestamp": float})
    bad_ts.loc[1, "timestamp"] = np.nan
    with pytest.raises(DataValidationError, match="row 1"):
        store.write("binance", "BTC/USDT", "1h", bad_ts)
    with pytest.raises(DataValidationError, match="row 0.*milliseconds"):
        store.write("binance", "BTC/USDT", "1h", candles(grid(3)).assign(timestamp=grid(3) * 1_000_000))
    with pytest.raises(ConfigError, match="source"):
        store.read("", "BTC/USDT", "1h")
    store.write("binance", "BTC/USDT", "1h", candles(grid(3)))
    [path] = store.entries()[0].files
    path.write_bytes(b"not a parquet file at all")
    with pytest.raises(DataValidationError, match=r"binance BTC/USDT 1h.*unreadable"):
        store.read("binance", "BTC/USDT", "1h")
    with pytest.raises(DataValidationError, match="unreadable"):
        store.write("binance", "BTC/USDT", "1h", candles(grid(3)))
    assert store.entries() == []  # unreadable files are skipped (and logged) in listings
    (tmp_path / "kraken").mkdir()
    (tmp_path / "kraken" / "markets.json").write_text("{oops")
    with pytest.raises(DataValidationError, match="markets.json"):
        store.read_rules("kraken", "BTC/USDT")


def test_datetime_timestamps_are_converted_to_ms(tmp_path):
    store = CandleStore(tmp_path)
    frame = candles(grid(3))
    dt = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], unit="ms", utc=True).dt.as_unit("s"))
    store.write("b", "A/B", "1h", dt)
    assert store.read("b", "A/B", "1h")["timestamp"].tolist() == grid(3).tolist()


def test_concurrent_writers_lose_nothing(tmp_path):
    store = CandleStore(tmp_path)
    errors = []

    def worker(k: int) -> None:
        try:
            for j in range(5):
                CandleStore(tmp_path).write("b", "A/B", "1h", candles(grid(20, T0 + (k * 100 + j * 20) * H)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = np.concatenate([grid(100, T0 + k * 100 * H) for k in range(4)])
    pd.testing.assert_frame_equal(store.read("b", "A/B", "1h"), candles(expected))
    assert _leftovers(tmp_path) == []


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FACTORGYM_STORE", str(tmp_path / "s"))
    assert default_store_root() == tmp_path / "s"
    assert CandleStore().root == tmp_path / "s"
    monkeypatch.delenv("FACTORGYM_STORE")
    assert default_store_root() == Path("store")
    assert os.path.basename(str(CandleStore(None).root)) == "store"


@pytest.mark.parametrize("column,delta", [("open", 0.1), ("high", 0.1), ("low", -0.1), ("close", 0.1), ("volume", 1.0)])
def test_a_stored_bar_differing_in_any_one_value_is_a_conflict(tmp_path, column, delta):
    store = CandleStore(tmp_path)
    store.write("x", "A/B", "1h", candles(grid(4)))
    changed = candles(grid(4))
    changed.loc[2, column] += delta
    with pytest.raises(DataValidationError, match=r"1 bar\(s\) already stored with different values"):
        store.write("x", "A/B", "1h", changed)
    assert store.write("x", "A/B", "1h", changed, on_conflict="replace") == 0
    assert store.read("x", "A/B", "1h")[column].iloc[2] == changed.loc[2, column]
