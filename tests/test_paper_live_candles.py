"""``factorgym paper --exchange``: paper trading on a real exchange's live candles (ccxt's real binance
class against the loopback fake, whose clock the test drives: one bar per look at the server time).

The reference is independent of the run: the candles are rebuilt from the fake's own price function,
a dropped bar marked as the store marks gaps, a tensor built from them by the data layer, and
``backtest()`` run over it. The paper run must take the same actions on identical observations
(hashes) and end every bar with the same equity (<= 1e-9 relative). A candle the exchange revises
after it was used is a ``candle_revised`` event and changes nothing; killed and restarted, the run
neither doubles a fill nor ends elsewhere; faults on the candle requests change nothing either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_live_env import FACTOR_SET
from test_paper_cli import REPO, _env, _n_events, trained  # noqa: F401 - the module's trained bundle fixture
from tests.fake_exchange import MARKETS, FakeExchange, kline_row

HOUR = 3_600_000
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
GAP = ("SOL/USDT", 3)      # symbol, bars after the first decision bar: never delivered
REVISED = ("BTC/USDT", 2)  # revised by the exchange after the run used it


def _fake(**kw) -> FakeExchange:
    fx = FakeExchange(fault_rate=0.0, **kw)
    fx.time_step_ms = HOUR
    last_closed = (fx.now_ms - 2_000) // HOUR * HOUR - HOUR  # the first decision bar (the run's first look)
    fx.gaps = {GAP[0]: [(last_closed + GAP[1] * HOUR, last_closed + (GAP[1] + 1) * HOUR)]}
    return fx


def _events(state: Path, kind: str | None = None):
    from factorgym.envs.live.events import EventLog

    log = EventLog(state / "events.sqlite", "paper")
    try:
        return [e for e in log if kind is None or e.kind == kind]
    finally:
        log.close()


def _reference(bundle, first: int, last_decision: int, n_steps: int, gap_ts: int):
    """backtest() over a tensor the data layer builds from the fake's candles of bars first..last_decision
    + n_steps (the gap bar marked as the store marks it): (equity, obs hashes, actions)."""
    from factorgym.agents.bundle import load_policy
    from factorgym.agents.live.market_data import LiveMarketData
    from factorgym.data_layer.build import build_tensor_from_candles
    from factorgym.envs.backtest import backtest

    end = last_decision + n_steps * HOUR
    candles = {}
    for sym in SYMBOLS:
        ts = np.arange(first, end + HOUR, HOUR, dtype=np.int64)
        rows = np.array([[float(x) for x in kline_row(MARKETS[sym], int(t), HOUR)[1:6]] for t in ts])
        df = pd.DataFrame({"timestamp": ts, **{c: rows[:, k] for k, c in enumerate(["open", "high", "low", "close",
                                                                                     "volume"])}})
        df["tradable"] = True
        if sym == GAP[0]:
            k = int((gap_ts - first) // HOUR)
            prev = df.loc[k - 1, "close"]
            df.loc[k, ["open", "high", "low", "close", "volume", "tradable"]] = [prev, prev, prev, prev, 0.0, False]
        candles[sym] = df
    with FakeExchange(fault_rate=0.0) as fx:  # the market rules the run used: the exchange's, through ccxt
        rules = LiveMarketData("binance", base_url=fx.url).market_rules(SYMBOLS, "1h")
    tensor = build_tensor_from_candles(candles, "1h", FACTOR_SET, rules=rules)
    policy = load_policy(bundle)
    kw = policy.spec.env_kwargs()
    start = int(np.searchsorted(tensor.timestamps, last_decision))
    assert tensor.timestamps[start] == last_decision
    hashes, actions = [], []

    def act(obs):
        a = policy(obs)
        hashes.append(hashlib.sha256(np.ascontiguousarray(obs, np.float32).tobytes()).hexdigest())
        actions.append(np.asarray(a, dtype=np.float64).reshape(-1).tolist())
        return a

    res = backtest(tensor, act, start=start, end=start + n_steps + 1, window=kw["window"], mapping=kw["mapping"],
                   execution=kw["execution"], initial_cash=kw["initial_cash"])
    assert (~tensor.tradable[start:start + n_steps + 1, SYMBOLS.index(GAP[0])]).sum() == 1
    return res, hashes, actions


def _check_parity(bundle, state: Path, n_steps: int, *, revised: bool = True) -> None:
    decisions = {}
    for d in _events(state, "decision"):  # (a decision cut short by a crash is taken again: the same one)
        seen = decisions.setdefault(d.data["bar_ts"], d)
        assert (seen.data["obs_hash"], seen.data["action"]) == (d.data["obs_hash"], d.data["action"])
    decisions = sorted(decisions.values(), key=lambda d: d.data["bar_ts"])
    bars = _events(state, "bar")
    candles = _events(state, "candle")
    first, last_decision = candles[0].data["bar_ts"], decisions[0].data["bar_ts"]
    gap_ts = last_decision + GAP[1] * HOUR
    assert len(bars) == n_steps and [b.data["bar_ts"] for b in bars] == [last_decision + (k + 1) * HOUR
                                                                         for k in range(n_steps)]
    res, hashes, actions = _reference(bundle, first, last_decision, n_steps, gap_ts)
    assert [d.data["obs_hash"] for d in decisions] == hashes[:n_steps]
    assert [d.data["action"] for d in decisions] == actions[:n_steps]
    np.testing.assert_allclose([b.data["equity"] for b in bars], res.equity[1:], rtol=1e-9, atol=0)
    assert len(res.trades) > 0 and _events(state, "reconcile") == []
    gap = next(c for c in candles if c.data["bar_ts"] == gap_ts)
    assert gap.data["bars"][SYMBOLS.index(GAP[0])] is None  # logged as not delivered
    if revised:
        rev = [e.data for e in _events(state, "candle_revised")]
        assert [(r["symbol"], r["bar_ts"]) for r in rev] == [(REVISED[0], last_decision + REVISED[1] * HOUR)]
        assert rev[0]["served"] != rev[0]["logged"]


def _open(bundle, state, fx, **kw):
    from factorgym.agents.live.runner import open_paper_live

    return open_paper_live(bundle, state, "binance", base_url=fx.url, durable=False, poll_s=0.01,
                           sleep=lambda s: None, **kw)


def test_live_candles_equal_backtest_with_a_gap_and_a_revised_candle(trained, tmp_path):  # noqa: F811
    from factorgym.agents.live.runner import run_loop

    _, _, bundle = trained
    n = 14
    with _fake() as fx:
        first_decision = (fx.now_ms - 2_000) // HOUR * HOUR - HOUR
        fx.revise(REVISED[0], first_decision + REVISED[1] * HOUR)
        env, policy, _ = _open(bundle, tmp_path / "state", fx)
        assert env.exchange.events.group_commit == 1  # (live candles: every batch committed before it is acted on)
        try:
            result = run_loop(env, policy, max_bars=n, out=None)
        finally:
            env.exchange.close()
    assert result.bars == n and result.stopped == "end"
    _check_parity(bundle, tmp_path / "state", n)


def test_status_and_state_at_need_no_exchange(trained, tmp_path, capsys):  # noqa: F811
    """The account is rebuilt from the log alone: a restart with the exchange gone, and state_at."""
    from factorgym.agents.live.runner import run_loop
    from factorgym.cli import main
    from factorgym.envs.live.candle_feed import CandleFeed
    from factorgym.envs.live.paper import PaperExchange

    _, _, bundle = trained
    with _fake() as fx:
        env, policy, _ = _open(bundle, tmp_path / "state", fx)
        run_loop(env, policy, max_bars=6, out=None)
        feed = env.exchange.feed
        prices, records, status = feed.prices.copy(), feed.records.copy(), env.exchange.status()
        mid = env.exchange.state_at(int(feed.timestamps[-3]))
        env.exchange.close()
    again = PaperExchange(CandleFeed(SYMBOLS, "1h", feed.meta), execution=env.exchange.execution,
                          initial_cash=10_000.0, state_dir=tmp_path / "state", durable=False)
    try:
        np.testing.assert_array_equal(again.feed.prices, prices)
        np.testing.assert_array_equal(again.feed.records, records)
        now = again.status()
        assert now.pop("events") > 0 and status.pop("events") > 0  # (the loop's own last event is not the book's)
        assert now == status and again.state_at(int(feed.timestamps[-3])) == mid
    finally:
        again.close()
    assert main(["paper", "status", "--state", str(tmp_path / "state"), "--json"]) == 0
    assert '"equity"' in capsys.readouterr().out


def test_state_of_another_run_is_refused(trained, tmp_path):  # noqa: F811
    from factorgym.errors import ConfigError

    _, tdir, bundle = trained
    with _fake() as fx:
        env, _, clock = _open(bundle, tmp_path / "state", fx, history=40)
        env.exchange.close()
        assert clock.source.source.exchange.enableRateLimit is True  # ccxt's own rate limiter is on
        assert len(clock.feed) == 40 and clock.feed.last_ts == env.exchange.now - HOUR  # --history bars, up to the last close
        with pytest.raises(ConfigError, match="exchange"):
            from factorgym.agents.live.runner import open_paper_live

            open_paper_live(bundle, tmp_path / "state", "okx", base_url=fx.url, durable=False)
        with pytest.raises(ConfigError, match="symbols"):
            _open(bundle, tmp_path / "state", fx, symbols=["ETH/USDT", "BTC/USDT", "SOL/USDT"])
        with pytest.raises(ConfigError, match="timeframe"):
            _open(bundle, tmp_path / "state", fx, timeframe="4h")
        from factorgym.agents.live.market_data import LiveMarketData

        with pytest.raises(ConfigError, match="no market 'DOGE/USDT'"):  # one line, before any candle request
            LiveMarketData("binance", base_url=fx.url).market_rules(["BTC/USDT", "DOGE/USDT"], "1h")
        other = tmp_path / "other_policy"  # a changed bundle counts as another policy
        shutil.copytree(bundle, other)
        (other / "bundle.json").write_text((other / "bundle.json").read_text() + "\n")
        with pytest.raises(ConfigError, match="policy"):
            _open(other, tmp_path / "state", fx)
    from factorgym.agents.live.runner import open_paper_replay

    with pytest.raises(ConfigError, match="not a replay"):
        open_paper_replay(bundle, tmp_path / "state", trained[1])


@pytest.mark.parametrize("seed", [0, 1])
def test_faults_on_candle_requests_change_nothing(trained, tmp_path, seed):  # noqa: F811
    """5xx, 429, timeouts, dropped connections and garbled pages on 20 % of the requests: the loop goes
    on and ends exactly where a fault-free run does."""
    from factorgym.agents.live.market_data import LiveMarketData
    from factorgym.agents.live.runner import run_loop

    _, _, bundle = trained
    n = 10
    kinds = ("429", "500", "502", "503", "504", "timeout", "disconnect", "truncated", "html", "nulls")
    with _fake(seed=seed, timeout_sleep=0.4, fault_kinds=kinds, retry_after=0) as fx:
        source = LiveMarketData("binance", base_url=fx.url, backoff_base=0.001, backoff_cap=0.01, max_retries=2,
                                sleep=lambda s: None)
        source.source.exchange.timeout = 200
        fx.fault_rate = 0.2
        env, policy, _ = _open(bundle, tmp_path / "state", fx, source=source)
        calls = []

        def pol(obs):  # mid-run, an outage longer than the source's own retries
            calls.append(1)
            if len(calls) == 3:
                fx.force_faults(["disconnect", "503", "timeout", "429", "500"])
            return policy(obs)

        try:
            result = run_loop(env, pol, max_bars=n, out=None)
        finally:
            env.exchange.close()
        on_candles = [f for p, _, f in fx.requests if p.endswith("/klines") and f is not None]
        assert len(on_candles) >= 8 and {"timeout", "disconnect", "429", "503"} <= set(fx.fault_counts), fx.fault_counts
        assert source.failures >= 1  # a call gave up after its retries and was tried again: the loop went on
    assert result.bars == n
    _check_parity(bundle, tmp_path / "state", n, revised=False)


def _cli_argv(bundle, state, fx, *extra):
    return [sys.executable, "-m", "factorgym", "paper", "--policy", str(bundle), "--state", str(state),
            "--exchange", "binance", "--symbols", ",".join(SYMBOLS), "--base-url", fx.url, "--poll", "0.01",
            "--fast-log", *extra]


def test_cli_live_candles_equal_backtest(trained, tmp_path):  # noqa: F811
    _, _, bundle = trained
    n = 8
    with _fake() as fx:
        fx.revise(REVISED[0], (fx.now_ms - 2_000) // HOUR * HOUR - HOUR + REVISED[1] * HOUR)
        r = subprocess.run(_cli_argv(bundle, tmp_path / "state", fx, "--max-bars", str(n)), capture_output=True,
                           text=True, cwd=REPO, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if " equity " in ln and "orders" in ln]
    assert len(lines) == n and f"paper: {n} bars on binance candles" in r.stdout
    _check_parity(bundle, tmp_path / "state", n)


def _killed_and_restarted(trained, tmp_path, kills: int, n: int):  # noqa: F811
    """Killed ``kills`` times at random moments while it trades, then restarted: no client id accepted
    twice, no fill twice, and every bar's equity equals the backtest's (the uninterrupted run's)."""
    _, _, bundle = trained
    rng = np.random.default_rng(kills)
    state = tmp_path / "state"
    with _fake() as fx:
        argv = _cli_argv(bundle, state, fx, "--quiet")
        landed = 0
        for _ in range(kills):
            before = _n_events(state)
            p = subprocess.Popen([*argv, "--max-bars", str(n)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 cwd=REPO, env=_env())
            deadline = time.monotonic() + 120
            while p.poll() is None and _n_events(state) <= before + 36 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(float(rng.uniform(0.0, 0.05)))
            if p.poll() is not None:
                assert p.returncode == 0, p.stderr.read().decode()
                break
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stderr.close()
            landed += 1
        # the rest: as many bars as the uninterrupted run took in all
        done = len(_events(state, "bar"))
        r = subprocess.run([*argv, "--max-bars", str(n - done)], capture_output=True, text=True, cwd=REPO, env=_env(),
                           timeout=300)
    assert r.returncode == 0, r.stderr
    assert landed == kills, "the run ended before it was killed often enough"
    accepted = [e.data["order"]["clientOrderId"] for e in _events(state, "order_accepted")]
    assert len(accepted) == len(set(accepted)), "an order was placed twice"
    fills = [e.data["trade"]["id"] for e in _events(state) if e.kind == "fill"]
    assert len(fills) == len(set(fills))
    _check_parity(bundle, state, n, revised=False)


@pytest.mark.slow
def test_sigkill_and_restart_equal_an_uninterrupted_run(trained, tmp_path):  # noqa: F811
    _killed_and_restarted(trained, tmp_path, kills=2, n=16)


class Crash(BaseException):
    """A process dying at this point (nothing after it runs; what was committed stays)."""


def test_crashes_mid_bar_and_restarts_equal_an_uninterrupted_run(trained, tmp_path, monkeypatch):  # noqa: F811
    """Died inside a bar's commit (its candle, fills and book roll back together), then while waiting for
    a close (after the decision's commit), each time restarted from the state folder: no order placed
    twice, no fill twice, the same observations, actions and equity as the backtest. (The child-process
    SIGKILL version is slow; test_paper_cli kills the same loop code by SIGKILL in the default suite.)"""
    from factorgym.agents.live.runner import run_loop
    from factorgym.envs.live.paper import PaperExchange

    _, _, bundle = trained
    n, state = 12, tmp_path / "state"
    real_bar = PaperExchange._process_bar
    bars = []

    def dying_bar(self, f_ts):
        bars.append(f_ts)
        if len(bars) == 4:
            raise Crash
        return real_bar(self, f_ts)

    with _fake() as fx:
        monkeypatch.setattr(PaperExchange, "_process_bar", dying_bar)
        env, policy, _ = _open(bundle, state, fx)
        with pytest.raises(Crash):
            run_loop(env, policy, max_bars=n, out=None)
        env.exchange.close()
        monkeypatch.undo()
        assert len(_events(state, "bar")) == 3

        env, policy, clock = _open(bundle, state, fx)
        real_fetch, fetches = clock.source.closed_candles, []

        def dying_fetch(*args):
            fetches.append(args)
            if len(fetches) == 2:
                raise Crash
            return real_fetch(*args)

        clock.source.closed_candles = dying_fetch
        with pytest.raises(Crash):
            run_loop(env, policy, max_bars=n, out=None)
        env.exchange.close()
        done = len(_events(state, "bar"))
        assert 3 < done < n

        from factorgym.agents.live.market_data import LiveMarketData

        def changed_rules(*args):  # a resumed run keeps the market rules it started with
            raise AssertionError("a resumed run asked the exchange for its market rules")

        monkeypatch.setattr(LiveMarketData, "market_rules", changed_rules)
        env, policy, _ = _open(bundle, state, fx)
        try:
            assert run_loop(env, policy, max_bars=n - done, out=None).bars == n - done
        finally:
            env.exchange.close()
        monkeypatch.undo()
    accepted = [e.data["order"]["clientOrderId"] for e in _events(state, "order_accepted")]
    assert len(accepted) == len(set(accepted)), "an order was placed twice"
    fills = [e.data["trade"]["id"] for e in _events(state) if e.kind == "fill"]
    assert len(fills) == len(set(fills))
    assert len({d.data["bar_ts"] for d in _events(state, "decision")}) < len(_events(state, "decision"))  # retaken
    _check_parity(bundle, state, n, revised=False)


def test_ctrl_c_while_a_bar_forms_stops_and_the_run_resumes(trained, tmp_path):  # noqa: F811
    """Ctrl-C while the loop waits for a bar to close stops it at once ("interrupted"); the same state
    then resumes, retakes the cut-short decision and ends where an uninterrupted run does."""
    from factorgym.agents.live.runner import open_paper_live, run_loop

    _, _, bundle = trained
    n, state = 10, tmp_path / "state"
    sent = []

    def sleep(seconds):  # the exchange's clock stands still: the user presses Ctrl-C while waiting
        if not sent:
            sent.append(seconds)
            os.kill(os.getpid(), signal.SIGINT)

    with _fake() as fx:
        env, policy, _ = open_paper_live(bundle, state, "binance", base_url=fx.url, durable=False, poll_s=0.01,
                                         sleep=sleep)
        calls = []

        def pol(obs):
            calls.append(1)
            if len(calls) == 3:
                fx.time_step_ms = 0  # the clock stops; the loop waits for the next close
            return policy(obs)

        try:
            first = run_loop(env, pol, max_bars=n, out=None)
        finally:
            env.exchange.close()
        assert sent and first.stopped == "interrupted" and 3 <= first.bars < n
        fx.time_step_ms = HOUR
        env, policy, _ = _open(bundle, state, fx)
        try:
            rest = run_loop(env, policy, max_bars=n - first.bars, out=None)
        finally:
            env.exchange.close()
    assert rest.bars == n - first.bars
    _check_parity(bundle, state, n, revised=False)


def test_a_feed_grown_bar_by_bar_equals_the_whole_candle_set(tmp_path):
    """CandleFeed's incremental price records equal the env's price_records over all bars (late listing
    and gap bars included), and a paper exchange fed through add_candles rebuilds the feed from its log."""
    from test_live_env import _candles, _feed

    from factorgym.envs.layouts import price_records
    from factorgym.envs.live.candle_feed import CandleFeed
    from factorgym.envs.live.paper import PaperExchange

    whole = _feed(_candles())
    feed = CandleFeed(whole.symbols, "1h")
    ex = PaperExchange(feed, state_dir=tmp_path, durable=False)
    for k, ts in enumerate(whole.timestamps):
        ex.add_candles(int(ts), whole.prices[k], whole.tradable[k])
    np.testing.assert_array_equal(feed.records, price_records(whole, whole.tradable))
    np.testing.assert_array_equal(feed.prices, whole.prices)
    with pytest.raises(Exception, match="does not follow"):
        ex.add_candles(int(whole.timestamps[-1]) + 2 * HOUR, whole.prices[0], whole.tradable[0])
    ex.close()
    again = PaperExchange(CandleFeed(whole.symbols, "1h"), state_dir=tmp_path, durable=False)
    np.testing.assert_array_equal(again.feed.records, feed.records)
    again.close()


@pytest.mark.parametrize("mode, extra, option", [
    ("--exchange", ["--split", "validation"], "--split"), ("--exchange", ["--store", "store"], "--store"),
    ("--exchange", ["--speed", "5"], "--speed"), ("--exchange", ["--group-commit", "4"], "--group-commit"),
    ("--replay", ["--symbols", "BTC/USDT"], "--symbols"),
    ("--replay", ["--base-url", "http://127.0.0.1:1"], "--base-url"), ("--replay", ["--history", "50"], "--history"),
    ("--replay", ["--poll", "1"], "--poll"), ("--replay", ["--timeframe", "1h"], "--timeframe"),
])
def test_an_option_of_the_other_mode_is_refused_by_name(tmp_path, capsys, mode, extra, option):
    """Replay-only options with --exchange, live-only ones with --replay: one line naming the option,
    before any policy, tensor or exchange is opened."""
    from factorgym.cli import main

    target = "binance" if mode == "--exchange" else str(tmp_path / "tensor")
    rc = main(["paper", "--policy", str(tmp_path / "no_bundle"), "--state", str(tmp_path / "state"), mode, target,
               *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and f"{option} does not apply to {mode}" in err, err
    assert not (tmp_path / "state").exists()


def test_a_symbol_delisted_or_silent_mid_run_becomes_gaps_and_the_others_trade_on(trained, tmp_path):  # noqa: F811
    """Mid-run the exchange refuses SOL's candle requests (ccxt BadSymbol: delisted) and stops sending
    ETH's candles: the loop goes on, both are fed as gaps (logged as not delivered), one ``delisted`` and
    one ``symbol_error`` event (not again after a restart), the status line names them, BTC trades on."""
    import io

    from factorgym.agents.live.runner import run_loop

    _, _, bundle = trained
    n, out = 9, io.StringIO()
    with _fake() as fx:
        fx.gaps = {}
        env, policy, clock = _open(bundle, tmp_path / "state", fx)
        clock.stale_bars = 3
        calls = []

        def pol(obs):
            calls.append(env.bar_ts)
            if len(calls) == 3:
                fx.delisted.add("SOL/USDT")
                fx.gaps["ETH/USDT"] = [(env.bar_ts, env.bar_ts + 1000 * HOUR)]
            return policy(obs)

        try:
            result = run_loop(env, pol, max_bars=n, out=out)
        finally:
            env.exchange.close()
        assert result.bars == n and result.stopped == "end"
        env, policy, clock = _open(bundle, tmp_path / "state", fx)  # a restart: not logged again
        try:
            assert run_loop(env, policy, max_bars=2, out=None).bars == 2
        finally:
            env.exchange.close()
    delisted, errors = _events(tmp_path / "state", "delisted"), _events(tmp_path / "state", "symbol_error")
    assert [e.data["symbol"] for e in delisted] == ["SOL/USDT"] and "BadSymbol" in delisted[0].data["reason"]
    assert [e.data["symbol"] for e in errors] == ["ETH/USDT"] and "no candles for 3 bars" in errors[0].data["reason"]
    candles = [c.data["bars"] for c in _events(tmp_path / "state", "candle") if c.data["bar_ts"] > calls[2]]
    k = next(k for k, b in enumerate(candles) if b[1] is None and b[2] is None)  # (bars fetched before: as served)
    after = candles[k:]
    assert k <= 2 and len(after) >= n - 3 and all(b[0] is not None and b[1] is None and b[2] is None for b in after)
    evs = [e for e in _events(tmp_path / "state") if e.ts > delisted[0].ts]
    btc = [e for e in evs if e.kind == "order_accepted" and e.data["order"]["symbol"] == "BTC/USDT"]
    assert len(btc) == sum(e.kind == "decision" for e in evs) >= n - 3  # BTC's order every bar, accepted
    lines = [ln for ln in out.getvalue().splitlines() if " equity " in ln]
    assert len(lines) == n and "SOL/USDT delisted: gaps" in lines[-1] and "ETH/USDT no candles for" in lines[-1]
    assert "delisted" not in lines[0]
