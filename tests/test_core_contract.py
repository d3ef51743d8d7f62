"""envs/core.py against its docstrings: check_tensor's refusals with their exact one-line
messages (each missing field, each shape, each bad price on a tradable bar; untradable bars and a
zero volume accepted), PortfolioCore's buffers, counters and step/reset refusals, its action
conversion and compiled entry points, the shared price records, memory maps and the reporting of
non-finite features."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, PortfolioCore, RewardConfig
from factorgym.envs.core import check_tensor, is_mapped
from factorgym.envs.layouts import OUT_WEIGHTS, STATE
from factorgym.errors import DataValidationError
from tests._env_data import FEES, LS, two_assets, with_prices

pytestmark = pytest.mark.filterwarnings("error")  # no numpy or Gymnasium warning may escape


class Fake:
    """Anything with a FactorTensor's fields (the env takes duck-typed tensors)."""

    def __init__(self, T=6, A=2, drop=None, **over):
        t = two_assets(T=T)
        self.features, self.prices = np.array(t.features)[:, :A], np.array(t.prices)[:, :A]
        self.timestamps, self.tradable, self.symbols = np.array(t.timestamps), np.array(t.tradable)[:, :A], ["X", "Y"][:A]
        for k, v in over.items():
            setattr(self, k, v)
        if drop:
            delattr(self, drop)



@pytest.mark.parametrize("name", ["features", "prices", "timestamps", "tradable", "symbols"])
def test_a_tensor_without_a_field_is_refused_naming_it(name):
    with pytest.raises(DataValidationError, match=rf"^the env needs a FactorTensor \(features, prices, timestamps, "
                                                  rf"tradable, symbols\); got Fake without `{name}` -- build one with "
                                                  rf"FactorTensor\.from_arrays\(\.\.\.\)$"):
        check_tensor(Fake(drop=name))



@pytest.mark.parametrize("over, message", [
    ({"features": np.zeros((6, 2))}, r"tensor\.features must be \[T, A, F\], got shape \(6, 2\)"),
    ({"features": [[[0.0]]]}, r"tensor\.features must be \[T, A, F\], got shape None"),
    ({"prices": np.ones((6, 3, 5))}, r"tensor\.prices must be \[T, A, 5\] = \(6, 2, 5\), got \(6, 3, 5\)"),
    ({"prices": np.ones((6, 2, 4))}, r"tensor\.prices must be \[T, A, 5\] = \(6, 2, 5\), got \(6, 2, 4\)"),
    ({"timestamps": np.arange(5)}, r"tensor\.timestamps must be \[6\] and tradable \[6, 2\]; got \(5,\) and \(6, 2\)"),
    ({"timestamps": np.arange(7)}, r"tensor\.timestamps must be \[6\] and tradable \[6, 2\]; got \(7,\) and \(6, 2\)"),
    ({"tradable": np.ones((5, 2), bool)},
     r"tensor\.timestamps must be \[6\] and tradable \[6, 2\]; got \(6,\) and \(5, 2\)"),
    ({"tradable": np.ones((6, 3), bool)},
     r"tensor\.timestamps must be \[6\] and tradable \[6, 2\]; got \(6,\) and \(6, 3\)"),
    ({"symbols": ["X", "Y", "Z"]}, r"tensor has 2 assets but 3 symbols"),
    ({"symbols": ["X"]}, r"tensor has 2 assets but 1 symbols"),
])
def test_a_misshapen_tensor_is_refused_with_both_shapes(over, message):
    with pytest.raises(DataValidationError, match=rf"^{message}$"):
        check_tensor(Fake(**over))



@pytest.mark.parametrize("field, k, value, shown", [
    ("open", 0, 0.0, "0.0"), ("open", 0, -2.0, "-2.0"), ("open", 0, np.inf, "inf"),
    ("close", 3, 0.0, "0.0"), ("close", 3, np.nan, "nan"),
    ("volume", 4, -1.0, "-1.0"), ("volume", 4, np.nan, "nan"), ("volume", 4, -np.inf, "-inf"),
])
def test_a_bad_price_on_a_tradable_bar_is_refused_and_on_an_untradable_bar_is_not(field, k, value, shown):
    t = two_assets()
    prices = np.array(t.prices)
    prices[7, 1, k] = value
    with pytest.raises(DataValidationError, match=rf"^Y: {field} is {shown} at row 7 \(timestamp 25200000\) on a bar "
                                                  rf"marked tradable; prices must be finite and positive on tradable "
                                                  rf"bars \(mark the bar untradable instead\)$"):
        CryptoTradingEnv(with_prices(t, prices))
    tradable = np.array(t.tradable)
    tradable[7, 1] = False
    check_tensor(with_prices(t, prices, tradable))



def test_a_zero_volume_and_bad_high_or_low_are_accepted():
    """Only open, close (> 0) and volume (>= 0) are used by the fills; a bar without volume is valid."""
    t = two_assets()
    prices = np.array(t.prices)
    prices[5, 0, 4] = 0.0
    prices[6, 0, 1:3] = np.nan
    check_tensor(with_prices(t, prices))



def core_of(n: int = 2, **kw) -> PortfolioCore:
    args = dict(window=2, scheme="direct", execution=FEES, reward=RewardConfig(), initial_cash=1000.0, long_only=False)
    return PortfolioCore(two_assets(), n, **{**args, **kw})



def test_a_core_before_reset_has_every_env_done_and_after_it_at_its_bounds():
    core = core_of(3)
    assert core.counters.dtype == np.int64 and core.counters.shape == (3, 4)
    assert core.counters[:, 2].tolist() == [1, 1, 1]  # done: nothing steps before a reset
    assert (core.first_start, core.last_bar, core.n_bars, core.n_assets, core.n_features) == (1, 11, 12, 2, 2)
    assert core.step(np.zeros(6)) == 0 and not core.out.any()  # done envs do not move
    core.reset(np.array([0, 2]), np.array([1, 4]), np.array([5, 11]))
    assert core.counters.tolist() == [[1, 5, 0, 0], [0, 0, 1, 0], [4, 11, 0, 0]]
    assert core.info_scalars(0) == {"equity": 1000.0, "cash": 1000.0, "fees": 0.0, "slippage_cost": 0.0,
                                    "borrow_cost": 0.0, "funding": 0.0, "turnover": 0.0}



def test_the_cores_buffers_have_the_documented_shapes_and_dtypes():
    core = core_of(3)
    assert core.obs.dtype == np.float32 and core.obs.shape == (3 * core.obs_dim,)
    assert core.act.dtype == np.float64 and core.act.shape == (3 * 2,) and core.action_dim == 2
    assert core.state.shape == (3, len(STATE) + 2) and core.out.shape == (3, OUT_WEIGHTS + 3 * 2)
    assert core.fills.shape == (3, 6, 4) and core.prices.dtype == np.float64 and core.data.dtype == np.float32
    assert not core.data.flags.writeable and not core.prices.flags.writeable
    assert core_of(1, scheme="simplex", long_only=True).action_dim == 3  # A + 1



def test_the_cores_step_refuses_wrong_buffers_naming_what_it_expects():
    core = core_of(2)
    core.reset(np.arange(2), np.array([1, 1]), np.array([11, 11]))
    for n in (3, 5, 8):  # fewer, more (the kernel reads only 4), and [2, 4]-many (the wrong K)
        with pytest.raises(ValueError, match=rf"^actions have {n} values; expected n_envs x action_dim = 4$"):
            core.step(np.zeros(n))
    with pytest.raises(ValueError, match=rf"^out must be a C-contiguous float64 array of shape "
                                         rf"\({core._out.shape[0]}, {core._out.shape[1]}\)$"):
        core.step(np.zeros(4), out=np.zeros(core._out.shape, np.float32))
    with pytest.raises(ValueError, match=rf"^observation buffer must be C-contiguous float32 with {2 * core.obs_dim} "
                                         rf"values$"):
        core.step(np.zeros(4), obs=np.zeros(2 * core.obs_dim))  # float64
    with pytest.raises(ValueError, match=r"^observation buffer must be C-contiguous float32"):
        core.step(np.zeros(4), obs=np.zeros((core.obs_dim, 2), np.float32).T)  # not C-contiguous
    assert core.counters[:, 3].tolist() == [0, 0]  # nothing stepped



def test_the_cores_step_takes_actions_n_by_k_or_flat_as_the_same_values():
    a, b = core_of(2), core_of(2)
    for c in (a, b):
        c.reset(np.arange(2), np.array([1, 3]), np.array([11, 11]))
    act = np.array([[0.5, -0.2], [0.1, 0.3]])
    obs_a, obs_b = np.zeros((2, a.obs_dim), np.float32), np.zeros(2 * b.obs_dim, np.float32)
    assert a.step(act, obs=obs_a) == b.step(act.reshape(-1).tolist(), obs=obs_b) == 0
    np.testing.assert_array_equal(obs_a.reshape(-1), obs_b)
    np.testing.assert_array_equal(a.out, b.out)
    assert a.order_status(1) == ["filled", "filled"] and len(a.trades(1)) == 2



@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint8, np.float16, np.bool_])
def test_the_core_converts_actions_of_other_dtypes_to_float64(dtype):
    """'float32/float64 are used as they are, anything else is converted to float64': the same step
    as the float64 values, through the float64 entry point (no kernel compiled for the dtype)."""
    a, b = core_of(2), core_of(2)
    for c in (a, b):
        c.reset(np.arange(2), np.array([1, 3]), np.array([11, 11]))
    act = np.array([1, 0, 0, 1], dtype)
    assert a.step(act) == b.step(act.astype(np.float64)) == 0
    np.testing.assert_array_equal(a.out, b.out)
    np.testing.assert_array_equal(a.obs, b.obs)
    assert set(a._entries) == {np.dtype(np.float64)}



def test_the_core_steps_and_resets_through_compiled_entry_points_not_numbas_dispatch():
    """_fast: the kernels' compiled entry points for exactly the core's argument types (float64 and
    float32 1-D actions), which skip numba's per-call type dispatch; a failed compile would fall
    back to the dispatcher silently (correct, but slower on every step)."""
    from numba.core.registry import CPUDispatcher

    core = core_of(2)
    for fn in (core._reset, core.step64, core.step32):
        assert not isinstance(fn, CPUDispatcher), fn
    assert set(core._entries) == {np.dtype(np.float64), np.dtype(np.float32)}



def test_writable_tensors_get_their_own_read_only_price_records():
    t = two_assets()
    e1, e2 = CryptoTradingEnv(t, window=2), CryptoTradingEnv(t, window=2)
    assert e1.core.prices is not e2.core.prices and not e1.core.prices.flags.writeable
    np.testing.assert_array_equal(e1.core.prices, e2.core.prices)



def test_is_mapped_follows_views_back_to_a_memory_map(tmp_path):
    m = np.memmap(tmp_path / "f.bin", dtype=np.float32, mode="w+", shape=(4, 3))
    assert is_mapped(m) and is_mapped(m[1:, :2]) and is_mapped(m.reshape(-1))
    np.save(tmp_path / "g.npy", np.zeros((4, 3), np.float32))
    assert is_mapped(np.load(tmp_path / "g.npy", mmap_mode="r")[:2])
    assert not is_mapped(np.zeros(3)) and not is_mapped(np.asarray(m).copy())



def test_mapped_features_that_are_not_contiguous_are_copied_with_a_note_and_observed_the_same(tmp_path, caplog):
    t = two_assets(T=12, F=2)
    m = np.memmap(tmp_path / "f.bin", dtype=np.float32, mode="w+", shape=(12, 3, 2))
    m[:, :2] = t.features
    sliced = m[:, :2]  # the asset axis cut: a mapped, non-contiguous view
    ns = types.SimpleNamespace(features=sliced, prices=t.prices, timestamps=t.timestamps, tradable=t.tradable,
                               symbols=t.symbols, meta=t.meta)
    with caplog.at_level(logging.INFO, logger="factorgym.envs.core"):
        env = CryptoTradingEnv(ns, **LS)
    assert "the memory-mapped features are not contiguous (a sliced asset axis?); copying them into memory" \
        in caplog.messages
    assert env.core.raw_features is False
    ref = CryptoTradingEnv(t, **LS)
    np.testing.assert_array_equal(env.reset(options={"start": 1})[0], ref.reset(options={"start": 1})[0])
    np.testing.assert_array_equal(env.step(np.array([0.2, 0.1]))[0], ref.step(np.array([0.2, 0.1]))[0])



def test_non_finite_features_are_observed_as_0_and_only_those_on_tradable_bars_are_reported(caplog):
    t = two_assets()
    feats, tradable = np.array(t.features), np.array(t.tradable)
    feats[2, 0, :] = np.nan  # X untradable at bar 2: not reported (its features are observed as 0 anyway)
    tradable[2, 0] = False
    feats[2, 1, 1] = -np.inf  # Y tradable at bar 2: reported
    bad = FactorTensor(feats, t.prices, t.timestamps, t.symbols, t.feature_names, tradable, t.meta)
    with caplog.at_level(logging.WARNING, logger="factorgym.envs.core"):
        env = CryptoTradingEnv(bad, **LS)
    assert caplog.messages == ["1 feature values are NaN/inf on tradable bars; they are observed as 0"]
    obs, _ = env.reset(options={"start": 2})  # window rows 1-2
    rows = obs[:8].reshape(2, 2, 2)
    assert rows[1, 0].tolist() == [0.0, 0.0] and rows[1, 1].tolist() == [float(feats[2, 1, 0]), 0.0]
    np.testing.assert_array_equal(rows[0], feats[1])
    assert obs[8:12].tolist() == [1.0, 1.0, 0.0, 1.0]  # the mask: X untradable at bar 2

