"""A synthetic market with a planted, weak but real signal: the learnability check's ground truth.

Per asset ``i`` and bar ``t`` (log returns; all draws from ``numpy.random.default_rng(seed)``):

* ``signal[t, i] ~ N(0, 1)`` is feature 0 (named ``signal``), known at the close of bar ``t``;
* ``r[t+1, i] = drift + vol * (strength * signal[t, i] + sqrt(1 - strength**2) * e[t+1, i])``, so the
  correlation between a feature row and the next bar's return is ``strength``;
* features 1.. are pure noise ``N(0, 1)`` (named ``noise1``, ...), so an agent must find the one
  that matters;
* bars: ``open[t] = close[t-1]`` (an action decided at the close of ``t`` fills at ``open[t+1]`` and
  earns exactly ``r[t+1]``), ``high``/``low`` = max/min of open and close, a large constant volume.

``shuffle_signal=True`` permutes the signal rows in time (one permutation for all assets): the same
distribution, no information about the next return. An agent that beats buy-and-hold on the planted
market and not on the shuffled one has learned the signal, not the market's drift.
"""

from __future__ import annotations

import numpy as np

from factorgym.data_layer.tensor import FactorTensor
from factorgym.errors import ConfigError


def planted_market(n_bars: int = 6000, n_assets: int = 2, n_noise: int = 1, *, strength: float = 0.1,
                   vol: float = 0.01, drift: float = 0.0, shuffle_signal: bool = False, seed: int = 0) -> FactorTensor:
    """A :class:`FactorTensor` of hourly bars whose feature ``signal`` predicts the next bar's return.

    Args:
        n_bars, n_assets: tensor size. n_noise: number of pure-noise features after the signal.
        strength: correlation of ``signal[t]`` with ``r[t+1]``, in [0, 1).
        vol: per-bar volatility of log returns. drift: mean per-bar log return.
        shuffle_signal: permute the signal in time (destroys its information, keeps its distribution).
        seed: the random stream; same arguments, same bits.
    """
    if not 0.0 <= strength < 1.0:
        raise ConfigError(f"strength={strength!r}; expected a correlation in [0, 1)")
    if n_bars < 3 or n_assets < 1 or n_noise < 0:
        raise ConfigError(f"n_bars={n_bars}, n_assets={n_assets}, n_noise={n_noise}; expected >= 3, >= 1, >= 0")
    rng = np.random.default_rng(seed)
    T, A = int(n_bars), int(n_assets)
    signal = rng.standard_normal((T, A))
    noise = rng.standard_normal((T, A))
    r = np.zeros((T, A))
    r[1:] = drift + vol * (strength * signal[:-1] + np.sqrt(1.0 - strength ** 2) * noise[1:])
    close = 100.0 * np.exp(np.cumsum(r, axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    prices = np.stack([open_, np.maximum(open_, close), np.minimum(open_, close), close, np.full((T, A), 1e12)], axis=-1)
    if shuffle_signal:
        signal = signal[rng.permutation(T)]
    extra = rng.standard_normal((T, A, n_noise))
    features = np.concatenate([signal[:, :, None], extra], axis=-1)
    names = ["signal"] + [f"noise{k}" for k in range(1, n_noise + 1)]
    symbols = [f"P{i}/USDT" for i in range(A)]
    meta = {"source": "planted", "timeframe": "1h", "planted": {"strength": strength, "vol": vol, "drift": drift,
                                                                "shuffled": bool(shuffle_signal), "seed": seed}}
    return FactorTensor.from_arrays(features, prices, np.arange(T, dtype=np.int64) * 3_600_000, symbols, names, meta=meta)


#: The market the learnability check uses: a weak signal (correlation 0.2 with the next bar's return)
#: on 2 assets, 8,000 hourly bars; PPO with the fast settings learns it in about 200k env steps.
LEARNABLE = {"n_bars": 8000, "n_assets": 2, "n_noise": 1, "strength": 0.2, "seed": 1}
#: The target: annualised Sharpe on the held-out quarter above buy-and-hold's by this much. Its
#: standard error there is about sqrt(8760 / 2000) ~ 2.1 for one policy; the planted signal is worth
#: ~10 to a policy that uses it (long when the signal is positive), ~0 to one that does not.
SHARPE_MARGIN = 3.0


def learnability_splits(shuffle_signal: bool = False) -> dict[str, FactorTensor]:
    """The :data:`LEARNABLE` market split 75/25 in time into ``train`` and ``test``."""
    from factorgym.data_layer.splits import split_fractions

    parts = split_fractions(planted_market(**LEARNABLE, shuffle_signal=shuffle_signal), (0.75, 0.25))
    return {"train": parts["train"], "test": parts["validation"]}


def sharpe_vs_buy_and_hold(policy, test: FactorTensor, **env_kwargs) -> tuple[float, float]:
    """(policy's Sharpe, buy-and-hold's Sharpe) on ``test``, both backtested frictionless through the env.

    ``policy`` is a callable obs -> action or an SB3 model; ``env_kwargs`` are the training env's
    (window, mapping, ...; execution is frictionless for both)."""
    from factorgym.envs.backtest import backtest
    from factorgym.envs.baselines import run_baselines
    from factorgym.envs.config import ExecutionConfig

    ex = ExecutionConfig.frictionless()
    kw = {k: v for k, v in env_kwargs.items() if k not in ("execution", "episode_length", "random_start")}
    window = int(kw.pop("window", 1))
    agent = backtest(test, policy, window=window, mapping=kw.pop("mapping", None), execution=ex, env_kwargs=kw)
    bh = run_baselines(test, names=("buy_and_hold",), execution=ex, window=window)["buy_and_hold"]
    return float(agent.metrics["sharpe"]), float(bh.metrics["sharpe"])
