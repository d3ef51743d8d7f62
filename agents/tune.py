"""``tune(...)``: a Ray Tune search over a run config's keys; each trial is a normal training run.

Optuna's TPE (through Tune's ``OptunaSearch``) proposes values from the search file
(:mod:`factorgym.agents.tune_space`); ASHA stops trials whose best validation Sharpe so far trails
the others at the same number of validations. Each trial calls :func:`factorgym.agents.train.train`
with its own run directory ``<runs>/<study>-<trial id>`` and lands in ``<runs>/ledger.sqlite``, so
the deflated Sharpe ratio counts every configuration tried. A trial ASHA stops is recorded there
afterwards from its best bundle (its training thread is ended by Ray mid-run).

Tune's own state lives in ``<storage>/<study>`` (default ``<runs>/tune``); running again with the
same ``storage`` and ``name`` resumes an interrupted search (a trial with a checkpoint continues
from it). ``seeds`` > 0 then trains the best configuration with that many new seeds and reports
the spread of their validation Sharpe.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from factorgym.errors import ConfigError

log = logging.getLogger(__name__)
METRIC = "best_validation_sharpe"


@dataclasses.dataclass
class TrialRow:
    trial_id: str
    params: dict
    best_validation_sharpe: float
    last_validation_sharpe: float
    env_steps: int
    validations: int
    status: str  # completed, stopped (ASHA), error
    run_dir: Path | None
    error: str = ""


@dataclasses.dataclass
class TuneResult:
    study: str
    experiment_dir: Path
    trials: list[TrialRow]
    best: TrialRow | None
    seed_runs: list[TrialRow] = dataclasses.field(default_factory=list)
    wall_s: float = math.nan

    @property
    def best_bundle(self) -> Path | None:
        if self.best is None or self.best.run_dir is None:
            return None
        b = self.best.run_dir / "bundles" / "best"
        return b if b.is_dir() else None


# ---------------------------------------------------------------------- the trial (runs in a Ray worker)
def _finite(v: Any, default: float = 0.0) -> float:
    """A validation Sharpe for the searcher: NaN (a flat equity curve: no trades) counts as 0."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if math.isfinite(f) else default


def _previous_best(d: Path) -> float:
    best = -math.inf
    if (d / "eval.jsonl").is_file():
        for line in (d / "eval.jsonl").read_text().splitlines():
            best = max(best, _finite(json.loads(line).get("eval/sharpe")))
    return best


def run_trial(params: dict, *, base_config: dict, runs_dir: str, study: str, tag: str = "") -> None:
    """One Tune trial: ``train(base_config + params)`` in ``<runs_dir>/<study><tag>-<trial id>``,
    reporting ``validation_sharpe`` and ``best_validation_sharpe`` after each validation."""
    from ray import tune as rt

    from factorgym.agents.train import latest_checkpoint, train

    d = Path(runs_dir) / f"{study}{tag}-{rt.get_context().get_trial_id()}"
    best = [-math.inf]

    def report(step: int, scalars: dict) -> None:
        s = _finite(scalars.get("eval/sharpe"))
        best[0] = max(best[0], s)
        rt.report({"validation_sharpe": s, METRIC: best[0], "env_steps": int(step), "run_dir": str(d)})

    if d.exists() and latest_checkpoint(d) is not None:  # a resumed search: continue the run
        best[0] = _previous_best(d)
        train(resume=d, on_eval=report)
        return
    shutil.rmtree(d, ignore_errors=True)
    train(base_config, run_dir=d, overrides={**params, "name": study}, on_eval=report)


# ---------------------------------------------------------------------- the driver
def prepare_config(config, *, tensor_dir=None, overrides=None, study_dir: Path) -> dict:
    """The resolved base config with a saved tensor (a ``build`` config is built once, into ``study_dir``)."""
    from factorgym.agents.train import build_config, load_tensor

    cfg = build_config(config, tensor_dir=tensor_dir, overrides=overrides)
    if cfg["tensor"] is None:
        tensor, _ = load_tensor(cfg)
        cfg["tensor"], cfg["build"] = str(tensor.save(study_dir / "tensor").resolve()), None
    return cfg


def _rows(grid, total: int, status_override: str | None = None) -> list[TrialRow]:
    rows = []
    for r in grid:
        m = r.metrics or {}
        params = {k: v for k, v in (r.config or {}).items()}
        df = r.metrics_dataframe
        n_val = 0 if df is None else len(df)
        steps = int(m.get("env_steps", 0) or 0)
        status = "error" if r.error else ("completed" if steps >= total else "stopped")
        rd = m.get("run_dir")
        rows.append(TrialRow(trial_id=str(getattr(r, "path", "")).rsplit("/", 1)[-1] if not rd else Path(rd).name.rsplit("-", 1)[-1],
                             params=params, best_validation_sharpe=_finite(m.get(METRIC), math.nan),
                             last_validation_sharpe=_finite(m.get("validation_sharpe"), math.nan),
                             env_steps=steps, validations=n_val, status=status_override or status,
                             run_dir=Path(rd) if rd else None,
                             error=str(r.error).strip().splitlines()[-1][:200] if r.error else ""))
    return rows


def record_missing(rows: list[TrialRow], cfg: dict, runs_dir: Path) -> int:
    """Ledger rows for trials Ray ended mid-run (ASHA): from their best bundle and eval.jsonl."""
    from factorgym.agents import config as C
    from factorgym.agents.ledger import Ledger, record_training_run
    from factorgym.agents.train import TrainResult, load_tensor, make_splits

    have = {Path(r.run_dir).resolve() for r in Ledger(runs_dir).runs() if r.run_dir}
    todo = [r for r in rows if r.run_dir is not None and r.run_dir.resolve() not in have
            and (r.run_dir / "bundles" / "best").is_dir() and (r.run_dir / "config.yaml").is_file()]
    if not todo:
        return 0
    tensor, _ = load_tensor(cfg)
    n = 0
    for r in todo:
        run_cfg = C.resolve(C.load_yaml(r.run_dir / "config.yaml"))
        lines = [json.loads(x) for x in (r.run_dir / "eval.jsonl").read_text().splitlines()] if (r.run_dir / "eval.jsonl").is_file() else []
        last = {k: v for k, v in (lines[-1] if lines else {}).items() if k != "step" and v is not None}
        best = r.run_dir / "bundles" / "best"
        res = TrainResult(run_dir=r.run_dir, bundle_path=best, best_bundle_path=best, validation=last,
                          best_validation_sharpe=r.best_validation_sharpe, num_timesteps=r.env_steps,
                          env_steps_per_s=math.nan, interrupted=True, config=run_cfg)
        n += record_training_run(res, tensor, validation=make_splits(tensor, run_cfg)["validation"]) is not None
    return n


def _fit(trainable, *, space, storage: Path, name: str, num_samples: int, search_alg=None, scheduler=None,
         resume: bool):
    from ray import tune as rt

    run_config = rt.RunConfig(name=name, storage_path=str(storage), verbose=0, log_to_file=True,
                              failure_config=rt.FailureConfig(max_failures=0))
    path = storage / name
    if resume and rt.Tuner.can_restore(str(path)):
        log.info("resuming the search in %s", path)
        return rt.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True).fit()
    tune_config = rt.TuneConfig(metric=METRIC, mode="max", num_samples=num_samples, search_alg=search_alg,
                                scheduler=scheduler, reuse_actors=False)
    return rt.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config).fit()


def tune(config, search, *, num_samples: int, seeds: int = 0, max_concurrent: int | None = None,
         address: str | None = None, storage=None, name: str | None = None, runs_dir="runs", tensor_dir=None,
         overrides: Mapping | list | None = None, cpus_per_trial: float = 1.0, num_cpus: int | None = None,
         ray_temp_dir=None) -> TuneResult:
    """Search ``search`` (a file or :class:`SearchSpec`) over ``config``; see the module docstring.
    Raises ConfigError (one line) before Ray starts if the config, the search file or Ray is wrong."""
    from factorgym.agents import tune_space
    from factorgym.agents.ray_session import apply_safe_env, ray_session, require_ray

    require_ray()
    apply_safe_env()
    if num_samples < 1 or seeds < 0 or (max_concurrent is not None and max_concurrent < 1):
        raise ConfigError("--num-samples must be >= 1, --seeds >= 0 and --max-concurrent >= 1")
    spec = search if isinstance(search, tune_space.SearchSpec) else tune_space.load_search(search)
    runs = Path(runs_dir).resolve()
    resume = storage is not None and name is not None
    storage = Path(storage).resolve() if storage is not None else runs / "tune"
    from factorgym.agents.train import build_config

    study = name or f"{build_config(config, tensor_dir=tensor_dir, overrides=overrides, seed=None)['name']}-tune-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    cfg = prepare_config(config, tensor_dir=tensor_dir, overrides=overrides, study_dir=storage / study)
    tune_space.check_against(spec, cfg, where=str(search) if not isinstance(search, tune_space.SearchSpec) else "search")

    from ray import tune as rt
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    n_val = max(1, math.ceil(cfg["total_timesteps"] / cfg["eval_freq"])) if cfg["eval_freq"] else 1
    limit = max_concurrent or num_samples
    t0 = time.perf_counter()
    with ray_session(address, num_cpus=num_cpus if address is None else None,
                     temp_dir=ray_temp_dir if ray_temp_dir is not None else storage / ".ray"):
        trainable = rt.with_resources(rt.with_parameters(run_trial, base_config=cfg, runs_dir=str(runs), study=study),
                                      {"cpu": cpus_per_trial})
        searcher = ConcurrencyLimiter(OptunaSearch(metric=METRIC, mode="max", seed=spec.sampler_seed), max_concurrent=limit)
        asha = ASHAScheduler(time_attr="training_iteration", max_t=n_val, grace_period=min(spec.grace_period, n_val),
                             reduction_factor=spec.reduction_factor)
        grid = _fit(trainable, space=spec.tune_space(), storage=storage, name=study, num_samples=num_samples,
                    search_alg=searcher, scheduler=asha, resume=resume)
        rows = _rows(grid, cfg["total_timesteps"])
        ok = [r for r in rows if r.status != "error" and r.run_dir is not None and math.isfinite(r.best_validation_sharpe)]
        best = max(ok, key=lambda r: r.best_validation_sharpe) if ok else None
        seed_rows: list[TrialRow] = []
        if seeds and best is not None:
            s0 = int(cfg["seed"])
            seed_trainable = rt.with_resources(rt.with_parameters(run_trial, base_config=cfg, runs_dir=str(runs),
                                                                  study=study, tag="-seed"), {"cpu": cpus_per_trial})
            space = {**best.params, "seed": rt.grid_search([s0 + 1 + i for i in range(seeds)])}
            sgrid = _fit(seed_trainable, space=space, storage=storage, name=f"{study}-seeds", num_samples=1,
                         resume=resume)
            seed_rows = _rows(sgrid, cfg["total_timesteps"])
    record_missing(rows + seed_rows, cfg, runs)
    if not ok:
        first = next((r.error for r in rows if r.error), "no trial reported a validation")
        raise ConfigError(f"every trial failed ({len(rows)}); first error: {first}; Tune's logs: {storage / study}")
    return TuneResult(study=study, experiment_dir=storage / study, trials=rows, best=best, seed_runs=seed_rows,
                      wall_s=time.perf_counter() - t0)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary(result: TuneResult) -> str:
    keys = sorted({k for r in result.trials for k in r.params})
    head = ["trial", *keys, "best_sharpe", "last_sharpe", "steps", "status"]
    body = [[r.trial_id, *(_fmt(r.params.get(k, "")) for k in keys), _fmt(r.best_validation_sharpe),
             _fmt(r.last_validation_sharpe), str(r.env_steps), r.status + (f": {r.error}" if r.error else "")]
            for r in sorted(result.trials, key=lambda r: -r.best_validation_sharpe if math.isfinite(r.best_validation_sharpe) else math.inf)]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = [f"study {result.study}: {len(result.trials)} trials in {result.wall_s:.0f} s (Tune state: {result.experiment_dir})"]
    lines += ["  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [head, *body]]
    if result.best is not None:
        lines.append(f"best: trial {result.best.trial_id}, validation Sharpe {result.best.best_validation_sharpe:.3f}, "
                     f"run {result.best.run_dir}")
        lines.append(f"  bundle: {result.best_bundle or '-'}")
    if result.seed_runs:
        vals = [r.best_validation_sharpe for r in result.seed_runs if math.isfinite(r.best_validation_sharpe)]
        if vals:
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            lines.append(f"best config over {len(result.seed_runs)} new seeds: validation Sharpe mean {statistics.fmean(vals):.3f}, "
                         f"std {sd:.3f}, min {min(vals):.3f}, max {max(vals):.3f} (the search's pick: "
                         f"{result.best.best_validation_sharpe:.3f}, chosen as the maximum, so biased up)")
        for r in result.seed_runs:
            lines.append(f"  seed {r.params.get('seed')}: {_fmt(r.best_validation_sharpe)} ({r.status}) {r.run_dir}")
    return "\n".join(lines)
