"""Scale figures (issue 16), one JSON line each (format: README, Benchmarks).

* ``build_ooc``: the out-of-core build (``build --out-of-core``) of ``--symbols`` x ``--bars`` 1m
  bars (default 20 x 525,600 = one year) through the 30-feature ``talib_default`` set: peak RSS of
  the building process (goal <= 1.5 GB), and feature values/s against the in-memory build +
  save measured in the same run on the largest size that fits both (``--ref-bars``, default
  131,400 bars = 3 months, whose in-memory peak is printed too; goal >= 0.8x).
* ``download_1m``: one year of 1m bars for 2 symbols from the loopback fake exchange into a fresh
  store: bars/s over the last tenth of the run against the first tenth (goal >= 0.8: throughput
  does not fall as the store grows).
* ``env_mmap``: the single env and a 64-env vector env over a memory-mapped tensor of
  ``--env-bars`` x 10 assets x 512 features (default 200,000 bars: 4.1 GB of float32 features,
  written under ``.benchmarks/`` and deleted after): growth of the process's private memory
  (``RssAnon``) when both are built and stepped 10,000 times each (goal <= 300 MB; the kernels are
  compiled for the shape first, on a small tensor, and the mapped pages read are page cache, shown
  as ``rss_file_growth_mb``); steps/s over the mapped tensor with a warm page cache against the
  same env over an in-memory tensor of the same assets, features and window but
  ``--env-ref-bars`` bars (a copy of the mapped tensor's first bars; goal >= 0.8x).
* ``store_1m``: a series of 3 years of 1m bars in the partitioned store: seconds to append one day
  to it (the day lands in a month already holding 25-29 days: the partition rewritten is nearly
  full) against appending the same day to an empty series, best of 5 each (goal <= 10x); and the
  partitions a one-week read opens (a week across a month boundary: goal <= 2).

Each build and each env figure runs in a fresh subprocess (peak RSS = its ``ru_maxrss``).
Run: ``.venv/bin python benchmarks/scale.py [--only build|download|env|store] [--bars N --symbols A]``
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


# ---------------------------------------------------------------------------- store
def bench_store(years: int = 3, repeats: int = 5) -> None:
    import numpy as np
    import pandas as pd

    from factorgym.data_layer.store import CandleStore

    class CountingStore(CandleStore):
        opened: list[str] = []

        def _read_file(self, where, path, start=None, end=None):
            self.opened.append(path.name)
            return super()._read_file(where, path, start, end)

    day = 1440
    t_end = int(np.datetime64(f"{2023 + years}-01-01", "ms").astype(np.int64))  # history up to this year end
    history = (t_end - T0) // MINUTE - (repeats + 1) * day  # ... but for the last repeats + 1 days

    def frame(first: int, n: int) -> pd.DataFrame:
        ts = T0 + (first + np.arange(n, dtype=np.int64)) * MINUTE
        c = 100 + np.sin(ts / 1e9)
        return pd.DataFrame({"timestamp": ts, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1.0})

    scratch = HERE.parent / ".benchmarks"
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scale_store_", dir=scratch) as tmp:
        store = CountingStore(Path(tmp))
        t = time.perf_counter()
        store.write("bench", "BIG/USDT", "1m", frame(0, history))
        fill_s = time.perf_counter() - t
        big, empty = [], []
        for k in range(repeats):  # interleaved: one day onto the history, the same day into a new series
            new = frame(history + k * day, day)
            t = time.perf_counter()
            store.write("bench", "BIG/USDT", "1m", new)
            big.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.write("bench", f"NEW{k}/USDT", "1m", new)
            empty.append(time.perf_counter() - t)
        files = store.entries()[0].files if store.entries()[0].symbol == "BIG/USDT" else ()
        emit(f"store_1m_append_day_to_{years}y", "seconds_vs_empty_series", min(big) / min(empty), goal=10.0,
             higher_is_better=False,
             reference={"append_to_history_s": round(min(big), 4), "append_to_empty_s": round(min(empty), 4),
                        "history_rows": history + repeats * day, "partitions": len(files),
                        "writing_the_history_s": round(fill_s, 1)})
        week = 7 * day * MINUTE
        month_start = int(np.datetime64(f"{2023 + years - 1}-07-01", "ms").astype(np.int64))
        CountingStore.opened = []
        t = time.perf_counter()
        rows = len(store.read("bench", "BIG/USDT", "1m", month_start - 3 * day * MINUTE, month_start - 3 * day * MINUTE + week))
        read_s = time.perf_counter() - t
        emit(f"store_1m_read_week_of_{years}y", "partitions_read", len(CountingStore.opened), goal=2, higher_is_better=False,
             reference={"rows": rows, "seconds": round(read_s, 4), "files": CountingStore.opened,
                        "note": "a week across a month boundary"})


# ---------------------------------------------------------------------------- env over a memory map
ENV_ASSETS, ENV_FEATURES, ENV_WINDOW, ENV_STEPS, ENV_VECTOR = 10, 512, 8, 10_000, 64


def write_big_tensor(path: Path, bars: int, assets: int, features: int) -> None:
    """A saved FactorTensor whose features are written chunk by chunk into their .npy map (never
    whole in memory): normal noise with 1% NaN, random-walk prices, 2% of bars untradable."""
    import numpy as np

    from factorgym.data_layer.tensor import FORMAT_VERSION, write_meta

    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    feats = np.lib.format.open_memmap(path / "features.npy", mode="w+", dtype=np.float32, shape=(bars, assets, features))
    chunk = max(1, (64 << 20) // (assets * features * 4))
    for i in range(0, bars, chunk):
        block = rng.standard_normal((min(chunk, bars - i), assets, features), dtype=np.float32)
        block[rng.random(block.shape) < 0.01] = np.nan
        feats[i:i + len(block)] = block
    feats.flush()
    del feats
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, (bars, assets)), axis=0))
    prices = np.stack([close, close * 1.001, close * 0.999, close, rng.lognormal(5, 1, (bars, assets))], axis=-1)
    np.save(path / "prices.npy", prices)
    np.save(path / "timestamps.npy", T0 + np.arange(bars, dtype=np.int64) * MINUTE)
    np.save(path / "tradable.npy", rng.random((bars, assets)) > 0.02)
    write_meta(path, {"format_version": FORMAT_VERSION, "timeframe": "1m", "symbols": [f"S{a}/USDT" for a in range(assets)],
                      "feature_names": [f"f{k}" for k in range(features)], "shape": [bars, assets, features]})


def _memory() -> dict:
    """This process's resident memory by kind, MB (Linux /proc/self/status)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def child_env_rss(path: str) -> None:
    """Fresh process: build and step the env and the vector env over the mapped tensor; memory growth."""
    import gc

    import numpy as np

    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv

    tensor = FactorTensor.load(path, mmap=True)
    T, A, F = tensor.features.shape
    small = FactorTensor.from_arrays(np.zeros((64, A, F), np.float32), np.ones((64, A)), np.arange(64) * MINUTE)
    for make in (lambda t: CryptoTradingEnv(t, window=ENV_WINDOW), lambda t: CryptoTradingVectorEnv(t, ENV_VECTOR, window=ENV_WINDOW)):
        env = make(small)  # compile the kernels for this shape (code, not data)
        env.reset(seed=0)
        del env
    gc.collect()
    before = _memory()
    rng = np.random.default_rng(1)
    env = CryptoTradingEnv(tensor, window=ENV_WINDOW, episode_length=2_000)
    actions = rng.uniform(-1, 1, (ENV_STEPS, A + 1)).astype(np.float32)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for k in range(ENV_STEPS):
        _, _, term, trunc, _ = env.step(actions[k])
        if term or trunc:
            env.reset()
    single_s = time.perf_counter() - t0
    venv = CryptoTradingVectorEnv(tensor, ENV_VECTOR, window=ENV_WINDOW, episode_length=2_000)
    venv.reset(seed=0)
    batch = rng.uniform(-1, 1, (ENV_VECTOR, A + 1)).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(ENV_STEPS):
        venv.step(batch)
    vector_s = time.perf_counter() - t0
    after = _memory()
    print(json.dumps({"before": before, "after": after, "single_steps_per_s": ENV_STEPS / single_s,
                      "vector_env_steps_per_s": ENV_STEPS * ENV_VECTOR / vector_s,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "shape": [T, A, F]}))


def child_env_speed(path: str, ref_bars: int, repeats: int) -> None:
    """Fresh process: steps/s over the mapped tensor (page cache warmed by a first pass) and over an
    in-memory copy of its first ``ref_bars`` bars; the same start bar, actions and episode."""
    import numpy as np

    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs import CryptoTradingEnv, CryptoTradingVectorEnv

    mapped = FactorTensor.load(path, mmap=True)
    part = mapped.slice_bars(0, ref_bars)
    mem = FactorTensor.from_arrays(np.array(part.features), np.array(part.prices), np.array(part.timestamps),
                                   list(part.symbols), list(part.feature_names), np.array(part.tradable))
    A = mem.n_assets
    steps = min(ENV_STEPS, ref_bars - ENV_WINDOW - 1)
    v_steps = steps // 20
    actions = np.random.default_rng(2).uniform(-1, 1, (steps, A + 1)).astype(np.float32)
    batch = np.random.default_rng(3).uniform(-1, 1, (ENV_VECTOR, A + 1)).astype(np.float32)

    def single(t) -> float:
        env = CryptoTradingEnv(t, window=ENV_WINDOW, random_start=False, episode_length=steps)
        env.reset(seed=0)
        t0 = time.perf_counter()
        for k in range(steps):
            env.step(actions[k])
        return steps / (time.perf_counter() - t0)

    def vector(t) -> float:
        venv = CryptoTradingVectorEnv(t, ENV_VECTOR, window=ENV_WINDOW, random_start=False, episode_length=steps)
        venv.reset(seed=0)
        t0 = time.perf_counter()
        for _ in range(v_steps):
            venv.step(batch)
        return v_steps * ENV_VECTOR / (time.perf_counter() - t0)

    single(mapped), vector(mapped)  # compile, and read the mapped rows into the page cache
    best = {"single_mapped": 0.0, "single_memory": 0.0, "vector_mapped": 0.0, "vector_memory": 0.0}
    for _ in range(repeats):  # interleaved, best of: the machine is shared
        for name, t in (("mapped", mapped), ("memory", mem)):
            best[f"single_{name}"] = max(best[f"single_{name}"], single(t))
            best[f"vector_{name}"] = max(best[f"vector_{name}"], vector(t))
    print(json.dumps({**best, "steps": steps, "vector_steps": v_steps}))


def bench_env(bars: int, ref_bars: int, repeats: int) -> None:
    scratch = HERE.parent / ".benchmarks"  # (ignored by git; large files must not fill /tmp)
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="scale_env_", dir=scratch) as tmp:
        path = Path(tmp) / "tensor"
        t = time.perf_counter()
        write_big_tensor(path, bars, ENV_ASSETS, ENV_FEATURES)
        write_s = time.perf_counter() - t
        gb = bars * ENV_ASSETS * ENV_FEATURES * 4 / 1e9
        rss = run_child("env_rss", str(path))
        b, a = rss["before"], rss["after"]
        emit(f"env_mmap_{bars}x{ENV_ASSETS}x{ENV_FEATURES}_w{ENV_WINDOW}", "rss_anon_growth_mb", a["RssAnon"] - b["RssAnon"],
             goal=300, higher_is_better=False,
             reference={"features_gb": round(gb, 2), "steps_each": ENV_STEPS, "vector_envs": ENV_VECTOR,
                        "vm_rss_growth_mb": round(a["VmRSS"] - b["VmRSS"], 1),
                        "rss_file_growth_mb": round(a["RssFile"] - b["RssFile"], 1),
                        "rss_before_mb": round(b["VmRSS"], 1), "peak_rss_mb": round(rss["peak_rss_mb"], 1),
                        "single_steps_per_s": round(rss["single_steps_per_s"]),
                        "vector_env_steps_per_s": round(rss["vector_env_steps_per_s"]),
                        "writing_the_tensor_seconds": round(write_s, 1),
                        "note": "RssAnon: private memory; RssFile: mapped feature pages read (page cache, reclaimable)"})
        sp = run_child("env_speed", str(path), str(ref_bars), str(repeats))
        note = (f"in-memory reference: the first {ref_bars} bars copied into memory (same assets, features, window); "
                f"both start at the first bar, same actions; mapped pages warmed by a first pass")
        emit(f"env_mmap_single_w{ENV_WINDOW}_{ENV_ASSETS}x{ENV_FEATURES}", "steps_per_s_vs_in_memory",
             sp["single_mapped"] / sp["single_memory"], goal=0.8,
             reference={"mapped_steps_per_s": round(sp["single_mapped"]), "in_memory_steps_per_s": round(sp["single_memory"]),
                        "steps": sp["steps"], "mapped_bars": bars, "in_memory_bars": ref_bars, "note": note})
        emit(f"env_mmap_vector{ENV_VECTOR}_w{ENV_WINDOW}_{ENV_ASSETS}x{ENV_FEATURES}", "steps_per_s_vs_in_memory",
             sp["vector_mapped"] / sp["vector_memory"], goal=0.8,
             reference={"mapped_env_steps_per_s": round(sp["vector_mapped"]),
                        "in_memory_env_steps_per_s": round(sp["vector_memory"]), "vector_steps": sp["vector_steps"],
                        "mapped_bars": bars, "in_memory_bars": ref_bars, "note": note})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["build", "download", "env", "store"], help="run one group of figures only")
    ap.add_argument("--bars", type=int, default=525_600, help="1m bars per symbol in the out-of-core build")
    ap.add_argument("--symbols", type=int, default=20, help="symbols in the build figures")
    ap.add_argument("--ref-bars", type=int, default=131_400,
                    help="1m bars per symbol of the in-memory reference (the largest size both fit)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs for the speed ratio")
    ap.add_argument("--days", type=int, default=365, help="days of 1m bars per symbol in the download figure")
    ap.add_argument("--env-bars", type=int, default=200_000,
                    help="bars of the memory-mapped env tensor (x 10 assets x 512 features float32; 200,000 = 4.1 GB)")
    ap.add_argument("--env-ref-bars", type=int, default=20_000, help="bars of the in-memory reference tensor")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        mode, *rest = args.child
        if mode == "env_rss":
            child_env_rss(rest[0])
        elif mode == "env_speed":
            child_env_speed(rest[0], int(rest[1]), int(rest[2]))
        else:
            store, bars, symbols, out = rest
            child_build(mode, store, int(bars), int(symbols), out)
        return 0
    if args.only in (None, "build"):
        bench_build(args.bars, args.symbols, args.ref_bars, args.repeats)
    if args.only in (None, "download"):
        bench_download(args.days)
    if args.only in (None, "store"):
        bench_store()
    if args.only in (None, "env"):
        bench_env(args.env_bars, args.env_ref_bars, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
