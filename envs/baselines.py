"""Rule-based baseline policies and a runner that backtests them side by side.

Every baseline is a callable ``obs -> action`` for ``action_scheme="weights"`` with
``mapping="direct"``: the action is the target weight vector [A] (fraction of equity per asset,
long-only, the rest in cash). A ``NaN`` entry means *hold*: no order for that asset (the env's
direct mapping reads it so). The policies ignore the observation; the stateful ones count their
calls and restart on ``reset()``, which :func:`factorgym.envs.backtest.backtest` calls first.

| name           | what it does                                                              |
| -------------- | ------------------------------------------------------------------------- |
| cash           | stays in cash (weights 0): the flat reference                             |
| buy_and_hold   | buys the tradable basket in equal parts at the first decision, then never |
|                | trades, except that an asset listing later enters at its listing with     |
|                | 1/k of equity (k = assets listed by then), funded pro rata from holdings  |
| equal_weight   | 1/k of equity in each of the k assets listed so far, rebalanced every     |
|                | ``rebalance_every`` bars and at each listing                              |
| random         | Dirichlet(1) weights over the tradable assets + cash every                |
|                | ``rebalance_every`` bars, drawn from ``numpy.random.default_rng(seed)``   |

**Assets that list late.** A baseline reads the tradable mask of the observation at the decision
bar (point in time: nothing about later listings is known) and treats an asset as *listed* from the
first bar it is tradable. Before that it gets no weight, so a 3-asset sample where ETH and LTC list
years after BTC starts 100 % in BTC (not 1/3 BTC and 2/3 idle cash), and each newcomer enters at its
first fill after listing. An asset that is untradable on a later bar (a gap, a delisting) keeps its
holding (NaN = hold; the env cannot trade it) and its slot in ``k``. :data:`BASELINE_NOTES` holds
these sentences for reports. Both observation layouts work: in the flat one the last mask row is
the ``A`` entries just before the ``A + 3`` portfolio entries, whatever the window and features.

Example (two synthetic assets, default fees, half spread and impact)::

    >>> import numpy as np
    >>> from factorgym.data_layer.tensor import FactorTensor
    >>> T = 48
    >>> close = np.column_stack([np.linspace(100, 110, T), np.linspace(50, 45, T)])
    >>> tensor = FactorTensor.from_arrays(np.zeros((T, 2, 1)), close, np.arange(T) * 3_600_000)
    >>> results = run_baselines(tensor, names=("cash", "equal_weight"))
    >>> print(format_table(results, keys=("total_return", "max_drawdown", "n_trades")))
    policy        total return  max drawdown  trades
    ------------  ------------  ------------  ------
    cash                 0.00%         0.00%       0
    equal_weight        -0.61%         0.61%      94
"""

from __future__ import annotations

import math

import numpy as np

from factorgym.errors import ConfigError


BASELINE_NAMES = ("cash", "buy_and_hold", "equal_weight", "random")


def _check_assets(n_assets: int) -> int:
    if not isinstance(n_assets, (int, np.integer)) or n_assets < 1:
        raise ConfigError(f"n_assets={n_assets!r}; expected a positive integer (the tensor's asset count)")
    return int(n_assets)


def _check_every(rebalance_every: int) -> int:
    if not isinstance(rebalance_every, (int, np.integer)) or rebalance_every < 1:
        raise ConfigError(f"rebalance_every={rebalance_every!r}; expected an integer >= 1 (bars between rebalances)")
    return int(rebalance_every)


BASELINE_NOTES = {
    "cash": "stays in cash",
    "buy_and_hold": "buys the tradable assets in equal parts at the start, then holds; an asset that lists later "
                    "enters at its listing with 1/k of equity (k = assets listed by then), funded pro rata",
    "equal_weight": "1/k of equity in each of the k assets listed so far, rebalanced every rebalance_every bars "
                    "and at each listing",
    "random": "random Dirichlet weights over the tradable assets and cash, every rebalance_every bars",
}


class _Baseline:
    """Shared plumbing: the tradable row and current weights from the observation, and which
    assets have listed (been tradable at a decision bar) so far."""

    def __init__(self, n_assets: int) -> None:
        self.n_assets = _check_assets(n_assets)
        self._hold = np.full(self.n_assets, np.nan)
        self.reset()

    def reset(self) -> None:
        self._calls = 0
        self._listed = np.zeros(self.n_assets, dtype=bool)

    def _read(self, obs) -> tuple[np.ndarray, np.ndarray]:
        """(tradable bool [A] at the decision bar, weights [A] at its close)."""
        A = self.n_assets
        if isinstance(obs, dict):
            mask, portfolio = np.asarray(obs["mask"]).reshape(-1)[-A:], np.asarray(obs["portfolio"]).reshape(-1)
        else:
            flat = np.asarray(obs, dtype=np.float64).reshape(-1)
            if flat.size < 2 * A + 3:
                raise ConfigError(f"{type(self).__name__}: observation of {flat.size} values is too short for "
                                  f"{A} assets; pass the env's observation (flat or dict)")
            mask, portfolio = flat[-(2 * A + 3):-(A + 3)], flat[-(A + 3):]
        return mask > 0.5, portfolio[:A].astype(np.float64)

    def __call__(self, obs) -> np.ndarray:
        tradable, weights = self._read(obs)
        newcomers = tradable & ~self._listed
        self._listed |= tradable
        k = self._calls
        self._calls += 1
        return self.decide(k, tradable, newcomers, weights)

    def decide(self, k, tradable, newcomers, weights) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


class CashPolicy(_Baseline):
    """Target weight 0 in every asset, every bar."""

    def __call__(self, obs) -> np.ndarray:
        return np.zeros(self.n_assets)


class PeriodicPolicy(_Baseline):
    """Base of the rebalancing policies: ``target()`` on calls 0, N, 2N, ... and at a listing,
    hold (NaN) otherwise."""

    def __init__(self, n_assets: int, rebalance_every: int = 1) -> None:
        self.rebalance_every = _check_every(rebalance_every)
        super().__init__(n_assets)

    def target(self, tradable: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def decide(self, k, tradable, newcomers, weights) -> np.ndarray:
        if k % self.rebalance_every == 0 or newcomers.any():
            return self.target(tradable)
        return self._hold.copy()


class EqualWeightPolicy(PeriodicPolicy):
    """1/k of equity in each of the k assets listed so far; an untradable listed asset is held."""

    def target(self, tradable: np.ndarray) -> np.ndarray:
        k = int(self._listed.sum())
        if k == 0:
            return np.zeros(self.n_assets)
        return np.where(tradable, 1.0 / k, np.where(self._listed, np.nan, 0.0))


class BuyAndHoldPolicy(_Baseline):
    """The tradable basket in equal parts at the first decision, then hold; an asset listing later
    gets 1/k of equity at its listing (k = assets listed by then), the others scaled down pro rata
    (their relative weights unchanged)."""

    def decide(self, k, tradable, newcomers, weights) -> np.ndarray:
        if not newcomers.any():
            return self._hold.copy()
        listed = int(self._listed.sum())
        out = np.where(newcomers, 1.0 / listed, np.nan)
        held = tradable & ~newcomers
        stuck = float(np.clip(weights[self._listed & ~tradable], 0.0, None).sum())  # cannot be sold now
        budget = max(0.0, 1.0 - newcomers.sum() / listed - stuck)
        have = float(np.clip(weights[held], 0.0, None).sum())
        if held.any() and have > budget:
            out[held] = np.clip(weights[held], 0.0, None) * (budget / have)
        return out


class RandomPolicy(PeriodicPolicy):
    """Random long-only weights: a Dirichlet(1, ..., 1) draw over the tradable assets + cash, the
    cash share dropped, every ``rebalance_every`` bars; untradable assets are held. ``reset()``
    re-seeds, so every run is the same."""

    def __init__(self, n_assets: int, seed: int = 0, rebalance_every: int = 1) -> None:
        self.seed = int(seed)
        super().__init__(n_assets, rebalance_every)

    def reset(self) -> None:
        super().reset()
        self._rng = np.random.default_rng(self.seed)

    def decide(self, k, tradable, newcomers, weights) -> np.ndarray:
        if k % self.rebalance_every:
            return self._hold.copy()
        draw = self._rng.dirichlet(np.ones(self.n_assets + 1))[: self.n_assets]
        return np.where(tradable, draw, np.nan)


def make_baseline(name: str, n_assets: int, *, seed: int = 0, rebalance_every: int = 1):
    """A baseline policy by name (one of :data:`BASELINE_NAMES`)."""
    if name == "cash":
        return CashPolicy(n_assets)
    if name == "buy_and_hold":
        return BuyAndHoldPolicy(n_assets)
    if name == "equal_weight":
        return EqualWeightPolicy(n_assets, rebalance_every)
    if name == "random":
        return RandomPolicy(n_assets, seed=seed, rebalance_every=rebalance_every)
    raise ConfigError(f"baseline {name!r} is unknown; expected one of {BASELINE_NAMES}")


def run_baselines(tensor, *, names=BASELINE_NAMES, start=None, end=None, execution=None,
                  initial_cash: float = 10_000.0, rebalance_every: int = 1, seed: int = 0, window: int = 1,
                  env_kwargs: dict | None = None) -> dict:
    """Backtest each named baseline over the same bars; returns ``{name: BacktestResult}`` in order.

    ``start``/``end``/``execution``/``initial_cash``/``window``/``env_kwargs`` as in
    :func:`factorgym.envs.backtest.backtest` (``mapping="direct"`` is fixed: the baselines emit
    target weights). ``rebalance_every`` applies to equal_weight and random; ``seed`` to random.
    """
    from factorgym.envs.backtest import backtest

    out = {}
    for name in names:
        policy = make_baseline(name, tensor.n_assets, seed=seed, rebalance_every=rebalance_every)
        out[name] = backtest(tensor, policy, start=start, end=end, window=window, action_scheme="weights",
                             mapping="direct", execution=execution, initial_cash=initial_cash,
                             env_kwargs=env_kwargs, seed=seed, name=name)
        out[name].info["baseline"] = BASELINE_NOTES[name]
    return out


def format_table(results: dict, keys: tuple[str, ...] | None = None) -> str:
    """Plain-text table: one row per run, one column per metric (percentages as ``12.34%``)."""
    from factorgym.envs.backtest import METRIC_FORMATS, format_metric, span_note
    from factorgym.envs.metrics import ANNUALISED_KEYS, is_short_span

    keys = tuple(keys or METRIC_FORMATS)
    header = ["policy"] + [METRIC_FORMATS[k][0] if k in METRIC_FORMATS else k for k in keys]
    rows = [[name] + [format_metric(k, r.metrics.get(k, math.nan), short_span=is_short_span(r.metrics)) for k in keys]
            for name, r in results.items()]
    widths = [max(len(str(row[j])) for row in [header, *rows]) for j in range(len(header))]
    fmt = lambda row: "  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    note = span_note([r.metrics for r in results.values()]) if set(keys) & set(ANNUALISED_KEYS) else None
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)] + ([note] if note else []))
