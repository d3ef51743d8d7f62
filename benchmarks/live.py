"""Paper and live trading figures (JSON lines).

* ``decision_latency``: from a bar's close (its candles in hand) to its orders ready to send: the
  online feature row of the quickstart factor set (Qlib expressions included when the [qlib] extra is
  installed), the observation, a 2x64 MLP policy, and the order sizing through the env's own kernel
  (amount orders, as on a ccxt exchange); 4 symbols; exchange round trips excluded. Goal p99 <= 50 ms.
* ``replay_speed``: paper trading bars/s (LiveTradingEnv + PaperExchange; the event log as a replay
  writes it by default, synchronous=NORMAL, and with ``--durable``, an fsync per commit; both with the
  replay's group commit, one commit per ``REPLAY_GROUP_COMMIT`` batches, two batches a bar; best of 5,
  beside a commit per batch)
  beside ``backtest()``'s bars/s on the same bars, warm (best of 5, interleaved); goal >= 0.1x; over 400
  bars (all three log settings) and 2,000 bars (the default: the backtest's fixed cost per call fades). The reference also
  gives CPU-time figures (this process's, robust to other load) and the ratio against the
  backtest's first call (which loads its kernels: how the figure was taken before).
* the paper exchange's event-log figures (``benchmarks/_event_log_bench.py``), when present.

Run: ``python benchmarks/live.py`` (``--quick`` for fewer bars; ``--replay-only`` for the replay-speed
lines alone, the quick loop when working on the replay).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
HOUR = 3_600_000


def _emit(bench: str, case: str, metric: str, value: float, goal: float | None, meets: bool | None, reference: dict) -> None:
    print(json.dumps({"bench": bench, "case": case, "metric": metric, "value": value, "goal": goal,
                      "meets_goal": meets, "reference": reference}), flush=True)


def _candles(T: int, A: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0)) * (1 + np.arange(A))
    o = np.vstack([c[:1], c[:-1]])
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.005, (T, A)))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.005, (T, A)))
    v = rng.lognormal(8, 1, (T, A))
    return np.stack([o, h, lo, c, v], axis=-1)


def _quickstart_factor_set(qlib: bool) -> dict:
    from factorgym.agents.config import load_yaml
    from factorgym.agents.quickstart import BUILD_CONFIG, packaged_config

    raw = load_yaml(packaged_config(BUILD_CONFIG))
    factors = raw["factors"] if qlib else [f for f in raw["factors"] if f.get("kind") != "qlib"]
    return {"factors": factors, "normalise": raw["normalise"], "cross_sectional": raw.get("cross_sectional", "none")}


class MLP:
    """A 2 x 64 tanh MLP (the size of SB3's default policy net), numpy, float32."""

    def __init__(self, n_in: int, n_out: int) -> None:
        rng = np.random.default_rng(0)
        self.w = [rng.normal(0, 0.1, (n_in, 64)).astype(np.float32), rng.normal(0, 0.1, (64, 64)).astype(np.float32),
                  rng.normal(0, 0.1, (64, n_out)).astype(np.float32)]

    def __call__(self, obs):
        x = np.tanh(obs @ self.w[0])
        x = np.tanh(x @ self.w[1])
        return np.tanh(x @ self.w[2])


def _feed(x: np.ndarray, symbols: list[str]):
    T = x.shape[0]
    return SimpleNamespace(timestamps=np.arange(T, dtype=np.int64) * HOUR, prices=x, tradable=np.ones(x.shape[:2], bool),
                           symbols=symbols, meta={"timeframe": "1h"})


def decision_latency(n_bars: int, qlib: bool) -> None:
    from factorgym.data_layer.factors.online import OnlineFactors
    from factorgym.envs.live.candle_panel import CandlePanel
    from factorgym.envs.live.live_env import LiveTradingEnv

    A, W = 4, 8
    symbols = [f"S{i}/USDT" for i in range(A)]
    fs = _quickstart_factor_set(qlib)
    warm = 400
    x = _candles(warm + n_bars + 2, A)
    online = OnlineFactors(fs, symbols)
    F = len(online.feature_names)

    class NoExchange:  # the sizing needs no exchange call; reset reads the candles and balance once
        id = "bench"
        events = None

        def __init__(self):
            self.now = (warm + 1) * HOUR

        def load_markets(self, reload=False):
            return {}

        def fetch_ohlcv(self, symbol, timeframe="1h", since=None, limit=None):
            i = symbols.index(symbol)
            lo = int(since or 0) // HOUR
            hi = self.now // HOUR + 1  # closed bars and the forming one
            return [[k * HOUR, *x[k, i].tolist()] for k in range(lo, min(hi, lo + (limit or 10**9)))]

        def fetch_balance(self):
            return {"total": {"USDT": 10_000.0}}

    class Clock:
        def now_ms(self):
            return ex.now

        def wait_for_close(self, bar_ts, tf):
            pass

    ex = NoExchange()
    env = LiveTradingEnv(ex, symbols=symbols, feature_names=online.feature_names, timeframe="1h", window=W,
                         online=lambda ts, bar, ok: (online.update(ts, bar, ok), online.tradable.copy()), clock=Clock(),
                         env_kwargs={"mapping": "simplex"}, market_rules={}, order_mode="amounts")
    obs, _ = env.reset()
    policy = MLP(obs.shape[0], A + 1)
    for _ in range(20):  # compile and warm caches
        env.plan_orders(policy(obs))
    times, own = [], []
    qlib_s, n_expr = [0.0], 0
    for o in online._online:  # time the Qlib expressions' share of the feature row
        if type(o).__name__ == "QlibOnlineFactor":
            n_expr += len(o.factor.names)

            def timed(ts, bar, _update=o.update):
                t = time.perf_counter()
                try:
                    return _update(ts, bar)
                finally:
                    qlib_s[0] += time.perf_counter() - t

            o.update = timed
    for k in range(n_bars):
        t = warm + 1 + k  # bar t closes: its candles arrive (fetched before the clock starts: round trips excluded)
        fetched = CandlePanel(np.array([t * HOUR]), x[t:t + 1].copy())
        t0 = time.perf_counter()
        env._feed(t * HOUR, fetched)
        t1 = time.perf_counter()
        env._forming = {i: float(x[t + 1, i, 0]) for i in range(A)}
        obs = env._obs()
        orders = env.plan_orders(policy(obs))
        times.append(time.perf_counter() - t0)
        own.append(time.perf_counter() - t1)
        assert isinstance(orders, list)
    ms = np.array(times) * 1000
    p99 = float(np.percentile(ms, 99))
    loop_p99 = float(np.percentile(np.array(own) * 1000, 99))
    kind = "TA-Lib + custom + Qlib expressions" if qlib else "TA-Lib + custom (no [qlib] extra)"
    _emit("live", f"{A} symbols, {F} quickstart features ({kind}), window {W}, 2x64 MLP", "decision_latency_p99_ms",
          round(p99, 3), 50.0, p99 <= 50.0, {"p50_ms": round(float(np.median(ms)), 3), "max_ms": round(float(ms.max()), 3),
                                              "bars": n_bars, "obs_policy_sizing_p99_ms": round(loop_p99, 3),
                                              "qlib_expressions": n_expr,
                                              "qlib_ms_per_expression": round(qlib_s[0] * 1000 / max(n_expr, 1) / n_bars, 3)})


def replay_speed(n_bars: int, cases: tuple[str, ...] = ("one", "default", "durable")) -> None:
    from factorgym.data_layer.build import build_tensor_from_candles
    from factorgym.data_layer.factors.online import OnlineFactors
    from factorgym.envs.backtest import backtest
    from factorgym.envs.live.live_env import LiveTradingEnv, ReplayClock
    from factorgym.agents.live.runner import REPLAY_GROUP_COMMIT, quiet_gc
    from factorgym.envs.live.paper import PaperExchange
    import pandas as pd

    A, W = 4, 8
    symbols = [f"S{i}/USDT" for i in range(A)]
    fs = {"factors": [{"kind": "talib", "name": "RSI", "params": {"timeperiod": 14}},
                      {"kind": "custom", "name": "log_return", "params": {"periods": 1}}],
          "normalise": {"method": "expanding", "min_periods": 50, "clip": 5.0}}
    T = 200 + n_bars
    x = _candles(T, A, seed=1)
    candles = {s: pd.DataFrame({"timestamp": np.arange(T, dtype=np.int64) * HOUR,
                                **{f: x[:, i, k] for k, f in enumerate(["open", "high", "low", "close", "volume"])}})
               for i, s in enumerate(symbols)}
    tensor = build_tensor_from_candles(candles, "1h", fs)
    start, end = tensor.n_bars - n_bars, tensor.n_bars
    obs_dim = W * A * tensor.n_features + W * A + A + 3
    policy = MLP(obs_dim, A + 1)
    t0 = time.perf_counter()
    res = backtest(tensor, policy, start=start, end=end, window=W, mapping="simplex")  # (first call: loads the kernels)
    first_rate = (len(res.equity) - 1) / (time.perf_counter() - t0)
    bt_rate, bt_cpu_rate = 0.0, 0.0

    def warm_backtest() -> None:
        """One warm backtest; keeps the best rates (wall clock and CPU time of this process)."""
        nonlocal bt_rate, bt_cpu_rate
        t0, c0 = time.perf_counter(), time.process_time()
        res = backtest(tensor, policy, start=start, end=end, window=W, mapping="simplex")
        bt_rate = max(bt_rate, (len(res.equity) - 1) / (time.perf_counter() - t0))
        bt_cpu_rate = max(bt_cpu_rate, (len(res.equity) - 1) / max(time.process_time() - c0, 1e-9))

    def replay(durable: bool, bars: int, group_commit: int = REPLAY_GROUP_COMMIT) -> tuple[int, float, float]:
        """(bars, wall s, CPU s) of a paper replay of the last ``bars`` bars, as ``factorgym paper --replay``
        writes its log (group commit)."""
        with tempfile.TemporaryDirectory() as d:
            ex = PaperExchange(_feed(x, symbols), initial_cash=10_000.0, state_dir=d, durable=durable,
                               group_commit=group_commit)
            ex.advance(int(tensor.timestamps[end - bars]) + HOUR)
            online = OnlineFactors.from_tensor(tensor)
            env = LiveTradingEnv(ex, symbols=symbols, feature_names=list(tensor.feature_names), timeframe="1h", window=W,
                                 online=lambda ts, bar, ok: (online.update(ts, bar, ok), online.tradable.copy()),
                                 clock=ReplayClock(ex), env_kwargs={"mapping": "simplex"}, market_rules={})
            obs, _ = env.reset()
            quiet_gc()  # (as factorgym paper's loop does)
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                n = 0
                while env.bar_ts < int(tensor.timestamps[end - 1]):
                    obs, *_ = env.step(policy(obs))
                    n += 1
                ex.close()  # (the last group's commit is part of the replay)
                return n, time.perf_counter() - t0, time.process_time() - c0
            finally:
                gc.unfreeze()

    replay(False, 20)  # (loads the paper exchange's kernels, as the backtest's first call does its own)
    best: dict[str, tuple[int, float, float]] = {}
    for _ in range(5):  # the best of 5 of each, the backtest interleaved with them (robust to the machine's other load)
        warm_backtest()
        for case, durable, group in (("one", False, 1), ("default", False, None), ("durable", True, None)):
            if case not in cases:
                continue
            n, wall, cpu = replay(durable, n_bars, *(() if group is None else (group,)))
            was = best.get(case, (n, wall, cpu))
            best[case] = (n, min(wall, was[1]), min(cpu, was[2]))
    n1, wall1, cpu1 = best.get("one", (1, 0.0, 0.0))  # (the reference: a commit per batch)
    for durable in (False, True):
        if ("durable" if durable else "default") not in cases:
            continue
        n, wall, cpu = best["durable" if durable else "default"]
        rate, cpu_rate = n / wall, n / max(cpu, 1e-9)
        ratio = rate / bt_rate
        log = (f"--durable (synchronous=FULL, fsync per commit, a commit per {REPLAY_GROUP_COMMIT} batches)" if durable
               else f"replay default (synchronous=NORMAL, a commit per {REPLAY_GROUP_COMMIT} batches)")
        _emit("live", f"paper replay, {A} symbols, {n} bars, event log {log}", "bars_per_s", round(rate, 1),
              round(0.1 * bt_rate, 1), ratio >= 0.1,
              {"backtest_bars_per_s": round(bt_rate, 1), "ratio": round(ratio, 4),
               "ms_per_bar": round(1000 / rate, 3), "cpu_ms_per_bar": round(1000 / cpu_rate, 3),
               "backtest_cpu_ms_per_bar": round(1000 / bt_cpu_rate, 3), "cpu_ratio": round(cpu_rate / bt_cpu_rate, 4),
               "ratio_vs_first_backtest_call": round(rate / first_rate, 4)}
              | ({} if durable or "one" not in cases else {"group_commit_1_ms_per_bar": round(1000 * wall1 / n1, 3),
                                     "group_commit_1_cpu_ms_per_bar": round(1000 * cpu1 / n1, 3)}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer bars")
    ap.add_argument("--replay-only", action="store_true", help="only the replay-speed lines (paper replay vs backtest)")
    args = ap.parse_args(argv)
    if args.replay_only:
        replay_speed(100 if args.quick else 400)
        if not args.quick:  # (a test split of a year of hourly bars is ~1,300 bars: the backtest's fixed cost fades)
            replay_speed(2000, cases=("default",))
        return 0
    decision_latency(200 if args.quick else 1000, qlib=False)
    if importlib.util.find_spec("qlib"):
        decision_latency(200 if args.quick else 500, qlib=True)
    replay_speed(100 if args.quick else 400)
    if not args.quick:
        replay_speed(2000, cases=("default",))
    if (Path(__file__).resolve().parent / "_event_log_bench.py").is_file():
        import _event_log_bench

        for row in _event_log_bench.run():
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
