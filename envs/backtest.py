"""Deterministic backtest of a policy over a ``FactorTensor``, driving ``CryptoTradingEnv``.

The env is the one accounting core: fills, fees, slippage and lot rules all come from it; this
module only steps it from the first decision bar to the end and records what it reports.

Timing (the env's): the policy sees the observation at the close of bar ``t`` and its action fills
at bar ``t+1``'s open. Row ``t`` of the result is the state at the close of bar ``t``; row 0 is the
starting state (all cash), so ``equity[0] == initial_cash`` and the curve has one row per bar from
``start`` to the last bar before ``end``.

Example (synthetic prices, a 50/50 constant-weight policy)::

    >>> import numpy as np
    >>> from factorgym.data_layer.tensor import FactorTensor
    >>> T = 48
    >>> close = np.column_stack([np.linspace(100, 110, T), np.linspace(50, 45, T)])
    >>> tensor = FactorTensor.from_arrays(np.zeros((T, 2, 1)), close, np.arange(T) * 3_600_000)
    >>> res = backtest(tensor, lambda obs: np.array([0.5, 0.5]), mapping="direct")
    >>> len(res.equity), float(res.equity[0]), list(res.trades.columns[:6])
    (48, 10000.0, ['time', 'symbol', 'side', 'quantity', 'price', 'fee'])
    >>> print(res.summary().splitlines()[0])
    backtest policy: ASSET0, ASSET1 1h, 1970-01-01 00:00 .. 1970-01-02 23:00 (48 bars)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from factorgym.data_layer.tensor import FactorTensor
from factorgym.data_layer.timeframes import timeframe_to_ms, to_utc_ms
from factorgym.envs import metrics as _metrics
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)

TRADE_COLUMNS = ["time", "symbol", "side", "quantity", "price", "fee", "slippage_cost", "kind"]
# metric key -> (label, format); percentages are fractions shown x100
METRIC_FORMATS: dict[str, tuple[str, str]] = {
    "total_return": ("total return", "pct"),
    "cagr": ("CAGR", "pct"),
    "ann_volatility": ("ann. volatility", "pct"),
    "sharpe": ("Sharpe", "num"),
    "sortino": ("Sortino", "num"),
    "max_drawdown": ("max drawdown", "pct"),
    "calmar": ("Calmar", "num"),
    "turnover": ("turnover /yr", "num"),
    "fees": ("fees", "money"),
    "exposure": ("exposure", "pct"),
    "hit_rate": ("hit rate", "pct"),
    "n_trades": ("trades", "int"),
    "final_equity": ("final equity", "money"),
    "span_days": ("span", "days"),
}
SHORT_MARK = "\u2020"  # dagger after an annualised figure of a run shorter than a year


def format_metric(key: str, value: float, *, short_span: bool = False) -> str:
    """One metric as display text (``12.34%``, ``1.23``, ``n/a`` for undefined, ``inf``). With
    ``short_span`` an annualised figure gets a dagger (see :func:`span_note`)."""
    kind = METRIC_FORMATS.get(key, ("", "num"))[1]
    v = float(value)
    if not math.isfinite(v):
        return "n/a" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    mark = SHORT_MARK if short_span and key in _metrics.ANNUALISED_KEYS else ""
    if kind == "pct":
        return f"{100 * v:.2f}%{mark}"
    if kind == "int":
        return f"{int(round(v))}"
    if kind == "money":
        return f"{v:,.2f}"
    if kind == "days":
        return f"{v:.0f} d" if v >= 2 else f"{v * 24:.0f} h"
    return f"{v:.3f}{mark}"


def span_note(metrics_list) -> str | None:
    """The footnote for runs shorter than a year, or None: annualised figures of a part-year are
    extrapolations (a 108-day run that gains 10 % shows a CAGR of about 38 %)."""
    short = [m.get("span_days", math.nan) for m in metrics_list if _metrics.is_short_span(m)]
    if not short:
        return None
    return (f"{SHORT_MARK} annualised from a span of {min(short):.0f} days (< {_metrics.MIN_ANNUALISE_DAYS:.0f}): "
            f"an extrapolation of a part-year, not a yearly figure; compare total returns instead")


@dataclass
class BacktestResult:
    """What a backtest recorded, one row per bar from the start bar (row 0 = starting state).

    Attributes:
        timestamps: int64 [T], bar open time (UTC ms); row t is the state at that bar's close.
        equity, cash: float64 [T], quote currency.
        weights: float64 [T, A], position value / equity per asset at the close (signed fraction).
        positions: float64 [T, A], holdings in base units.
        trades: DataFrame with columns time (UTC), symbol, side ("buy"/"sell"), quantity (base units,
            > 0), price (fill price, quote per base), fee (quote).
        metrics: see :func:`factorgym.envs.metrics.compute_metrics`.
        fees, turnover, rewards: float64 [T] per bar (row 0 is 0).
        info: start_bar/end_bar (indices into the tensor passed), window, seed, bars_per_year and
            status (the env's last status: "ok", or "bankrupt"/"liquidated" when the episode ended
            early -- then the arrays stop at that bar).
    """

    timestamps: np.ndarray
    equity: np.ndarray
    cash: np.ndarray
    weights: np.ndarray
    positions: np.ndarray
    trades: pd.DataFrame
    metrics: dict[str, float]
    symbols: list[str]
    timeframe: str
    fees: np.ndarray
    turnover: np.ndarray
    rewards: np.ndarray
    name: str = "policy"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def drawdown(self) -> np.ndarray:
        """Drawdown at each bar, positive fraction [T]."""
        dd = np.zeros(len(self.equity))
        d = _metrics.drawdown(self.equity)
        dd[: d.size] = d
        dd[d.size:] = 1.0  # after ruin
        return dd

    def to_frame(self) -> pd.DataFrame:
        """Per-bar frame indexed by UTC time: equity, cash, fees, turnover, drawdown, ``w:SYM``, ``pos:SYM``."""
        idx = pd.DatetimeIndex(pd.to_datetime(self.timestamps, unit="ms", utc=True), name="time")
        data: dict[str, np.ndarray] = {
            "equity": self.equity, "cash": self.cash, "fees": self.fees,
            "turnover": self.turnover, "reward": self.rewards, "drawdown": self.drawdown,
        }
        for i, s in enumerate(self.symbols):
            data[f"w:{s}"] = self.weights[:, i]
        for i, s in enumerate(self.symbols):
            data[f"pos:{s}"] = self.positions[:, i]
        return pd.DataFrame(data, index=idx)

    def summary(self) -> str:
        """Readable multi-line summary: span, metrics, trade count."""
        from factorgym.data_layer.timeframes import ms_to_iso

        span = f"{ms_to_iso(int(self.timestamps[0]))} .. {ms_to_iso(int(self.timestamps[-1]))}" if len(self.timestamps) else "-"
        lines = [f"backtest {self.name}: {', '.join(self.symbols)} {self.timeframe}, {span} ({len(self.equity)} bars)"]
        short = _metrics.is_short_span(self.metrics)
        for key, (label, _) in METRIC_FORMATS.items():
            lines.append(f"  {label:<16} {format_metric(key, self.metrics.get(key, math.nan), short_span=short):>14}")
        note = span_note([self.metrics])
        return "\n".join(lines + ([f"  {note}"] if note else []))

    def plot(self, path: str | Path | None = None):
        """Equity, drawdown and weights in three panels (matplotlib, Agg backend).

        Writes a PNG to ``path`` if given; returns the figure (closed when saved).
        """
        from factorgym.envs.report import plot_result

        return plot_result(self, path)

    def report_html(self, path: str | Path, max_trades: int = 500) -> Path:
        """Self-contained HTML report: the plot as an embedded base64 PNG, metrics and trade tables."""
        from factorgym.envs.report import write_html_report

        return write_html_report(path, {self.name: self}, max_trades=max_trades)


def _is_bar_index(value) -> bool:
    """An int below 1e11 is a bar index; larger ints (epoch ms) and everything else are times."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and abs(int(value)) < 100_000_000_000


def _bar_index(tensor: FactorTensor, value, *, name: str) -> int | None:
    """A bar index from a bar index (int, negative counts from the end) or a time (str, datetime,
    pd.Timestamp, or int >= 1e11 = epoch ms): the first bar with ``timestamp >= time``."""
    if value is None:
        return None
    T = tensor.n_bars
    if _is_bar_index(value):
        i = int(value)
        if not -T <= i <= T:
            raise ConfigError(f"{name}={i} is outside the tensor's {T} bars")
        return i + T if i < 0 else i
    ms = to_utc_ms(value)
    return int(np.searchsorted(np.asarray(tensor.timestamps), ms, side="left"))


def _as_callable(policy) -> Callable[[Any], Any]:
    if hasattr(policy, "predict"):  # SB3 model (or anything shaped like one)
        def act(obs):
            action, _ = policy.predict(obs, deterministic=True)
            return action
        return act
    if callable(policy):
        return policy
    raise ConfigError(f"policy must be a callable obs -> action or have .predict(obs, deterministic=True); got {type(policy).__name__}")


def backtest(
    tensor: FactorTensor,
    policy,
    *,
    start=None,
    end=None,
    window: int = 1,
    action_scheme: str = "weights",
    mapping: str | None = None,
    execution=None,
    initial_cash: float = 10_000.0,
    env_kwargs: dict | None = None,
    seed: int = 0,
    name: str = "policy",
) -> BacktestResult:
    """Run ``policy`` once over ``tensor`` (or a part of it), deterministically.

    Args:
        tensor: the data. A split can be passed already cut (``tensor.slice_time(a, b)``); then
            leave ``start``/``end`` as None. Bars before ``start`` feed the observation window only.
        policy: callable ``obs -> action``, or an SB3 model (anything with
            ``.predict(obs, deterministic=True) -> (action, state)``). A callable with a ``reset()``
            method has it called before the first step.
        start: first decision bar: a bar index (negative counts from the end) or a time (str,
            datetime, pd.Timestamp, or an int >= 1e11 read as epoch ms: the first bar at/after it).
            Default and floor for times: the first bar with a full observation window
            (``window - 1``); an earlier bar index is refused.
        end: exclusive end: a bar index or a time (bars before it). Default: the last bar.
        window, action_scheme, mapping, execution, initial_cash: passed to ``CryptoTradingEnv``
            (``mapping=None`` keeps the env's default; use the same values a model was trained with).
        env_kwargs: further ``CryptoTradingEnv`` arguments.
        seed: passed to ``env.reset`` (the env is deterministic under a seed).
        name: label used in summaries, tables and reports.
    """
    from factorgym.envs import CryptoTradingEnv  # the env package imports this module's siblings

    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    T = tensor.n_bars
    lo = _bar_index(tensor, start, name="start")
    hi = _bar_index(tensor, end, name="end")
    if lo is not None and not _is_bar_index(start):
        lo = max(lo, window - 1)  # a time before the data (or its first window) means "from the start"
    lo = window - 1 if lo is None else lo
    hi = T if hi is None else hi
    if lo < window - 1:
        raise ConfigError(f"start bar {lo} leaves no room for the observation window of {window} bars: use start >= {window - 1}")
    if hi - lo < 2:
        raise ConfigError(f"the backtest range has {max(hi - lo, 0)} bars (start bar {lo}, end bar {hi}); it needs at least 2")
    sub = tensor.slice_bars(lo - (window - 1), hi)
    kwargs = dict(env_kwargs or {})
    kwargs.update(window=window, action_scheme=action_scheme, initial_cash=float(initial_cash), episode_length=None)
    if mapping is not None:
        kwargs["mapping"] = mapping
    if execution is not None:
        kwargs["execution"] = execution
    env = CryptoTradingEnv(sub, **kwargs)
    act = _as_callable(policy)
    if hasattr(policy, "reset") and not hasattr(policy, "predict"):
        policy.reset()

    n = hi - lo
    A = tensor.n_assets
    equity = np.full(n, np.nan)
    cash = np.full(n, np.nan)
    weights = np.zeros((n, A))
    positions = np.zeros((n, A))
    fees = np.zeros(n)
    turnover = np.zeros(n)
    rewards = np.zeros(n)
    trades = _TradeLog(list(tensor.symbols))
    obs, info = env.reset(seed=seed, options={"start": window - 1})
    equity[0] = float(info.get("equity", initial_cash))
    cash[0] = float(info.get("cash", initial_cash))
    if "weights" in info:
        weights[0] = info["weights"]
    if "positions" in info:
        positions[0] = info["positions"]
    ts_expected = np.asarray(tensor.timestamps[lo:hi], dtype=np.int64)
    k = 0
    status = "ok"
    try:
        for k in range(1, n):
            obs, reward, terminated, truncated, info = env.step(act(obs))
            if int(info["timestamp"]) != ts_expected[k]:
                raise RuntimeError(f"env step {k} ended on bar {info['timestamp']}, expected {ts_expected[k]}")
            equity[k] = info["equity"]
            cash[k] = info["cash"]
            weights[k] = info["weights"]
            positions[k] = info["positions"]
            fees[k] = info.get("fees", 0.0)
            turnover[k] = info.get("turnover", 0.0)
            rewards[k] = reward
            trades.add(int(info["timestamp"]), info.get("trades"))
            status = info.get("status", status)
            if terminated or truncated:
                break
    finally:
        env.close()
    m = k + 1  # rows filled (fewer than n if the env ended the episode early, e.g. ruin)
    if m < n:
        log.warning("backtest %s: the episode ended (%s) at bar %d of %d", name, status, m, n)
    timestamps = ts_expected[:m]
    trades_df = trades.frame()
    timeframe = tensor.timeframe
    bpy = _metrics.bars_per_year_from_ms(timeframe_to_ms(timeframe))
    metrics = _metrics.compute_metrics(
        equity[:m], bars_per_year=bpy, timestamps=timestamps, turnover=turnover[:m], fees=fees[:m],
        gross_exposure=np.abs(weights[:m]).sum(axis=1), n_trades=len(trades_df),
    )
    return BacktestResult(
        timestamps=timestamps, equity=equity[:m], cash=cash[:m], weights=weights[:m], positions=positions[:m],
        trades=trades_df, metrics=metrics, symbols=list(tensor.symbols), timeframe=timeframe,
        fees=fees[:m], turnover=turnover[:m], rewards=rewards[:m], name=name,
        info={"start_bar": lo, "end_bar": lo + m, "window": window, "seed": seed, "bars_per_year": bpy, "status": status},
    )


class _TradeLog:
    """Collects the env's fills. A ``Trades`` object's raw ``.array`` rows (asset, side +-1,
    quantity, price, fee, slippage_cost, kind code) are kept as arrays and turned into a frame once
    (building a dict per fill costs more than the env step); plain dicts are accepted too."""

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = symbols
        self.ts: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.kinds: dict[int, str] = {}
        self.dicts: list[dict] = []

    def add(self, timestamp: int, trades) -> None:
        if trades is None or not len(trades):
            return
        arr = getattr(trades, "array", None)
        if arr is None or np.shape(arr)[-1:] != (7,):
            self.dicts.extend(trades)
            return
        for code in np.unique(arr[:, 6]).astype(int).tolist():
            if code not in self.kinds:  # the kind's name, as the env spells it
                self.kinds[code] = trades[int(np.flatnonzero(arr[:, 6] == code)[0])]["kind"]
        self.ts.append(np.full(len(arr), timestamp, dtype=np.int64))
        self.rows.append(np.asarray(arr, dtype=np.float64))

    def frame(self) -> pd.DataFrame:
        """Fills as a frame with :data:`TRADE_COLUMNS` (``time`` is UTC), in fill order."""
        cols = ["timestamp", "symbol", "side", "quantity", "price", "fee", "slippage_cost", "kind"]
        parts = [pd.DataFrame(self.dicts, columns=cols)] if self.dicts else []
        if self.rows:
            a = np.concatenate(self.rows)
            sym = np.asarray(self.symbols, dtype=object)
            kinds = np.asarray([self.kinds.get(int(c), str(int(c))) for c in a[:, 6]], dtype=object)
            parts.append(pd.DataFrame({
                "timestamp": np.concatenate(self.ts), "symbol": sym[a[:, 0].astype(int)],
                "side": np.where(a[:, 1] > 0, "buy", "sell").astype(object), "quantity": a[:, 2], "price": a[:, 3],
                "fee": a[:, 4], "slippage_cost": a[:, 5], "kind": kinds,
            }))
        df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else (parts[0] if parts else pd.DataFrame(columns=cols))
        if len(parts) > 1:
            df = df.sort_values("timestamp", kind="stable", ignore_index=True)
        df["time"] = pd.to_datetime(df["timestamp"].astype("int64"), unit="ms", utc=True)
        for col in ("quantity", "price", "fee", "slippage_cost"):
            df[col] = df[col].astype(float)
        return df[TRADE_COLUMNS].reset_index(drop=True)
