"""Qlib factor benchmarks: bare ``D.features`` vs our whole Alpha158 build, and online row latency.

Run: ``.venv/bin/python benchmarks/_factors_qlib.py`` (prints one JSON line per figure).

1. ``bare_dfeatures``: Qlib's ``D.features`` of the Alpha158 fields over a prepared provider
   directory (20 symbols x 17,520 hourly bars, synthetic and seeded) -- the floor.
2. ``full_build``: our whole build of the same data (provider writing, Qlib, alignment,
   normalisation, tensor assembly, save) through ``build_tensor_from_candles``. Goal <= 1.5 x (1),
   both measured in this run.
3. ``online_row``: Alpha158 online row latency per bar for 4 symbols (all assets evaluated in
   one pass). Goal <= 50 ms. Reference in the same run: the per-asset path (one Qlib evaluation
   per asset, what the online path did before); both paths' rows are checked equal bit for bit
   and against the offline tensor rows.

``kernels=1`` everywhere (the shared CI machines have 2 cores).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_SYMBOLS, N_BARS, ONLINE_SYMBOLS, ONLINE_BARS = 20, 17_520, 4, 60


def _candles(n_symbols: int, n_bars: int, seed: int = 7) -> dict:
    from factorgym.data_layer.sources.synthetic import synthetic_candles

    return synthetic_candles([f"S{i:02d}/USDT" for i in range(n_symbols)], "1h", "2022-01-01", n_bars, seed=seed)


def _line(case: str, metric: str, value: float, goal: float | None = None, better: str = "lower", **reference) -> dict:
    meets = None if goal is None else bool(value <= goal if better == "lower" else value >= goal)
    return {"bench": "factors_qlib", "case": case, "metric": metric, "value": round(float(value), 4), "goal": goal,
            "meets_goal": meets, "reference": reference}


def bench_qlib(n_symbols: int = N_SYMBOLS, n_bars: int = N_BARS) -> list[dict]:
    """Run the three measurements; returns the JSON-able result lines."""
    import os

    from factorgym.data_layer.build import align_candles, build_tensor_from_candles
    from factorgym.data_layer.factors import qlib_provider as qp
    from factorgym.data_layer.factors.base import CandlePanel
    from factorgym.data_layer.factors.qlib_factors import QlibSetFactor

    tmp = Path(tempfile.mkdtemp(prefix="fg_qlib_bench_"))
    os.environ["FACTORGYM_QLIB_CACHE"] = str(tmp / "cache")
    out: list[dict] = []
    try:
        candles = _candles(n_symbols, n_bars)
        ts, ohlcv, _ = align_candles(candles, "1h")
        panel = CandlePanel.from_arrays(ts, ohlcv, list(candles), "1h")
        fields = QlibSetFactor("alpha158").exprs
        n_values = panel.n_bars * panel.n_assets * len(fields)

        # (1) bare D.features on a prepared provider directory (written outside the timing)
        prov = qp.write_provider(panel, tmp / "prepared")
        qp.ensure_qlib(prov.path)
        qp.clear_feature_cache()
        from qlib.data import D

        t0 = time.perf_counter()
        D.features(prov.live_instruments, fields, freq=prov.freq)
        bare = time.perf_counter() - t0

        # (2) our whole build: cold provider cache, compute, align, normalise, save
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        qp.clear_feature_cache()
        t0 = time.perf_counter()
        tensor = build_tensor_from_candles(candles, "1h", "alpha158")
        tensor.save(tmp / "tensor")
        full = time.perf_counter() - t0
        case = f"alpha158_{n_symbols}x{n_bars}"
        out.append(_line(case, "bare_dfeatures_s", bare, values_per_s=round(n_values / bare)))
        out.append(_line(case, "full_build_s", full, goal=round(1.5 * bare, 3),
                         values_per_s=round(n_values / full), bare_dfeatures_s=round(bare, 3),
                         ratio_to_bare=round(full / bare, 3)))

        # (3) online alpha158 rows for 4 symbols: the batched path (all assets in one pass) against
        # the per-asset reference path, interleaved bar by bar so machine noise hits both alike;
        # their rows must agree bit for bit and match the offline tensor rows
        f = QlibSetFactor("alpha158")
        syms = panel.symbols[:ONLINE_SYMBOLS]
        t0 = time.perf_counter()
        on = f.online(syms)
        build_s = time.perf_counter() - t0  # includes the one-off check of the batched plan
        ref = f.online(syms, batched=False)
        bars = panel.ohlcv()[:, :ONLINE_SYMBOLS]
        for t in range(f.history):  # fill the windows (not timed)
            on.update(int(ts[t]), bars[t]), ref.update(int(ts[t]), bars[t])
        lat, lat_ref, rows = [], [], []
        for t in range(f.history, f.history + ONLINE_BARS):
            t0 = time.perf_counter()
            row = on.update(int(ts[t]), bars[t])
            t1 = time.perf_counter()
            row_ref = ref.update(int(ts[t]), bars[t])
            lat_ref.append(time.perf_counter() - t1)
            lat.append(t1 - t0)
            if not np.array_equal(row, row_ref, equal_nan=True):
                raise AssertionError(f"batched and per-asset online rows differ at bar {t}")
            rows.append(row)
        offline = f.compute(panel.select(list(range(ONLINE_SYMBOLS))).slice(0, f.history + ONLINE_BARS))[f.history:]
        online = np.stack(rows).astype(np.float32)
        if not np.allclose(online, offline.astype(np.float32), rtol=1e-5, atol=1e-5, equal_nan=True):
            raise AssertionError("online rows differ from the offline tensor rows")
        lat_ms, ref_ms = np.array(lat) * 1e3, np.array(lat_ref) * 1e3
        out.append(_line(f"alpha158_online_{ONLINE_SYMBOLS}sym", "ms_per_bar_median", float(np.median(lat_ms)), goal=50.0,
                         p95_ms=round(float(np.percentile(lat_ms, 95)), 3), window_bars=f.history,
                         per_asset_ms_per_bar_median=round(float(np.median(ref_ms)), 3),
                         speedup_vs_per_asset=round(float(np.median(ref_ms) / np.median(lat_ms)), 2),
                         online_build_s=round(build_s, 3), rows_equal_per_asset=True, rows_match_offline=True))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    small = "--small" in sys.argv  # quick smoke run: 4 symbols x 2,000 bars
    for line in bench_qlib(4, 2_000) if small else bench_qlib():
        print(json.dumps(line))
