"""Scale figures (issue 16), one JSON line each (format: README, Benchmarks).

* ``build_ooc``: the out-of-core build (``build --out-of-core``) of ``--symbols`` x ``--bars`` 1m
  bars (default 20 x 525,600 = one year) through the 30-feature ``talib_default`` set: peak RSS of
  the building process (goal <= 1.5 GB), and feature values/s against the in-memory build +
  save measured in the same run on the largest size that fits both (``--ref-bars``, default
  131,400 bars = 3 months, whose in-memory peak is printed too; goal >= 0.8x).
* ``download_1m``: one year of 1m bars for 2 symbols from the loopback fake exchange into a fresh
  store: bars/s over the last tenth of the run against the first tenth (goal >= 0.8: throughput
  does not fall as the store grows).

Each build runs in a fresh subprocess (peak RSS = its ``ru_maxrss``).
Run: ``.venv/bin python benchmarks/scale.py [--only build|download] [--bars N --symbols A]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MINUTE = 60_000
T0 = 1_672_531_200_000  # 2023-01-01


def emit(case: str, metric: str, value: float, goal=None, higher_is_better=True, **extra) -> None:
    rec = {"bench": "scale", "case": case, "metric": metric, "value": round(float(value), 6)}
    if goal is not None:
        rec["goal"] = goal
        rec["meets_goal"] = bool(value >= goal if higher_is_better else value <= goal)
    rec.update(extra)
    print(json.dumps(rec), flush=True)


# ---------------------------------------------------------------------------- build
def write_store(root: Path, bars: int, symbols: int) -> None:
    """Synthetic 1m candles (random walks) of ``symbols`` assets into a candle store, one at a time."""
    import numpy as np
    import pandas as pd

    from factorgym.data_layer.store import CandleStore

    store = CandleStore(root)
    ts = T0 + np.arange(bars, dtype=np.int64) * MINUTE
    for a in range(symbols):
        rng = np.random.default_rng(a)
        c = 100 * (1 + a) * np.exp(np.cumsum(rng.normal(0, 0.001, bars)))
        o = c * np.exp(rng.normal(0, 0.0003, bars))
        h = np.maximum(o, c) * (1 + rng.uniform(0, 0.001, bars))
        lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.001, bars))
        frame = pd.DataFrame({"timestamp": ts, "open": o, "high": h, "low": lo, "close": c,
                              "volume": rng.lognormal(3, 1, bars)})
        store.write("bench", f"S{a}/USDT", "1m", frame)


def child_build(mode: str, store: str, bars: int, symbols: int, out: str) -> None:
    """Runs in a fresh process: one build, then prints seconds and peak RSS."""
    from factorgym.data_layer.build import build_tensor
    from factorgym.data_layer.build_disk import build_tensor_to_disk

    syms = [f"S{a}/USDT" for a in range(symbols)]
    end = T0 + bars * MINUTE
    build_tensor(store, "bench", syms[:1], "1m", "talib_default", T0, T0 + 2000 * MINUTE)  # warm imports, caches
    t = time.perf_counter()
    if mode == "disk":
        tensor = build_tensor_to_disk(store, "bench", syms, "1m", "talib_default", out, T0, end)
    else:
        tensor = build_tensor(store, "bench", syms, "1m", "talib_default", T0, end)
        tensor.save(out)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "shape": [tensor.n_bars, tensor.n_assets, tensor.n_features],
                      "content_hash": tensor.meta.get("content_hash")}))


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_build(bars: int, symbols: int, ref_bars: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="scale_build_") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        write_store(root / "store", bars, symbols)
        store_s = time.perf_counter() - t
        store = str(root / "store")
        big = run_child("disk", store, str(bars), str(symbols), str(root / "big"))
        F = big["shape"][2]
        emit(f"build_ooc_talib30_{symbols}x{bars}_1m", "peak_rss_gb", big["peak_rss"] / 1e9, goal=1.5,
             higher_is_better=False,
             reference={"seconds": round(big["seconds"], 2), "values_per_s": round(bars * symbols * F / big["seconds"]),
                        "features_gb_float32": round(bars * symbols * F * 4 / 1e9, 2),
                        "writing_the_store_seconds": round(store_s, 1)})
        best = {"disk": None, "mem": None}
        for _ in range(repeats):  # interleaved, best of: the machine is shared
            for mode in ("mem", "disk"):
                r = run_child(mode, store, str(ref_bars), str(symbols), str(root / f"ref_{mode}"))
                if best[mode] is None or r["seconds"] < best[mode]["seconds"]:
                    best[mode] = r
        same = best["disk"]["content_hash"] == best["mem"]["content_hash"]
        values = ref_bars * symbols * F
        ratio = best["mem"]["seconds"] / best["disk"]["seconds"]
        emit(f"build_ooc_talib30_{symbols}x{ref_bars}_1m", "values_per_s_vs_in_memory", ratio, goal=0.8,
             reference={"out_of_core_values_per_s": round(values / best["disk"]["seconds"]),
                        "in_memory_values_per_s": round(values / best["mem"]["seconds"]),
                        "out_of_core_peak_rss_gb": round(best["disk"]["peak_rss"] / 1e9, 3),
                        "in_memory_peak_rss_gb": round(best["mem"]["peak_rss"] / 1e9, 3),
                        "same_content_hash": same, "note": "in-memory = build_tensor + save"})


# ---------------------------------------------------------------------------- download
def bench_download(days: int) -> None:
    sys.path.insert(0, str(HERE.parent / "tests"))  # the fake exchange lives with the tests
    from fake_exchange import FakeExchange

    from factorgym.data_layer.download import download
    from factorgym.data_layer.sources.ccxt_source import CcxtSource
    from factorgym.data_layer.store import CandleStore

    class TimedStore(CandleStore):
        """Records when each store write ends (the last one closes the run) and how long it took."""

        ends: list[float] = []
        spent: list[float] = []

        def write(self, *args, **kwargs):
            t = time.monotonic()
            n = super().write(*args, **kwargs)
            self.ends.append(time.monotonic())
            self.spent.append(self.ends[-1] - t)
            return n

    with FakeExchange(fault_rate=0.0) as fx, tempfile.TemporaryDirectory(prefix="scale_dl_") as tmp:
        src = CcxtSource("binance", base_url=fx.url, api_options={"timeout": 10_000, "rateLimit": 1},
                         progress=False, page_limit=1000)
        since = fx.now_ms - days * 24 * 3_600_000
        store = TimedStore(Path(tmp))
        t = time.monotonic()
        summary = download("binance", ["BTC/USDT", "ETH/USDT"], "1m", since, store=store, source=src, progress=False)
        total = time.monotonic() - t
        with fx._lock:
            arrivals = [(at, q) for (p, at), (_, q, f) in zip(fx.arrivals, fx.requests)
                        if p.endswith("/klines") and f is None]
        times = [at for at, _ in arrivals]
        bars = [int(q.get("limit", 500)) for _, q in arrivals]
        n = len(times)
        k = max(1, n // 10)
        first = sum(bars[:k]) / (times[k] - times[0])
        last = sum(bars[n - k :]) / (store.ends[-1] - times[n - k])
        emit(f"download_1m_2x{days}d", "last_tenth_over_first_tenth_bars_per_s", last / first, goal=0.8,
             reference={"first_tenth_bars_per_s": round(first), "last_tenth_bars_per_s": round(last),
                        "bars": summary.new_bars, "seconds": round(total, 2), "requests": n,
                        "store_writes": len(store.ends), "store_write_share": round(sum(store.spent) / total, 3),
                        "longest_store_write_s": round(max(store.spent), 3),
                        "bars_per_s": round(summary.new_bars / total)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["build", "download"], help="run one figure only")
    ap.add_argument("--bars", type=int, default=525_600, help="1m bars per symbol in the out-of-core build")
    ap.add_argument("--symbols", type=int, default=20, help="symbols in the build figures")
    ap.add_argument("--ref-bars", type=int, default=131_400,
                    help="1m bars per symbol of the in-memory reference (the largest size both fit)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs for the speed ratio")
    ap.add_argument("--days", type=int, default=365, help="days of 1m bars per symbol in the download figure")
    ap.add_argument("--child", nargs=5, metavar=("MODE", "STORE", "BARS", "SYMBOLS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        mode, store, bars, symbols, out = args.child
        child_build(mode, store, int(bars), int(symbols), out)
        return 0
    if args.only in (None, "build"):
        bench_build(args.bars, args.symbols, args.ref_bars, args.repeats)
    if args.only in (None, "download"):
        bench_download(args.days)
    return 0


if __name__ == "__main__":
    sys.exit(main())
