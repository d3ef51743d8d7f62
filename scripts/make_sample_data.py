"""Convert the shared real candles into the compact Parquet sample data shipped in the wheel.

    python scripts/make_sample_data.py [--data ../shared/data] [--out data_layer/sample_data]

Each CSV goes through the file loader and validation (gap policy ``drop``: only real bars are
stored; :func:`factorgym.data_layer.sample.sample_candles` re-validates and applies the caller's
policy). One long-layout Parquet file per sample: ``symbol`` (dictionary-encoded), ``timestamp``
(int64 UTC ms, delta-encoded), open/high/low/close/volume as float64 (never float32: a price must
round-trip exactly), zstd level 19. ``samples.json`` records source file hashes, rows and reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.sources.files import import_candle_file

REPO = Path(__file__).resolve().parents[1]
# sample name -> (shared CSV, store source name)
SAMPLES = {
    "bitfinex_btcusd_1h": ("bitfinex_btcusd_1h.csv", "sample:bitfinex"),
    "bitstamp_daily": ("bitstamp_btc_eth_ltc_usd_1d.csv", "sample:bitstamp"),
}
# A fixed "now" (2024-01-01 UTC) so the output never depends on when the script runs.
NOW_MS = 1_704_067_200_000


def convert(csv: Path, out: Path) -> dict:
    res = import_candle_file(csv, gap_policy="drop", now_ms=NOW_MS)
    frames = []
    for sym, df in res.candles.items():
        f = df[CANDLE_COLUMNS].copy()
        f.insert(0, "symbol", sym)
        frames.append(f)
    long = pd.concat(frames, ignore_index=True)
    table = pa.Table.from_pandas(long, preserve_index=False).cast(pa.schema(
        [pa.field("symbol", pa.dictionary(pa.int8(), pa.string())), pa.field("timestamp", pa.int64())]
        + [pa.field(c, pa.float64()) for c in CANDLE_COLUMNS[1:]]
    ))
    pq.write_table(
        table, out, compression="zstd", compression_level=19,
        use_dictionary=["symbol"], column_encoding={"timestamp": "DELTA_BINARY_PACKED",
                                                   **{c: "BYTE_STREAM_SPLIT" for c in CANDLE_COLUMNS[1:]}},
        row_group_size=1 << 20,
    )
    back = pq.read_table(out).to_pandas()
    for sym, df in res.candles.items():  # exact round trip, float64 included
        got = back[back["symbol"] == sym][CANDLE_COLUMNS].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, df[CANDLE_COLUMNS].reset_index(drop=True), check_exact=True)
        assert got["close"].dtype == np.float64
    return {
        "file": out.name,
        "timeframe": res.timeframe,
        "source_csv": csv.name,
        "source_sha256": hashlib.sha256(csv.read_bytes()).hexdigest(),
        "symbols": {s: res.reports[s].to_dict() for s in res.candles},
        "bytes": out.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="folder of the shared CSVs")
    ap.add_argument("--out", type=Path, default=REPO / "data_layer" / "sample_data", help="output folder")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, (csv, source) in SAMPLES.items():
        info = convert(args.data / csv, args.out / f"{name}.parquet")
        manifest[name] = {"source": source, **info}
        print(f"{name}: {info['bytes']:,} bytes, symbols {list(info['symbols'])}, {info['timeframe']}")
    (args.out / "samples.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"total {total:,} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
