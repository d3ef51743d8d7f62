"""Random markets, configurations and action sequences (hypothesis strategies) for the tests that
hold the engine against ``reference_model.ReferenceEnv``, and the per-step comparison.

Shapes are few on purpose: each (assets, action size) compiles the step kernel once (~10 s cold),
so every case uses A = 2 assets (action sizes 2 and 3) and envs fewer than 64 (one block size)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import ExecutionConfig, RewardConfig
from reference_model import ReferenceEnv, StepInfo

HOUR = 3_600_000
A = 2
SYMBOLS = ["AAA", "BBB"]
VECTOR_STATUS = {0: "ok", 1: "bankrupt", 2: "liquidated"}  # the vector env's int8 status codes
REL = 1e-12  # where the engine multiplies by a stored reciprocal and the reference divides (see reference_model)

# action schemes: env keyword arguments and the reference's resolved (scheme, long_only, levels)
SCHEMES = {
    "simplex": (dict(mapping="simplex"), ("simplex", True, ())),
    "signed": (dict(mapping="signed"), ("signed", False, ())),
    "direct_long": (dict(mapping="direct", long_only=True), ("direct", True, ())),
    "direct_short": (dict(mapping="direct", long_only=False), ("direct", False, ())),
    "discrete_long": (dict(action_scheme="discrete", levels=(0.0, 0.5, 1.0, 2.0)), ("discrete", True, (0.0, 0.5, 1.0, 2.0))),
    "discrete_short": (dict(action_scheme="discrete", levels=(-2.0, -1.0, 0.0, 1.0, 2.0), long_only=False),
                       ("discrete", False, (-2.0, -1.0, 0.0, 1.0, 2.0))),
}


def make_market(seed: int, T: int, vol: float, hole_rate: float, funding: bool = False) -> FactorTensor:
    """Random OHLCV bars of two assets: the second lists late and has untradable stretches (NaN
    prices there); some volumes are 0 (unknown: no impact term); open differs from the last close.
    ``funding``: perpetual funding rates, one event every 8 bars, of either sign and different per asset."""
    rng = np.random.default_rng(seed)
    close = np.exp(np.cumsum(rng.normal(0, vol, (T, A)), axis=0)) * np.array([30_000.0, 2.5])
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, vol / 4, (T, A)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, vol, (T, A)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, vol, (T, A)))
    volume = rng.lognormal(2.0, 1.5, (T, A)) * np.array([1.0, 5_000.0])
    volume[rng.random((T, A)) < 0.15] = 0.0
    tradable = np.ones((T, A), dtype=bool)
    tradable[: int(rng.integers(0, 4)), 1] = False  # listed late
    tradable[1:, 1] &= rng.random(T - 1) > hole_rate  # trading halts
    tradable[1:, 0] &= rng.random(T - 1) > hole_rate / 4
    prices = np.stack([open_, high, low, close, volume], axis=-1)
    prices[~tradable] = np.nan
    features = rng.normal(size=(T, A, 2)).astype(np.float32)
    features[rng.random((T, A, 2)) < 0.05] = np.nan
    rates = None
    if funding:
        rates = np.zeros((T, A))
        rates[7::8] = rng.normal(1e-4, 5e-4, rates[7::8].shape)  # (large enough to move equity on a short run)
        rates[~tradable] = 0.0
    return FactorTensor.from_arrays(features, prices, np.arange(T) * HOUR, symbols=SYMBOLS, tradable=tradable,
                                    funding=rates)


def per_symbol(draw, values):
    """One value for both symbols, or a {symbol: value} mapping."""
    if draw(st.booleans()):
        return draw(st.sampled_from(values))
    return {s: draw(st.sampled_from(values)) for s in SYMBOLS}


@st.composite
def executions(draw) -> ExecutionConfig:
    return ExecutionConfig(
        taker_fee=per_symbol(draw, [0.0, 0.0004, 0.001, 0.0075]),
        maker_fee=per_symbol(draw, [0.0, 0.0002, 0.002]),
        fee_side=draw(st.sampled_from(["taker", "maker"])),
        slippage_bps=draw(st.sampled_from([0.0, 2.0, 15.0])),
        half_spread_bps=draw(st.sampled_from([0.0, 1.0, 5.0])),
        impact_coef=draw(st.sampled_from([0.0, 0.01, 0.2])),
        impact_exponent=draw(st.sampled_from([0.5, 0.7, 1.0])),
        lot_step={"AAA": draw(st.sampled_from([0.0, 0.0001, 0.001])), "BBB": draw(st.sampled_from([0.0, 0.1, 1.0, 10.0]))},
        min_amount={"AAA": draw(st.sampled_from([0.0, 0.001])), "BBB": draw(st.sampled_from([0.0, 5.0, 50.0]))},
        min_notional=per_symbol(draw, [0.0, 5.0, 100.0]),
        price_step={"AAA": draw(st.sampled_from([0.0, 0.01, 0.5])), "BBB": draw(st.sampled_from([0.0, 0.0001, 0.001]))},
        borrow_rate_per_bar=draw(st.sampled_from([0.0, 1e-4, 2e-3])),
        max_leverage=draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
        maintenance_margin=draw(st.sampled_from([0.0, 0.05, 0.3, 0.6])),
        on_untradable=draw(st.sampled_from(["freeze", "close"])),
        use_market_rules=False,
    )


rewards = st.builds(RewardConfig, kind=st.sampled_from(["log_return", "differential_sharpe", "drawdown_penalty", "turnover_penalty"]),
                    drawdown_penalty=st.sampled_from([0.0, 0.5]), turnover_penalty=st.sampled_from([0.0, 0.01]),
                    sharpe_eta=st.sampled_from([0.01, 0.3]), scale=st.sampled_from([1.0, 100.0]))


def action_values(scheme: str, long_only_direct: bool) -> st.SearchStrategy:
    """One action value as the env's action space holds it (float32 values for the Box schemes,
    with the exact edges and 0 drawn often)."""
    if scheme.startswith("discrete"):
        n = len(SCHEMES[scheme][1][2])
        return st.integers(0, n - 1)
    lo = 0.0 if long_only_direct else -1.0
    hi = 1.0 if scheme in ("simplex", "signed", "direct_long") else 2.0
    lo = -2.0 if scheme == "direct_short" else lo
    return st.one_of(st.sampled_from([lo, 0.0, hi]), st.floats(lo, hi, width=32))


def action_sequences(scheme: str, steps: int) -> st.SearchStrategy:
    K = A + 1 if scheme == "simplex" else A
    one = st.lists(action_values(scheme, scheme == "direct_long"), min_size=K, max_size=K)
    return st.lists(one, min_size=steps, max_size=steps)


@dataclass
class Case:
    tensor: FactorTensor
    scheme: str
    execution: ExecutionConfig
    reward: RewardConfig
    window: int
    initial_cash: float

    def env_kwargs(self) -> dict[str, Any]:
        kw = dict(SCHEMES[self.scheme][0])
        return dict(kw, window=self.window, execution=self.execution, reward=self.reward, initial_cash=self.initial_cash)

    def reference(self) -> ReferenceEnv:
        scheme, long_only, levels = SCHEMES[self.scheme][1]
        return ReferenceEnv(self.tensor, window=self.window, scheme=scheme, long_only=long_only, levels=levels,
                            level_size=1.0 / A, execution=self.execution, reward=self.reward, initial_cash=self.initial_cash)

    def as_action(self, values) -> np.ndarray:
        if self.scheme.startswith("discrete"):
            return np.asarray(values, dtype=np.int64)
        return np.asarray(values, dtype=np.float32)


@st.composite
def cases(draw, T: int = 24, schemes=tuple(SCHEMES)) -> Case:
    seed = draw(st.integers(0, 2**32 - 1))
    vol = draw(st.sampled_from([0.01, 0.05, 0.15]))
    hole = draw(st.sampled_from([0.0, 0.1, 0.3]))
    return Case(make_market(seed, T, vol, hole, draw(st.booleans())), draw(st.sampled_from(schemes)), draw(executions()),
                draw(rewards),
                draw(st.sampled_from([1, 3])), draw(st.sampled_from([1_000.0, 10_000.0, 250_000.0])))


# ---------------------------------------------------------------------- comparison
def close(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def assert_info_matches(info: dict, ref: StepInfo, where: str, order_status: list[str] | None = None) -> None:
    """Every money figure of one step, the positions and the trade list (values, not signs only)."""
    for key in ("equity", "cash", "fees", "slippage_cost", "borrow_cost", "turnover", "funding"):
        if key == "funding" and key not in info:
            continue
        assert close(float(info[key]), getattr(ref, key)), f"{where}: {key} {info[key]!r} != reference {getattr(ref, key)!r}"
    for i in range(A):
        assert close(float(info["positions"][i]), ref.positions[i]), f"{where}: positions {info['positions']} != {ref.positions}"
        assert close(float(info["weights"][i]), ref.weights[i]), f"{where}: weights {info['weights']} != {ref.weights}"
    if "status" in info:
        status = info["status"] if isinstance(info["status"], str) else VECTOR_STATUS[int(info["status"])]
        assert status == ref.status, f"{where}: status {info['status']} != {ref.status}"
    assert int(info["timestamp"]) == ref.timestamp, f"{where}: timestamp"
    if order_status is not None:
        assert order_status == ref.order_status, f"{where}: order status {order_status} != {ref.order_status}"


def assert_trades_match(trades, ref: StepInfo, where: str) -> None:
    got = [(t["symbol"], t["side"], t["kind"], t["quantity"], t["price"], t["fee"], t["slippage_cost"]) for t in trades]
    want = [(SYMBOLS[f.asset], f.side, f.kind, f.qty, f.price, f.fee, f.slippage_cost) for f in ref.trades]
    assert [g[:3] for g in got] == [w[:3] for w in want], f"{where}: trades {got} != reference {want}"
    for g, w in zip(got, want):
        assert all(close(x, y) for x, y in zip(g[3:], w[3:])), f"{where}: trade {g} != reference {w}"


def assert_obs_matches(obs: np.ndarray, ref_obs: np.ndarray, where: str) -> None:
    np.testing.assert_allclose(obs, ref_obs, rtol=4e-7, atol=1e-30, err_msg=f"{where}: observation")


def assert_reward_matches(reward: float, ref_reward: float, where: str) -> None:
    assert close(float(reward), ref_reward), f"{where}: reward {reward!r} != reference {ref_reward!r}"
