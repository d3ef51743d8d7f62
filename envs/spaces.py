"""Action schemes and observation layouts: the Gymnasium spaces and the arguments the kernels need.

Action schemes (target weights are signed fractions of equity per asset; the rest is cash):

| scheme / mapping       | space                                   | target weight w_i                                     |
| ---------------------- | --------------------------------------- | ----------------------------------------------------- |
| weights / simplex      | Box(-1, 1, (A+1,)), slot A = cash       | (a_i + 1) / sum_j (a_j + 1); all -1 -> all cash       |
| weights / signed       | Box(-1, 1, (A,))                        | a_i x max_leverage, then gross scaled to max_leverage |
| weights / direct       | Box(0, 1, (A,)) or Box(-L, L, (A,))     | a_i, clipped: long-only >= 0 and sum <= 1; gross <= L |
|                        |                                         | (NaN = hold: no order; the rest is clipped alone)     |
| discrete (A > 1)       | MultiDiscrete([len(levels)] * A)        | levels[a_i] x level_size, then gross capped           |
| discrete (A = 1)       | Discrete(len(levels)) (works with DQN)  | levels[a] x level_size                                |

simplex is long-only, signed is long/short; direct and discrete follow ``long_only``. Orders on
assets that are not tradable at the fill bar are rejected, so their position does not change.

Observation (``observation="flat"``, float32 vector of length W*A*F + W*A + A + 3, in this order;
``observation="dict"`` gives the same blocks as keys):

| key       | shape     | meaning                                                                       |
| --------- | --------- | ----------------------------------------------------------------------------- |
| features  | [W, A, F] | feature rows t-W+1..t; 0 where the asset is untradable or the value not finite |
| mask      | [W, A]    | 1.0 where the asset is tradable on that bar, else 0.0                          |
| portfolio | [A + 3]   | weight per asset (q x close / equity), cash / equity, equity / initial cash,   |
|           |           | drawdown (1 - equity / running peak)                                           |
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from factorgym.errors import ConfigError

ACTION_SCHEMES = ("weights", "discrete")
MAPPINGS = ("simplex", "signed", "direct")
OBSERVATIONS = ("flat", "dict")


def resolve_scheme(action_scheme: str, mapping: str, long_only: bool | None, levels: Sequence[float] | None,
                   n_assets: int, max_leverage: float) -> tuple[str, bool, tuple[float, ...]]:
    """Validate the action options; return (kernel scheme name, long_only, levels)."""
    if action_scheme not in ACTION_SCHEMES:
        raise ConfigError(f"action_scheme={action_scheme!r}; expected one of {ACTION_SCHEMES}")
    if action_scheme == "discrete":
        if long_only is None:
            long_only = levels is None or min(levels) >= 0
        lv = tuple(float(x) for x in (levels if levels is not None else ((0.0, 1.0) if long_only else (-1.0, 0.0, 1.0))))
        if len(lv) < 2 or not all(np.isfinite(lv)):
            raise ConfigError(f"levels={levels!r}; expected at least two finite target levels, e.g. (-1, 0, 1)")
        if long_only and min(lv) < 0:
            raise ConfigError(f"levels={lv} contain a short level but long_only=True; drop the negative levels or set long_only=False")
        return "discrete", bool(long_only), lv
    if mapping not in MAPPINGS:
        raise ConfigError(f"mapping={mapping!r}; expected one of {MAPPINGS}")
    if mapping == "simplex":
        if long_only is False:
            raise ConfigError("mapping='simplex' is long-only; use mapping='signed' (or 'direct') with long_only=False")
        return "simplex", True, ()
    if mapping == "signed":
        if long_only is True:
            raise ConfigError("mapping='signed' is long/short; use mapping='simplex' (or 'direct') for long-only")
        return "signed", False, ()
    return "direct", True if long_only is None else bool(long_only), ()


def action_space(scheme: str, long_only: bool, n_assets: int, levels: Sequence[float], max_leverage: float) -> spaces.Space:
    A = n_assets
    if scheme == "simplex":
        return spaces.Box(-1.0, 1.0, (A + 1,), dtype=np.float32)
    if scheme == "signed":
        return spaces.Box(-1.0, 1.0, (A,), dtype=np.float32)
    if scheme == "direct":
        hi = 1.0 if long_only else float(max_leverage)
        return spaces.Box(0.0 if long_only else -hi, hi, (A,), dtype=np.float32)
    return spaces.Discrete(len(levels)) if A == 1 else spaces.MultiDiscrete([len(levels)] * A)


def observation_space(kind: str, window: int, n_assets: int, n_features: int) -> spaces.Space:
    if kind not in OBSERVATIONS:
        raise ConfigError(f"observation={kind!r}; expected one of {OBSERVATIONS}")
    W, A, F = window, n_assets, n_features
    if kind == "flat":
        return spaces.Box(-np.inf, np.inf, (W * A * F + W * A + A + 3,), dtype=np.float32)
    return spaces.Dict({
        "features": spaces.Box(-np.inf, np.inf, (W, A, F), dtype=np.float32),
        "mask": spaces.Box(0.0, 1.0, (W, A), dtype=np.float32),
        "portfolio": spaces.Box(-np.inf, np.inf, (A + 3,), dtype=np.float32),
    })


def split_obs(flat: np.ndarray, window: int, n_assets: int, n_features: int) -> dict[str, np.ndarray]:
    """Views of a flat observation ([..., D]) as the dict layout."""
    W, A, F = window, n_assets, n_features
    lead = flat.shape[:-1]
    nf, nm = W * A * F, W * A
    return {"features": flat[..., :nf].reshape(*lead, W, A, F), "mask": flat[..., nf:nf + nm].reshape(*lead, W, A),
            "portfolio": flat[..., nf + nm:]}
