"""``factorgym paper``: run a trained policy against the local paper exchange (a replay of a tensor's
candles, or a real exchange's live candles), resumable from its event log; ``factorgym paper status``:
the account now or at a past time."""

from __future__ import annotations

import argparse
import json
import sys
import time

from factorgym.commands import HelpFormatter
from factorgym.errors import ConfigError


def add_loop_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``paper`` and ``live``."""
    p.add_argument("--policy", metavar="RUN_OR_BUNDLE",
                   help="trained policy: a run directory (its best, else final bundle) or a bundle folder")
    p.add_argument("--state", required=True, metavar="DIR",
                   help="state folder: the event log (events.sqlite) and run.json; the same folder resumes a stopped run")
    p.add_argument("--run-id", default=None, metavar="NAME",
                   help="run name inside the event log and part of every client order id (default: paper / live)")
    p.add_argument("--exchange", default=None, metavar="ID",
                   help="ccxt exchange id, e.g. binance (paper: trade on its live candles, public data, no keys)")
    p.add_argument("--symbols", nargs="+", default=None, metavar="SYMBOL",
                   help="symbols to trade, in the policy's order, comma- or space-separated (default and check: the "
                        "policy's symbols)")
    p.add_argument("--base-url", default=None, metavar="URL",
                   help="send every exchange API call to this URL (a loopback test exchange, a proxy)")
    p.add_argument("--max-bars", type=int, default=None, metavar="N", help="stop after N bars (default: run on)")
    p.add_argument("--quiet", action="store_true", help="no status line per bar")
    p.add_argument("--drawdown-alert", type=float, default=0.1, metavar="FRACTION",
                   help="notify when equity falls this fraction below its peak")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "paper",
        help="paper-trade a trained policy (a tensor's candles replayed, or an exchange's live candles), or show "
             "a paper account's status",
        description="Run a trained policy bar by bar against the local paper exchange: features computed online "
        "from the candles (the policy's factor set and normalisation), orders sized and filled by the env's own "
        "accounting, every decision, order, fill and charge appended to an SQLite event log in --state before it "
        "is acted on. A status line per bar; Ctrl-C stops cleanly after the current bar; the same command again "
        "resumes from the log. Over a tensor split the replay gives the same equity as `factorgym backtest`.\n\n"
        "With --exchange the candles are a real exchange's live ones (public market data through ccxt, no keys): "
        "the history the features need is fetched at start, then each bar is taken once it has closed; every "
        "candle is logged before it is used, so a restart, `paper status --at` and the account never ask the "
        "exchange again (a candle the exchange later revises is logged as a candle_revised event, never used). "
        "Bars that closed while the run was stopped are traded through on restart, one at a time. Ctrl-C while "
        "a bar forms stops at once (the decision already taken is taken again on restart, with the same order ids). "
        "A --state folder made by another policy, exchange, symbols or timeframe is refused.\n\n"
        "examples:\n"
        "  factorgym paper --policy runs/ppo_fast-20260101T000000Z --state paper/run1 --replay tensors/quickstart\n"
        "  factorgym paper --policy runs/ppo_fast-20260101T000000Z --state paper/live1 --exchange binance "
        "--symbols BTC/USDT,ETH/USDT\n"
        "  factorgym paper status --state paper/run1\n"
        "  factorgym paper status --state paper/run1 --at 2024-03-01T12:00Z --json",
        formatter_class=HelpFormatter,
    )
    p.add_argument("what", nargs="?", choices=("run", "status"), default="run",
                   help="run (the default) or status: balances, positions, open orders, equity, last decision, events")
    add_loop_options(p)
    p.add_argument("--replay", default=None, metavar="TENSOR_DIR",
                   help="replay this saved tensor's candles (the policy's tensor, or one built the same way)")
    p.add_argument("--split", default=None,
                   help="--replay: part of the tensor to replay: test (default), validation or train (as the run's "
                        "config cuts it), or START:END UTC times such as 2024-01-01:2024-02-01")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="--replay: candle store the tensor was built from: its warm-up bars make the online features equal the "
                        "tensor's bit for bit (default: the tensor's own prices; the first bars' features then differ)")
    p.add_argument("--timeframe", default=None, metavar="TF",
                   help="--exchange: bar length to trade (default and check: the policy's, e.g. 1h)")
    p.add_argument("--history", type=int, default=None, metavar="BARS",
                   help="--exchange: closed bars fetched at start to warm the online features up (default: the "
                        "policy's window plus its factor set's warm-up; more bars bring expanding normalisations "
                        "closer to the training tensor's)")
    p.add_argument("--poll", type=float, default=None, metavar="SECONDS",
                   help="--exchange: longest sleep between two looks at the exchange's clock while a bar forms "
                        "(default 30)")
    p.add_argument("--speed", default=None, metavar="max|N",
                   help="--replay: as fast as possible (max, the default) or at most N bars per second")
    p.add_argument("--json", action="store_true", help="status: print one JSON object")
    p.add_argument("--at", default=None, metavar="TIME", help="status: the account at this past UTC time (the log replayed up to it)")
    p.add_argument("--durable", action="store_true",
                   help="fsync every commit of the event log (SQLite synchronous=FULL): a committed event survives a "
                        "power cut. The default with --exchange; a --replay defaults to --fast-log, since it can be "
                        "rerun from its inputs")
    p.add_argument("--fast-log", action="store_true",
                   help="commit events without an fsync each (synchronous=NORMAL, WAL): a killed or crashed process "
                        "loses nothing, a power cut may lose the last bars (the log stays consistent and the run "
                        "resumes from its last commit on disk). The default with --replay")
    p.add_argument("--keep-history", default=None, metavar="N|all",
                   help="done orders and trades the paper exchange keeps in memory (default 10000; older ones are "
                        "read back from the event log when asked for, so memory stays flat however long the run); "
                        "'all' keeps every one")
    p.add_argument("--group-commit", type=int, default=None, metavar="N",
                   help="--replay: commit the event log every N batches (two a bar; default 32, or sooner once the "
                        "oldest is 0.25 s old). A replay is deterministic, so a kill loses only work the same command "
                        "recomputes; 1 commits every batch before acting on it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "status":
        return status(args)
    args.symbols = symbols_of(args.symbols)
    if not args.policy:
        raise ConfigError("factorgym paper: --policy RUN_OR_BUNDLE is required (or use `factorgym paper status`)")
    if args.replay is not None and args.exchange:
        raise ConfigError("factorgym paper: give --replay TENSOR_DIR or --exchange ID, not both")
    if args.exchange:
        refuse_options(args, "--exchange", REPLAY_ONLY)
        return run_live_candles(args)
    if args.replay is None:
        raise ConfigError("factorgym paper: give --replay TENSOR_DIR (a tensor's candles) or --exchange ID "
                          "(live candles)")
    refuse_options(args, "--replay", LIVE_ONLY)
    speed = None if args.speed in (None, "max") else float(args.speed)
    from factorgym.agents.live.runner import open_paper_replay, run_loop

    env, policy, last, exact = open_paper_replay(args.policy, args.state, args.replay, split=args.split or "test",
                                                 store=args.store, run_id=args.run_id or "paper",
                                                 durable=log_durable(args, replay=True), group_commit=args.group_commit,
                                                 keep_history=keep_history_of(args))
    out = None if args.quiet else sys.stdout
    if not exact and out is not None:
        print("note: no --store with the tensor's warm-up candles: online features of the first bars differ "
              "from the tensor's", file=out)
    from factorgym.agents.live.notify import LoopNotifier, notifiers_from_env

    t0 = time.monotonic()
    try:
        result = run_loop(env, policy, end_ts=last, max_bars=args.max_bars, speed=speed, out=out,
                          notifier=LoopNotifier(notifiers_from_env()), drawdown_alert=args.drawdown_alert)
    finally:
        env.exchange.close()
    info = result.last_info
    if info:
        rate = result.bars / max(time.monotonic() - t0, 1e-9)
        print(f"paper: {result.bars} bars ({rate:.0f}/s), equity {info['equity']:,.2f}, {result.stopped}; "
              f"state in {args.state}")
    else:
        print(f"paper: nothing to do ({result.stopped}); the replay is at its end; state in {args.state}")
    return 0


def log_durable(args: argparse.Namespace, *, replay: bool) -> bool:
    """Event-log durability: ``--durable`` or ``--fast-log`` when given; else fsync every commit on live
    candles (an order sent must not be forgotten) and not on a replay (rerun it to recompute lost bars)."""
    if getattr(args, "durable", False) and getattr(args, "fast_log", False):
        raise ConfigError("factorgym paper: --durable and --fast-log contradict each other; give one of them")
    if getattr(args, "durable", False) or getattr(args, "fast_log", False):
        return bool(getattr(args, "durable", False))
    return not replay


def status(args: argparse.Namespace) -> int:
    """The account from the event log alone (no exchange calls): now, or at ``--at``."""
    from pathlib import Path

    from factorgym.data_layer.splits import as_ms
    from factorgym.envs.live.book import Book
    from factorgym.envs.live.events import EventLog

    path = Path(args.state) / "events.sqlite"
    if not path.is_file():
        raise ConfigError(f"{args.state}: no event log (events.sqlite); start a run with this --state first")
    run_id = args.run_id
    if run_id is None:
        meta = Path(args.state) / "run.json"
        run_id = json.loads(meta.read_text()).get("run_id", "paper") if meta.is_file() else "paper"
    log = EventLog(path, run_id)
    try:
        start = next(iter(log), None)
        if start is None or start.kind != "start":
            raise ConfigError(f"{path}: run {run_id!r} has no events; pass --run-id")
        d = start.data
        book = Book(d["symbols"], [s.split("/")[0] for s in d["symbols"]], d.get("quote", "USDT"))
        until = as_ms(args.at) if args.at else None
        for ev in log.events(until_ts=until):
            book.apply(ev)
        summary = book.summary()
        loop = log.last("loop_book")
        summary["peak_equity"] = loop.data.get("peak") if loop is not None else None
    finally:
        log.close()
    if args.json:
        print(json.dumps(summary, default=str))
        return 0
    pos = ", ".join(f"{s}={q:g}" for s, q in summary["positions"].items())
    print(f"time {summary['datetime']}  equity {summary['equity']:,.2f} {summary['quote']}  cash {summary['cash']:,.2f}")
    print(f"positions {pos or '-'}  open orders {len(summary['open_orders'])}  trades {summary['n_trades']}  "
          f"fees {summary['fees']:,.2f}  events {summary['events']}")
    last = summary.get("last_decision")
    if last:
        print(f"last decision: bar {last.get('bar_ts')} action {last.get('action')} obs {str(last.get('obs_hash'))[:12]}")
    return 0


#: options that only a replay uses, and only a live-candles run (``--exchange``), with their ``args`` names
REPLAY_ONLY = {"--split": "split", "--store": "store", "--speed": "speed", "--group-commit": "group_commit"}
LIVE_ONLY = {"--symbols": "symbols", "--base-url": "base_url", "--history": "history", "--poll": "poll",
             "--timeframe": "timeframe"}


def refuse_options(args: argparse.Namespace, mode: str, options: dict[str, str]) -> None:
    """One line naming the first option given that ``mode`` does not use (never silently ignored)."""
    for opt, dest in options.items():
        if getattr(args, dest, None) is not None:
            raise ConfigError(f"{opt} does not apply to {mode} (it is for "
                              f"{'--replay' if mode == '--exchange' else '--exchange'} runs); leave it out")


def keep_history_of(args: argparse.Namespace) -> int | None | str:
    """``--keep-history N|all`` as ``PaperExchange``'s ``keep_history`` ("default" when not given)."""
    value = getattr(args, "keep_history", None)
    if value is None:
        return "default"
    if str(value).lower() == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ConfigError(f"--keep-history {value}: expected a number of orders >= 0, or 'all'")
    return n


def symbols_of(values: list[str] | None) -> list[str] | None:
    """``--symbols BTC/USDT,ETH/USDT`` or ``--symbols BTC/USDT ETH/USDT``."""
    if not values:
        return None
    return [s.strip() for v in values for s in v.split(",") if s.strip()]


def run_live_candles(args: argparse.Namespace) -> int:
    """``paper --exchange``: the live loop over the exchange's candles, orders filled by the paper exchange."""
    from factorgym.agents.live.notify import LoopNotifier, notifiers_from_env
    from factorgym.agents.live.runner import open_paper_live, run_loop

    env, policy, _ = open_paper_live(args.policy, args.state, args.exchange, symbols=args.symbols,
                                     timeframe=args.timeframe, base_url=args.base_url, history=args.history,
                                     run_id=args.run_id or "paper", durable=log_durable(args, replay=False),
                                     poll_s=30.0 if args.poll is None else args.poll, keep_history=keep_history_of(args))
    out = None if args.quiet else sys.stdout
    try:
        result = run_loop(env, policy, max_bars=args.max_bars, out=out, notifier=LoopNotifier(notifiers_from_env()),
                          drawdown_alert=args.drawdown_alert)
    finally:
        env.exchange.close()
    info = result.last_info
    print(f"paper: {result.bars} bars on {args.exchange} candles" +
          (f", equity {info['equity']:,.2f}" if info else "") + f", {result.stopped}; state in {args.state}")
    return 0
