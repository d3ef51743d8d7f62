"""The partitioned store: monthly/yearly partition files, appends that rewrite only what they touch,
range reads that open only the partitions they need, and stores written before partitions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from factorgym.cli import main
from factorgym.data_layer import funding as fstore
from factorgym.data_layer.store import CandleStore
from factorgym.data_layer.store_partitions import partition_keys, partition_span
from factorgym.errors import DataValidationError

M, H, D = 60_000, 3_600_000, 86_400_000
JAN_2024 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
V1 = Path(__file__).parent / "data" / "store_v1"  # written by the single-file store (format 1)


def bars(ts, salt: float = 0.0) -> pd.DataFrame:
    ts = np.asarray(ts, dtype=np.int64)
    c = 100.0 + (ts // M % 1000) * 0.01 + salt
    return pd.DataFrame({"timestamp": ts, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1.0 + salt})


def test_partition_names_are_utc_months_under_an_hour_and_years_above():
    ts = np.array([JAN_2024 - 1, JAN_2024, JAN_2024 + 31 * D - 1, JAN_2024 + 31 * D])
    assert partition_keys(ts, "1m").tolist() == ["2023-12", "2024-01", "2024-01", "2024-02"]
    assert partition_keys(ts, "30m").tolist() == ["2023-12", "2024-01", "2024-01", "2024-02"]
    assert partition_keys(ts, "1h").tolist() == ["2023", "2024", "2024", "2024"]
    assert partition_keys(ts, "1d").tolist() == ["2023", "2024", "2024", "2024"]
    assert partition_span("2024-02", "1m") == (JAN_2024 + 31 * D, JAN_2024 + 60 * D)  # 2024 is a leap year
    assert partition_span("2024", "4h") == (JAN_2024, int(pd.Timestamp("2025-01-01", tz="UTC").value // 10**6))


def test_a_series_is_stored_in_partition_files(tmp_path):
    store = CandleStore(tmp_path)
    store.write("b", "BTC/USDT", "1m", bars(JAN_2024 - 5 * M + M * np.arange(10)))
    store.write("b", "BTC/USDT", "1d", bars(JAN_2024 - 2 * D + D * np.arange(4)))
    folder = tmp_path / "b" / "BTC_USDT"
    assert sorted(p.name for p in (folder / "1m").iterdir() if not p.name.startswith(".")) == [
        "2023-12.parquet", "2024-01.parquet"]
    assert sorted(p.name for p in (folder / "1d").iterdir() if not p.name.startswith(".")) == [
        "2023.parquet", "2024.parquet"]
    assert len(pq.read_table(folder / "1m" / "2024-01.parquet")) == 5
    e = {x.timeframe: x for x in store.entries()}
    assert e["1m"].path == folder / "1m" and e["1m"].rows == 10 and len(e["1m"].files) == 2


def _stamps(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("*.parquet")}


def test_an_append_rewrites_only_the_partitions_it_touches(tmp_path):
    store = CandleStore(tmp_path)
    ts = JAN_2024 + 5 * M * np.arange(91 * 24 * 12)  # 5m bars, Jan .. Mar 2024
    store.write("b", "ETH/USDT", "5m", bars(ts[:-288]))  # all but the last day
    folder = tmp_path / "b" / "ETH_USDT" / "5m"
    before = _stamps(folder)
    assert sorted(before) == ["2024-01.parquet", "2024-02.parquet", "2024-03.parquet"]
    assert store.write("b", "ETH/USDT", "5m", bars(ts[-288:])) == 288
    after = _stamps(folder)
    assert after["2024-01.parquet"] == before["2024-01.parquet"] and after["2024-02.parquet"] == before["2024-02.parquet"]
    assert after["2024-03.parquet"] != before["2024-03.parquet"]
    pd.testing.assert_frame_equal(store.read("b", "ETH/USDT", "5m"), bars(ts))
    # the same bars again: nothing is rewritten
    assert store.write("b", "ETH/USDT", "5m", bars(ts[-300:])) == 0
    assert _stamps(folder) == after


def test_a_range_read_opens_only_the_partitions_it_needs(tmp_path, monkeypatch):
    store = CandleStore(tmp_path)
    ts = JAN_2024 + 15 * M * np.arange(120 * 24 * 4)  # 15m bars, Jan .. Apr 2024
    full = bars(ts)
    store.write("b", "ETH/USDT", "15m", full)
    opened = []
    real = CandleStore._read_file

    def spy(self, where, path, start=None, end=None):
        opened.append(path.name)
        return real(self, where, path, start, end)

    monkeypatch.setattr(CandleStore, "_read_file", spy)
    for start, end, files in [(JAN_2024 + 28 * D, JAN_2024 + 35 * D, ["2024-01.parquet", "2024-02.parquet"]),
                              (JAN_2024 + 40 * D, JAN_2024 + 47 * D, ["2024-02.parquet"]),
                              (JAN_2024 + 500 * D, None, None)]:
        opened.clear()
        got = store.read("b", "ETH/USDT", "15m", start, end)
        keep = (full["timestamp"] >= start) & (full["timestamp"] < (end or 2**62))
        pd.testing.assert_frame_equal(got, full[keep].reset_index(drop=True), check_index_type=False)
        if files is not None:
            assert opened == files


def test_a_conflict_in_a_later_partition_writes_nothing(tmp_path):
    store = CandleStore(tmp_path)
    ts = JAN_2024 - 10 * M + M * np.arange(20)  # across Dec 2023 / Jan 2024
    store.write("b", "A/B", "1m", bars(ts[15:]))
    folder = tmp_path / "b" / "A_B" / "1m"
    before = _stamps(folder)
    with pytest.raises(DataValidationError, match="already stored with different values.*2024-01-01 00:05"):
        store.write("b", "A/B", "1m", bars(ts, salt=1.0))  # new bars in Dec, a conflicting one in Jan
    assert _stamps(folder) == before
    report = store.merge("b", "A/B", "1m", bars(ts, salt=1.0), on_conflict="keep")
    assert (report.added, report.kept) == (15, 5)


# ---------------------------------------------------------------- stores written before partitions
@pytest.fixture
def v1(tmp_path) -> CandleStore:
    shutil.copytree(V1, tmp_path / "store")
    return CandleStore(tmp_path / "store")


def _v1_frame(rel: str) -> pd.DataFrame:
    return pq.read_table(V1 / rel).to_pandas()


def test_a_single_file_store_is_read_as_it_is(v1):
    btc = _v1_frame("binance/BTC_USDT/1m.parquet")
    pd.testing.assert_frame_equal(v1.read("binance", "BTC/USDT", "1m"), btc)
    lo, hi = JAN_2024 - 60 * M, JAN_2024 + 60 * M
    pd.testing.assert_frame_equal(v1.read("binance", "BTC/USDT", "1m", lo, hi),
                                  btc[(btc.timestamp >= lo) & (btc.timestamp < hi)].reset_index(drop=True))
    assert v1.last_timestamp("binance", "ETH/USDT", "1h") == int(_v1_frame("binance/ETH_USDT/1h.parquet").timestamp.max())
    e = {x.symbol: x for x in v1.entries()}
    assert (e["BTC/USDT"].rows, e["BTC/USDT"].n_gaps, e["BTC/USDT"].n_marked) == (len(btc), 10, 1)
    assert len(fstore.read_funding(v1, "binance", "BTC/USDT")) == 6
    assert not any(p.is_dir() for p in (v1.root / "binance" / "BTC_USDT").iterdir())  # reading migrates nothing


def test_the_next_write_migrates_a_single_file_series_to_partitions(v1):
    btc = _v1_frame("binance/BTC_USDT/1m.parquet")
    folder = v1.root / "binance" / "BTC_USDT"
    new = bars(int(btc.timestamp.max()) + M * np.arange(1, 31)).assign(tradable=True)
    assert v1.write("binance", "BTC/USDT", "1m", new) == 30
    assert not (folder / "1m.parquet").exists()
    assert sorted(p.name for p in (folder / "1m").glob("*.parquet")) == ["2023-12.parquet", "2024-01.parquet"]
    pd.testing.assert_frame_equal(v1.read("binance", "BTC/USDT", "1m"), pd.concat([btc, new], ignore_index=True))
    assert v1.write("binance", "BTC/USDT", "1m", btc) == 0  # idempotent after the migration
    with pytest.raises(DataValidationError, match="already stored with different values"):
        v1.write("binance", "BTC/USDT", "1m", btc.assign(close=btc.close + 1))
    # funding beside it is untouched and still takes writes
    assert fstore.write_funding(v1, "binance", "BTC/USDT",
                                pd.DataFrame({"timestamp": [JAN_2024 + D], "funding_rate": [2e-4]})) == 1
    assert len(fstore.read_funding(v1, "binance", "BTC/USDT")) == 7
    [e] = [x for x in v1.entries() if x.symbol == "BTC/USDT"]
    assert (e.rows, e.n_gaps, e.n_marked, e.path) == (len(btc) + 30, 10, 1, folder / "1m")


def test_an_interrupted_migration_is_redone_from_the_single_file(v1):
    eth = _v1_frame("binance/ETH_USDT/1h.parquet")
    folder = v1.root / "binance" / "ETH_USDT"
    (folder / "1h").mkdir()
    pq.write_table(pq.read_table(V1 / "binance/ETH_USDT/1h.parquet").slice(0, 5), folder / "1h" / "2023.parquet")
    pd.testing.assert_frame_equal(v1.read("binance", "ETH/USDT", "1h"), eth)  # the single file is the series
    assert [x.rows for x in v1.entries() if x.symbol == "ETH/USDT"] == [len(eth)]
    v1.write("binance", "ETH/USDT", "1h", eth.tail(3))
    assert not (folder / "1h.parquet").exists()
    pd.testing.assert_frame_equal(v1.read("binance", "ETH/USDT", "1h"), eth)
    # removing a series whose migration was interrupted leaves neither layout behind
    (v1.root / "binance" / "BTC_USDT" / "1m").mkdir()
    shutil.copy(V1 / "binance/BTC_USDT/1m.parquet", v1.root / "binance" / "BTC_USDT" / "1m" / "2023-12.parquet")
    v1.remove("binance", "BTC/USDT", "1m")
    assert not v1.has("binance", "BTC/USDT", "1m") and not (v1.root / "binance" / "BTC_USDT" / "1m").exists()


def test_data_list_and_rm_on_both_layouts(v1, capsys):
    v1.write("binance", "ETH/USDT", "1h", _v1_frame("binance/ETH_USDT/1h.parquet").tail(1))  # migrated
    assert main(["data", "list", "--store", str(v1.root)]) == 0
    out = capsys.readouterr().out
    assert "BTC/USDT" in out and "ETH/USDT" in out and "2 series" in out
    assert main(["data", "rm", "--source", "binance", "--symbol", "ETH/USDT", "--store", str(v1.root)]) == 0
    assert main(["data", "rm", "--source", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m", "--store", str(v1.root)]) == 0
    assert v1.entries() == []
    assert not (v1.root / "binance" / "ETH_USDT").exists()
    assert (v1.root / "binance" / "BTC_USDT" / "funding.parquet").exists()  # funding is not a candle series
