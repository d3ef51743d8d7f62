"""Download throughput (bars/s) from the loopback fake exchange, beside raw HTTP GETs of the same pages.

Cases, each a fresh store, 2 symbols x 20,000 hourly bars (40 pages of 1,000):

- ``no_faults``: ccxt.binance + page checks + validation + Parquet writes, rate limiter at 1 ms
  (our overhead, comparable with the reference);
- ``faults_20pct``: the same with 20% of requests faulted (all kinds; 0.3 s timeouts; 10 ms backoff);
- ``binance_rate_limit``: no faults, ccxt's real Binance rate limit (what a user waits for).

Reference, measured in the same run: ``urllib`` GETs of the same pages plus ``json.loads`` and a
numpy conversion (no ccxt, no checks, no store). Goal: ``no_faults`` at least half the reference.
Each figure is the best of :data:`REPEATS` runs, interleaved.

Run: ``python benchmarks/_ingest_download.py`` (one JSON line per figure).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "tests") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "tests"))  # the fake exchange lives with the tests

N_BARS = 20_000
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
HOUR_MS = 3_600_000
REPEATS = 2


def _raw_http_bars_per_s(url: str, start: int, stop: int) -> float:
    import numpy as np

    t0, bars = time.perf_counter(), 0
    for sym in SYMBOLS:
        since = start
        while since < stop:
            q = f"{url}/api/v3/klines?symbol={sym.replace('/', '')}&interval=1h&startTime={since}&limit=1000"
            with urllib.request.urlopen(q, timeout=10) as resp:
                rows = json.loads(resp.read())
            arr = np.array([[r[0], *map(float, r[1:6])] for r in rows if r[0] < stop])
            bars += len(arr)
            if len(arr) == 0:
                break
            since = int(arr[-1, 0]) + HOUR_MS
    return bars / (time.perf_counter() - t0)


def _download_bars_per_s(fx, start: int, *, fault_rate: float, rate_limit_ms: int | None) -> tuple[float, dict]:
    from factorgym.data_layer.download import download
    from factorgym.data_layer.sources.ccxt_source import CcxtSource

    fx.fault_rate = fault_rate
    fx.reset_counts()
    api = {"timeout": 250}
    if rate_limit_ms is not None:
        api["rateLimit"] = rate_limit_ms
    src = CcxtSource("binance", base_url=fx.url, api_options=api, backoff_base=0.01, backoff_cap=0.05,
                     progress=False, seed=0, max_retries=12)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        summary = download("binance", SYMBOLS, "1h", start, store=root, source=src)
        elapsed = time.perf_counter() - t0
    if summary.new_bars != len(SYMBOLS) * N_BARS:
        raise RuntimeError(f"benchmark download stored {summary.new_bars} bars, expected {len(SYMBOLS) * N_BARS}")
    return summary.new_bars / elapsed, dict(fx.fault_counts)


def bench_download() -> list[dict]:
    from fake_exchange import FakeExchange

    import factorgym.data_layer.download  # noqa: F401 - import time is not download time
    import factorgym.data_layer.store  # noqa: F401
    import factorgym.data_layer.validate  # noqa: F401

    out = []
    with FakeExchange(fault_rate=0.0, timeout_sleep=0.3, seed=1) as fx:
        stop = (fx.now_ms // HOUR_MS) * HOUR_MS
        start = stop - N_BARS * HOUR_MS
        _raw_http_bars_per_s(fx.url, stop - 2000 * HOUR_MS, stop)  # warm up
        # best of REPEATS, interleaved with the cases, so a busy shared machine skews both alike
        reference, results = 0.0, {}
        cases = [("no_faults", 0.0, 1), ("faults_20pct", 0.2, 1), ("binance_rate_limit", 0.0, None)]
        for _ in range(REPEATS):
            reference = max(reference, _raw_http_bars_per_s(fx.url, start, stop))
            for case, rate, rl in cases:
                value, faults = _download_bars_per_s(fx, start, fault_rate=rate, rate_limit_ms=rl)
                if value > results.get(case, (0.0, {}))[0]:
                    results[case] = (value, faults)
        for case, _, _ in cases:
            value, faults = results[case]
            goal = reference / 2 if case == "no_faults" else None
            line = {"bench": "ingest_download", "case": case, "metric": "bars_per_s", "value": round(value, 1),
                    "goal": None if goal is None else round(goal, 1),
                    "meets_goal": None if goal is None else bool(value >= goal),
                    "reference": {"raw_http_json_bars_per_s": round(reference, 1)}}
            if faults:
                line["faults_injected"] = faults
            out.append(line)
    return out


if __name__ == "__main__":
    for figure in bench_download():
        print(json.dumps(figure), flush=True)
