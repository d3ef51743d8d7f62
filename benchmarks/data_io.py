"""Data-layer speed and memory figures that used to be assertions inside the test suite, one JSON
line each (a benchmark, not a correctness test: shared CI machines make wall-time asserts flaky).

- validate: seconds to validate 500,000 hourly candles (reversed, 500 gaps), beside a bare pandas
  sort + de-duplicate + reindex of the same frame (the floor of a vectorised validation).
  Goal <= 5 s: a row loop takes minutes; vectorised it is ~0.2 s.
- mmap_load: RSS growth (MB) from memory-mapping a 2.18 GB tensor and reading one 64-bar window,
  beside the same read through ``np.load(mmap_mode="r")`` of the features file alone.
  Goal < 200 MB: the tensor is never read whole.

Run: ``python benchmarks/data_io.py`` (or ``make bench``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from _timing import best_of

H = 3_600_000
T0 = 1_498_906_800_000


def _candles(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    df = pd.DataFrame({"timestamp": T0 + H * np.arange(n, dtype=np.int64), "open": open_,
                       "high": np.maximum(open_, close) * 1.01, "low": np.minimum(open_, close) * 0.99,
                       "close": close, "volume": rng.uniform(1, 5, n)})
    return df.drop(index=np.arange(10, n, 1000)).iloc[::-1].reset_index(drop=True)


def bench_validate(n: int = 500_000, repeats: int = 3) -> dict:
    from factorgym.data_layer.validate import validate_candles

    df = _candles(n)
    out, rep = validate_candles(df, "1h", name="x", now_ms=10**14)
    assert len(out) == n and len(rep.gaps) == n // 1000

    def bare():
        s = df.sort_values("timestamp").drop_duplicates("timestamp").set_index("timestamp")
        return s.reindex(np.arange(s.index[0], s.index[-1] + 1, H))

    secs = best_of(lambda: validate_candles(df, "1h", name="x", now_ms=10**14), repeats)
    return {"bench": "data_io", "case": f"validate_{n}_hourly_candles", "metric": "seconds", "value": round(secs, 4),
            "goal": 5.0, "meets_goal": secs <= 5.0, "reference": {"pandas_sort_dedup_reindex_s": round(best_of(bare, repeats), 4)}}


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def bench_mmap_load() -> dict:
    from factorgym.data_layer.tensor import FactorTensor

    T, A, F = 1 << 20, 2, 260  # features: 2.18 GB float32, a sparse file (no disk blocks)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "big"
        d.mkdir()
        feats = np.lib.format.open_memmap(d / "features.npy", mode="w+", dtype=np.float32, shape=(T, A, F))
        feats[-1, -1, -1] = 7.0
        feats.flush()
        del feats
        np.lib.format.open_memmap(d / "prices.npy", mode="w+", dtype=np.float64, shape=(T, A, 5)).flush()
        np.save(d / "timestamps.npy", np.arange(T, dtype=np.int64) * H)
        np.save(d / "tradable.npy", np.zeros((T, A), dtype=bool))
        (d / "meta.json").write_text(json.dumps({"timeframe": "1h", "symbols": ["A", "B"],
                                                 "feature_names": [f"f{j}" for j in range(F)]}))
        before = _rss()
        raw = np.load(d / "features.npy", mmap_mode="r")
        np.asarray(raw[1000:1064])
        bare = (_rss() - before) / 1e6
        del raw
        before = _rss()
        t = FactorTensor.load(d, mmap=True)
        window = np.asarray(t.features[1000:1064])
        grown = (_rss() - before) / 1e6
        assert window.shape == (64, A, F) and t.features[-1, -1, -1] == 7.0
        del t
    return {"bench": "data_io", "case": "mmap_load_2.18GB_tensor_one_window", "metric": "rss_growth_mb",
            "value": round(grown, 1), "goal": 200, "meets_goal": grown < 200, "reference": {"np_load_mmap_window_mb": round(bare, 1)}}


def main() -> int:
    for bench in (bench_validate, bench_mmap_load):
        print(json.dumps(bench()), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
