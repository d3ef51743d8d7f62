"""download(): resumable, idempotent, fault-proof downloads into the store, and the CLI around it.

The reference answer is the fake exchange's own row function: a download must store exactly the
closed bars ``kline_row`` defines, with no duplicate and no missing bar, however often the network
fails, and however the process is killed and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fake_exchange import FAULT_KINDS, HOUR_MS, MARKETS, FakeExchange, kline_row
from factorgym.data_layer.download import download
from factorgym.data_layer.sources.ccxt_source import CcxtSource
from factorgym.data_layer.store import CandleStore
from factorgym.errors import ConfigError

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
N_BARS = 3000


@pytest.fixture
def fx():
    with FakeExchange(fault_rate=0.0, timeout_sleep=0.9) as server:
        yield server


def fast_source(fx, **kw) -> CcxtSource:
    opts = dict(base_url=fx.url, api_options={"timeout": 600, "rateLimit": 1}, backoff_base=0.001,
                backoff_cap=0.01, progress=False, seed=0, page_limit=100)
    opts.update(kw)
    return CcxtSource("binance", **opts)


def closed_cutoff(fx) -> int:
    return (fx.now_ms // HOUR_MS) * HOUR_MS


def store_contents(root: Path) -> dict:
    """Every stored Parquet table (as a frame) and JSON file, by relative path; temp files ignored."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.name.startswith(".") or not p.is_file():
            continue
        rel = str(p.relative_to(root))
        out[rel] = pq.read_table(p).to_pandas() if p.suffix == ".parquet" else json.loads(p.read_text())
    return out


def assert_same_store(a: Path, b: Path) -> None:
    ca, cb = store_contents(a), store_contents(b)
    assert sorted(ca) == sorted(cb)
    for key in ca:
        if isinstance(ca[key], pd.DataFrame):
            pd.testing.assert_frame_equal(ca[key], cb[key], check_exact=True)
        else:
            assert ca[key] == cb[key], key


def assert_exact_bars(store: CandleStore, symbol: str, start: int, stop: int) -> None:
    """Stored bars are exactly the exchange's closed bars in [start, stop): none missing, none twice."""
    got = store.read("binance", symbol, "1h")
    want = [kline_row(MARKETS[symbol], t, HOUR_MS) for t in range(start, stop, HOUR_MS)]
    want = np.array([[r[0], *map(float, r[1:6])] for r in want])
    np.testing.assert_array_equal(got[["timestamp", "open", "high", "low", "close", "volume"]].to_numpy(), want)


def test_download_under_faults_equals_fault_free_download(fx, tmp_path):
    start = closed_cutoff(fx) - N_BARS * HOUR_MS
    clean = download("binance", SYMBOLS, "1h", start, store=tmp_path / "clean", source=fast_source(fx))
    assert sum(fx.fault_counts.values()) == 0 and clean.new_bars == 2 * N_BARS

    fx.fault_rate = 0.2
    fx.reset_counts()
    faulty = download("binance", SYMBOLS, "1h", start, store=tmp_path / "faulty", source=fast_source(fx, seed=3))
    assert set(fx.fault_counts) == set(FAULT_KINDS), fx.fault_counts  # every kind was really injected
    n_faults = sum(fx.fault_counts.values())
    # each one seen and retried (>=: on a busy machine a slow answer can also time out)
    assert sum(v for k, v in faulty.stats.items() if k != "requests") >= n_faults
    assert_same_store(tmp_path / "clean", tmp_path / "faulty")
    store = CandleStore(tmp_path / "faulty")
    for sym in SYMBOLS:
        assert_exact_bars(store, sym, start, closed_cutoff(fx))
    assert [s.gaps for s in faulty.symbols] == [[], []]
    rules = store.read_rules("binance", "BTC/USDT")
    assert rules.origin == "ccxt:binance" and rules.price_step == 0.01 and rules.min_notional == 5.0


def test_resume_fetches_only_new_bars_and_rerun_changes_nothing(fx, tmp_path):
    start = closed_cutoff(fx) - 500 * HOUR_MS
    root = tmp_path / "store"
    first = download("binance", ["BTC/USDT"], "1h", start, store=root, source=fast_source(fx, page_limit=1000))
    assert first.new_bars == 500
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}

    fx.reset_counts()
    again = download("binance", ["BTC/USDT"], "1h", start, store=root, source=fast_source(fx, page_limit=1000))
    assert again.new_bars == 0 and fx.klines_requests() == []
    parquet = [p for p in files if p.suffix == ".parquet"]
    assert all(before[p][1] == p.stat().st_mtime_ns for p in parquet)  # not rewritten at all
    assert all(before[p][0] == p.read_bytes() for p in files)

    fx.now_ms += 50 * HOUR_MS  # 50 more bars close on the exchange
    fx.reset_counts()
    later = download("binance", ["BTC/USDT"], "1h", start, store=root, source=fast_source(fx, page_limit=1000))
    queries = fx.klines_requests()
    assert later.new_bars == 50 and len(queries) == 1
    assert int(queries[0]["startTime"]) == closed_cutoff(fx) - 50 * HOUR_MS  # right after the newest stored bar
    assert later.symbols[0].requested_from == int(queries[0]["startTime"])
    assert_exact_bars(CandleStore(root), "BTC/USDT", start, closed_cutoff(fx))


def test_forming_candle_is_never_stored(fx, tmp_path):
    cutoff = closed_cutoff(fx)
    root = tmp_path / "store"
    download("binance", ["ETH/USDT"], "1h", cutoff - 20 * HOUR_MS, until=cutoff + 10 * HOUR_MS, store=root,
             source=fast_source(fx))
    stored = CandleStore(root).read("binance", "ETH/USDT", "1h")
    assert stored["timestamp"].max() == cutoff - HOUR_MS
    # once the bar has closed, a later run stores its final values, not the partial ones served before
    fx.now_ms = cutoff + HOUR_MS + 1
    download("binance", ["ETH/USDT"], "1h", cutoff - 20 * HOUR_MS, store=root, source=fast_source(fx))
    stored = CandleStore(root).read("binance", "ETH/USDT", "1h")
    final = kline_row(MARKETS["ETH/USDT"], cutoff, HOUR_MS)
    partial = kline_row(MARKETS["ETH/USDT"], cutoff, HOUR_MS, now_ms=cutoff + HOUR_MS // 2)
    row = stored[stored["timestamp"] == cutoff].iloc[0]
    assert row["close"] == float(final[4]) and row["volume"] == float(final[5]) != float(partial[5])


def test_exchange_gaps_are_reported_never_filled(fx, tmp_path):
    cutoff = closed_cutoff(fx)
    a = cutoff - 100 * HOUR_MS
    fx.gaps["BTC/USDT"] = [(a, a + 7 * HOUR_MS)]
    summary = download("binance", ["BTC/USDT"], "1h", cutoff - 300 * HOUR_MS, store=tmp_path, source=fast_source(fx))
    assert summary.symbols[0].gaps == [(a, 7)] and summary.symbols[0].rows == 293
    ts = CandleStore(tmp_path).read("binance", "BTC/USDT", "1h")["timestamp"].to_numpy()
    assert not ((ts >= a) & (ts < a + 7 * HOUR_MS)).any()
    assert "1 gap(s) / 7 missing bar(s)" in "\n".join(summary.lines())


def test_bad_arguments_fail_before_any_download(fx, tmp_path):
    with pytest.raises(ConfigError, match="no market 'BTC/EUR'"):
        download("binance", ["BTC/USDT", "BTC/EUR"], "1h", "2023-01-01", store=tmp_path, source=fast_source(fx))
    assert fx.klines_requests() == [] and not any(tmp_path.rglob("*.parquet"))
    with pytest.raises(ConfigError, match="no symbols"):
        download("binance", " , ", "1h", "2023-01-01", store=tmp_path, source=fast_source(fx))
    with pytest.raises(ConfigError, match="not after"):
        download("binance", ["BTC/USDT"], "1h", "2023-02-01", until="2023-01-01", store=tmp_path, source=fast_source(fx))


def _cli(fx, root: Path, start: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "factorgym", "download", "--exchange", "binance", "--symbols", ",".join(SYMBOLS),
            "--timeframe", "1h", "--since", str(start), "--store", str(root), "--base-url", fx.url,
            "--page-limit", "100", "--timeout", "600", "--no-progress", *extra]


def test_sigkill_midway_then_restart_gives_the_same_store(fx, tmp_path, subprocess_env):
    start = closed_cutoff(fx) - N_BARS * HOUR_MS
    download("binance", SYMBOLS, "1h", start, store=tmp_path / "ref", source=fast_source(fx))

    root = tmp_path / "killed"
    fx.delay = 0.05
    proc = subprocess.Popen(_cli(fx, root, start), env=subprocess_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    store = CandleStore(root)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            last = store.last_timestamp("binance", "BTC/USDT", "1h") if store.has("binance", "BTC/USDT", "1h") else None
            if last is not None and last >= start + 1000 * HOUR_MS:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = store.last_timestamp("binance", "BTC/USDT", "1h")
    assert killed_at < closed_cutoff(fx) - HOUR_MS  # really stopped mid-way
    assert not store.has("binance", "ETH/USDT", "1h")

    fx.delay, fx.fault_rate = 0.0, 0.2
    fx.reset_counts()
    done = subprocess.run(_cli(fx, root, start, "--max-retries", "12"), env=subprocess_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first_btc = next(q for q in fx.klines_requests() if q["symbol"] == "BTCUSDT")
    assert int(first_btc["startTime"]) > killed_at  # resumed, not restarted
    assert "BTC/USDT: +" in done.stdout and "0 gap(s)" in done.stdout
    assert_same_store(tmp_path / "ref", root)
    for sym in SYMBOLS:
        assert_exact_bars(store, sym, start, closed_cutoff(fx))


def test_cli_errors_are_one_line_and_help_explains_every_option(fx, tmp_path, subprocess_env):
    bad = subprocess.run(
        [sys.executable, "-m", "factorgym", "download", "--symbols", "FOO/BAR", "--since", "2023-01-01",
         "--store", str(tmp_path), "--base-url", fx.url, "--no-progress"],
        env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "FOO/BAR" in lines[0] and "Traceback" not in bad.stderr
    import argparse

    from factorgym.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["download"]
    helptext = sub.format_help()  # what `factorgym download --help` prints (the child above proved the entry point)
    for opt in ("--exchange", "--symbols", "--timeframe", "--since", "--until", "--store", "--base-url",
                "--max-retries", "--page-limit", "--timeout", "--no-progress"):
        assert opt in helptext, opt
    assert "loopback fake exchange" in helptext


def test_fake_exchange_runs_as_a_process(subprocess_env):
    import urllib.request

    script = Path(__file__).with_name("fake_exchange.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--fault-rate", "0", "--delay", "0.01"],
                            env=subprocess_env, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/api/v3/time", timeout=10) as resp:
            assert json.loads(resp.read())["serverTime"] > 1_600_000_000_000
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.mark.slow
def test_soak_many_symbols_heavy_faults_and_crashes(fx, tmp_path, monkeypatch):
    """Five symbols x 20,000 bars at 35% faults; the run crashes after a random number of batch writes
    and is restarted until it completes. The store must be exactly the exchange's closed bars."""
    import random

    import factorgym.data_layer.download as download_module

    monkeypatch.setattr(download_module, "FLUSH_ROWS", 3000)  # many batches, so crashes land mid-symbol

    class CrashingStore(CandleStore):
        writes_left = 0

        def write(self, *args, **kwargs):
            added = super().write(*args, **kwargs)
            CrashingStore.writes_left -= 1
            if CrashingStore.writes_left <= 0:
                raise KeyboardInterrupt("simulated crash after a page write")
            return added

    fx.fault_rate = 0.35
    start = closed_cutoff(fx) - 20_000 * HOUR_MS
    syms = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC", "NEW/USDT"]
    rng, crashes = random.Random(7), 0
    while True:
        CrashingStore.writes_left = rng.randint(1, 12)
        try:
            summary = download("binance", syms, "1h", start, store=CrashingStore(tmp_path),
                               source=fast_source(fx, page_limit=1000, max_retries=20))
            break
        except KeyboardInterrupt:
            crashes += 1
    assert crashes >= 3
    store = CandleStore(tmp_path)
    for sym in syms[:4]:
        assert_exact_bars(store, sym, start, closed_cutoff(fx))
    first_new = -(-MARKETS["NEW/USDT"].listed_ms // HOUR_MS) * HOUR_MS
    assert_exact_bars(store, "NEW/USDT", first_new, closed_cutoff(fx))
    assert all(not s.gaps for s in summary.symbols)
