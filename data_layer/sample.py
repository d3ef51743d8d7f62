"""The real candles shipped inside the package (see ``sample_data/README.md`` for attribution).

>>> from factorgym.data_layer.sample import sample_candles
>>> frames = sample_candles("bitstamp_daily")
>>> sorted(frames)
['BTC/USD', 'ETH/USD', 'LTC/USD']
>>> int(sample_candles("bitfinex_btcusd_1h")["BTC/USD"]["timestamp"].iloc[0])  # 2017-07-01 11:00 UTC
1498906800000
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.sources.base import default_rules
from factorgym.data_layer.validate import ValidationReport, validate_candles
from factorgym.errors import ConfigError

_PACKAGE = "factorgym.data_layer"
# The shipped data ends before this time (2024-01-01 UTC): a fixed "now" keeps loading deterministic.
_NOW_MS = 1_704_067_200_000


@dataclasses.dataclass(frozen=True)
class Sample:
    """One shipped sample: Parquet file, store source name and timeframe."""

    name: str
    file: str
    source: str
    timeframe: str
    symbols: tuple[str, ...]


def _manifest() -> dict:
    text = resources.files(_PACKAGE).joinpath("sample_data", "samples.json").read_text()
    return json.loads(text)


def samples() -> dict[str, Sample]:
    """Every shipped sample by name (``bitfinex_btcusd_1h``, ``bitstamp_daily``)."""
    return {
        name: Sample(name=name, file=m["file"], source=m["source"], timeframe=m["timeframe"],
                     symbols=tuple(m["symbols"]))
        for name, m in _manifest().items()
    }


def _sample(name: str) -> Sample:
    known = samples()
    if name not in known:
        raise ConfigError(f"unknown sample {name!r}: choose one of {sorted(known)}")
    return known[name]


def sample_reports(name: str = "bitfinex_btcusd_1h", *, gap_policy: str = "mark") -> dict[str, tuple[pd.DataFrame, ValidationReport]]:
    """Validated frames and reports of one sample, per unified symbol."""
    s = _sample(name)
    with resources.as_file(resources.files(_PACKAGE).joinpath("sample_data", s.file)) as path:
        table = pq.read_table(path)
    symbols = table.column("symbol").to_numpy(zero_copy_only=False).astype(str)
    values = {c: table.column(c).to_numpy() for c in CANDLE_COLUMNS}
    out = {}
    for sym in s.symbols:
        rows = np.flatnonzero(symbols == sym)
        frame = pd.DataFrame({c: values[c][rows] for c in CANDLE_COLUMNS})
        out[sym] = validate_candles(frame, s.timeframe, name=f"sample {name} [{sym}]",
                                    gap_policy=gap_policy, now_ms=_NOW_MS)
    return out


def sample_candles(name: str = "bitfinex_btcusd_1h", *, gap_policy: str = "mark") -> dict[str, pd.DataFrame]:
    """Candle frames of a shipped sample per unified symbol, validated (``timestamp`` int64 UTC ms).

    ``bitfinex_btcusd_1h``: Bitfinex BTC/USD hourly 2017-07-01 .. 2019-07-04.
    ``bitstamp_daily``: Bitstamp BTC/USD, ETH/USD, LTC/USD daily 2014-11-28 .. 2020-01-17 (ETH and
    LTC start at their listing; bars before it are absent, not zero).
    """
    return {sym: frame for sym, (frame, _) in sample_reports(name, gap_policy=gap_policy).items()}


def load_sample_into_store(store, names: str | list[str] | None = None, *,
                           gap_policy: str = "mark") -> list[tuple[str, str, str]]:
    """Write shipped samples into a :class:`~factorgym.data_layer.store.CandleStore` with default
    market rules (10 bps fees, no lot rules). Sources are ``sample:bitfinex`` / ``sample:bitstamp``.

    Returns the ``(source, symbol, timeframe)`` keys written. Writing again is idempotent.
    """
    chosen = list(samples()) if names is None else [names] if isinstance(names, str) else list(names)
    keys = []
    for name in chosen:
        s = _sample(name)
        for sym, frame in sample_candles(name, gap_policy=gap_policy).items():
            store.write(s.source, sym, s.timeframe, frame)
            store.write_rules(s.source, default_rules(sym))
            keys.append((s.source, sym, s.timeframe))
    return keys
