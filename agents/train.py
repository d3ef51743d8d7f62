"""``train(config, ...)``: an SB3 / sb3-contrib algorithm on a FactorTensor's train split, validated on
its validation split, written to a run directory.

Run directory (``runs/<name>-<UTC time>/`` unless given)::

    config.yaml        the resolved config (every key, defaults filled in)
    versions.json      package versions; data.json: tensor path, content and factor-set hashes, splits
    tb/                TensorBoard: SB3's scalars, rollout/ per-episode trading metrics, eval/ validation
    eval.jsonl         one line per validation backtest
    checkpoints/step_N/  resumable: model.zip, vecnormalize.pkl, replay_buffer.pkl (off-policy), state.json
    bundles/best/      policy bundle with the best validation Sharpe so far; bundles/final/ at the end

Ctrl-C saves a checkpoint and returns (``TrainResult.interrupted``); ``train(..., resume=run_dir)``
continues from the newest checkpoint to the configured total.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from factorgym.agents import config as C
from factorgym.agents.bundle import PolicySpec
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)
OFF_POLICY = ("SAC", "TD3", "DDPG", "DQN", "TQC")
IN_MEMORY = "(in memory)"  # config value of `tensor` while a FactorTensor passed to train() is not saved yet


@dataclasses.dataclass
class TrainResult:
    """What a run produced. ``validation``: the last ``eval/`` scalars; ``best_validation_sharpe``: the
    best one seen (NaN if none); ``env_steps_per_s`` over this call's training."""

    run_dir: Path
    bundle_path: Path
    best_bundle_path: Path | None
    validation: dict[str, float]
    best_validation_sharpe: float
    num_timesteps: int
    env_steps_per_s: float
    interrupted: bool = False
    config: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------- config and data
def load_run_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    return C.resolve(C.load_yaml(path))


def build_config(config: str | Path | Mapping | None, *, tensor_dir=None, overrides=None, total_timesteps=None,
                 seed=None) -> dict:
    """The resolved config: file or mapping, then ``tensor_dir``, ``overrides``, ``total_timesteps``, ``seed``."""
    base_dir = None
    if config is None:
        raw: dict = {}
    elif isinstance(config, Mapping):
        raw = dict(config)
    else:
        config = preset_path(config)
        raw = C.load_yaml(config)
        base_dir = Path(config).resolve().parent
        raw.setdefault("name", Path(config).stem)
    raw = C.apply_overrides(raw, overrides)
    if tensor_dir is not None:
        raw["tensor"], raw["build"] = str(Path(tensor_dir).resolve()), None
    if total_timesteps is not None:
        raw["total_timesteps"] = int(total_timesteps)
    if seed is not None:
        raw["seed"] = int(seed)
    cfg = C.resolve(raw, base_dir=base_dir)
    cfg["name"] = cfg["name"] or "run"
    return cfg


def preset_path(config: str | Path) -> Path:
    """``config`` if it is a file, else the packaged preset of that name (``ppo_fast`` -> configs/train/ppo_fast.yaml)."""
    p = Path(config)
    if p.is_file() or p.suffix or len(p.parts) > 1:
        return p
    from importlib import resources

    packaged = Path(str(resources.files("factorgym.configs").joinpath("train", f"{p.name}.yaml")))
    if not packaged.is_file():
        names = sorted(x.stem for x in packaged.parent.glob("*.yaml") if x.stem != "quickstart_build")
        raise ConfigError(f"config {config!r} is neither a file nor a preset{C._suggest(p.name, names)}; presets: {', '.join(names)}")
    return packaged


def load_tensor(cfg: dict):
    """``(tensor, folder)``: the saved tensor, or one built from ``build`` (folder None: not saved yet)."""
    from factorgym.data_layer.tensor import FactorTensor

    if cfg["tensor"] is not None:
        d = Path(cfg["tensor"])
        if not (d / "meta.json").is_file():
            what = "does not exist" if not d.exists() else "is not a saved FactorTensor (no meta.json)"
            raise ConfigError(f"tensor: {d} {what}; build one with `factorgym build` or pass --tensor DIR")
        return FactorTensor.load(d), d
    from factorgym.data_layer.build import build_from_config

    if not Path(cfg["build"]).is_file():
        raise ConfigError(f"build: {cfg['build']} does not exist")
    return build_from_config(cfg["build"]), None


def make_splits(tensor, cfg: dict) -> dict:
    from factorgym.data_layer.splits import split, split_fractions

    s = cfg["split"]
    if isinstance(s, dict):
        rng = {k: tuple(v) if v is not None else None for k, v in s.items()}
        return split(tensor, rng["train"], rng.get("validation"), rng.get("test"), embargo=cfg["embargo"])
    return split_fractions(tensor, tuple(float(x) for x in s), embargo=cfg["embargo"])


def check_data(cfg: dict, parts: dict) -> None:
    """The window and episode fit every split; the algorithm fits the action space."""
    C.check_action_space(cfg, parts["train"].n_assets)
    W = cfg["window"]
    for name, part in parts.items():
        if part.n_bars < W + 1:
            raise ConfigError(f"window: {W} bars is longer than the {name} split allows ({part.n_bars} bars; "
                              f"a window needs window + 1): shorten the window or widen the split")
    L, room = cfg["episode_length"], parts["train"].n_bars - W
    if L is not None and L > room:
        raise ConfigError(f"episode_length: {L} is longer than the train split allows ({room} steps after the "
                          f"first window); shorten it or set episode_length: null")


def env_kwargs(cfg: dict, *, training: bool = True) -> dict:
    from factorgym.envs.config import ExecutionConfig, RewardConfig

    kw = {k: cfg[k] for k in C.ENV_KEYS}
    if kw["levels"] is not None:
        kw["levels"] = tuple(kw["levels"])
    kw["reward"] = RewardConfig(kind=cfg["reward"], **{f: cfg[k] for k, f in C.REWARD_KEYS.items()})
    kw["execution"] = ExecutionConfig(**cfg["execution"])
    if not training:
        kw.update(episode_length=None, random_start=False)
    return kw


def make_training_env(cfg: dict, tensor, *, wrap_adapter=None):
    """SB3 VecEnv: the batched env, a VecMonitor, trading-episode metrics, then VecNormalize if configured.
    ``wrap_adapter(venv) -> venv`` wraps the SB3 adapter first (benchmarks time it there)."""
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from factorgym.agents.callbacks import TradingEpisodeMonitor
    from factorgym.agents.sb3_vec import make_vec_env
    from factorgym.data_layer.timeframes import timeframe_to_ms
    from factorgym.envs.metrics import bars_per_year_from_ms

    venv = make_vec_env(tensor, cfg["n_envs"], seed=cfg["seed"], **env_kwargs(cfg))
    if wrap_adapter is not None:
        venv = wrap_adapter(venv)
    venv = TradingEpisodeMonitor(VecMonitor(venv), cfg["initial_cash"], bars_per_year_from_ms(timeframe_to_ms(tensor.timeframe)))
    if cfg["normalize_obs"] or cfg["normalize_reward"]:
        venv = VecNormalize(venv, norm_obs=cfg["normalize_obs"], norm_reward=cfg["normalize_reward"],
                            clip_obs=float(cfg["clip_obs"]), gamma=float(cfg.get("gamma", 0.99)))
    return venv


# ---------------------------------------------------------------------- run directory
def new_run_dir(cfg: dict, run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        d = Path(run_dir)
        if d.exists() and any(d.iterdir()):
            raise ConfigError(f"--run-dir {d} exists and is not empty; choose another or --resume it")
    else:
        d = Path("runs") / f"{cfg['name']}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        n = 1
        while d.exists():
            n += 1
            d = d.with_name(f"{d.name.rsplit('.', 1)[0]}.{n}")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for pkg in ("factorgym", "stable-baselines3", "sb3-contrib", "torch", "gymnasium", "numpy", "numba"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _write_run_files(d: Path, cfg: dict, tensor, tensor_dir: Path, parts: dict) -> None:
    (d / "config.yaml").write_text(C.to_yaml(cfg))
    (d / "versions.json").write_text(json.dumps(_versions(), indent=1))
    data = {"tensor": str(Path(tensor_dir).resolve()), "content_hash": tensor.meta.get("content_hash"),
            "factor_set_hash": tensor.factor_set_hash, "data_hash": tensor.meta.get("data_hash"),
            "splits": {k: [int(p.timestamps[0]), int(p.timestamps[-1]), p.n_bars] for k, p in parts.items()}}
    (d / "data.json").write_text(json.dumps(data, indent=1))


def latest_checkpoint(run_dir: Path) -> Path | None:
    cks = sorted((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    cks = [c for c in cks if (c / "state.json").is_file()]
    return cks[-1] if cks else None


# ---------------------------------------------------------------------- training
class _Run:
    """The objects of one training run and the actions its callbacks take."""

    def __init__(self, cfg: dict, d: Path, model, venv, tensor, val, state: dict) -> None:
        self.cfg, self.dir, self.model, self.venv, self.tensor, self.val = cfg, d, model, venv, tensor, val
        self.best = float(state.get("best_sharpe") if state.get("best_sharpe") is not None else -math.inf)
        self.last_eval: dict[str, float] = state.get("last_eval", {})
        self.next_eval = state.get("next_eval")
        self.progress = None
        self.on_eval_hook = None

    def spec(self) -> PolicySpec:
        from factorgym.agents.sb3_policy import vecnormalize_stats

        return PolicySpec.from_env(self.venv, self.tensor, obs_normaliser=vecnormalize_stats(self.venv),
                                   extra={"algorithm": self.cfg["algorithm"], "run": self.dir.name,
                                          "num_timesteps": int(self.model.num_timesteps), "config": self.cfg})

    def save_bundle(self, where: str) -> Path:
        from factorgym.agents.sb3_policy import save_sb3_bundle

        return save_sb3_bundle(self.dir / "bundles" / where, self.model, self.spec(), self.cfg["algorithm"], self.venv)

    def evaluate(self):
        from factorgym.agents.policy_backtest import backtest_policy
        from factorgym.agents.sb3_policy import SB3Policy

        return backtest_policy(SB3Policy(self.model, self.spec()), self.val, name="agent")

    def on_eval(self, step: int, scalars: dict, result) -> None:
        self.last_eval = scalars
        with open(self.dir / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else None) for k, v in scalars.items()}}) + "\n")
        sharpe = scalars["eval/sharpe"]
        if math.isfinite(sharpe) and sharpe > self.best:
            self.best = sharpe
            self.save_bundle("best")
        if self.progress is not None:
            self.progress.set_sharpe(sharpe)
        if self.on_eval_hook is not None:
            self.on_eval_hook(step, scalars)

    def checkpoint(self, step: int) -> Path:
        from stable_baselines3.common.vec_env import VecNormalize

        d = self.dir / "checkpoints" / f"step_{step}"
        tmp = d.with_name(f".{d.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save(tmp / "model.zip")
        if isinstance(self.venv, VecNormalize):
            self.venv.save(str(tmp / "vecnormalize.pkl"))
        if self.cfg["algorithm"] in OFF_POLICY:
            self.model.save_replay_buffer(tmp / "replay_buffer.pkl")
        nxt = self.validation_cb.next_at if getattr(self, "validation_cb", None) else None
        state = {"num_timesteps": int(self.model.num_timesteps), "best_sharpe": self.best if math.isfinite(self.best) else None,
                 "last_eval": self.last_eval, "next_eval": nxt}
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        for old in sorted((self.dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-self.cfg["keep_checkpoints"]]:
            shutil.rmtree(old, ignore_errors=True)
        return d


def train(config: str | Path | Mapping | None = None, *, tensor_dir=None, run_dir=None, overrides=None,
          total_timesteps: int | None = None, seed: int | None = None, resume=None, progress: bool = False,
          on_eval=None) -> TrainResult:
    """Train as ``config`` says (a YAML path or a mapping); see the module docstring for the run directory.

    ``tensor_dir`` replaces the config's data (its split fractions and embargo apply); it may also be a
    ``FactorTensor`` in memory (e.g. a walk-forward fold), saved into the run directory; ``overrides``
    (``{key: value}`` or ``["key=value"]``) are type-checked like the file; ``resume`` continues a run
    directory from its newest checkpoint (``overrides``/``total_timesteps`` may change it, e.g. a
    larger total). ``on_eval(num_timesteps, scalars)`` is called after each validation, once the best
    bundle is saved (Ray Tune reports through it). Raises ConfigError (one line) before anything runs
    if the config is wrong.
    """
    import torch
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    from factorgym.agents.callbacks import (EveryNSteps, ProgressCallback, RolloutMetricsCallback,
                                            TradingEpisodeMonitor, ValidationCallback, find_wrapper)
    from factorgym.agents.sb3_policy import algorithm_class

    from factorgym.data_layer.tensor import FactorTensor

    state: dict = {}
    ckpt = None
    in_memory = tensor_dir if isinstance(tensor_dir, FactorTensor) else None
    if in_memory is not None:
        tensor_dir = None
        items = list(overrides.items()) if isinstance(overrides, Mapping) else list(overrides or [])
        overrides = items + [("tensor", IN_MEMORY), ("build", None)]
    if resume is not None:
        d = Path(resume)
        raw = C.load_yaml(d / "config.yaml") if (d / "config.yaml").is_file() else None
        if raw is None:
            raise ConfigError(f"--resume {d}: not a run directory (no config.yaml)")
        cfg = build_config(raw, tensor_dir=tensor_dir, overrides=overrides, total_timesteps=total_timesteps, seed=seed)
        ckpt = latest_checkpoint(d)
        if ckpt is None:
            raise ConfigError(f"--resume {d}: no checkpoint under {d / 'checkpoints'} to continue from")
        state = json.loads((ckpt / "state.json").read_text())
    else:
        cfg = build_config(config, tensor_dir=tensor_dir, overrides=overrides, total_timesteps=total_timesteps, seed=seed)
    tensor, tdir = (in_memory, None) if in_memory is not None else load_tensor(cfg)
    parts = make_splits(tensor, cfg)
    if "validation" not in parts:
        raise ConfigError("split: a validation part is required (the best model is chosen on it)")
    check_data(cfg, parts)
    algo_kw = C.algorithm_kwargs(cfg, n_assets=tensor.n_assets)
    if cfg["algorithm"] in OFF_POLICY and "buffer_size" not in algo_kw:
        algo_kw["buffer_size"] = min(1_000_000, cfg["total_timesteps"])  # SB3's 1e6 default can need GBs here
    torch.set_num_threads(cfg["torch_threads"])

    d = Path(resume) if resume is not None else new_run_dir(cfg, run_dir)
    if tdir is None:  # built from `build`: the run keeps its tensor, and a resume reads it back
        tdir = tensor.save(d / "tensor")
        cfg = {**cfg, "tensor": str(tdir.resolve())}  # `tensor` wins over `build` when both are set
    if resume is None:
        _write_run_files(d, cfg, tensor, tdir, parts)
    else:
        (d / "config.yaml").write_text(C.to_yaml(cfg))
    venv = make_training_env(cfg, parts["train"])
    cls = algorithm_class(cfg["algorithm"])
    if ckpt is not None:
        if isinstance(venv, VecNormalize) and (ckpt / "vecnormalize.pkl").is_file():
            venv = VecNormalize.load(str(ckpt / "vecnormalize.pkl"), venv.venv)
        model = cls.load(ckpt / "model.zip", env=venv, device=cfg["device"])
        if (ckpt / "replay_buffer.pkl").is_file():
            model.load_replay_buffer(ckpt / "replay_buffer.pkl")
    else:
        model = cls(C.policy_name(cfg), venv, seed=cfg["seed"], device=cfg["device"], verbose=0, **algo_kw)
    model.set_logger(configure(str(d / "tb"), ["tensorboard"]))

    run = _Run(cfg, d, model, venv, parts["train"], parts["validation"], state)
    run.on_eval_hook = on_eval
    monitor = find_wrapper(venv, TradingEpisodeMonitor)
    run.validation_cb = ValidationCallback(run.evaluate, cfg["eval_freq"], run.on_eval, next_at=state.get("next_eval"))
    callbacks = [RolloutMetricsCallback(monitor), run.validation_cb]
    if cfg["checkpoint_freq"]:
        callbacks.append(EveryNSteps(cfg["checkpoint_freq"], run.checkpoint))
    if progress:
        run.progress = ProgressCallback(cfg["total_timesteps"])
        run.progress.sharpe = run.last_eval.get("eval/sharpe", math.nan)
        callbacks.append(run.progress)

    start_steps = int(model.num_timesteps)
    remaining = cfg["total_timesteps"] - start_steps
    interrupted = False
    t0 = time.perf_counter()
    try:
        if remaining > 0:
            model.learn(remaining, callback=callbacks, reset_num_timesteps=ckpt is None, progress_bar=False)
    except KeyboardInterrupt:
        interrupted = True
        if run.progress is not None and run.progress.bar is not None:
            run.progress.bar.close()
    wall = time.perf_counter() - t0
    rate = (model.num_timesteps - start_steps) / max(wall, 1e-9)
    ck = run.checkpoint(int(model.num_timesteps))
    final = run.save_bundle("final")
    if interrupted:
        log.warning("interrupted at step %d; checkpoint %s; continue with `factorgym train --resume %s`",
                    model.num_timesteps, ck, d)
    best = d / "bundles" / "best"
    venv.close()
    result = TrainResult(run_dir=d, bundle_path=final, best_bundle_path=best if best.is_dir() else None,
                         validation=dict(run.last_eval), best_validation_sharpe=run.best if math.isfinite(run.best) else math.nan,
                         num_timesteps=int(model.num_timesteps), env_steps_per_s=float(rate), interrupted=interrupted,
                         config=cfg)
    from factorgym.agents.ledger import record_training_run  # every run is a trial the DSR counts

    record_training_run(result, tensor, validation=parts["validation"])
    return result


def summary(result: TrainResult) -> str:
    v = result.validation
    lines = [f"run {result.run_dir}: {result.num_timesteps:,} env steps at {result.env_steps_per_s:,.0f} env-steps/s"
             + (" (interrupted)" if result.interrupted else ""),
             f"  validation: Sharpe {v.get('eval/sharpe', math.nan):.3f}, return {100 * v.get('eval/total_return', math.nan):.2f}%, "
             f"max drawdown {100 * v.get('eval/max_drawdown', math.nan):.2f}%; best Sharpe {result.best_validation_sharpe:.3f}",
             f"  final bundle: {result.bundle_path}",
             f"  best bundle:  {result.best_bundle_path or '-'}",
             f"  tensorboard --logdir {result.run_dir / 'tb'}"]
    return "\n".join(lines)


