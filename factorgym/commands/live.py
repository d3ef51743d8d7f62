"""``factorgym live``: run a trained policy on a real exchange (or its testnet) through ccxt."""

from __future__ import annotations

import argparse
import sys

from factorgym.commands import HelpFormatter
from factorgym.commands.paper import add_loop_options
from factorgym.errors import ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "live",
        help="trade a policy on a real exchange or its testnet (needs --i-understand-real-money or --sandbox)",
        description="Run a trained policy bar by bar on a ccxt exchange: at each closed bar the candles are fetched, "
        "the features computed online with the policy's factor set, orders sized with the env's own rules (lot "
        "steps, minimum notional, available cash) and sent as market orders with deterministic client ids (a "
        "resent order is never a second order), fills awaited, and the positions read back from the exchange (the "
        "exchange is the source of truth; differences are logged). Everything goes to the event log in --state; "
        "the same command resumes. Without --sandbox this trades REAL MONEY and refuses to start unless "
        "--i-understand-real-money is given.\n\n"
        "API keys never go on the command line: set FACTORGYM_<ID>_API_KEY and FACTORGYM_<ID>_SECRET (and "
        "FACTORGYM_<ID>_PASSWORD where the exchange wants one; ID in capitals, e.g. FACTORGYM_BINANCE_API_KEY) or "
        "name a JSON key file with --key-file. Notifications: FACTORGYM_TELEGRAM_TOKEN + FACTORGYM_TELEGRAM_CHAT_ID, "
        "FACTORGYM_SMTP_HOST + FACTORGYM_SMTP_TO (see the README).\n\n"
        "examples:\n"
        "  factorgym live --policy runs/ppo_fast-20260101T000000Z --state live/testnet --exchange binance --sandbox\n"
        "  factorgym live --policy runs/ppo_fast-20260101T000000Z --state live/real --exchange binance "
        "--i-understand-real-money",
        formatter_class=HelpFormatter,
    )
    add_loop_options(p)
    p.add_argument("--sandbox", action="store_true", help="use the exchange's testnet (an error where ccxt has none)")
    p.add_argument("--i-understand-real-money", dest="real_money", action="store_true",
                   help="required to trade without --sandbox: orders spend real funds")
    p.add_argument("--key-file", default=None, metavar="FILE",
                   help='JSON file {"apiKey": ..., "secret": ..., "password": ...} (default: the environment variables)')
    p.add_argument("--history", type=int, default=2000, metavar="BARS",
                   help="closed bars fetched at start to warm the online factors up")
    p.add_argument("--fill-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="cancel an order not filled after this long")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.sandbox and not args.real_money:
        raise ConfigError("factorgym live trades real money: add --i-understand-real-money, or --sandbox for the testnet")
    if not args.policy:
        raise ConfigError("factorgym live: --policy RUN_OR_BUNDLE is required")
    if not args.exchange:
        raise ConfigError("factorgym live: --exchange ID is required (a ccxt exchange id, e.g. binance)")
    from pathlib import Path

    from factorgym.agents.bundle import load_policy
    from factorgym.agents.live.ccxt_exchange import CcxtExchange
    from factorgym.agents.live.notify import LoopNotifier, notifiers_from_env
    from factorgym.agents.live.runner import online_rows, run_loop
    from factorgym.envs.live.live_env import LiveTradingEnv, SystemClock

    policy = load_policy(args.policy)
    spec = policy.spec
    from factorgym.commands.paper import symbols_of

    if args.symbols and symbols_of(args.symbols) != list(spec.symbols):
        raise ConfigError(f"--symbols {args.symbols} differ from the policy's {spec.symbols} (same symbols, same order)")
    notifier = LoopNotifier(notifiers_from_env())
    Path(args.state).mkdir(parents=True, exist_ok=True)
    ex = CcxtExchange(args.exchange, sandbox=args.sandbox, key_file=args.key_file, base_url=args.base_url,
                      run_id=args.run_id or "live", state_dir=args.state)
    from factorgym.envs.live.exchange import ExchangeError, NetworkError
    from factorgym.errors import FactorgymError

    try:
        env = LiveTradingEnv(ex, symbols=spec.symbols, feature_names=spec.feature_names, timeframe=spec.timeframe,
                             window=spec.window, online=online_rows(spec), clock=SystemClock(),
                             env_kwargs=spec.env_kwargs(), run_id=args.run_id or "live", history=args.history,
                             fill_timeout_s=args.fill_timeout, order_mode="amounts")
        result = run_loop(env, policy, max_bars=args.max_bars, out=None if args.quiet else sys.stdout,
                          notifier=notifier, drawdown_alert=args.drawdown_alert)
    except (ExchangeError, NetworkError) as exc:  # (the adapter's messages are already free of keys and URLs)
        raise FactorgymError(f"{args.exchange}: {type(exc).__name__}: {exc}") from None
    finally:
        ex.close()
    info = result.last_info
    print(f"live: {result.bars} bars, {result.stopped}" + (f", equity {info['equity']:,.2f}" if info else "") +
          f"; state in {args.state}")
    return 0
