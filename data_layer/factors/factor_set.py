"""Factor sets: a YAML list of factors plus normalisation and cross-sectional options.

Schema (``configs/factors/*.yaml``; every key documented there)::

    factors:                     # list of factor entries, any registered kind
      - {kind: talib, name: RSI, params: {timeperiod: 14}}
      - {kind: custom, name: log_return, params: {periods: 24}, cross_sectional: rank}
      - {kind: talib, name: CDLDOJI, normalise: false}   # keep raw values
    cross_sectional: none        # default for entries without their own: none | rank | zscore
    normalise: {method: expanding, min_periods: 100, clip: 5.0}

Per-entry keys handled here for every kind: ``cross_sectional`` and ``normalise`` (bool). The
factor-set hash is a sha256 of the canonical JSON of the resolved set (plus the TA-Lib version),
so the same definitions always give the same hash and any change gives a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from factorgym.data_layer.factors.base import CandlePanel, Factor, factor_from_config
from factorgym.data_layer.factors.normalise import NormaliseConfig
from factorgym.data_layer.factors.transforms import METHODS as CS_METHODS
from factorgym.data_layer.factors.transforms import cross_sectional
from factorgym.config_keys import check_keys
from factorgym.errors import ConfigError

_SET_KEYS = {"factors", "normalise", "cross_sectional", "description"}


@dataclasses.dataclass(frozen=True)
class FactorSet:
    """Built factors with their per-entry options; ``config`` is the canonical resolved mapping."""

    factors: tuple[Factor, ...]
    cross_sectional: tuple[str, ...]       # per factor: none | rank | zscore
    normalised: tuple[bool, ...]           # per factor: normalise its columns?
    normalise: NormaliseConfig
    config: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [n for f in self.factors for n in f.names]

    @property
    def factor_warmup(self) -> int:
        return max((int(f.warmup) for f in self.factors), default=0)

    @property
    def warmup(self) -> int:
        """Bars of an asset's history before its first complete, normalised feature row."""
        return self.factor_warmup + self.normalise.warmup

    @property
    def column_slices(self) -> list[slice]:
        out, j = [], 0
        for f in self.factors:
            out.append(slice(j, j + len(f.names)))
            j += len(f.names)
        return out

    @property
    def normalise_mask(self) -> np.ndarray:
        """bool [F]: which columns are normalised."""
        return np.concatenate([np.full(len(f.names), n) for f, n in zip(self.factors, self.normalised)]) if self.factors else np.zeros(0, bool)

    def hash(self) -> str:
        try:
            import talib

            ver = talib.__version__
        except ImportError:  # pragma: no cover
            ver = None
        blob = json.dumps({"set": self.config, "talib": ver}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def compute(self, panel: CandlePanel, progress: Any = None) -> np.ndarray:
        """Raw feature block float64 ``[T, A, F]`` (cross-sectional transforms applied, not normalised)."""
        out = np.empty((panel.n_bars, panel.n_assets, len(self.names)))
        for f, cs, sl in zip(self.factors, self.cross_sectional, self.column_slices):
            vals = np.asarray(f.compute(panel), dtype=np.float64)
            if vals.shape != (panel.n_bars, panel.n_assets, len(f.names)):
                raise ConfigError(f"factor {f.names[0]!r} returned shape {vals.shape}, expected {(panel.n_bars, panel.n_assets, len(f.names))}")
            out[:, :, sl] = cross_sectional(vals, cs)
            if progress is not None:
                progress.update(1)
        return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'factors', got {type(data).__name__}")
    return data


def resolve_config_path(ref: str | Path, folder: str = "factors") -> Path:
    """A path, or the name of a packaged config (``talib_default`` -> configs/factors/talib_default.yaml)."""
    p = Path(ref)
    if p.exists():
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    packaged = resources.files("factorgym.configs").joinpath(folder, name)
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"factor set {str(ref)!r} not found: give a YAML path or a packaged name such as talib_default")


def load_factor_set(source: str | Path | dict[str, Any]) -> FactorSet:
    """Build a :class:`FactorSet` from a mapping, a YAML path or a packaged set name."""
    if isinstance(source, dict):
        data, where = source, "factor set"
    else:
        path = resolve_config_path(source)
        data, where = _read_yaml(path), str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with 'factors', got {type(data).__name__}")
    check_keys(data, _SET_KEYS | ({"data", "factor_set"} if "data" in data else set()), where)
    entries = data.get("factors")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: 'factors' must be a non-empty list of factor entries")
    default_cs = data.get("cross_sectional") or "none"
    if default_cs not in CS_METHODS:
        raise ConfigError(f"{where}: cross_sectional {default_cs!r} is not one of {CS_METHODS}")
    norm = NormaliseConfig.from_dict(data.get("normalise"))
    factors, cs, normed, canon = [], [], [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: factors[{i}] must be a mapping like {{kind: talib, name: RSI}}, got {entry!r}")
        entry = dict(entry)
        c = entry.pop("cross_sectional", None) or default_cs
        if c not in CS_METHODS:
            raise ConfigError(f"{where}: factors[{i}].cross_sectional {c!r} is not one of {CS_METHODS}")
        n = entry.pop("normalise", True)
        if not isinstance(n, bool):
            raise ConfigError(f"{where}: factors[{i}].normalise must be true or false, got {n!r}")
        try:
            f = factor_from_config(entry)
        except ConfigError as exc:
            raise ConfigError(f"{where}: factors[{i}]: {exc}") from exc
        factors.append(f)
        cs.append(c)
        normed.append(n)
        canon.append({**entry, "cross_sectional": c, "normalise": n})
    names = [nm for f in factors for nm in f.names]
    dup = sorted({nm for nm in names if names.count(nm) > 1})
    if dup:
        raise ConfigError(f"{where}: duplicate feature names {dup}; give one of the entries an 'alias'")
    config = {"factors": canon, "normalise": dataclasses.asdict(norm), "cross_sectional": default_cs}
    return FactorSet(tuple(factors), tuple(cs), tuple(normed), norm, config)
