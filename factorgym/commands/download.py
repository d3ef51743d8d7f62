"""``factorgym download``: closed candles from a ccxt exchange into the candle store, resumable.

Public candles need no API key. Each page is checked and written as it arrives; a run that is
killed picks up after the newest stored bar when started again. Network faults are retried with
capped backoff; an exchange refusal (unknown symbol, unsupported timeframe) stops at once.

Perpetual swaps use ccxt's unified contract symbols (BTC/USDT:USDT); --funding also downloads their
funding-rate history, which `factorgym build` puts on the tensor's time grid (tensor.funding).

Examples:
  factorgym download --exchange binance --symbols BTC/USDT,ETH/USDT --timeframe 1h --since 2023-01-01
  factorgym download --exchange binance --symbols BTC/USDT:USDT --timeframe 1h --since 2023-01-01 --funding
"""

from __future__ import annotations

import argparse

from factorgym.commands import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="download candles from an exchange (ccxt) into the store",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--exchange", default="binance", help="ccxt exchange id, e.g. binance, kraken, okx")
    p.add_argument("--symbols", required=True,
                   help="comma-separated unified symbols, e.g. BTC/USDT,ETH/USDT")
    p.add_argument("--timeframe", default="1h", help="bar length in ccxt's form: 1m, 5m, 1h, 4h, 1d")
    p.add_argument("--since", required=True,
                   help="first bar to download (UTC): 2023-01-01, 2023-01-01T12:00Z or epoch ms")
    p.add_argument("--until", default=None,
                   help="download bars opening before this time (UTC); default: up to the last closed bar")
    p.add_argument("--store", default=None,
                   help="store folder (default: $FACTORGYM_STORE or ./store)")
    p.add_argument("--base-url", default=None,
                   help="testing hook: send all API calls to this URL instead of the exchange's hosts, "
                        "e.g. a loopback fake exchange (http://127.0.0.1:PORT)")
    p.add_argument("--max-retries", type=int, default=8,
                   help="retries per request on network faults and malformed pages before giving up")
    p.add_argument("--page-limit", type=int, default=None,
                   help="candles per request (default: the exchange's maximum)")
    p.add_argument("--timeout", type=int, default=None,
                   help="HTTP timeout per request in milliseconds (default: ccxt's, 10000)")
    p.add_argument("--funding", action="store_true",
                   help="also download the funding-rate history of every symbol (perpetual swaps only, "
                        "e.g. BTC/USDT:USDT), resumable like the candles")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from factorgym.data_layer.download import download
    from factorgym.errors import ConfigError

    if args.max_retries < 0:
        raise ConfigError(f"--max-retries must be >= 0, got {args.max_retries}")
    api_options = {"timeout": args.timeout} if args.timeout else None
    summary = download(
        args.exchange, args.symbols, args.timeframe, args.since, until=args.until, store=args.store,
        base_url=args.base_url, progress=not args.no_progress, max_retries=args.max_retries,
        page_limit=args.page_limit, api_options=api_options, funding=args.funding,
    )
    print("\n".join(summary.lines()))
    return 0
