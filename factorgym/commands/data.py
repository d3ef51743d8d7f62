"""``factorgym import``, ``factorgym validate``, ``factorgym data list`` and ``factorgym data rm``:
candle files into the store, checked, listed and removed.

Examples::

    factorgym import Bitfinex_BTCUSD_1h.csv                 # layout, columns, times, symbol detected
    factorgym import bitstamp.csv --quote USD --store store  # wide file BTC:open,... quoted in USD
    factorgym import BTCUSDT-1m-2024-01.zip --timeframe 1m   # Binance kline dump (no header)
    factorgym import prices.csv --sep ';' --tz Europe/Berlin --time-col Datum --volume-col Menge
    factorgym validate --store store --symbol BTC/USD
    factorgym data list --store store
    factorgym data rm --source file:Bitfinex_BTCUSD_1h --symbol BTC/USD --store store
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from factorgym.commands import HelpFormatter
from factorgym.progress import progress_bar

_COLS = ("time", "open", "high", "low", "close", "volume", "symbol")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="validate a CSV/Parquet candle file and write it to the store",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("file", type=Path, help="CSV (.csv/.txt/.gz/.zip) or Parquet file of candles")
    p.add_argument("--symbol", action="append", default=None,
                   help="unified symbol (BTC/USDT) of a one-symbol file, or symbol(s) to keep from a "
                        "multi-symbol file; repeat for several (default: read from the file)")
    p.add_argument("--timeframe", default=None, help="bar length, e.g. 1m, 1h, 1d (default: the median spacing of the times)")
    p.add_argument("--source", default=None, help="store source name (default: file:<file stem>)")
    _store_arg(p)
    p.add_argument("--gap-policy", choices=("mark", "drop"), default="mark",
                   help="missing bars: mark = insert untradable bars at the last close; drop = leave absent")
    p.add_argument("--jump-threshold", type=float, default=0.5,
                   help="warn when |log(close/previous close)| exceeds this")
    p.add_argument("--dry-run", action="store_true", help="validate and report only; write nothing")
    p.add_argument("--on-conflict", choices=("error", "replace", "keep"), default="error",
                   help="bars already stored with different values: error = stop and name the first one; "
                        "replace = the file's values win; keep = the stored values stay (counted either way)")
    g = p.add_argument_group("layout options (all auto-detected by default)")
    for role in _COLS:
        g.add_argument(f"--{role}-col", default=None, metavar="NAME",
                       help=f"name of the {role} column" + (" (bar open time)" if role == "time" else ""))
    g.add_argument("--layout", choices=("auto", "long", "wide", "headerless"), default="auto",
                   help="long: a row per bar (and symbol); wide: BTC:open,...; headerless: ccxt/Binance "
                        "column order time,open,high,low,close,volume")
    g.add_argument("--timestamp-unit", choices=("auto", "s", "ms", "us", "ns"), default="auto",
                   help="unit of epoch-number times (auto: by magnitude per row)")
    g.add_argument("--tz", default=None, help="time zone of naive date strings, e.g. Europe/Berlin (default UTC)")
    g.add_argument("--skiprows", default="auto", help="lines before the header row (auto: find the table)")
    g.add_argument("--sep", default=None, help="CSV separator (default: sniffed among , ; tab |)")
    g.add_argument("--quote", default=None, help="quote currency of a wide file naming only bases (BTC:open)")
    g.add_argument("--date-format", default=None, help="strftime format of the time column, e.g. %%d/%%m/%%Y %%H:%%M")
    p.set_defaults(func=run_import)

    v = sub.add_parser("validate", help="validate the candles a store holds (exit 1 on a hard failure)",
                       description="Re-check every stored series (or those selected) with the import rules. "
                                   "Repairable faults (rows out of order, identical duplicates, a bar still "
                                   "forming) are reported as 'would repair' and written back only with --repair "
                                   "(atomically).", formatter_class=HelpFormatter)
    _store_arg(v)
    _filter_args(v)
    v.add_argument("--jump-threshold", type=float, default=0.5,
                   help="warn when |log(close/previous close)| exceeds this")
    v.add_argument("--repair", action="store_true",
                   help="write the repaired series back to the store (atomic replace); without it nothing is written")
    v.set_defaults(func=run_validate)

    d = sub.add_parser("data", help="list or remove what the candle store holds", formatter_class=HelpFormatter,
                       description="Inspect and tidy the candle store: `data list` shows every series, "
                                   "`data rm` removes one.")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    lst = dsub.add_parser("list", help="table of stored series: source, symbol, timeframe, rows, range, gaps",
                          description="One row per stored series: source, symbol, timeframe, rows, first and "
                                      "last bar (UTC) and gaps (missing bars, absent or marked untradable).",
                          formatter_class=HelpFormatter)
    _store_arg(lst)
    lst.add_argument("--json", action="store_true", help="one JSON object per series instead of a table")
    lst.set_defaults(func=run_list)
    rm = dsub.add_parser("rm", help="remove a stored series", formatter_class=HelpFormatter,
                         description="Delete the candles of one symbol from one source (one timeframe, or all). "
                                     "See `factorgym data list` for what is stored.\n\n"
                                     "Example:\n  factorgym data rm --source file:bitfinex_btcusd_1h --symbol BTC/USD")
    _store_arg(rm)
    rm.add_argument("--source", required=True, help="store source, as `factorgym data list` shows it")
    rm.add_argument("--symbol", required=True, help="unified symbol, e.g. BTC/USD")
    rm.add_argument("--timeframe", default=None, help="only this timeframe (default: every timeframe of the symbol)")
    rm.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    rm.set_defaults(func=run_rm)


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, default=None, help="store folder (default: $FACTORGYM_STORE or ./store)")


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--symbol", action="append", default=None, help="only this symbol; repeat for several")
    p.add_argument("--source", action="append", default=None, help="only this source; repeat for several")
    p.add_argument("--timeframe", default=None, help="only this timeframe")


def run_import(args: argparse.Namespace) -> int:
    from factorgym.data_layer.sources.base import default_rules
    from factorgym.data_layer.sources.files import import_candle_file
    from factorgym.data_layer.store import CandleStore

    columns = {("timestamp" if r == "time" else r): getattr(args, f"{r}_col") for r in _COLS
               if getattr(args, f"{r}_col")}
    skip = args.skiprows if args.skiprows == "auto" else int(args.skiprows)
    res = import_candle_file(
        args.file, symbol=args.symbol, timeframe=args.timeframe, layout=args.layout, columns=columns or None,
        timestamp_unit=args.timestamp_unit, tz=args.tz, skiprows=skip, sep=args.sep, quote=args.quote,
        date_format=args.date_format, gap_policy=args.gap_policy, jump_threshold=args.jump_threshold,
    )
    source = args.source or f"file:{args.file.stem.split('.')[0]}"
    print(f"{args.file.name}: {res.layout} layout, {res.timeframe} bars, {len(res.candles)} symbol(s)")
    for note in res.notes:
        print(note)
    for rep in res.reports.values():
        print(rep.summary())
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    store = CandleStore(args.store)
    items = progress_bar(list(res.candles.items()), desc="writing", unit="symbol", enabled=len(res.candles) > 1)
    for sym, frame in items:
        report = store.merge(source, sym, res.timeframe, frame, on_conflict=args.on_conflict)
        store.write_rules(source, default_rules(sym))
        print(f"wrote {sym} {res.timeframe} to {store.root} as source {source!r}: {report.summary()}")
    for sym, events in res.funding.items():  # a funding_rate column: perpetuals
        from factorgym.data_layer.funding import write_funding

        print(f"wrote {sym} funding: {write_funding(store, source, sym, events)} new event(s)")
    return 0


def _select(entries, args):
    out = [e for e in entries
           if (not args.symbol or e.symbol in args.symbol)
           and (not args.source or e.source in args.source)
           and (not args.timeframe or e.timeframe == args.timeframe)]
    return out


def run_validate(args: argparse.Namespace) -> int:
    from factorgym.data_layer.sources.file_columns import normalize_symbol
    from factorgym.data_layer.store import CandleStore
    from factorgym.data_layer.validate import validate_candles
    from factorgym.errors import ConfigError, DataValidationError

    store = CandleStore(args.store)
    if args.symbol:
        args.symbol = [normalize_symbol(s) for s in args.symbol]
    entries = store.entries()
    chosen = _select(entries, args)
    if not entries:
        print(f"store {store.root} holds no candles")
        return 0
    if not chosen:
        raise ConfigError(f"no stored series match the filters; the store holds "
                          f"{sorted({(e.source, e.symbol, e.timeframe) for e in entries})}")
    failed = pending = 0
    for e in chosen:
        name = f"{e.source} {e.symbol} {e.timeframe}"
        try:
            frame = store.read(e.source, e.symbol, e.timeframe)
            repaired, rep = validate_candles(frame, e.timeframe, name=name, gap_policy="drop",
                                      jump_threshold=args.jump_threshold)
        except DataValidationError as exc:
            failed += 1
            print(f"FAIL {exc}")
            continue
        if rep.repairs and args.repair:
            store.replace_series(e.source, e.symbol, e.timeframe, repaired)
            print(rep.summary())
        elif rep.repairs:
            print(rep.summary(repaired="would repair"))
            pending += 1
        else:
            print(rep.summary())
    print(f"{len(chosen) - failed} of {len(chosen)} series passed" + (f", {failed} FAILED" if failed else ""))
    if pending:
        print(f"{pending} series would be repaired: run again with --repair to write the repairs")
    return 1 if failed else 0


def run_list(args: argparse.Namespace) -> int:
    from factorgym.data_layer.store import CandleStore
    from factorgym.data_layer.timeframes import ms_to_iso

    store = CandleStore(args.store)
    rows = []
    for e in store.entries():
        marked = e.n_marked
        rows.append({"source": e.source, "symbol": e.symbol, "timeframe": e.timeframe, "rows": e.rows,
                     "first": ms_to_iso(e.first), "last": ms_to_iso(e.last),
                     "gaps": e.n_gaps + marked, "absent": e.n_gaps, "marked": marked})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print(f"store {store.root} holds no candles")
        return 0
    head = ["source", "symbol", "timeframe", "rows", "first", "last", "gaps"]
    table = [head] + [[str(r[h]) for h in head] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    for t in table:
        print("  ".join(c.rjust(w) if i == 3 or i == 6 else c.ljust(w) for i, (c, w) in enumerate(zip(t, widths))))
    print(f"{len(rows)} series in {store.root}; gaps = missing bars (absent + marked untradable), UTC times")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    from factorgym.data_layer.sources.file_columns import normalize_symbol
    from factorgym.data_layer.store import CandleStore
    from factorgym.errors import ConfigError

    store = CandleStore(args.store)
    symbol = normalize_symbol(args.symbol)
    chosen = [e for e in store.entries() if e.source == args.source and e.symbol == symbol
              and args.timeframe in (None, e.timeframe)]
    if not chosen:
        held = sorted({(e.source, e.symbol, e.timeframe) for e in store.entries()})
        raise ConfigError(f"no stored series {args.source} {symbol}{' ' + args.timeframe if args.timeframe else ''} "
                          f"in {store.root}; it holds {held or 'nothing'}")
    if args.dry_run:
        for e in chosen:
            print(f"would remove {e.source} {e.symbol} {e.timeframe} ({e.rows} bars): {e.path}")
        return 0
    for path in store.remove(args.source, symbol, args.timeframe):
        print(f"removed {path}")
    return 0
