"""The policy bundle: model weights plus everything needed to act identically elsewhere.

A bundle is a folder::

    bundle.json   {"format_version", "model_kind", "spec": PolicySpec, "factorgym_version", "created"}
    model/        whatever the algorithm's writer put there (SB3: model.zip)

``PolicySpec`` is plain JSON: the observation contract (window, feature names, symbol order,
timeframe, action scheme and mapping, observation layout version), the factor-set definition and
hash, the tensor's normalisation statistics, the observation normaliser's statistics (e.g. SB3's
``VecNormalize``), and the env's execution and reward config. ``load_policy(path)`` rebuilds a
:class:`Policy` through the loader registered for the bundle's ``model_kind``; algorithms plug in
with :func:`register_policy_loader` (bundle.py imports none of them).

Example (a rule policy saved and loaded as a bundle)::

    >>> import json, tempfile, numpy as np
    >>> from pathlib import Path
    >>> from factorgym.data_layer.tensor import FactorTensor
    >>> from factorgym.envs import CryptoTradingEnv
    >>> t = FactorTensor.from_arrays(np.zeros((40, 2, 3)), np.full((40, 2), 100.0), np.arange(40) * 3_600_000)
    >>> spec = PolicySpec.from_env(CryptoTradingEnv(t, window=4, mapping="direct"), t)
    >>> class Half:
    ...     def __init__(self, spec): self.spec = spec
    ...     def __call__(self, obs): return np.full(2, 0.5, dtype=np.float32)
    ...     def reset(self): pass
    >>> register_policy_loader("doc-half", lambda model_dir, spec: Half(spec))
    >>> path = save_bundle(Path(tempfile.mkdtemp()) / "b", spec=spec, model_kind="doc-half", write_model=lambda d: None)
    >>> policy = load_policy(path)
    >>> policy.spec.window, policy.spec.symbols, policy(np.zeros(1)).tolist()
    (4, ['ASSET0', 'ASSET1'], [0.5, 0.5])
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from factorgym.fsutil import temp_dir_beside
from factorgym.errors import ConfigError, FactorgymError

BUNDLE_FORMAT_VERSION = 1
#: Version of the observation layout (envs/spaces.py): features [W, A, F], mask [W, A], portfolio [A + 3].
OBS_LAYOUT_VERSION = 1
BUNDLE_FILE = "bundle.json"
MODEL_DIR = "model"


class BundleError(FactorgymError, ValueError):
    """A bundle is missing, malformed, of an unknown kind, or does not fit the data it is given."""


@runtime_checkable
class Policy(Protocol):
    """Anything that acts: ``policy(obs) -> action`` (one observation of the env's space), ``reset()``
    at the start of each episode (recurrent state, rule counters), and the ``spec`` it was built for."""

    spec: "PolicySpec"

    def __call__(self, obs: Any) -> Any: ...

    def reset(self) -> None: ...


@dataclasses.dataclass
class PolicySpec:
    """What a policy was trained on and how it acts: JSON-serialisable, compared against new data.

    Attributes:
        window: feature rows per observation, bars.
        feature_names, symbols: the tensor's, in order (the observation's F and A axes).
        timeframe: bar length, e.g. ``"1h"``.
        action_scheme: ``"weights"`` or ``"discrete"``; mapping: ``"simplex"``, ``"signed"`` or
            ``"direct"`` (None for discrete); long_only, levels, level_size: as the env takes them.
        observation: ``"flat"`` or ``"dict"``; obs_layout_version: :data:`OBS_LAYOUT_VERSION`.
        factor_set, factor_set_hash: the tensor's factor-set definition and hash (None for arrays).
        tensor_normalisation: ``tensor.meta["normalisation"]`` (method and fitted statistics).
        obs_normaliser: None, or ``{"kind": "vecnormalize", "mean", "var", "clip_obs", "epsilon"}``
            (lists, or ``{key: list}`` for dict observations) applied before the model sees ``obs``.
        execution: ``ExecutionConfig`` fields; reward: ``RewardConfig`` fields (None for a callable).
        initial_cash: quote currency.
        extra: free-form (algorithm, run config, versions, ...).
    """

    window: int
    feature_names: list[str]
    symbols: list[str]
    timeframe: str
    action_scheme: str = "weights"
    mapping: str | None = "simplex"
    long_only: bool = True
    levels: list[float] | None = None
    level_size: float | None = None
    observation: str = "flat"
    obs_layout_version: int = OBS_LAYOUT_VERSION
    factor_set: Any = None
    factor_set_hash: str | None = None
    tensor_normalisation: dict | None = None
    obs_normaliser: dict | None = None
    execution: dict = dataclasses.field(default_factory=dict)
    reward: dict | None = None
    initial_cash: float = 10_000.0
    extra: dict = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_env(cls, env: Any, tensor: Any, **fields: Any) -> "PolicySpec":
        """The spec of ``env`` (a ``CryptoTradingEnv``, the vector env or the SB3 view of it) over
        ``tensor`` (the full tensor or any split of it: names and meta are the same). ``fields``
        override or add (e.g. ``obs_normaliser=...``, ``extra=...``)."""
        single = _single_env(env)
        scheme = single.scheme
        discrete = scheme == "discrete"
        levels = [float(x) for x in single.levels] if discrete else None
        reward = dataclasses.asdict(single.reward_config) if single._reward_fn is None else None
        meta = getattr(tensor, "meta", {}) or {}
        spec = cls(
            window=int(single.window), feature_names=list(tensor.feature_names), symbols=list(tensor.symbols),
            timeframe=str(getattr(tensor, "timeframe", meta.get("timeframe", "1h"))),
            action_scheme="discrete" if discrete else "weights", mapping=None if discrete else scheme,
            long_only=bool(single.long_only), levels=levels,
            level_size=float(single.level_size) if discrete else None,
            observation="dict" if single._dict_obs else "flat",
            factor_set=_jsonable(meta.get("factor_set")), factor_set_hash=meta.get("factor_set_hash"),
            tensor_normalisation=_jsonable(meta.get("normalisation")),
            execution=_jsonable(dataclasses.asdict(single.execution)), reward=reward,
            initial_cash=float(single.initial_cash),
        )
        return dataclasses.replace(spec, **fields) if fields else spec

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "PolicySpec":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise BundleError(f"policy spec has unknown fields {unknown}; the bundle was written by a newer factorgym")
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise BundleError(f"policy spec lacks {missing}")
        return cls(**data)

    # ------------------------------------------------------------------ use
    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``CryptoTradingEnv`` that rebuild the env the policy was trained in
        (episode length and random start are left to the caller)."""
        from factorgym.envs.config import ExecutionConfig, RewardConfig

        kw: dict[str, Any] = dict(window=self.window, action_scheme=self.action_scheme, long_only=self.long_only,
                                  observation=self.observation, initial_cash=self.initial_cash,
                                  execution=ExecutionConfig(**self.execution))
        if self.mapping is not None:
            kw["mapping"] = self.mapping
        if self.levels is not None:
            kw["levels"] = tuple(self.levels)
        if self.level_size is not None:
            kw["level_size"] = self.level_size
        if self.reward is not None:
            kw["reward"] = RewardConfig(**self.reward)
        return kw

    def check_tensor(self, tensor: Any) -> None:
        """Raise :class:`BundleError` (one line, naming the first mismatch) unless ``tensor`` has this
        spec's features, symbol order, timeframe and factor-set hash, and room for one window."""
        if self.obs_layout_version != OBS_LAYOUT_VERSION:
            raise BundleError(f"the bundle's observation layout is version {self.obs_layout_version}; this factorgym "
                              f"builds version {OBS_LAYOUT_VERSION}: retrain, or install the factorgym that wrote it")
        symbols, names = list(tensor.symbols), list(tensor.feature_names)
        if symbols != self.symbols:
            raise BundleError(f"symbols differ: {_diff(self.symbols, symbols)}")
        if names != self.feature_names:
            raise BundleError(f"features differ: {_diff(self.feature_names, names)}")
        timeframe = str(getattr(tensor, "timeframe", None) or (tensor.meta or {}).get("timeframe"))
        if timeframe != self.timeframe:
            raise BundleError(f"timeframe differs: the policy was trained on {self.timeframe!r} bars, the tensor has {timeframe!r}")
        theirs = (getattr(tensor, "meta", None) or {}).get("factor_set_hash")
        if self.factor_set_hash is not None and theirs != self.factor_set_hash:
            raise BundleError(f"factor-set hash differs: the policy was trained on factor set {self.factor_set_hash[:12]}, "
                              f"the tensor has {str(theirs)[:12]}: same names, different definitions or parameters")
        if tensor.n_bars < self.window + 1:
            raise BundleError(f"the tensor has {tensor.n_bars} bars; the policy's window of {self.window} needs at least {self.window + 1}")


def _diff(expected: list[str], got: list[str]) -> str:
    """How ``got`` (the tensor's names) differs from ``expected`` (the policy's), naming the first difference."""
    if len(expected) != len(got):
        extra, missing = [x for x in got if x not in expected], [x for x in expected if x not in got]
        detail = "; ".join(p for p in (f"missing {missing[:5]}" if missing else "", f"unexpected {extra[:5]}" if extra else "") if p)
        return f"the policy was trained on {len(expected)}, the tensor has {len(got)} ({detail or 'same names, repeated'})"
    i = next(i for i, (a, b) in enumerate(zip(expected, got)) if a != b)
    if sorted(expected) == sorted(got):
        return f"the same names in another order: position {i} is {expected[i]!r} for the policy, {got[i]!r} in the tensor"
    return f"the policy was trained on {expected[i]!r} at position {i}, the tensor has {got[i]!r}"


def _single_env(env: Any) -> Any:
    """The ``CryptoTradingEnv`` behind an env, a vector env or the SB3 view of one."""
    from factorgym.envs import CryptoTradingEnv

    if not isinstance(env, CryptoTradingEnv):  # vector envs and SB3 wrappers answer get_attr with each env's
        get_attr = getattr(env, "get_attr", None)  # ``unwrapped``: the CryptoTradingEnv describing them
        env = get_attr("unwrapped")[0] if callable(get_attr) else getattr(env, "unwrapped", None)
    if isinstance(env, CryptoTradingEnv):
        return env
    raise ConfigError(f"PolicySpec.from_env needs a CryptoTradingEnv (or a vector env of one), got {type(env).__name__}")


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays to Python, tuples to lists, non-finite floats to strings."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


# ---------------------------------------------------------------------- observation normaliser
class ObsNormaliser:
    """VecNormalize-style statistics applied at inference: ``clip((obs - mean) / sqrt(var + eps), -c, c)``
    as float32, computed in float64 as SB3 does. ``stats`` is ``PolicySpec.obs_normaliser`` (None = identity);
    for dict observations ``mean``/``var`` are ``{key: list}`` and only those keys are normalised."""

    def __init__(self, stats: dict | None) -> None:
        self.stats = stats
        if stats is None:
            return
        self.clip, eps = float(stats["clip_obs"]), float(stats["epsilon"])
        mean, var = stats["mean"], stats["var"]
        arr = lambda m, v: (np.asarray(m, dtype=np.float64), np.sqrt(np.asarray(v, dtype=np.float64) + eps))  # noqa: E731
        self._keys = {k: arr(mean[k], var[k]) for k in mean} if isinstance(mean, dict) else None
        self._flat = None if self._keys is not None else arr(mean, var)

    def __call__(self, obs: Any) -> Any:
        if self.stats is None:
            return obs
        if self._keys is not None:
            return {k: (self._apply(self._keys[k], v) if k in self._keys else v) for k, v in obs.items()}
        return self._apply(self._flat, obs)

    def _apply(self, ms: tuple[np.ndarray, np.ndarray], x: Any) -> np.ndarray:
        return np.clip((np.asarray(x) - ms[0]) / ms[1], -self.clip, self.clip).astype(np.float32)


# ---------------------------------------------------------------------- save / load
_LOADERS: dict[str, Callable[[Path, PolicySpec], Policy]] = {}
#: model kinds whose loader registers itself when its module is imported (imported on first use)
_PROVIDERS = {"factorgym-ppo": "factorgym.agents.custom.ppo", "rllib-torchscript": "factorgym.agents.rllib_bundle"}
_PROVIDER_PREFIXES = {"sb3-": "factorgym.agents.sb3_policy"}


def register_policy_loader(model_kind: str, loader: Callable[[Path, PolicySpec], Policy]) -> None:
    """Make ``load_policy`` build bundles of ``model_kind`` with ``loader(model_dir, spec) -> Policy``,
    where ``model_dir`` is the folder the bundle's ``write_model`` filled. Registering again replaces."""
    if not isinstance(model_kind, str) or not model_kind:
        raise ConfigError(f"model_kind must be a non-empty string, got {model_kind!r}")
    _LOADERS[model_kind] = loader


def save_bundle(path: str | os.PathLike, *, spec: PolicySpec, model_kind: str,
                write_model: Callable[[Path], None]) -> Path:
    """Write a bundle folder at ``path`` atomically (a temporary sibling renamed into place, so a crash
    never leaves half a bundle); ``write_model(model_dir)`` writes the weights into ``model_dir``.
    Returns ``path``. An existing bundle there is replaced."""
    from factorgym import __version__

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)  # follows the umask like any mkdir
    try:
        (tmp / MODEL_DIR).mkdir()
        write_model(tmp / MODEL_DIR)
        doc = {"format_version": BUNDLE_FORMAT_VERSION, "model_kind": model_kind, "factorgym_version": __version__,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "spec": spec.to_dict()}
        (tmp / BUNDLE_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def find_bundle(path: str | os.PathLike) -> Path:
    """``path`` itself if it holds ``bundle.json``; for a run directory its best bundle, else its final one."""
    p = Path(path)
    if (p / BUNDLE_FILE).is_file():
        return p
    for sub in ("bundles/best", "bundles/final"):
        if (p / sub / BUNDLE_FILE).is_file():
            return p / sub
    if not p.exists():
        raise BundleError(f"{p} does not exist; pass a bundle folder (with {BUNDLE_FILE}) or a run directory")
    raise BundleError(f"{p} holds no {BUNDLE_FILE} (nor bundles/best or bundles/final): not a policy bundle or run directory")


def read_bundle(path: str | os.PathLike) -> tuple[Path, str, PolicySpec]:
    """``(bundle folder, model_kind, spec)`` without loading the model."""
    p = find_bundle(path)
    try:
        doc = json.loads((p / BUNDLE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{p / BUNDLE_FILE} is not readable JSON: {exc}") from None
    version = doc.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"{p / BUNDLE_FILE}: bundle format {version!r}; this factorgym reads {BUNDLE_FORMAT_VERSION}")
    for key in ("model_kind", "spec"):
        if key not in doc:
            raise BundleError(f"{p / BUNDLE_FILE} lacks {key!r}")
    return p, str(doc["model_kind"]), PolicySpec.from_dict(doc["spec"])


def load_policy(path: str | os.PathLike, tensor: Any = None) -> Policy:
    """Load a bundle (or a run directory's best/final bundle) as a :class:`Policy`.

    With ``tensor`` given, refuse it unless it matches the spec (:meth:`PolicySpec.check_tensor`).
    """
    p, kind, spec = read_bundle(path)
    if tensor is not None:
        spec.check_tensor(tensor)
    loader = _LOADERS.get(kind)
    if loader is None:
        module = _PROVIDERS.get(kind) or next((m for pre, m in _PROVIDER_PREFIXES.items() if kind.startswith(pre)), None)
        if module is not None:
            importlib.import_module(module)
            loader = _LOADERS.get(kind)
    if loader is None:
        raise BundleError(f"{p}: no loader for model kind {kind!r}; known: {sorted(_LOADERS)} "
                          f"(import the module that calls register_policy_loader({kind!r}, ...))")
    policy = loader(p / MODEL_DIR, spec)
    if not hasattr(policy, "spec"):
        policy.spec = spec
    return policy
