"""Trainers for the walk-forward (:class:`factorgym.agents.walk_forward.Trainer`).

* :class:`EntryPointTrainer` calls the project's training entry point
  ``factorgym.agents.train.train(config, tensor_dir=..., run_dir=..., seed=...)`` on the fold's
  history (saved as a tensor folder in the fold's run directory) and loads ``best_bundle_path``.
* :class:`SB3FoldTrainer` is a compact SB3 loop for when that entry point is absent: it trains
  from scratch on the training rows, saves a policy bundle every ``total_timesteps / checkpoints``
  steps, backtests each on the validation block and keeps the one with the best validation Sharpe.

Both return the frozen policy as loaded from its bundle (``load_policy``), so the test block runs
exactly what a deployment would.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from factorgym.agents.walk_forward import FoldData, FoldModel
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)

ENV_KEYS = ("window", "action_scheme", "mapping", "long_only", "levels", "level_size", "reward", "episode_length",
            "initial_cash", "observation")


def execution_from(cfg: dict | None):
    from factorgym.envs.config import ExecutionConfig

    cfg = dict(cfg or {})
    try:
        return ExecutionConfig.frictionless(**{k: v for k, v in cfg.items() if k != "frictionless"}) if cfg.get("frictionless") \
            else ExecutionConfig(**cfg)
    except TypeError as exc:
        raise ConfigError(f"execution: {exc}; see ExecutionConfig for the keys") from None


def _validation_sharpe(policy, data: FoldData, env_kwargs: dict) -> dict[str, float]:
    from factorgym.agents.walk_forward import backtest_frozen

    window = int(env_kwargs.get("window", 1))
    val = data.validation(window)
    start = data.val_rows[0] - max(0, data.val_rows[0] - (window - 1))  # the first validation bar in ``val``
    res = backtest_frozen(val, policy, env_kwargs, start=max(start, window - 1), name="validation")
    return {k: res.metrics[k] for k in ("sharpe", "total_return", "max_drawdown", "n_trades")}


class SB3FoldTrainer:
    """SB3 from scratch per fold, checkpoint chosen by validation Sharpe.

    ``config`` keys (all optional): ``algorithm`` ("PPO"), ``total_timesteps`` (50_000), ``n_envs``
    (8), ``checkpoints`` (4), ``torch_threads`` (1), ``env`` (``CryptoTradingEnv`` arguments:
    window, mapping, episode_length, reward, ...), ``execution`` (``ExecutionConfig`` fields, or
    ``frictionless: true``), ``algo_kwargs`` (the algorithm's constructor arguments), ``policy``
    ("MlpPolicy").
    """

    def __init__(self, config: dict | None = None) -> None:
        self.config = dict(config or {})
        unknown = sorted(set(self.config) - {"algorithm", "total_timesteps", "n_envs", "checkpoints", "torch_threads",
                                             "env", "execution", "algo_kwargs", "policy"})
        if unknown:
            raise ConfigError(f"walk-forward trainer config: unknown keys {unknown}")
        env = dict(self.config.get("env") or {})
        bad = sorted(set(env) - set(ENV_KEYS))
        if bad:
            raise ConfigError(f"env: unknown keys {bad}; expected some of {ENV_KEYS}")
        self.total = int(self.config.get("total_timesteps", 50_000))
        self.checkpoints = max(1, int(self.config.get("checkpoints", 4)))
        if self.total < self.checkpoints:
            raise ConfigError(f"total_timesteps={self.total} is below checkpoints={self.checkpoints}")

    def env_kwargs(self) -> dict[str, Any]:
        env = dict(self.config.get("env") or {})
        env.setdefault("episode_length", 720)
        env["execution"] = execution_from(self.config.get("execution"))
        return env

    def __call__(self, data: FoldData) -> FoldModel:
        import torch

        from factorgym.agents.bundle import PolicySpec, load_policy
        from factorgym.agents.sb3_policy import algorithm_class, save_sb3_bundle
        from factorgym.agents.sb3_vec import make_vec_env

        torch.set_num_threads(int(self.config.get("torch_threads", 1)))
        algorithm = str(self.config.get("algorithm", "PPO"))
        env_kwargs = self.env_kwargs()
        train = data.train
        length = env_kwargs.get("episode_length")
        if length is not None and length > train.n_bars - env_kwargs.get("window", 1) - 1:
            env_kwargs["episode_length"] = max(2, train.n_bars - env_kwargs.get("window", 1) - 1)
        venv = make_vec_env(train, int(self.config.get("n_envs", 8)), seed=data.seed, **env_kwargs)
        model = algorithm_class(algorithm)(self.config.get("policy", "MlpPolicy"), venv, seed=data.seed, verbose=0,
                                           device="cpu", **dict(self.config.get("algo_kwargs") or {}))
        spec = PolicySpec.from_env(venv, train)
        run_kwargs = spec.env_kwargs()
        chunk = math.ceil(self.total / self.checkpoints)
        best, scores = None, {}
        for k in range(self.checkpoints):
            model.learn(chunk, reset_num_timesteps=(k == 0))
            name = f"step_{model.num_timesteps}"
            path = save_sb3_bundle(data.run_dir / "checkpoints" / name, model, spec, algorithm, venv=venv)
            metrics = _validation_sharpe(load_policy(path), data, run_kwargs)
            scores[name] = metrics
            s = metrics["sharpe"] if math.isfinite(metrics["sharpe"]) else -math.inf
            if best is None or s > best[1]:
                best = (name, s, path)
        venv.close()
        policy = load_policy(best[2])
        return FoldModel(policy, run_kwargs, checkpoint=best[0], validation=scores[best[0]],
                         info={"bundle": str(best[2]), "checkpoints": scores, "timesteps": int(model.num_timesteps)})


class EntryPointTrainer:
    """The training entry point ``factorgym.agents.train.train`` on the fold's history.

    The fold's history is saved under ``<run_dir>/tensor``; ``train`` gets its training and
    validation rows as the override ``split: {train: [start, end], validation: [start, end]}`` (UTC ms,
    half-open; the embargo is already in the gap between them) and chooses its best bundle on that
    validation range.
    """

    def __init__(self, config: Any, total_timesteps: int | None = None) -> None:
        from factorgym.agents import train as train_mod  # raises ImportError when it is not there

        self._train = train_mod.train
        self.source = config
        self.config = _load_config_dict(config)
        self.total_timesteps = total_timesteps

    def __call__(self, data: FoldData) -> FoldModel:
        from factorgym.agents.bundle import load_policy

        tensor_dir = data.history.save(data.run_dir / "tensor")
        ts = data.history.timestamps
        end = lambda i: int(ts[i]) if i < len(ts) else int(ts[-1]) + 1  # noqa: E731
        overrides = {"split": {"train": [int(ts[data.train_rows[0]]), end(data.train_rows[1])],
                               "validation": [int(ts[data.val_rows[0]]), end(data.val_rows[1])]}, "embargo": 0}
        result = self._train(self.source, tensor_dir=tensor_dir, run_dir=data.run_dir / "run", overrides=overrides,
                             total_timesteps=self.total_timesteps, seed=data.seed)
        bundle = getattr(result, "best_bundle_path", None) or result.bundle_path
        policy = load_policy(bundle)
        metrics = dict(getattr(result, "validation", None) or getattr(result, "validation_metrics", None) or {})
        return FoldModel(policy, policy.spec.env_kwargs(), checkpoint=_best_step(result, bundle), validation=metrics,
                         info={"bundle": str(bundle), "run_dir": str(getattr(result, "run_dir", ""))})


def _best_step(result, bundle) -> str:
    """``best@<step>`` from the run's eval.jsonl (the validation backtest with the best Sharpe), else the bundle's name."""
    import json

    name = Path(str(bundle)).name
    path = Path(str(getattr(result, "run_dir", ""))) / "eval.jsonl"
    if name != "best" or not path.is_file():
        return name
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if isinstance(r.get("eval/sharpe"), (int, float))]
    return f"best@{max(rows, key=lambda r: r['eval/sharpe'])['step']}" if rows else name


def _load_config_dict(config: Any) -> dict:
    if isinstance(config, dict):
        return dict(config)
    import yaml

    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist")
    return yaml.safe_load(path.read_text()) or {}


def make_trainer(config: dict, *, total_timesteps: int | None = None, prefer: str = "auto"):
    """The trainer an evaluation config asks for: ``trainer: entry_point`` (the training entry point
    with ``train_config``), ``trainer: sb3`` (``SB3FoldTrainer`` with the ``train`` section), or
    ``auto``: the entry point when it is installed and a ``train_config`` is given, else sb3."""
    kind = config.get("trainer", prefer)
    if kind not in ("auto", "sb3", "entry_point"):
        raise ConfigError(f"trainer {kind!r} is unknown; expected auto, sb3 or entry_point")
    if kind in ("auto", "entry_point") and config.get("train_config") is not None:
        try:
            return EntryPointTrainer(config["train_config"], total_timesteps=total_timesteps)
        except ImportError:
            if kind == "entry_point":
                raise ConfigError("trainer entry_point: factorgym.agents.train is not installed in this version") from None
    train_cfg = dict(config.get("train") or {})
    if total_timesteps is not None:
        train_cfg["total_timesteps"] = int(total_timesteps)
    return SB3FoldTrainer(train_cfg)

