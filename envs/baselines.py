"""Rule-based baseline policies and a runner that backtests them side by side.

Every baseline is a callable ``obs -> action`` for ``action_scheme="weights"`` with
``mapping="direct"``: the action is the target weight vector [A] (fraction of equity per asset,
long-only, the rest in cash). A ``NaN`` entry means *hold*: no order for that asset (the env's
direct mapping reads it so). The policies ignore the observation; the stateful ones count their
calls and restart on ``reset()``, which :func:`factorgym.envs.backtest.backtest` calls first.

| name           | what it does                                                              |
| -------------- | ------------------------------------------------------------------------- |
| cash           | stays in cash (weights 0): the flat reference                             |
| buy_and_hold   | buys 1/A of equity in each asset at the first fill, then never trades     |
| equal_weight   | rebalances to 1/A per asset every ``rebalance_every`` bars, holds between |
| random         | Dirichlet(1) weights over assets + cash every ``rebalance_every`` bars,   |
|                | drawn from ``numpy.random.default_rng(seed)``: same seed, same trades     |

Orders in assets that are not tradable at the fill bar are rejected by the env (the weight stays
in cash), so none of these policies looks at the tradable mask.

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


class CashPolicy:
    """Target weight 0 in every asset, every bar."""

    def __init__(self, n_assets: int) -> None:
        self._zero = np.zeros(_check_assets(n_assets))

    def __call__(self, obs) -> np.ndarray:
        return self._zero.copy()


class PeriodicPolicy:
    """Base of the rebalancing policies: ``target()`` on calls 0, N, 2N, ..., hold (NaN) otherwise."""

    def __init__(self, n_assets: int, rebalance_every: int = 1) -> None:
        self.n_assets = _check_assets(n_assets)
        self.rebalance_every = _check_every(rebalance_every)
        self._hold = np.full(self.n_assets, np.nan)
        self._calls = 0

    def reset(self) -> None:
        self._calls = 0

    def target(self) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, obs) -> np.ndarray:
        k = self._calls
        self._calls += 1
        return self.target() if k % self.rebalance_every == 0 else self._hold.copy()


class EqualWeightPolicy(PeriodicPolicy):
    """1/A of equity per asset, rebalanced every ``rebalance_every`` bars (1 = every bar)."""

    def target(self) -> np.ndarray:
        return np.full(self.n_assets, 1.0 / self.n_assets)


class BuyAndHoldPolicy(PeriodicPolicy):
    """1/A per asset at the first decision, then hold for ever (``rebalance_every`` = infinity)."""

    def __init__(self, n_assets: int) -> None:
        super().__init__(n_assets, 1)

    def __call__(self, obs) -> np.ndarray:
        first = self._calls == 0
        self._calls += 1
        return np.full(self.n_assets, 1.0 / self.n_assets) if first else self._hold.copy()


class RandomPolicy(PeriodicPolicy):
    """Random long-only weights: a Dirichlet(1, ..., 1) draw over A assets + cash, the cash share
    dropped, every ``rebalance_every`` bars. ``reset()`` re-seeds, so every run is the same."""

    def __init__(self, n_assets: int, seed: int = 0, rebalance_every: int = 1) -> None:
        super().__init__(n_assets, rebalance_every)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def reset(self) -> None:
        super().reset()
        self._rng = np.random.default_rng(self.seed)

    def target(self) -> np.ndarray:
        return self._rng.dirichlet(np.ones(self.n_assets + 1))[: self.n_assets]


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
    return out


def format_table(results: dict, keys: tuple[str, ...] | None = None) -> str:
    """Plain-text table: one row per run, one column per metric (percentages as ``12.34%``)."""
    from factorgym.envs.backtest import METRIC_FORMATS, format_metric

    keys = tuple(keys or METRIC_FORMATS)
    header = ["policy"] + [METRIC_FORMATS[k][0] if k in METRIC_FORMATS else k for k in keys]
    rows = [[name] + [format_metric(k, r.metrics.get(k, math.nan)) for k in keys] for name, r in results.items()]
    widths = [max(len(str(row[j])) for row in [header, *rows]) for j in range(len(header))]
    fmt = lambda row: "  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])
