"""Backtest a policy bundle on a split beside the baselines, through the same env and accounting.

``backtest_run(run_or_bundle, split="test")`` is what ``factorgym backtest --run DIR`` does: load the
bundle (the run's best, else its final), load the run's tensor (or another one with the same
features, symbols, timeframe and factor set), cut the split the run was configured with, and
backtest the policy and every baseline from the same first decision bar. It writes
``report.html``, ``metrics.json`` and ``trades.csv`` under ``<run>/backtest/<split>/``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from factorgym.agents.bundle import Policy, find_bundle, load_policy
from factorgym.errors import ConfigError

SPLIT_NAMES = ("train", "validation", "test")


def backtest_policy(policy: Policy, tensor: Any, *, start=None, end=None, name: str = "agent", seed: int = 0):
    """One deterministic backtest of ``policy`` over ``tensor`` in the env its spec describes."""
    from factorgym.envs.backtest import backtest

    spec = policy.spec
    spec.check_tensor(tensor)
    kw = spec.env_kwargs()
    main = {k: kw.pop(k) for k in ("window", "action_scheme", "execution", "initial_cash")}
    return backtest(tensor, policy, start=start, end=end, mapping=kw.pop("mapping", None), env_kwargs=kw,
                    name=name, seed=seed, **main)


def beside_baselines(policy: Policy, tensor: Any, *, start=None, end=None, name: str = "agent", seed: int = 0,
                     baselines: tuple[str, ...] | None = None) -> dict:
    """``{name: agent result, baseline: result, ...}`` over the same bars, fees and starting cash."""
    from factorgym.envs.baselines import BASELINE_NAMES, run_baselines
    from factorgym.envs.config import ExecutionConfig

    spec = policy.spec
    out = {name: backtest_policy(policy, tensor, start=start, end=end, name=name, seed=seed)}
    out.update(run_baselines(tensor, names=baselines or BASELINE_NAMES, start=start, end=end, window=spec.window,
                             execution=ExecutionConfig(**spec.execution), initial_cash=spec.initial_cash, seed=seed))
    return out


def _is_time(text: str) -> bool:
    from factorgym.data_layer.timeframes import to_utc_ms

    if text.strip().isdigit() and len(text.strip()) < 9:  # "00" is a minute, not epoch seconds
        return False
    try:
        to_utc_ms(text)
    except ConfigError:
        return False
    return True


def time_range(text: str) -> tuple[str | None, str | None]:
    """``START:END`` split at the one colon that leaves two times (either may be empty): ISO times
    such as ``2021-01-01T12:00:2021-02-01`` hold colons of their own."""
    cuts = [(text[:i], text[i + 1:]) for i, ch in enumerate(text) if ch == ":"]
    ok = [(a, b) for a, b in cuts if (not a or _is_time(a)) and (not b or _is_time(b))]
    if len(ok) != 1:
        why = "no colon leaves two times" if not ok else "more than one colon leaves two times"
        raise ConfigError(f"--split {text!r}: {why}; expected START:END, e.g. 2023-01-01:2023-06-01 "
                          "or 2023-01-01T12:00Z:2023-06-01T00:00Z")
    a, b = ok[0]
    return a or None, b or None


def run_split(run_dir: Path | None, tensor: Any, split: str) -> tuple[Any, Any, Any, str]:
    """``(tensor part, start, end, label)`` for a split name (cut as the run's config says) or ``START:END`` times."""
    if ":" in split and split not in SPLIT_NAMES:
        a, b = time_range(split)
        return tensor, a, b, f"{a or ''}_to_{b or ''}".replace(":", "")
    if split not in SPLIT_NAMES:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLIT_NAMES)} or START:END (UTC dates)")
    from factorgym.agents.train import load_run_config, make_splits

    cfg = load_run_config(run_dir) if run_dir is not None else {"split": [0.7, 0.15, 0.15], "embargo": 0}
    parts = make_splits(tensor, cfg)
    if split not in parts:
        raise ConfigError(f"--split {split}: the run's split {cfg['split']!r} has no {split} part")
    return parts[split], None, None, split


def backtest_run(path: str | Path, *, tensor_dir: str | Path | None = None, split: str = "test", seed: int = 0,
                 out_dir: str | Path | None = None, report: bool = True) -> tuple[dict, dict[str, Path]]:
    """Backtest a run's bundle (or any bundle) beside the baselines; returns (results, written files).
    ``report=False`` skips the HTML report (its plots take longer than the backtests)."""
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs.report import write_html_report

    bundle = find_bundle(path)
    run_dir = bundle.parent.parent if bundle.parent.name == "bundles" else None
    policy = load_policy(bundle)
    if tensor_dir is None:
        tensor_dir = _run_tensor(run_dir) if run_dir is not None else None
        if tensor_dir is None:
            raise ConfigError(f"{bundle} is not inside a run directory: pass --tensor DIR")
    tensor_dir = Path(tensor_dir)
    if not (tensor_dir / "meta.json").is_file():
        raise ConfigError(f"tensor: {tensor_dir} is not a saved FactorTensor (no meta.json); pass --tensor DIR")
    tensor = FactorTensor.load(tensor_dir)
    policy.spec.check_tensor(tensor)
    part, start, end, label = run_split(run_dir, tensor, split)
    results = beside_baselines(policy, part, start=start, end=end, seed=seed)
    out = Path(out_dir) if out_dir is not None else (run_dir or bundle) / "backtest" / label
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": out / "metrics.json", "trades": out / "trades.csv"}
    if report:
        files["report"] = write_html_report(out / "report.html", results)
    files["metrics"].write_text(json.dumps(metrics_json(results), indent=1))
    results["agent"].trades.to_csv(files["trades"], index=False)
    return results, files


def metrics_json(results: dict) -> dict:
    """``{name: {metric: value}}`` with NaN as null and infinities as strings (JSON has neither)."""
    def clean(v: float):
        v = float(v)
        return None if math.isnan(v) else (("inf" if v > 0 else "-inf") if math.isinf(v) else v)
    return {name: {k: clean(v) for k, v in r.metrics.items()} for name, r in results.items()}


def _run_tensor(run_dir: Path) -> Path | None:
    data = run_dir / "data.json"
    if not data.is_file():
        return None
    return Path(json.loads(data.read_text())["tensor"])
