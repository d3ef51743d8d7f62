"""Candle store speed: incremental appends and short range reads, against bare pyarrow in the same run.

Run: ``python benchmarks/_ingest_store.py`` (prints one JSON line per figure).

Goals, and why:
* ``append`` of 100 new hourly bars to each of 20 symbols holding 20,000 bars: <= 1.0 s in total.
  An hourly refresh downloads 20 symbols over the network (ccxt: ~0.2-0.5 s per request), so 50 ms
  of store time per symbol stays well under the download itself. The store must re-read, merge and
  atomically rewrite each file, so the bare ``pq.write_table`` of the merged data is the floor.
* ``range_read`` of 500 bars from each of 20 symbols: <= 0.2 s in total (10 ms a symbol), so
  building a tensor for a short window never costs more than a full-history scan of one symbol.
  The reference is pyarrow's own filtered ``pq.read_table`` and a full-file read.
Timings are the best of ``repeats`` runs. Shared machines drift by 2-3x during a day, so the goals
are ratios to the bare pyarrow reference measured in the same run: an append (read + merge + atomic
fsynced rewrite) within 3x a bare ``write_table`` of the merged data, and a range read within 2x
pyarrow's own filtered ``read_table``. The absolute goals above are reported beside them.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from factorgym.data_layer.sources.synthetic import SyntheticSource
from factorgym.data_layer.store import ROW_GROUP_ROWS, CandleStore
from _timing import best_of

N_SYMBOLS, N_BARS, N_APPEND, RANGE_BARS = 20, 20_000, 100, 500
APPEND_GOAL_S, READ_GOAL_S = 1.0, 0.2
APPEND_GOAL_RATIO, READ_GOAL_RATIO = 3.0, 2.0


_best = best_of


def bench_store(repeats: int = 3) -> list[dict]:
    """Time store appends and range reads; returns the JSON-able figure dicts."""
    n_total = N_BARS + N_APPEND * (repeats + 1)
    src = SyntheticSource(N_SYMBOLS, timeframe="1h", n_bars=n_total, seed=0)
    frames = src.frames()
    symbols = src.symbols()
    out: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = CandleStore(Path(tmp) / "store")
        t = time.perf_counter()
        for s in symbols:
            store.write("synthetic", s, "1h", frames[s].iloc[:N_BARS])
        initial_s = time.perf_counter() - t

        cursor = [N_BARS]

        def append_all() -> None:
            lo = cursor[0]
            for s in symbols:
                store.write("synthetic", s, "1h", frames[s].iloc[lo : lo + N_APPEND])
            cursor[0] = lo + N_APPEND

        append_s = _best(append_all, repeats)
        ref_dir = Path(tmp) / "ref"
        ref_dir.mkdir()
        tables = {s: pa.Table.from_pandas(frames[s].iloc[: cursor[0]], preserve_index=False) for s in symbols}

        def bare_write() -> None:
            for i, s in enumerate(symbols):
                pq.write_table(tables[s], ref_dir / f"{i}.parquet", row_group_size=ROW_GROUP_ROWS, compression="zstd")

        bare_write_s = _best(bare_write, repeats)
        out.append({
            "bench": "store", "case": f"append_{N_APPEND}_bars_x{N_SYMBOLS}_symbols_of_{N_BARS}", "metric": "seconds",
            "value": round(append_s, 4), "goal": round(APPEND_GOAL_RATIO * bare_write_s, 4),
            "meets_goal": append_s <= APPEND_GOAL_RATIO * bare_write_s,
            "reference": {"bare_pq_write_table_s": round(bare_write_s, 4), "ratio": round(append_s / bare_write_s, 3), "goal_ratio": APPEND_GOAL_RATIO,
                          "absolute_goal_s": APPEND_GOAL_S,
                          "initial_write_20x20000_s": round(initial_s, 4)},
        })

        ts0 = int(frames[symbols[0]]["timestamp"].iloc[N_BARS // 2])
        start, end = ts0, ts0 + RANGE_BARS * 3_600_000
        sizes = []

        def range_read() -> None:
            sizes.clear()
            for s in symbols:
                sizes.append(len(store.read("synthetic", s, "1h", start, end)))

        read_s = _best(range_read, repeats)
        if sizes != [RANGE_BARS] * N_SYMBOLS:
            raise RuntimeError(f"range read returned {sizes} rows, expected {RANGE_BARS} each")
        paths = [e.path for e in store.entries()]  # (partition folders: pyarrow reads each as a dataset)

        def pyarrow_filtered() -> None:
            for p in paths:
                pq.read_table(p, filters=[("timestamp", ">=", start), ("timestamp", "<", end)]).to_pandas()

        def pyarrow_full() -> None:
            for p in paths:
                pq.read_table(p).to_pandas()

        filtered_s = _best(pyarrow_filtered, repeats)
        full_s = _best(pyarrow_full, repeats)
        out.append({
            "bench": "store", "case": f"range_read_{RANGE_BARS}_bars_x{N_SYMBOLS}_symbols", "metric": "seconds",
            "value": round(read_s, 4), "goal": round(READ_GOAL_RATIO * filtered_s, 4),
            "meets_goal": read_s <= READ_GOAL_RATIO * filtered_s,
            "reference": {"pyarrow_filtered_read_table_s": round(filtered_s, 4), "ratio": round(read_s / filtered_s, 3), "goal_ratio": READ_GOAL_RATIO,
                          "absolute_goal_s": READ_GOAL_S,
                          "pyarrow_full_read_table_s": round(full_s, 4)},
        })
    return out


if __name__ == "__main__":
    for line in bench_store():
        print(json.dumps(line))
    sys.exit(0)
