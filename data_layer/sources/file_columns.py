"""Helpers of :mod:`files`: which column is which, symbol names, and times -> UTC ms.

Column names are compared by a key: lower case with everything but letters and digits removed
(``Volume BTC`` -> ``volumebtc``, ``open_time`` -> ``opentime``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from factorgym.errors import ConfigError, DataValidationError

ROLES = ("timestamp", "open", "high", "low", "close", "volume", "symbol", "clock")
# In priority order: an exact epoch column beats a formatted date (Gemini files carry both).
_NAMES = {
    "timestamp": ["timestamp", "unixtimestamp", "unix", "unixtime", "timestampms", "opentime", "opentimestamp",
                  "datetime", "datetimeutc", "date", "dateutc", "time", "timeutc", "ts", "t", "starttime", "period"],
    "open": ["open", "o", "openprice", "opening"],
    "high": ["high", "h", "highprice", "max"],
    "low": ["low", "l", "lowprice", "min"],
    "close": ["close", "c", "closeprice", "last", "closing"],
    "volume": ["volume", "v", "vol", "volumefrom", "basevolume", "volumebase", "baseassetvolume", "volbase"],
    "symbol": ["symbol", "ticker", "pair", "market", "instrument", "asset", "coin"],
}
SYMBOL_NAMES = set(_NAMES["symbol"])
# Recognised so they are never mistaken for base volume; not kept.
QUOTE_VOLUME_NAMES = {"volumeto", "quotevolume", "quoteassetvolume", "volumequote", "quotevol", "turnover"}
BASE_VOLUME_NAMES = {"volumefrom", "basevolume", "volumebase", "baseassetvolume", "volbase"}
PLAIN_VOLUME_NAMES = {"volume", "v", "vol"}
QUOTES = ["USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "DAI", "USD", "EUR", "GBP", "JPY", "AUD", "CAD",
          "CHF", "TRY", "BRL", "KRW", "BTC", "ETH", "BNB", "XBT"]
_FIAT_STABLE = {"USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USDP", "DAI", "USD", "EUR", "GBP", "JPY", "AUD",
                "CAD", "CHF", "TRY", "BRL", "KRW"}
KNOWN_BASES = {"BTC", "ETH", "LTC", "XRP", "BCH", "ADA", "SOL", "DOGE", "DOT", "BNB", "TRX", "LINK", "MATIC",
               "AVAX", "XLM", "EOS", "ETC", "XMR", "ZEC", "DASH", "NEO", "UNI", "ATOM", "USDT", "USDC"}
_ALIASES = {"XBT": "BTC"}  # as ccxt unifies Kraken/BitMEX codes
_WIDE = re.compile(r"^(?P<asset>[A-Za-z0-9/]+?)\s*[:_\-. ]\s*(?P<field>open|high|low|close|volume)$", re.I)
_TF_UNITS = [("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)]


def key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def normalize_symbol(text: str, *, where: str | None = None) -> str:
    """Unified ``BASE/QUOTE``: ``btc-usd``, ``BTC_USD``, ``BTCUSD``, ``XBTUSD`` -> ``BTC/USD``.

    A compact name is split at a known quote currency; if two splits are possible and not exactly
    one of them has a well-known base, it is ambiguous and refused.
    """
    err = DataValidationError if where else ConfigError
    t = str(text).strip().upper()
    if "/" in t:
        base, _, quote = t.partition("/")
    elif len(parts := [p for p in re.split(r"[-_ ]", t) if p]) == 2:
        base, quote = parts
    else:
        matches = [(t[: -len(q)], q) for q in QUOTES if t.endswith(q) and len(t) - len(q) >= 2]
        if len(matches) > 1:
            known = [m for m in matches if _ALIASES.get(m[0], m[0]) in KNOWN_BASES]
            matches = known if len(known) == 1 else matches
        if len(matches) != 1 or not matches[0][0].isalnum():
            why = "ambiguous" if len(matches) > 1 else "not a BASE/QUOTE pair"
            raise err(f"{where + ': ' if where else ''}symbol {text!r} is {why}: pass --symbol BASE/QUOTE, e.g. BTC/USDT")
        base, quote = matches[0]
    if not base or not quote:
        raise err(f"{where + ': ' if where else ''}symbol {text!r} is not a BASE/QUOTE pair")
    quote, _, settle = quote.partition(":")
    out = f"{_ALIASES.get(base, base)}/{_ALIASES.get(quote, quote)}"
    return f"{out}:{settle}" if settle else out


def _tokens(path: Path) -> list[str]:
    return [t for t in re.split(r"[_\-\s.]+", path.stem) if t]


def symbol_from_filename(path: Path) -> str:
    """The one symbol a file name spells (``Bitfinex_BTCUSD_1h``, ``BTCUSDT-1h-2024-01``, ``eth_usd``)."""
    toks = _tokens(path)
    found = set()
    for t in toks:
        if t.isalpha() and 5 <= len(t) <= 12:
            try:
                found.add(normalize_symbol(t))
            except ConfigError:
                pass
    if not found:
        found = {f"{a.upper()}/{b.upper()}" for a, b in zip(toks, toks[1:])
                 if a.isalpha() and 2 <= len(a) <= 6 and b.upper() in QUOTES}
    if len(found) != 1:
        raise ConfigError(
            f"cannot tell the symbol of {path.name} from its name or columns"
            f"{' (candidates: ' + ', '.join(sorted(found)) + ')' if found else ''}: pass --symbol BASE/QUOTE"
        )
    return normalize_symbol(found.pop())


def timeframe_from_ms(ms: int, where: str) -> str:
    """``3_600_000`` -> ``1h``; the largest unit that divides the spacing."""
    for unit, size in _TF_UNITS:
        if ms > 0 and ms % size == 0:
            return f"{ms // size}{unit}"
    raise DataValidationError(f"{where}: median bar spacing {ms} ms is not a whole number of seconds: pass --timeframe")


def find_wide(columns) -> dict[str, dict[str, str]]:
    """Wide groups ``{asset: {role: column}}``. Empty unless some asset has all of OHLC; then every
    asset with a price field is returned, complete or not (the caller refuses incomplete ones)."""
    groups: dict[str, dict[str, str]] = {}
    for c in columns:
        m = _WIDE.match(str(c).strip())
        if m:
            groups.setdefault(m["asset"], {})[m["field"].lower()] = c
    if not any({"open", "high", "low", "close"} <= set(g) for g in groups.values()):
        return {}
    return {a: g for a, g in groups.items() if set(g) & {"open", "high", "low", "close"}}


def wide_symbols(assets: list[str], quote: str | None, path: Path, columns) -> dict[str, str]:
    """Unified symbol of each wide asset prefix, using ``quote`` or a quote currency in the file name."""
    if quote is None:
        upper = {a.upper() for a in assets}
        cands = {t.upper() for t in _tokens(path) if t.upper() in QUOTES and t.upper() not in upper}
        quote = cands.pop() if len(cands) == 1 else None
    out = {}
    for a in assets:
        try:
            out[a] = normalize_symbol(a)
        except ConfigError:
            if quote is None:
                raise ConfigError(
                    f"{path.name}: wide columns name assets {', '.join(assets)} but not their quote "
                    f"currency: pass --quote (e.g. --quote USD)"
                ) from None
            out[a] = normalize_symbol(f"{a}/{quote}")
    return out


def _volume_kind(k: str, base: str | None) -> str:
    """``base``, ``quote`` or ``plain`` (the name does not say) for a volume column key, else ``""``."""
    if k in BASE_VOLUME_NAMES:
        return "base"
    if k in QUOTE_VOLUME_NAMES:
        return "quote"
    if k in PLAIN_VOLUME_NAMES:
        return "plain"
    if k.startswith("volume") and len(k) > 6 and k[6:].isalpha():
        cur = k[6:].upper()
        cur = _ALIASES.get(cur, cur)
        if base:
            return "base" if cur == base else "quote"
        return "quote" if cur in _FIAT_STABLE else "base"
    return ""


def pick_volume(cols: list[str], base: str | None, where: str) -> tuple[str, str] | None:
    """The base-currency volume column (ccxt's convention, as the downloader stores) and a note saying
    which column was used and which were passed over; None when the file has no volume column.

    A column named for the base currency (``Volume BTC`` for BTC/USD, ``VolumeFrom``, ``base_volume``)
    wins over a plain ``volume``, which may hold either; a plain column beside columns named as quote
    volume (``quote_asset_volume``, ``VolumeTo``) is the base one. A plain column beside a column in
    another currency (``Volume USD``) cannot be told apart: that asks for ``--volume-col``.
    """
    kinds = {c: _volume_kind(key(c), base) for c in cols}
    vols = {c: k for c, k in kinds.items() if k}
    based = [c for c, k in vols.items() if k == "base"]
    plain = [c for c, k in vols.items() if k == "plain"]
    others = [c for c in vols if c not in based[:1]]
    if len(based) == 1:
        note = f"volume: column {based[0]!r} (base currency)" + (f"; not {others}" if others else "")
        return based[0], note if others else ""
    named_quote = [c for c, k in vols.items() if k == "quote" and key(c) in QUOTE_VOLUME_NAMES]
    other_ccy = [c for c, k in vols.items() if k == "quote" and key(c) not in QUOTE_VOLUME_NAMES]
    if len(based) == 0 and len(plain) == 1 and not other_ccy:
        return plain[0], (f"volume: column {plain[0]!r} (base currency); not {named_quote}" if named_quote else "")
    if not based and not plain:
        return None
    raise DataValidationError(
        f"{where}: cannot tell which volume column is in the base currency{f' ({base})' if base else ''} among "
        f"{list(vols)}: pass --volume-col NAME (the volume counted in the base asset, as ccxt stores it)"
    )


def find_columns(columns, explicit: dict[str, str], where: str, *, need_ohlcv: bool, base: str | None = None,
                 notes: list[str] | None = None) -> dict:
    """Role -> column name; explicit names win, else the first known name per role. The volume
    column is chosen by :func:`pick_volume`; what it decided is appended to ``notes``."""
    cols = [str(c) for c in columns]
    by_key: dict[str, str] = {}
    for c in cols:
        by_key.setdefault(key(c), c)
    out: dict[str, str] = {}
    for role, name in (explicit or {}).items():
        if role not in ROLES:
            raise ConfigError(f"unknown column role {role!r}: use one of {ROLES}")
        if name not in cols:
            raise DataValidationError(f"{where}: column {name!r} (given for {role}) is not in the file; it has {cols}")
        out[role] = name
    for role, names in _NAMES.items():
        if role in out or (not need_ohlcv and role not in ("timestamp",)):
            continue
        hit = next((by_key[n] for n in names if n in by_key), None)
        if hit:
            out[role] = hit
    if "timestamp" not in out and cols and (cols[0].startswith("Unnamed") or cols[0] in ("", "index")):
        out["timestamp"] = cols[0]  # a time index written without a name (pandas' to_csv)
    if "timestamp" in out and "clock" not in out and key(out["timestamp"]) == "date" and "time" in by_key:
        out["clock"] = by_key["time"]  # separate date and time columns (combined if time is a clock)
    if need_ohlcv and "volume" not in (explicit or {}):
        out.pop("volume", None)
        picked = pick_volume(cols, base, where)
        if picked:
            out["volume"] = picked[0]
            if notes is not None and picked[1]:
                notes.append(picked[1])
    if "timestamp" not in out:
        raise DataValidationError(f"{where}: no time column found among {cols}: pass --time-col NAME")
    if need_ohlcv:
        missing = [r for r in ("open", "high", "low", "close", "volume") if r not in out]
        if missing:
            quote_vol = [c for c in cols if key(c) in QUOTE_VOLUME_NAMES]
            hint = f" (only quote volume {quote_vol} found; the candle layout needs base volume)" if missing == ["volume"] and quote_vol else ""
            raise DataValidationError(
                f"{where}: no {', '.join(missing)} column found among {cols}{hint}: "
                f"pass {' '.join('--' + m + '-col NAME' for m in missing)}"
            )
    return out


def _bad(series: pd.Series, mask: np.ndarray, where: str, col: str, what: str) -> DataValidationError:
    p = int(np.flatnonzero(mask)[0])
    return DataValidationError(f"{where}: {series.index.name or 'row'} {series.index[p]}: column {col!r}: "
                               f"value {series.iloc[p]!r} {what} ({int(mask.sum())} such row(s))")


def _epoch_ms(values: pd.Series, unit: str, where: str, col: str) -> np.ndarray:
    """Epoch numbers -> int64 ms; ``auto`` picks s/ms/us/ns per row by magnitude."""
    if values.isna().any():
        raise _bad(values, values.isna().to_numpy(), where, col, "is a missing time")
    ints = pd.api.types.is_integer_dtype(values)
    v = values.to_numpy(dtype=np.int64 if ints else np.float64)
    if unit == "auto":
        a = np.abs(v)
        div = np.select([a < 1e11, a < 1e14, a < 1e17], [-1000, 1, 1000], 1_000_000)
    else:
        sizes = {"s": -1000, "ms": 1, "us": 1000, "ns": 1_000_000}
        if unit not in sizes:
            raise ConfigError(f"timestamp unit {unit!r} is not one of auto, s, ms, us, ns")
        div = np.full(len(v), sizes[unit])
    if ints:
        ms = np.where(div < 0, v * -div, v // np.abs(div)).astype(np.int64)
    else:
        ms = np.round(np.where(div < 0, v * -div, v / np.abs(div))).astype(np.int64)
    early = ms < _FIRST_CRYPTO_MS
    if unit == "auto" and early.any():
        raise _bad(values, early, where, col, "reads as a time before 2009 (no crypto market): a wrong "
                   "unit? pass --timestamp-unit (s, ms, us, ns) or --date-format")
    return ms


_FIRST_CRYPTO_MS = 1_230_768_000_000  # 2009-01-01 UTC
_AWARE = r"\d(?:Z|[+-]\d\d:?\d\d|\s?UTC)$"
_FORMATS = ["ISO8601", "%Y-%m-%d %I-%p", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
            "%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M", "%Y.%m.%d", "%Y%m%d %H:%M:%S", "%Y%m%d"]
_SLASH = ["%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%m/%d/%Y", "%d/%m/%Y"]


def _parse_strings(s: pd.Series, tz: str | None, date_format: str | None, where: str, col: str) -> np.ndarray:
    # RE2 over the whole column in C (pandas' str.contains runs Python's re row by row)
    aware = pc.match_substring_regex(pa.array(s.to_numpy(dtype=object), type=pa.string()), _AWARE)
    aware = aware.to_numpy(zero_copy_only=False).astype(bool)
    if aware.any() and not aware.all():
        minority = ~aware if aware.sum() > len(aware) / 2 else aware
        raise _bad(s, minority, where, col, "mixes times with and without a time zone in one column; "
                   "export all times in one convention")
    if aware.all():
        if tz:
            raise ConfigError(f"{where}: column {col!r} already carries time zones; drop --tz")
        s = s.str.replace(r"\s?UTC$", "+00:00", regex=True)
    utc = bool(aware.all())
    sample = s.iloc[:200]
    fmt = date_format
    for f in [] if date_format else _FORMATS:
        try:
            if pd.to_datetime(sample, format=f, errors="coerce", utc=utc).notna().all():
                fmt = f
                break
        except (ValueError, TypeError):
            continue
    if fmt is None:  # 03/01/2021: month/day or day/month? only the whole column can tell
        tries = {f: pd.to_datetime(s, format=f, errors="coerce", utc=utc) for f in _SLASH}
        good = [f for f, p in tries.items() if p.notna().all()]
        distinct = {tuple(tries[f].to_numpy()[:1000].tolist()) for f in good}
        if len(distinct) > 1:
            raise DataValidationError(f"{where}: column {col!r}: dates like {s.iloc[0]!r} could be day/month "
                                      f"or month/day: pass --date-format, e.g. %d/%m/%Y")
        fmt = good[0] if good else "ISO8601"
    parsed = pd.to_datetime(s, format=fmt, errors="coerce", utc=utc)
    if parsed.isna().any():
        raise _bad(s, parsed.isna().to_numpy(), where, col, "is not a time this column's format can read")
    if aware.all():
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    elif tz:
        try:
            parsed = parsed.dt.tz_localize(tz, ambiguous="raise", nonexistent="raise").dt.tz_convert("UTC")
        except Exception as exc:  # pytz/zoneinfo errors: ambiguous or missing local times around DST
            raise DataValidationError(f"{where}: column {col!r}: local times in {tz} cannot be converted "
                                      f"({exc}); export the file in UTC") from exc
        parsed = parsed.dt.tz_localize(None)
    return parsed.dt.as_unit("ms").to_numpy().astype(np.int64)


def to_utc_ms(df: pd.DataFrame, cols: dict, *, unit: str, tz: str | None, date_format: str | None,
              where: str) -> np.ndarray:
    """The bar open time of every row as int64 UTC ms (see :mod:`files` for what is understood)."""
    col = cols["timestamp"]
    s = df[col]
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s):
        if s.isna().any():
            raise _bad(s, s.isna().to_numpy(), where, col, "is a missing time")
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        elif tz:
            s = s.dt.tz_localize(tz).dt.tz_convert("UTC").dt.tz_localize(None)
        return s.dt.as_unit("ms").to_numpy().astype(np.int64)
    if pd.api.types.is_integer_dtype(s) and len(s) and s.between(19_000_101, 21_001_231).all():
        s = s.astype("str")  # 20240101: a date written as a number
    elif pd.api.types.is_numeric_dtype(s):
        if tz:
            raise ConfigError(f"{where}: column {col!r} holds epoch numbers, which are UTC by definition; drop --tz")
        return _epoch_ms(s, unit, where, col)
    text = s.astype("str").str.strip()
    empty = s.isna().to_numpy() | (text == "").to_numpy()
    if empty.any():
        raise _bad(s, empty, where, col, "is a missing time")
    if "clock" in cols:
        clock = df[cols["clock"]].astype("str").str.strip()
        if clock.str.match(r"^\d{1,2}:\d\d(:\d\d)?$").all():
            text = text + " " + clock
    head = pd.to_numeric(text.iloc[:100], errors="coerce")  # cheap look before converting everything
    num = pd.to_numeric(text, errors="coerce") if head.notna().all() else head
    if head.notna().all() and num.notna().all() and not num.between(19_000_101, 21_001_231).all():
        return _epoch_ms(num, unit, where, col)
    return _parse_strings(text, tz, date_format, where, col)
