"""File import speed: load + validate, against a bare ``pandas.read_csv`` of the same file, same run.

Run: ``python benchmarks/_ingest_files.py`` (prints one JSON line per figure).

Goal: >= 200,000 rows/s for load + validate, and why: a year of 1-minute bars of one symbol
(525,600 rows) then imports in under 3 s, and the shared 2-year hourly file in ~0.1 s, so importing
is never the slow step before a factor build. The floor is the CSV parse itself: the reference is a
bare ``pandas.read_csv`` of the same file (no dates, no checks); we also report the ratio to it.
Cases: the shared Bitfinex hourly file (ISO date strings, newest first: sort + date parsing), and a
500,000-row Binance-style headerless dump (epoch ms) written to a temp folder.
Timings are the best of ``repeats`` runs (the shared machines are noisy).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from factorgym.data_layer.sources.files import import_candle_file
from _timing import best_of

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "bitfinex_btcusd_1h.csv"
GOAL_ROWS_PER_S = 200_000
BIG_ROWS = 500_000


_best = best_of


def _binance_dump(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    open_ = np.concatenate([[30_000.0], close[:-1]])
    t = 1_704_067_200_000 + 60_000 * np.arange(n, dtype=np.int64)
    df = pd.DataFrame({
        "t": t, "o": open_.round(2), "h": (np.maximum(open_, close) * 1.0005).round(2),
        "l": (np.minimum(open_, close) * 0.9995).round(2), "c": close.round(2), "v": rng.uniform(0, 20, n).round(5),
        "ct": t + 59_999, "qv": rng.uniform(0, 1e5, n).round(2), "n": rng.integers(1, 500, n),
        "tb": rng.uniform(0, 10, n).round(5), "tq": rng.uniform(0, 1e5, n).round(2), "i": 0,
    })
    df.to_csv(path, header=False, index=False)


def _case(name: str, path: Path, repeats: int, read_csv_kw: dict) -> dict:
    rows = sum(len(f) for f in import_candle_file(path).candles.values())
    ours = _best(lambda: import_candle_file(path), repeats)
    ref = _best(lambda: pd.read_csv(path, **read_csv_kw), repeats)
    value = rows / ours
    return {
        "bench": "ingest_files", "case": name, "metric": "rows_per_s", "value": round(value, 1),
        "goal": GOAL_ROWS_PER_S, "meets_goal": value >= GOAL_ROWS_PER_S,
        "reference": {"pandas_read_csv_rows_per_s": round(rows / ref, 1), "ratio_to_read_csv": round(ref / ours, 3),
                      "rows": rows, "seconds": round(ours, 4)},
    }


def bench_import(repeats: int = 5) -> list[dict]:
    """rows/s of ``import_candle_file`` (load + validate) per case; JSON-able dicts."""
    out = []
    if SHARED.exists():
        out.append(_case("bitfinex_btcusd_1h_csv", SHARED, repeats, {}))
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "BTCUSDT-1m-2024.csv"
        _binance_dump(big, BIG_ROWS)
        out.append(_case("binance_1m_headerless_500k", big, max(1, repeats // 2), {"header": None}))
    return out


if __name__ == "__main__":
    for line in bench_import():
        print(json.dumps(line), flush=True)
    sys.exit(0)
