"""The trading loop: policy bundle -> OnlineFactors -> LiveTradingEnv -> one decision per closed bar.

``run_loop`` drives any ``Exchange`` (the paper exchange on a replay, a ``CcxtExchange`` live): a
status line per bar, notifications (fills, errors, drawdown), Ctrl-C (SIGINT/SIGTERM) stops cleanly
between bars, and a restart with the same state folder resumes: the exchange's event log restores
the account and the clock, the loop's last ``loop_book`` event its peak equity; a decision that was
cut short is taken again with the same observation, so its orders carry the same client ids and the
exchange returns them instead of placing new ones.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, TextIO

import numpy as np

from factorgym.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    """What a run did: bars stepped this time, the last bar's info, why it stopped."""

    bars: int = 0
    last_info: dict = field(default_factory=dict)
    stopped: str = "end"  # "end" (replay finished or max_bars), "interrupted", "bankrupt"/"liquidated"


def online_rows(spec: Any) -> Callable:
    """The data layer's online factor rows for a policy spec (the bundle's factor set and the
    tensor's normalisation statistics), as the callable ``LiveTradingEnv`` takes."""
    from factorgym.data_layer.factors.online import OnlineFactors

    if spec.factor_set is None:
        raise ConfigError("the policy bundle has no factor set (it was trained on plain arrays): it cannot compute "
                          "features online; retrain on a tensor built by `factorgym build`")
    stats = (spec.tensor_normalisation or {}).get("stats")
    online = OnlineFactors(spec.factor_set, list(spec.symbols), stats)
    if list(online.feature_names) != list(spec.feature_names):
        raise ConfigError(f"the bundle's factor set gives features {online.feature_names[:5]}..., the policy was "
                          f"trained on {spec.feature_names[:5]}...")

    def rows(ts: int, bar: np.ndarray, ok: np.ndarray):
        return online.update(ts, bar, ok), online.tradable.copy()

    return rows


def replay_feed(tensor: Any, store: str | Path | None = None) -> tuple[Any, bool]:
    """The candles a paper replay of ``tensor`` trades on: the store's (the tensor's dropped warm-up
    bars included, so online features equal the tensor's bit for bit) when ``store`` holds them, else
    the tensor's own prices (online features then differ from the tensor's in the first bars).
    Returns ``(feed, exact)``."""
    from factorgym.data_layer.build import align_candles

    meta = dict(tensor.meta or {})
    tf = tensor.timeframe
    base = {"timeframe": tf, "market_rules": meta.get("market_rules") or {}}
    if store is not None and meta.get("source"):
        try:
            from factorgym.data_layer.store import CandleStore
            from factorgym.data_layer.timeframes import timeframe_to_ms

            st = CandleStore(store)
            lo = int(tensor.timestamps[0]) - int(meta.get("dropped_warmup_rows", 0)) * timeframe_to_ms(tf)
            hi = int(tensor.timestamps[-1]) + timeframe_to_ms(tf)
            candles = {s: st.read(meta["source"], s, tf, None, hi) for s in tensor.symbols}
            ts, ohlcv, ok = align_candles(candles, tf)
            if ts[0] <= lo:
                return SimpleNamespace(timestamps=ts, prices=np.where(ok[..., None], ohlcv, np.nan), tradable=ok,
                                       symbols=list(tensor.symbols), meta=base), True
        except Exception as exc:  # noqa: BLE001 - fall back to the tensor's prices, saying why
            log.warning("replay: candles not read from the store %s (%s); using the tensor's prices", store, exc)
    feed = SimpleNamespace(timestamps=np.asarray(tensor.timestamps), prices=np.asarray(tensor.prices),
                           tradable=np.asarray(tensor.tradable), symbols=list(tensor.symbols), meta=base)
    return feed, False


def last_book(exchange: Any) -> dict | None:
    """The loop's state saved after the last settled bar (``loop_book`` event), if any."""
    events = getattr(exchange, "events", None)
    if events is None:
        return None
    ev = events.last("loop_book")
    return dict(ev.data) if ev is not None else None


def status_line(info: dict, env: Any, initial: float) -> str:
    """One line per bar: time, equity and return, cash, weights, orders, decision latency, and the
    symbols the exchange no longer serves candles for."""
    ts = int(info["timestamp"])
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts / 1000))
    w = " ".join(f"{s.split('/')[0]}={x:+.2f}" for s, x in zip(env.symbols, np.asarray(info["weights"]).tolist()))
    orders = info.get("orders") or []
    n_done = sum(o.get("status") == "closed" for o in orders)
    n_bad = sum(o.get("status") in ("rejected", "unknown", "canceled") for o in orders)
    ret = info["equity"] / initial - 1 if initial > 0 else math.nan
    away = getattr(getattr(env, "clock", None), "unavailable", None) or {}  # (live candles: symbols without candles)
    return (f"{when} equity {info['equity']:,.2f} ({ret:+.2%}) cash {info['cash']:,.2f} [{w}] "
            f"orders {len(orders)} filled {n_done}{f' failed {n_bad}' if n_bad else ''} "
            f"decision {env.last_decision_ms:.1f} ms" + "".join(f"; {s} {why}: gaps" for s, why in away.items()))


def run_loop(env: Any, policy: Any, *, end_ts: int | None = None, max_bars: int | None = None,
             speed: float | None = None, out: TextIO | None = sys.stdout, notifier: Any = None,
             drawdown_alert: float | None = None) -> LoopResult:
    """Reset ``env`` (resuming from the exchange's log) and step ``policy`` once per closed bar until
    the decision bar reaches ``end_ts`` (a replay's last bar), ``max_bars`` bars were stepped, or a
    stop signal arrives (handled between bars). ``speed``: at most that many bars per second."""
    stop = {"flag": False}

    def _stop(signum, frame):  # noqa: ARG001
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        interrupt = getattr(env.clock, "interrupt", None)  # (a clock waiting for a bar's close stops waiting)
        if callable(interrupt):
            interrupt()
        if out is not None:
            print("stopping after this bar (Ctrl-C again to stop at once)", file=out, flush=True)

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    result = LoopResult()
    try:
        book = last_book(env.exchange)
        obs, info = env.reset(options={"book": book} if book else None)
        initial = float((book or {}).get("initial_cash", info["equity"]))
        if hasattr(policy, "reset"):
            policy.reset()
        peak = float((book or {}).get("peak", info["equity"]))
        quiet_gc()
        while not stop["flag"]:
            if end_ts is not None and env.bar_ts >= end_ts:
                break
            if max_bars is not None and result.bars >= max_bars:
                break
            t0 = time.monotonic()
            action = policy(obs)
            try:
                obs, reward, terminated, truncated, info = env.step(action)
            except KeyboardInterrupt:
                if not stop["flag"]:
                    raise
                break  # stopped while waiting for the fill bar to close: its decision is logged, a restart retakes it
            result.bars += 1
            result.last_info = info
            if out is not None:
                print(status_line(info, env, initial), file=out, flush=True)
            _notify(notifier, env, info, peak, drawdown_alert)
            peak = max(peak, info["equity"])
            if terminated:
                result.stopped = info.get("status", "terminated")
                return result
            if speed:  # (a paced run waits with its log on disk: a group-committing log commits first)
                commit = getattr(env.exchange, "commit", None)
                if callable(commit):
                    commit()
                time.sleep(max(0.0, 1.0 / speed - (time.monotonic() - t0)))
        if stop["flag"]:
            result.stopped = "interrupted"
            if out is not None:
                print(f"stopped at bar {env.bar_ts}; run the same command again to resume from the log", file=out, flush=True)
        return result
    finally:
        gc.unfreeze()
        for s, h in old.items():
            signal.signal(s, h)


def quiet_gc() -> None:
    """Move every object alive now (the libraries, the tensor, the env) out of the garbage collector's
    view until ``gc.unfreeze()``: its full collections, which a long loop's growing book triggers,
    then scan only what the loop made (measured: 34 -> 8 us a bar in full collections over 2,900
    replayed bars of 4 symbols). The objects stay alive either way: nothing is leaked."""
    gc.collect()
    gc.freeze()


def _notify(notifier: Any, env: Any, info: dict, peak: float, drawdown_alert: float | None) -> None:
    """Fills, failed orders and a drawdown alert to ``notifier``; a failing notifier never stops trading."""
    if notifier is None:
        return
    try:
        for o in info.get("orders") or []:
            if o.get("status") == "closed" and o.get("filled"):
                notifier.fill(o)
            elif o.get("status") in ("rejected", "unknown"):
                notifier.error(f"order {o.get('clientOrderId')} {o.get('status')}: {o.get('reason', '')}")
        if drawdown_alert is not None and peak > 0 and 1 - info["equity"] / peak >= drawdown_alert:
            notifier.drawdown(1 - info["equity"] / peak, info["equity"])
        notifier.bar(info)
    except Exception as exc:  # noqa: BLE001
        log.warning("notifier failed: %s", type(exc).__name__)


# ---------------------------------------------------------------------- paper replay from a bundle
def replay_range(spec: Any, tensor: Any, split: str, run_dir: Path | None) -> tuple[int, int]:
    """First decision bar and last bar (open times) of a replay over ``split`` (as ``factorgym backtest``)."""
    from factorgym.agents.policy_backtest import run_split
    from factorgym.data_layer.splits import as_ms

    part, start, end, _ = run_split(run_dir, tensor, split)
    ts = np.asarray(part.timestamps, dtype=np.int64)
    lo, hi = spec.window - 1, len(ts) - 1
    if start is not None:
        lo = max(lo, int(np.searchsorted(ts, as_ms(start))))
    if end is not None:
        hi = min(hi, int(np.searchsorted(ts, as_ms(end))) - 1)
    if hi - lo < 1:
        raise ConfigError(f"--split {split}: fewer than 2 bars to replay")
    return int(ts[lo]), int(ts[hi])  # decisions at bars lo .. hi - 1 (the last fills at bar hi)


#: a replay commits its event log every this many batches (two a bar: 16 bars), or once the oldest
#: is 0.25 s old (``events.GROUP_COMMIT_S``), not before each is acted on. Safe because a replay is deterministic: the log on disk always ends at a batch's end,
#: as a kill there would have left it with a commit per batch, and on restart the same command
#: recomputes the lost bars from the same candles (same client order ids, so no order is doubled and
#: no fill lost: the SIGKILL test). Live candles and real exchanges commit before acting (1).
REPLAY_GROUP_COMMIT = 256  # (128 bars; 32 cost ~5% more CPU a bar, 8 ~13%: SQLite's commit and WAL work)


def _keep(keep_history: int | None | str) -> dict[str, Any]:
    """``PaperExchange``'s ``keep_history`` argument, when one was chosen."""
    return {} if keep_history == "default" else {"keep_history": keep_history}


def open_paper_replay(bundle: str | Path, state_dir: str | Path, tensor_dir: str | Path | None, *, split: str = "test",
                      store: str | Path | None = None, run_id: str = "paper", durable: bool = True,
                      group_commit: int | None = None, keep_history: int | None | str = "default"):
    """``(env, policy, end_ts, exact)`` for a paper replay of a bundle over a tensor split; the event log
    commits every ``group_commit`` batches (default :data:`REPLAY_GROUP_COMMIT`); the paper book holds
    ``keep_history`` done orders and trades in RAM (``"default"``: the exchange's default; None: all)."""
    from factorgym.agents.bundle import find_bundle, load_policy
    from factorgym.agents.policy_backtest import _run_tensor
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs.config import ExecutionConfig
    from factorgym.envs.live.live_env import LiveTradingEnv, ReplayClock
    from factorgym.envs.live.paper import PaperExchange

    path = find_bundle(bundle)
    run_dir = path.parent.parent if path.parent.name == "bundles" else None
    policy = load_policy(path)
    spec = policy.spec
    if tensor_dir is None:
        tensor_dir = _run_tensor(run_dir) if run_dir is not None else None
        if tensor_dir is None:
            raise ConfigError(f"{path} is not inside a run directory: pass --replay TENSOR_DIR")
    tensor = FactorTensor.load(tensor_dir)
    spec.check_tensor(tensor)
    first, last = replay_range(spec, tensor, split, run_dir)
    feed, exact = replay_feed(tensor, store)
    execution = ExecutionConfig(**spec.execution)
    state = Path(state_dir)
    meta = state / "run.json"
    if meta.is_file() and json.loads(meta.read_text()).get("mode", "paper-replay") != "paper-replay":
        raise ConfigError(f"--state {state} holds a {json.loads(meta.read_text())['mode']} run, not a replay; use a new "
                          f"--state folder")
    state.mkdir(parents=True, exist_ok=True)
    ex = PaperExchange(feed, execution=execution, initial_cash=spec.initial_cash, state_dir=state, run_id=run_id,
                       long_only=spec.long_only, durable=durable,
                       group_commit=REPLAY_GROUP_COMMIT if group_commit is None else group_commit,
                       **_keep(keep_history))
    if ex.now is None:
        ex.advance(first + tensor_tf_ms(tensor))
    env = LiveTradingEnv(ex, symbols=spec.symbols, feature_names=spec.feature_names, timeframe=spec.timeframe,
                         window=spec.window, online=online_rows(spec), clock=ReplayClock(ex),
                         env_kwargs=spec.env_kwargs(), market_rules=feed.meta["market_rules"], run_id=run_id)
    (state / "run.json").write_text(json.dumps({"mode": "paper-replay", "bundle": str(path), "tensor": str(tensor_dir),
                                                "split": split, "run_id": run_id, "first_ts": first, "last_ts": last}))
    return env, policy, last, exact


def tensor_tf_ms(tensor: Any) -> int:
    from factorgym.data_layer.timeframes import timeframe_to_ms

    return int(timeframe_to_ms(tensor.timeframe))


# ---------------------------------------------------------------------- paper trading on live candles
def bundle_digest(path: Path) -> str:
    """sha256 of a bundle folder's files (names and contents): which policy a state folder belongs to."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def check_state(state: Path, identity: dict[str, Any]) -> None:
    """Refuse (one line) a ``--state`` folder made for another policy, exchange, symbols or timeframe."""
    meta = state / "run.json"
    if not meta.is_file():
        if (state / "events.sqlite").is_file():
            raise ConfigError(f"{state}: an event log without run.json; use a new --state folder")
        return
    saved = json.loads(meta.read_text())
    for key, value in identity.items():
        if saved.get(key) != value:
            raise ConfigError(f"--state {state} was made by another run ({key}: {saved.get(key)!r}, now {value!r}); "
                              f"use a new --state folder or the same settings")


def open_paper_live(bundle: str | Path, state_dir: str | Path, exchange_id: str, *, symbols: list[str] | None = None,
                    timeframe: str | None = None, base_url: str | None = None, history: int | None = None,
                    run_id: str = "paper", durable: bool = True, source: Any = None, delay_ms: int = 2_000,
                    poll_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                    keep_history: int | None | str = "default"):
    """``(env, policy, clock)`` for paper trading ``bundle`` on ``exchange_id``'s live candles: public market
    data through ccxt (``source``: any ``CandleSource`` instead), orders filled by the local paper
    exchange. A new state folder is warmed up with ``history`` closed bars (default: the policy's window
    plus its factor set's warm-up); an existing one resumes from its log (and must be the same run)."""
    from factorgym.agents.bundle import find_bundle, load_policy
    from factorgym.envs.config import ExecutionConfig
    from factorgym.envs.live.candle_feed import CandleFeed, LiveCandles
    from factorgym.envs.live.live_env import LiveTradingEnv
    from factorgym.envs.live.paper import PaperExchange

    path = find_bundle(bundle)
    policy = load_policy(path)
    spec = policy.spec
    if symbols and list(symbols) != list(spec.symbols):
        raise ConfigError(f"--symbols {symbols} differ from the policy's {spec.symbols} (same symbols, same order)")
    if timeframe and timeframe != spec.timeframe:
        raise ConfigError(f"--timeframe {timeframe} differs from the policy's {spec.timeframe!r} bars")
    state = Path(state_dir)
    identity = {"mode": "paper-live", "policy": bundle_digest(path), "exchange": exchange_id,
                "symbols": list(spec.symbols), "timeframe": spec.timeframe, "run_id": run_id}
    check_state(state, identity)
    if source is None:
        from factorgym.agents.live.market_data import LiveMarketData

        source = LiveMarketData(exchange_id, base_url=base_url, sleep=sleep)
    saved = json.loads((state / "run.json").read_text()) if (state / "run.json").is_file() else {}
    rules = saved.get("market_rules")  # (a resumed run keeps the rules it started with: its log was made with them)
    if rules is None:
        rules = source.market_rules(list(spec.symbols), spec.timeframe)
    feed = CandleFeed(list(spec.symbols), spec.timeframe, {"market_rules": rules})
    state.mkdir(parents=True, exist_ok=True)
    (state / "run.json").write_text(json.dumps({**identity, "bundle": str(path), "base_url": bool(base_url),
                                                "market_rules": rules}))
    ex = PaperExchange(feed, execution=ExecutionConfig(**spec.execution), initial_cash=spec.initial_cash,
                       state_dir=state, run_id=run_id, long_only=spec.long_only, durable=durable,
                       **_keep(keep_history))
    try:
        clock = LiveCandles(ex, source, delay_ms=delay_ms, poll_s=poll_s, sleep=sleep)
        if ex.now is None:
            warm = int(history) if history else spec.window + _factor_warmup(spec) + 1
            if warm < spec.window:
                raise ConfigError(f"--history {warm}: the policy's window needs at least {spec.window} bars")
            clock.warm_up(warm)
        env = LiveTradingEnv(ex, symbols=spec.symbols, feature_names=spec.feature_names, timeframe=spec.timeframe,
                             window=spec.window, online=online_rows(spec), clock=clock, env_kwargs=spec.env_kwargs(),
                             market_rules=rules, run_id=run_id, order_mode="weights")
    except BaseException:
        ex.close()
        raise
    return env, policy, clock


def _factor_warmup(spec: Any) -> int:
    from factorgym.data_layer.factors.factor_set import load_factor_set

    return int(load_factor_set(spec.factor_set).warmup) if spec.factor_set is not None else 0
