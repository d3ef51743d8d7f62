"""``factorgym build`` / ``factorgym inspect``: factor tensors from stored candles.

Examples:
  factorgym build --config configs/factors/build_sample_bitfinex.yaml --out tensors/btc_1h
  factorgym inspect tensors/btc_1h
"""

from __future__ import annotations

import argparse

from factorgym.commands import HelpFormatter


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "build",
        help="build a point-in-time factor tensor from a build config",
        description="Read candles from the store, align the symbols on one time grid, compute the factor "
                    "set, normalise, drop the warm-up and save a FactorTensor folder (.npy + meta.json).",
        formatter_class=HelpFormatter,
    )
    b.add_argument("--config", required=True,
                   help="build config YAML (keys data, factor_set or factors, normalise, cross_sectional); "
                        "see configs/factors/build_sample_bitfinex.yaml")
    b.add_argument("--out", required=True, help="output folder of the tensor (replaced atomically if it exists)")
    b.add_argument("--store", default=None, help="candle store folder, overriding data.store of the config")
    b.add_argument("--out-of-core", action="store_true",
                   help="compute factors asset by asset and normalise in time chunks, writing into --out as it "
                        "goes: memory bounded by one asset's work, not by bars x assets x features; the same "
                        "tensor bit for bit (for minute bars over years)")
    b.add_argument("--chunk-rows", type=int, default=None,
                   help="with --out-of-core: bars per time chunk (default: about 32 MB of float64 features)")
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    b.set_defaults(func=run_build)

    i = sub.add_parser(
        "inspect",
        help="summarise a saved factor tensor",
        description="Print shape, time range, symbols, features with their statistics, NaN count, "
                    "untradable share, hashes and funding (perpetuals: charged bars and mean rate per "
                    "symbol; 'none' for spot) of a saved FactorTensor (memory-mapped, not loaded whole).",
        formatter_class=HelpFormatter,
    )
    i.add_argument("dir", help="folder written by `factorgym build`")
    i.add_argument("--max-features", type=int, default=60, help="list at most this many features")
    i.set_defaults(func=run_inspect)


def summary(tensor) -> str:
    """Readable multi-line summary of a tensor (shape, range, features, NaN count, untradable share)."""
    import numpy as np

    from factorgym.data_layer.timeframes import ms_to_iso

    meta = tensor.meta
    T, A, F = tensor.n_bars, tensor.n_assets, tensor.n_features
    tr = np.asarray(tensor.tradable)
    lines = [
        f"shape        [T={T}, A={A}, F={F}] ({tensor.timeframe})",
        f"time range   {ms_to_iso(int(tensor.timestamps[0])) if T else '-'} .. {ms_to_iso(int(tensor.timestamps[-1])) if T else '-'}",
        f"symbols      {', '.join(tensor.symbols)}",
        f"source       {meta.get('source', '-')}",
        f"features     {F}: {', '.join(tensor.feature_names[:12])}{' ...' if F > 12 else ''}",
        f"NaN count    {meta.get('nan_count', '-')} (non-finite values on tradable rows, stored as 0)",
        f"untradable   {100 * (1 - tr.mean()) if tr.size else 100:.2f}% of bars "
        + "(" + ", ".join(f"{s} {100 * (1 - tr[:, a].mean()):.1f}%" for a, s in enumerate(tensor.symbols)) + ")",
        f"warm-up      {meta.get('warmup_bars', '-')} bars per asset; {meta.get('dropped_warmup_rows', '-')} leading rows dropped",
        f"normalise    {(meta.get('normalisation') or {}).get('method', '-')}",
        f"factor set   {str(meta.get('factor_set_hash', '-'))[:16]}",
        f"content hash {str(meta.get('content_hash', '-'))[:16]}",
        funding_summary(tensor),
    ]
    return "\n".join(lines)


def funding_summary(tensor) -> str:
    """One line: ``none (spot)`` or per symbol the charged bars and the mean rate per charge."""
    import numpy as np

    if tensor.funding is None:
        return "funding      none (spot tensor)"
    f = np.asarray(tensor.funding)
    info = tensor.meta.get("funding") or {}
    per = []
    for a, s in enumerate(tensor.symbols):
        charged = f[:, a][f[:, a] != 0]
        mean = f"{100 * charged.mean():+.4f}%" if charged.size else "-"
        per.append(f"{s} {charged.size} charges, mean {mean}")
    return (f"funding      source {info.get('source', '-')}, hash {str(info.get('hash', '-'))[:16]}; "
            + "; ".join(per))


def run_build(args: argparse.Namespace) -> int:
    import time

    from factorgym.data_layer.build import build_from_config

    t0 = time.perf_counter()
    progress = not args.no_progress  # a bar on a terminal, log lines elsewhere (factorgym.progress)
    if args.out_of_core:
        from factorgym.data_layer.build_disk import build_from_config_to_disk

        tensor = build_from_config_to_disk(args.config, args.out, store=args.store, chunk_rows=args.chunk_rows,
                                           progress=progress)
        out = args.out
    else:
        tensor = build_from_config(args.config, store=args.store, progress=progress)
        out = tensor.save(args.out)
    print(summary(tensor))
    print(f"saved        {out} in {time.perf_counter() - t0:.2f} s")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    import numpy as np

    from factorgym.data_layer.tensor import FactorTensor

    tensor = FactorTensor.load(args.dir, mmap=True)
    print(summary(tensor))
    tr = np.asarray(tensor.tradable)
    print(f"{'feature':40s} {'mean':>10s} {'std':>10s} {'min':>10s} {'max':>10s}  (tradable rows)")
    step = max(1, tensor.n_bars // 200_000)  # sample rows of very long tensors
    for j, name in enumerate(tensor.feature_names[: args.max_features]):
        col = np.asarray(tensor.features[::step, :, j])[tr[::step]]
        if col.size:
            print(f"{name[:40]:40s} {col.mean():10.4g} {col.std():10.4g} {col.min():10.4g} {col.max():10.4g}")
        else:
            print(f"{name[:40]:40s} {'(no tradable rows)':>10s}")
    if tensor.n_features > args.max_features:
        print(f"... {tensor.n_features - args.max_features} more (--max-features)")
    return 0
