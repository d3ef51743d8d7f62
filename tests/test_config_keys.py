"""Unknown keys are errors at every level of every shipped YAML config, with a did-you-mean.

The test walks each config in ``configs/factors/``, inserts an unknown key into every mapping in
turn (top level, ``data``, ``normalise``, each factor entry, each entry's ``params``...) and loads it:
each must raise one ConfigError naming the key. Other config folders are checked by the tests of
their loaders (``configs/train`` by the training config's tests).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from factorgym.config_keys import check_keys
from factorgym.data_layer.build import load_build_config
from factorgym.data_layer.factors.factor_set import load_factor_set
from factorgym.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FACTOR_CONFIGS = sorted((ROOT / "configs" / "factors").glob("*.yaml"))


def _load(path: Path):
    """What `factorgym build` reads: a build config (data + factor set) or a factor set alone."""
    cfg = yaml.safe_load(path.read_text())
    if "data" in cfg:
        _, fs_src = load_build_config(path)
        return load_factor_set(fs_src)
    return load_factor_set(path)


def _mappings(node, path=()):
    """Every mapping in a YAML tree with its path."""
    if isinstance(node, dict):
        yield path
        for k, v in node.items():
            yield from _mappings(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _mappings(v, path + (i,))


def _needs_qlib(cfg) -> bool:
    return "qlib" in yaml.safe_dump(cfg)


@pytest.mark.parametrize("path", FACTOR_CONFIGS, ids=lambda p: p.name)
def test_unknown_key_at_every_level_is_an_error(path, tmp_path):
    cfg = yaml.safe_load(path.read_text())
    if _needs_qlib(cfg):
        pytest.importorskip("qlib")
    _load(path)  # the shipped config itself loads
    levels = list(_mappings(cfg))
    assert levels
    for level in levels:
        bad = copy.deepcopy(cfg)
        node = bad
        for k in level:
            node = node[k]
        node["bogus_key"] = 1
        out = tmp_path / path.name
        out.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match="bogus_key"):
            _load(out)


def test_build_config_typo_says_did_you_mean(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs/factors/build_sample_bitstamp.yaml").read_text())
    cfg["normalize"] = cfg.pop("normalise")  # un-normalised features, silently, before
    out = tmp_path / "build.yaml"
    out.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"unknown key 'normalize' \(did you mean 'normalise'\?\)"):
        load_build_config(out)
    cfg["normalise"] = cfg.pop("normalize")
    cfg["data"]["symbol"] = cfg["data"].pop("symbols")
    out.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"data: unknown key 'symbol' \(did you mean 'symbols'\?\)"):
        load_build_config(out)


def test_check_keys_names_where_and_allowed():
    with pytest.raises(ConfigError, match=r"^x.yaml: unknown key 'zzz'; allowed: a, b$"):
        check_keys({"a": 1, "zzz": 2}, {"a", "b"}, "x.yaml")
    check_keys({"a": 1}, {"a", "b"}, "x.yaml")
