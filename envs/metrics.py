"""Performance metrics of an equity curve, in plain numpy (no pandas, no warnings).

Conventions (read these before comparing with another library):

* ``equity`` is float ``[T]``: account value in quote currency at the close of each bar, the first
  entry being the starting value (before any return). It yields ``T - 1`` per-bar returns.
* Per-bar returns are **simple** returns ``r_t = E_t / E_{t-1} - 1`` (not log returns).
* Risk-free rate 0; the market trades 24/7, so a year is 365 calendar days and
  ``bars_per_year = 365 * 24 * 3600 * 1000 / timeframe_ms`` (8760 for ``1h``, 365 for ``1d``).
* Volatility-type quantities are annualised by ``sqrt(bars_per_year)``; sample standard deviation
  (``ddof=1``), like pandas' ``Series.std``.
* **Ruin**: the account cannot be worth less than nothing. Values ``<= 0`` are ruin: the curve is cut
  at the first such bar (its return is -100 %) and the later bars are ignored; ``ruined`` reports it.
* Undefined values are ``nan`` (too few bars, 0/0); a positive number over zero is ``inf``, a
  negative one ``-inf``. Nothing here emits a numpy ``RuntimeWarning``. Displays print ``nan`` as
  ``n/a`` (the Sharpe of a flat cash line is undefined, not a number).
* **Short spans.** Every result states the calendar span it covers (``span_days``, ``years``).
  Below :data:`MIN_ANNUALISE_DAYS` (365) the annualised figures (CAGR, volatility, Sharpe, Sortino,
  Calmar, turnover per year) are extrapolations of a part-year: the values are kept, and every
  display marks them with a dagger and a footnote naming the span (:func:`is_short_span`).
"""

from __future__ import annotations

import math

import numpy as np

MS_PER_YEAR = 365 * 86_400_000
MIN_ANNUALISE_DAYS = 365.0  # below this span annualised figures are flagged as extrapolated
# figures scaled to a year: flagged on short spans
ANNUALISED_KEYS = ("cagr", "ann_volatility", "sharpe", "sortino", "calmar", "turnover")
_ZERO_VOL = 1e-12  # a per-bar std below this is float noise on a constant return series

METRIC_KEYS = (
    "total_return", "cagr", "ann_volatility", "sharpe", "sortino", "max_drawdown", "calmar",
    "turnover", "total_turnover", "fees", "fees_frac", "exposure", "hit_rate",
    "n_bars", "n_trades", "years", "span_days", "initial_equity", "final_equity", "ruined",
)


def is_short_span(metrics: dict) -> bool:
    """True when the run covers less than :data:`MIN_ANNUALISE_DAYS` of calendar time, so its
    annualised figures are extrapolated from a part-year."""
    days = metrics.get("span_days", math.nan)
    return bool(days == days and days < MIN_ANNUALISE_DAYS)


def bars_per_year_from_ms(timeframe_ms: int | float) -> float:
    """Bars in a 365-day 24/7 year for a bar of ``timeframe_ms`` milliseconds."""
    if not timeframe_ms or not 0 < timeframe_ms < math.inf:  # (NaN and inf too: no year of such bars)
        raise ValueError(f"timeframe_ms must be > 0, got {timeframe_ms!r}")
    return MS_PER_YEAR / float(timeframe_ms)


def _curve(equity) -> np.ndarray:
    """Equity as float64 [T], cut after the first non-positive value (ruin), which is set to 0."""
    eq = np.asarray(equity, dtype=np.float64).reshape(-1)
    if eq.size and not np.all(np.isfinite(eq)):
        i = int(np.argmax(~np.isfinite(eq)))
        raise ValueError(f"equity must be finite; entry {i} is {eq[i]}")
    if eq.size and eq[0] <= 0:
        raise ValueError(f"the first equity value must be > 0, got {eq[0]}")
    dead = np.flatnonzero(eq <= 0)
    if dead.size:
        eq = eq[: dead[0] + 1].copy()
        eq[-1] = 0.0
    return eq


def simple_returns(equity) -> np.ndarray:
    """Per-bar simple returns ``E_t / E_{t-1} - 1``, float64 [T'-1] over the ruin-cut curve."""
    eq = _curve(equity)
    if eq.size < 2:
        return np.zeros(0)
    return eq[1:] / eq[:-1] - 1.0


def drawdown(equity) -> np.ndarray:
    """Drawdown at each bar as a positive fraction ``1 - E_t / max_{s<=t} E_s`` in [0, 1]; [T']."""
    eq = _curve(equity)
    if eq.size == 0:
        return np.zeros(0)
    return 1.0 - eq / np.maximum.accumulate(eq)


def max_drawdown(equity) -> float:
    """Largest peak-to-trough fall as a positive fraction in [0, 1] (1 = ruin); 0 for < 2 bars."""
    dd = drawdown(equity)
    return float(dd.max()) if dd.size else 0.0


def total_return(equity) -> float:
    """``E_last / E_first - 1`` (fraction; -1 = ruin); nan for an empty curve."""
    eq = _curve(equity)
    return float(eq[-1] / eq[0] - 1.0) if eq.size else math.nan


def cagr(equity, years: float) -> float:
    """Compound annual growth ``(E_last / E_first) ** (1 / years) - 1`` over ``years`` of calendar time.

    nan if ``years <= 0`` or nan; -1 after ruin; may be ``inf`` when a short span is extrapolated.
    """
    eq = _curve(equity)
    if eq.size == 0 or not years > 0:
        return math.nan
    ratio = eq[-1] / eq[0]
    if ratio <= 0:
        return -1.0
    with np.errstate(over="ignore"):
        return float(np.expm1(np.log(ratio) / years))


def _ratio(num: float, den: float) -> float:
    """num / den with documented edge cases: nan in or 0/0 -> nan, x/0 -> sign(x) * inf."""
    if math.isnan(num) or math.isnan(den):
        return math.nan
    if den == 0:
        return math.nan if num == 0 else math.copysign(math.inf, num)
    return num / den  # inf/inf is nan, inf/x is ±inf: Python floats do not warn


def ann_volatility(returns, bars_per_year: float) -> float:
    """``std(r, ddof=1) * sqrt(bars_per_year)`` (fraction per year); nan with fewer than 2 returns."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    return float(r.std(ddof=1) * math.sqrt(bars_per_year))


def sharpe(returns, bars_per_year: float) -> float:
    """Annualised Sharpe ratio, risk-free 0: ``mean(r) / std(r, ddof=1) * sqrt(bars_per_year)``.

    Simple per-bar returns. nan with < 2 returns or a flat curve (0/0); ``±inf`` when the
    returns are constant and non-zero (std below 1e-12 counts as zero).
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    sd = float(r.std(ddof=1))
    mean = float(r.mean())
    if sd < _ZERO_VOL:
        sd = 0.0
        mean = 0.0 if abs(mean) < _ZERO_VOL else mean
    return _ratio(mean, sd) * math.sqrt(bars_per_year)


def sortino(returns, bars_per_year: float) -> float:
    """Annualised Sortino ratio, target 0: ``mean(r) / DD * sqrt(bars_per_year)``.

    Downside deviation ``DD = sqrt(mean(min(r, 0) ** 2))`` averaged over *all* returns (Sortino &
    Price). nan with < 2 returns or 0/0; ``inf`` when no return is negative but the mean is positive.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return math.nan
    dd = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    mean = float(r.mean())
    if dd < _ZERO_VOL:
        dd = 0.0
        mean = 0.0 if abs(mean) < _ZERO_VOL else mean
    return _ratio(mean, dd) * math.sqrt(bars_per_year)


def calmar(cagr_value: float, mdd: float) -> float:
    """``CAGR / max drawdown``; ``inf`` for growth without drawdown, nan for 0/0 or nan inputs."""
    return _ratio(cagr_value, mdd)


def hit_rate(returns, exposed) -> float:
    """Share of *bars* with a strictly positive return among the bars spent exposed (fraction).

    ``exposed`` is bool [len(returns)]: bar t counts when the gross exposure at its close is > 0
    (the position held through the bar after its open fill). nan if never exposed.
    """
    r = np.asarray(returns, dtype=np.float64)
    m = np.asarray(exposed, dtype=bool)[: r.size]
    n = int(m.sum())
    return float((r[m] > 0).sum() / n) if n else math.nan


def compute_metrics(
    equity,
    *,
    bars_per_year: float,
    timestamps=None,
    turnover=None,
    fees=None,
    gross_exposure=None,
    n_trades: int | None = None,
) -> dict[str, float]:
    """All metrics of one run, as a flat dict of floats (keys in :data:`METRIC_KEYS`).

    Args:
        equity: float [T], equity at each bar's close, ``equity[0]`` the starting value (quote ccy).
        bars_per_year: from the timeframe, see :func:`bars_per_year_from_ms`.
        timestamps: int [T] bar open times (UTC ms). Elapsed calendar time (for CAGR) is
            ``timestamps[last] - timestamps[0]``; without them it is ``(T - 1) / bars_per_year``.
        turnover: float [T], traded notional at each bar / equity (one-way, fraction of equity).
        fees: float [T], fees paid at each bar (quote currency).
        gross_exposure: float [T], ``sum_i |w_i|`` at each bar's close (fraction of equity).
        n_trades: number of fills in the trade log.

    Returned keys and units:
        total_return, cagr (fractions), ann_volatility (fraction/year), sharpe, sortino (annualised,
        simple returns, rf 0), max_drawdown (positive fraction in [0, 1]), calmar (CAGR / MDD),
        turnover (mean per-bar turnover x bars_per_year: multiples of equity traded per year),
        total_turnover (sum of per-bar turnover), fees (quote ccy), fees_frac (fees / initial equity),
        exposure (mean gross exposure over the bars after the first), hit_rate (share of exposed
        bars with a positive return), n_bars (returns counted), n_trades, years and span_days (the
        calendar span covered; see :func:`is_short_span`), initial_equity,
        final_equity, ruined (1.0 if equity reached <= 0, else 0.0).
    Arrays are cut at ruin like ``equity``; missing optional arrays give nan for their metrics.
    """
    raw = np.asarray(equity, dtype=np.float64).reshape(-1)
    eq = _curve(raw)
    T = eq.size
    ruined = bool(T and eq[-1] == 0.0)
    r = eq[1:] / eq[:-1] - 1.0 if T >= 2 else np.zeros(0)
    if timestamps is not None:
        ts = np.asarray(timestamps, dtype=np.int64).reshape(-1)
        if ts.size != raw.size:
            raise ValueError(f"timestamps has {ts.size} entries for {raw.size} equity values")
        years = float(ts[T - 1] - ts[0]) / MS_PER_YEAR if T else math.nan
    else:
        years = (T - 1) / bars_per_year if T else math.nan

    def cut(x):
        if x is None:
            return None
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        if a.size != raw.size:
            raise ValueError(f"per-bar array has {a.size} entries for {raw.size} equity values")
        return a[:T]

    to, fe, gx = cut(turnover), cut(fees), cut(gross_exposure)
    mdd = max_drawdown(eq)
    growth = cagr(eq, years)
    exposed = gx[1:] > 1e-12 if gx is not None else None
    initial = float(eq[0]) if T else math.nan
    out = {
        "total_return": total_return(eq),
        "cagr": growth,
        "ann_volatility": ann_volatility(r, bars_per_year),
        "sharpe": sharpe(r, bars_per_year),
        "sortino": sortino(r, bars_per_year),
        "max_drawdown": mdd,
        "calmar": calmar(growth, mdd),
        "turnover": float(to[1:].mean() * bars_per_year) if to is not None and T >= 2 else math.nan,
        "total_turnover": float(to.sum()) if to is not None else math.nan,
        "fees": float(fe.sum()) if fe is not None else math.nan,
        "fees_frac": float(fe.sum() / initial) if fe is not None and T else math.nan,
        "exposure": float(gx[1:].mean()) if gx is not None and T >= 2 else math.nan,
        "hit_rate": hit_rate(r, exposed) if exposed is not None else math.nan,
        "n_bars": float(r.size),
        "n_trades": float(n_trades) if n_trades is not None else math.nan,
        "years": years,
        "span_days": years * 365.0,
        "initial_equity": initial,
        "final_equity": float(eq[-1]) if T else math.nan,
        "ruined": 1.0 if ruined else 0.0,
    }
    return out
