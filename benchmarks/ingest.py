"""Ingestion figures, one JSON line each (see the README's Benchmarks section).

- import: rows/s loading + validating the shared hourly Bitfinex file, beside bare pandas.read_csv
- store: append and range-read times for 20 symbols x 20,000 bars, beside bare pyarrow
- download: bars/s from the loopback fake exchange (with and without faults), beside raw HTTP GETs

Run: ``python benchmarks/ingest.py`` (or ``make bench``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # the fake exchange lives with the tests


def main() -> int:
    from _ingest_download import bench_download
    from _ingest_files import bench_import
    from _ingest_store import bench_store

    for bench in (bench_import, bench_store, bench_download):
        for line in bench():
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
