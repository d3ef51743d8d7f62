"""A seeded synthetic multi-asset crypto market (an ``OHLCVSource`` for tests, examples and benchmarks).

Model, per bar ``t`` and asset ``i`` (log returns, all vectorised over time and assets):

* **Correlation**: ``z[t, i] = sqrt(rho) * f[t] + sqrt(1 - rho) * e[t, i]`` (one common factor, so
  every pair has correlation ``rho``), or ``z = e @ chol(C).T`` when a full matrix ``C`` is given.
* **Volatility regimes**: a two-state Markov chain (calm / turbulent) shared by the market, drawn as
  alternating geometric run lengths; the turbulent state multiplies volatility. This is what makes
  ``|returns|`` autocorrelated (volatility clustering).
* **Jumps**: idiosyncratic Bernoulli arrivals with normal sizes of ``jump_scale`` bar-volatilities.
* **Bars**: ``open[t] = close[t-1]`` (24/7 market), ``high``/``low`` extend beyond ``max/min(open,
  close)`` by a half-normal multiple of the bar volatility, so ``low <= open, close <= high`` always.
* **Volume**: log-normal around a per-asset base, rising with ``|return| / bar volatility``.
* **Listing**: ``listing={symbol: time}`` drops every bar that opens before that time.

With a scalar correlation each asset draws from its own stream keyed by ``(seed, symbol)``, so adding
a symbol leaves the others' paths unchanged. Same arguments, same bits.

Market rules are :func:`~factorgym.data_layer.sources.base.default_rules` (10 bps fees, no lot rules).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.sources.base import MarketRules, default_rules
from factorgym.data_layer.timeframes import bars_per_year, timeframe_to_ms, to_utc_ms
from factorgym.errors import ConfigError

DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT")


@dataclasses.dataclass(frozen=True)
class MarketParams:
    """Dynamics of the synthetic market. Volatilities are annualised (fraction per year on a
    365-day 24/7 calendar); probabilities are per bar."""

    correlation: float = 0.5          # pairwise correlation of diffusive returns, in [0, 1)
    annual_vol: float = 0.7           # mean annualised volatility; assets spread 0.6x..1.4x around it
    annual_drift: float = 0.0         # expected annual log return
    calm_vol: float = 0.7             # volatility multiplier in the calm regime
    turbulent_vol: float = 2.0        # volatility multiplier in the turbulent regime
    p_calm_to_turbulent: float = 0.004   # mean calm spell 250 bars
    p_turbulent_to_calm: float = 0.02    # mean turbulent spell 50 bars
    jump_intensity: float = 0.002     # jump probability per bar and asset
    jump_scale: float = 6.0           # jump size std in bar volatilities
    wick_scale: float = 0.6           # high/low excursion std in bar volatilities
    volume_sensitivity: float = 0.8   # volume multiplier per |return| / bar volatility

    def __post_init__(self) -> None:
        checks = {
            "annual_vol": self.annual_vol > 0,
            "calm_vol": self.calm_vol > 0,
            "turbulent_vol": self.turbulent_vol > 0,
            "p_calm_to_turbulent": 0 < self.p_calm_to_turbulent <= 1,
            "p_turbulent_to_calm": 0 < self.p_turbulent_to_calm <= 1,
            "jump_intensity": 0 <= self.jump_intensity <= 1,
            "jump_scale": self.jump_scale >= 0,
            "wick_scale": self.wick_scale >= 0,
            "volume_sensitivity": self.volume_sensitivity >= 0,
            "correlation": 0 <= self.correlation < 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"synthetic market parameter(s) {bad} out of range: {self}")


def _regime_chain(rng: np.random.Generator, n: int, p01: float, p10: float) -> np.ndarray:
    """Two-state Markov chain of length ``n`` (0 calm, 1 turbulent), from alternating geometric
    spell lengths; starts in the stationary distribution."""
    first = int(rng.random() < p01 / (p01 + p10))
    lengths, total = [], 0
    while total < n:  # loops over chunks of spells, not over time; almost always once
        k = int(n * max(p01, p10)) + 16
        calm, turb = rng.geometric(p01, size=k), rng.geometric(p10, size=k)
        pair = np.stack([turb, calm] if first else [calm, turb], axis=1).ravel()
        lengths.append(pair)
        total += int(pair.sum())
    run = np.concatenate(lengths)
    state = (np.arange(len(run)) + first) % 2
    return np.repeat(state, run)[:n].astype(np.int8)


def _asset_rng(seed: int, symbol: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 2, zlib.crc32(symbol.encode())]))


class SyntheticSource:
    """Seeded synthetic market implementing :class:`~factorgym.data_layer.sources.base.OHLCVSource`.

    Args:
        symbols: unified symbols, or an int ``n`` for ``SYN0/USDT .. SYN{n-1}/USDT``.
        timeframe: bar length in ccxt's form; ``fetch`` serves only this timeframe.
        start: open time of the first bar (anything :func:`to_utc_ms` parses).
        n_bars: bars generated per asset before listing cuts.
        seed: non-negative int; the same arguments give bit-identical candles.
        listing: optional ``{symbol: time}``; bars opening before it are absent.
        params: :class:`MarketParams`; ``correlation`` may instead be a full ``[A, A]`` matrix passed
            here as ``correlation=`` (then all assets share one random stream).
    """

    name = "synthetic"

    def __init__(
        self,
        symbols: Sequence[str] | int = DEFAULT_SYMBOLS,
        timeframe: str = "1h",
        start: str | int = "2022-01-01",
        n_bars: int = 5000,
        seed: int = 0,
        listing: Mapping[str, str | int] | None = None,
        params: MarketParams | None = None,
        correlation: np.ndarray | None = None,
    ) -> None:
        if isinstance(symbols, (int, np.integer)):
            symbols = [f"SYN{i}/USDT" for i in range(int(symbols))]
        self._symbols = [str(s) for s in symbols]
        if not self._symbols or len(set(self._symbols)) != len(self._symbols):
            raise ConfigError(f"synthetic symbols must be a non-empty list of unique names, got {symbols!r}")
        self.timeframe = timeframe
        self.step_ms = timeframe_to_ms(timeframe)
        self.start = to_utc_ms(start)
        if int(n_bars) < 1:
            raise ConfigError(f"synthetic n_bars must be >= 1, got {n_bars}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"synthetic seed must be a non-negative int, got {seed!r}")
        self.n_bars, self.seed = int(n_bars), int(seed)
        self.params = params or MarketParams()
        self.listing = {}
        for sym, when in (listing or {}).items():
            if sym not in self._symbols:
                raise ConfigError(f"listing names {sym!r}, which is not among the synthetic symbols {self._symbols}")
            self.listing[sym] = to_utc_ms(when)
        self._chol = None
        if correlation is not None:
            c = np.asarray(correlation, dtype=np.float64)
            a = len(self._symbols)
            if c.shape != (a, a) or not np.allclose(c, c.T) or not np.allclose(np.diag(c), 1.0):
                raise ConfigError(f"correlation matrix must be symmetric [{a}, {a}] with unit diagonal")
            try:
                self._chol = np.linalg.cholesky(c)
            except np.linalg.LinAlgError as exc:
                raise ConfigError("correlation matrix is not positive definite") from exc
        self._frames: dict[str, pd.DataFrame] | None = None

    # ------------------------------------------------------------ OHLCVSource
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def market_rules(self, symbol: str) -> MarketRules:
        self._check_symbol(symbol)
        return default_rules(symbol)

    def fetch(self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None) -> pd.DataFrame:
        """Candles of ``symbol`` with ``since <= timestamp < until`` (UTC ms; None = unbounded)."""
        self._check_symbol(symbol)
        if timeframe != self.timeframe:
            raise ConfigError(
                f"synthetic source was built for timeframe {self.timeframe!r}, asked for {timeframe!r}: "
                f"create SyntheticSource(timeframe={timeframe!r})"
            )
        frame = self.frames()[symbol]
        ts = frame["timestamp"].to_numpy()
        lo = 0 if since is None else int(np.searchsorted(ts, int(since), side="left"))
        hi = len(ts) if until is None else int(np.searchsorted(ts, int(until), side="left"))
        return frame.iloc[lo:hi].reset_index(drop=True)

    # ------------------------------------------------------------ generation
    def frames(self) -> dict[str, pd.DataFrame]:
        """All candles, ``{symbol: candle frame}`` (generated once, then cached)."""
        if self._frames is None:
            self._frames = self._generate()
        return {s: f.copy() for s, f in self._frames.items()}

    def _check_symbol(self, symbol: str) -> None:
        if symbol not in self._symbols:
            raise ConfigError(f"synthetic source has no symbol {symbol!r}; it has {self._symbols}")

    def _generate(self) -> dict[str, pd.DataFrame]:
        p, n, a = self.params, self.n_bars, len(self._symbols)
        market = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        regime = _regime_chain(market, n, p.p_calm_to_turbulent, p.p_turbulent_to_calm)
        vol_mult = np.where(regime == 1, p.turbulent_vol, p.calm_vol)  # [T]
        rngs = [_asset_rng(self.seed, s) for s in self._symbols]
        if self._chol is None:
            common = market.standard_normal(n)
            idio = np.stack([r.standard_normal(n) for r in rngs], axis=1)
            z = np.sqrt(p.correlation) * common[:, None] + np.sqrt(1.0 - p.correlation) * idio
        else:
            z = market.standard_normal((n, a)) @ self._chol.T
        # per-asset draws beyond the diffusion: vol level, start price, jumps, wicks, volume noise
        level = np.array([r.uniform(0.6, 1.4) for r in rngs])                     # [A]
        p0 = np.array([np.exp(r.uniform(np.log(0.05), np.log(50_000.0))) for r in rngs])
        base_vol = np.array([np.exp(r.uniform(np.log(1e3), np.log(1e6))) for r in rngs]) / p0
        u = np.stack([r.random((n, 5)) for r in rngs], axis=1)                      # [T, A, 5]
        g = np.stack([r.standard_normal((n, 4)) for r in rngs], axis=1)            # [T, A, 4]

        bpy = bars_per_year(self.timeframe)
        sigma = (p.annual_vol / np.sqrt(bpy)) * level[None, :] * vol_mult[:, None]  # [T, A] bar vol
        jumps = (u[..., 0] < p.jump_intensity) * g[..., 0] * p.jump_scale * sigma
        ret = p.annual_drift / bpy - 0.5 * sigma**2 + sigma * z + jumps
        close = p0[None, :] * np.exp(np.cumsum(ret, axis=0))
        open_ = np.vstack([p0[None, :], close[:-1]])
        high = np.maximum(open_, close) * np.exp(np.abs(g[..., 1]) * p.wick_scale * sigma)
        low = np.minimum(open_, close) * np.exp(-np.abs(g[..., 2]) * p.wick_scale * sigma)
        shock = np.abs(ret) / sigma
        volume = base_vol[None, :] * (1.0 + p.volume_sensitivity * shock) * np.exp(0.3 * g[..., 3])

        ts = self.start + self.step_ms * np.arange(n, dtype=np.int64)
        out = {}
        for j, sym in enumerate(self._symbols):  # per asset only to build the frames
            keep = ts >= self.listing.get(sym, ts[0])
            cols = [ts, open_[:, j], high[:, j], low[:, j], close[:, j], volume[:, j]]
            out[sym] = pd.DataFrame({c: v[keep] for c, v in zip(CANDLE_COLUMNS, cols)})
        return out


def synthetic_candles(
    symbols: Sequence[str] | int = DEFAULT_SYMBOLS,
    timeframe: str = "1h",
    start: str | int = "2022-01-01",
    n_bars: int = 5000,
    seed: int = 0,
    listing: Mapping[str, str | int] | None = None,
    params: MarketParams | None = None,
    correlation: np.ndarray | None = None,
) -> dict[str, pd.DataFrame]:
    """``{symbol: candle frame}`` of a :class:`SyntheticSource` built with the same arguments.

    >>> frames = synthetic_candles(["BTC/USDT", "ETH/USDT"], n_bars=100, seed=1)
    >>> sorted(frames), len(frames["BTC/USDT"])
    (['BTC/USDT', 'ETH/USDT'], 100)
    """
    src = SyntheticSource(symbols, timeframe, start, n_bars, seed, listing, params, correlation)
    return src.frames()
