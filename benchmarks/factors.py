"""Factor-layer figures, one JSON line each (format: README, Benchmarks).

* TA-Lib build: 20 symbols x 17,520 hourly bars through the 30-feature ``talib_default`` set;
  build time (alignment, factors, normalisation), save time, feature values/s (goal >= 20M/s),
  beside the bare TA-Lib/numpy factor calls on the same data, measured in the same run.
* Peak memory of that build (tracemalloc, numpy allocations included).
* Online row latency per bar for 4 symbols (goal <= 2 ms), median and p99.
* Memory-mapped load of a > 2 GB tensor: RSS growth after loading and reading one window.
* Qlib figures from ``benchmarks/_factors_qlib.py`` (``bench_qlib() -> list[dict]``) when present.

Run: ``.venv/bin/python benchmarks/factors.py [--bars 17520 --symbols 20]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from factorgym.data_layer.build import build_tensor_from_candles
from factorgym.data_layer.factors.base import CandlePanel
from factorgym.data_layer.factors.factor_set import load_factor_set
from factorgym.data_layer.factors.online import OnlineFactors
from factorgym.data_layer.tensor import FactorTensor

HOUR = 3_600_000


def emit(case: str, metric: str, value: float, goal=None, higher_is_better=True, **extra) -> None:
    rec = {"bench": "factors", "case": case, "metric": metric, "value": round(float(value), 6)}
    if goal is not None:
        rec["goal"] = goal
        rec["meets_goal"] = bool(value >= goal if higher_is_better else value <= goal)
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def synthetic(T: int, A: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
    o = c * np.exp(rng.normal(0, 0.003, (T, A)))
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.01, (T, A)))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.01, (T, A)))
    v = rng.lognormal(3, 1, (T, A))
    ts = np.arange(T, dtype=np.int64) * HOUR + 1_600_000_000_000 // HOUR * HOUR
    return {f"S{a}/USDT": pd.DataFrame({"timestamp": ts, "open": o[:, a], "high": h[:, a], "low": lo[:, a],
                                        "close": c[:, a], "volume": v[:, a]}) for a in range(A)}


def bench_talib_build(T: int, A: int) -> None:
    candles = synthetic(T, A)
    fs = load_factor_set("talib_default")
    build_tensor_from_candles(synthetic(400, 2), "1h", fs)  # warm imports and caches
    best_build, best_raw = np.inf, np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        tensor = build_tensor_from_candles(candles, "1h", fs)
        best_build = min(best_build, time.perf_counter() - t0)
        x = np.stack([df[["open", "high", "low", "close", "volume"]].to_numpy() for df in candles.values()], axis=1)
        panel = CandlePanel.from_arrays(np.asarray(candles["S0/USDT"]["timestamp"]), x, list(candles), "1h")
        t0 = time.perf_counter()
        for f in fs.factors:  # bare factor calls: TA-Lib in C + the numpy custom functions
            f.compute(panel)
        best_raw = min(best_raw, time.perf_counter() - t0)
    values = T * A * len(fs.names)
    emit("talib30_20x17520", "build_seconds", best_build, shape=[tensor.n_bars, A, len(fs.names)])
    emit("talib30_20x17520", "values_per_s", values / best_build, goal=20_000_000,
         reference={"bare_factor_calls_seconds": round(best_raw, 4), "bare_values_per_s": round(values / best_raw)})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tensor.save(Path(tmp) / "t")
        save_s = time.perf_counter() - t0
    emit("talib30_20x17520", "build_plus_save_seconds", best_build + save_s, reference={"save_seconds": round(save_s, 4)})
    del tensor
    tracemalloc.start()
    build_tensor_from_candles(candles, "1h", fs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    emit("talib30_20x17520", "peak_memory_mb", peak / 1e6, higher_is_better=False,
         reference={"tensor_features_mb": round(values * 4 / 1e6, 1), "float64_block_mb": round(values * 8 / 1e6, 1)})


def bench_online(n_symbols: int = 4, history: int = 2000, timed: int = 1000) -> None:
    candles = synthetic(history + timed, n_symbols, seed=1)
    x = np.stack([df[["open", "high", "low", "close", "volume"]].to_numpy() for df in candles.values()], axis=1)
    ts = np.asarray(candles["S0/USDT"]["timestamp"])
    online = OnlineFactors("talib_default", list(candles))
    for i in range(history):
        online.update(int(ts[i]), x[i])
    lat = np.empty(timed)
    for j, i in enumerate(range(history, history + timed)):
        t0 = time.perf_counter()
        online.update(int(ts[i]), x[i])
        lat[j] = time.perf_counter() - t0
    emit("online_talib30_4sym", "row_latency_ms_median", np.median(lat) * 1e3, goal=2.0, higher_is_better=False,
         reference={"p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 4)})


def bench_mmap() -> None:
    import psutil

    T, A, F = 1 << 20, 2, 260
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        f = np.lib.format.open_memmap(d / "features.npy", mode="w+", dtype=np.float32, shape=(T, A, F))
        del f
        p = np.lib.format.open_memmap(d / "prices.npy", mode="w+", dtype=np.float64, shape=(T, A, 5))
        del p
        np.save(d / "timestamps.npy", np.arange(T, dtype=np.int64) * HOUR)
        np.save(d / "tradable.npy", np.zeros((T, A), dtype=bool))
        (d / "meta.json").write_text(json.dumps({"symbols": ["A", "B"], "feature_names": [f"f{j}" for j in range(F)]}))
        size = (d / "features.npy").stat().st_size
        proc = psutil.Process()
        before = proc.memory_info().rss
        t = FactorTensor.load(d, mmap=True)
        np.asarray(t.features[5000:5064]).sum()
        grown = proc.memory_info().rss - before
    emit("mmap_load_2gb", "rss_growth_mb", grown / 1e6, goal=200, higher_is_better=False,
         reference={"file_mb": round(size / 1e6)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=17_520, help="hourly bars per symbol")
    ap.add_argument("--symbols", type=int, default=20, help="symbols in the build benchmark")
    ap.add_argument("--skip-qlib", action="store_true", help="skip the qlib figures")
    args = ap.parse_args(argv)
    bench_talib_build(args.bars, args.symbols)
    bench_online()
    bench_mmap()
    if not args.skip_qlib:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        try:
            from _factors_qlib import bench_qlib
        except ImportError as exc:
            print(json.dumps({"bench": "factors", "case": "qlib", "skipped": f"benchmarks/_factors_qlib.py not usable: {exc}"}))
        else:
            for rec in bench_qlib():
                print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
