"""The ledger: every training run, walk-forward fold, seed and tuning trial, in one SQLite file.

``<runs folder>/ledger.sqlite`` keeps one row per run: what was trained (config hash and the config
itself, seed, fold), on what (data hash, factor-set hash), where its files are (run dir), its summary
metrics and its per-bar out-of-sample returns with their bar timestamps (stored in the row, or a
pointer to a ``.npz`` file with ``timestamps`` and ``returns``). Rows are only ever added.

Trials, for the deflated Sharpe ratio and PBO: a **trial** is one ``(config hash, seed)`` tried on
one data set (data hash and factor-set hash): a strategy someone could have picked. Its returns are
the out-of-sample returns of its rows, stitched in time order (folds of a walk-forward). The number
of trials and the variance of their per-period Sharpe ratios come from here, not from memory.

Example::

    >>> import tempfile, numpy as np
    >>> led = Ledger(tempfile.mkdtemp())
    >>> rid = led.record(kind="fold", config={"lr": 3e-4}, seed=0, data_hash="d1",
    ...                  returns=np.array([0.01, -0.02, 0.03]), timestamps=np.array([0, 1, 2]) * 3_600_000)
    >>> len(led.runs()), led.trial_stats(data_hash="d1").n_trials
    (1, 1)
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from factorgym.agents.stats import sample_moments
from factorgym.errors import ConfigError

LEDGER_FILE = "ledger.sqlite"
KINDS = ("train", "fold", "tuning", "baseline")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    study TEXT,
    config_hash TEXT NOT NULL,
    config_json TEXT NOT NULL,
    seed INTEGER,
    fold INTEGER,
    data_hash TEXT,
    factor_set_hash TEXT,
    run_dir TEXT,
    metrics_json TEXT NOT NULL,
    n_obs INTEGER NOT NULL,
    sharpe REAL,
    oos_start INTEGER,
    oos_end INTEGER,
    returns BLOB,
    timestamps BLOB,
    returns_path TEXT
);
CREATE INDEX IF NOT EXISTS runs_data ON runs (data_hash, factor_set_hash);
CREATE INDEX IF NOT EXISTS runs_study ON runs (study);
"""


def config_hash(config: Any) -> str:
    """sha256 (first 16 hex digits) of the config as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _finite_or_none(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class RunRecord:
    """One ledger row (returns are read on demand with :meth:`Ledger.returns`)."""

    id: int
    created_at: str
    kind: str
    study: str | None
    config_hash: str
    seed: int | None
    fold: int | None
    data_hash: str | None
    factor_set_hash: str | None
    run_dir: str | None
    metrics: dict
    n_obs: int
    sharpe: float | None
    oos_start: int | None
    oos_end: int | None


@dataclass(frozen=True)
class TrialStats:
    """What the deflated Sharpe ratio needs from the ledger: ``n_trials`` and the variance of the
    trials' per-period Sharpe ratios (ddof=1; 0 for one trial), plus each trial's Sharpe ratio."""

    n_trials: int
    sr_variance: float
    sharpes: dict[tuple[str, int | None], float] = field(default_factory=dict)


class Ledger:
    """The SQLite ledger in ``runs_dir`` (created on first use). Safe for several processes:
    WAL journal, one short transaction per write."""

    def __init__(self, runs_dir: str | Path = "runs") -> None:
        self.root = Path(runs_dir)
        self.path = self.root / LEDGER_FILE

    def _connect(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_SCHEMA)
        return con

    # ------------------------------------------------------------------ writing
    def record(self, *, kind: str, config: Any, seed: int | None = None, study: str | None = None,
               fold: int | None = None, data_hash: str | None = None, factor_set_hash: str | None = None,
               run_dir: str | Path | None = None, metrics: dict | None = None, returns=None, timestamps=None,
               returns_path: str | Path | None = None) -> int:
        """Add one run; returns its id.

        ``returns`` are per-bar simple out-of-sample returns and ``timestamps`` (UTC ms) the bars
        they end on (same length); or give ``returns_path``, a ``.npz`` with both arrays.
        ``metrics``: flat summary numbers (nan/inf are stored as null).
        """
        if kind not in KINDS:
            raise ConfigError(f"ledger kind {kind!r} is unknown; expected one of {KINDS}")
        r = ts = None
        if returns is not None:
            r = np.ascontiguousarray(returns, dtype=np.float64).reshape(-1)
            if timestamps is None:
                raise ConfigError("ledger.record: returns need their bar timestamps (UTC ms), one per return")
            ts = np.ascontiguousarray(timestamps, dtype=np.int64).reshape(-1)
            if ts.size != r.size:
                raise ConfigError(f"ledger.record: {r.size} returns but {ts.size} timestamps")
            if ts.size > 1 and np.any(np.diff(ts) <= 0):
                raise ConfigError("ledger.record: timestamps must increase strictly (one per bar, in time order)")
        elif returns_path is not None:
            with np.load(returns_path) as z:
                r, ts = np.asarray(z["returns"], np.float64), np.asarray(z["timestamps"], np.int64)
        sr = sample_moments(r)[0] if r is not None else math.nan
        row = (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), kind, study, config_hash(config),
            json.dumps(config, sort_keys=True, default=str), None if seed is None else int(seed),
            None if fold is None else int(fold), data_hash, factor_set_hash,
            None if run_dir is None else str(run_dir),
            json.dumps({k: _finite_or_none(v) for k, v in (metrics or {}).items()}, sort_keys=True),
            0 if r is None else int(r.size), sr if math.isfinite(sr) else None,
            int(ts[0]) if ts is not None and ts.size else None, int(ts[-1]) if ts is not None and ts.size else None,
            None if returns_path is not None or r is None else r.tobytes(),
            None if returns_path is not None or ts is None else ts.tobytes(),
            None if returns_path is None else str(returns_path),
        )
        with self._connect() as con:
            cur = con.execute(
                "INSERT INTO runs (created_at, kind, study, config_hash, config_json, seed, fold, data_hash, "
                "factor_set_hash, run_dir, metrics_json, n_obs, sharpe, oos_start, oos_end, returns, timestamps, "
                "returns_path) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            rid = int(cur.lastrowid)
        con.close()
        return rid

    # ------------------------------------------------------------------ reading
    def runs(self, *, kind: str | None = None, study: str | None = None, data_hash: str | None = None,
             factor_set_hash: str | None = None, kinds: Iterable[str] | None = None) -> list[RunRecord]:
        """Rows matching every filter given, oldest first."""
        if not self.path.exists():
            return []
        where, args = [], []
        for col, val in (("kind", kind), ("study", study), ("data_hash", data_hash), ("factor_set_hash", factor_set_hash)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if kinds is not None:
            ks = list(kinds)
            where.append(f"kind IN ({','.join('?' * len(ks))})")
            args += ks
        sql = ("SELECT id, created_at, kind, study, config_hash, seed, fold, data_hash, factor_set_hash, run_dir, "
               "metrics_json, n_obs, sharpe, oos_start, oos_end FROM runs")
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        con.close()
        return [RunRecord(*row[:10], json.loads(row[10]), *row[11:]) for row in rows]

    def config(self, run_id: int) -> Any:
        """The config a run was recorded with."""
        with self._connect() as con:
            row = con.execute("SELECT config_json FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        con.close()
        if row is None:
            raise ConfigError(f"no run {run_id} in the ledger {self.path}")
        return json.loads(row[0])

    def returns(self, run_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(timestamps int64 [n], returns float64 [n])`` of one run (empty if none were recorded)."""
        with self._connect() as con:
            row = con.execute("SELECT returns, timestamps, returns_path FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        con.close()
        if row is None:
            raise ConfigError(f"no run {run_id} in the ledger {self.path}")
        if row[2]:
            with np.load(row[2]) as z:
                return np.asarray(z["timestamps"], np.int64), np.asarray(z["returns"], np.float64)
        if row[0] is None:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.frombuffer(row[1], dtype=np.int64).copy(), np.frombuffer(row[0], dtype=np.float64).copy()

    # ------------------------------------------------------------------ trials
    def trial_returns(self, *, data_hash: str | None = None, factor_set_hash: str | None = None,
                      kinds: Iterable[str] = ("train", "fold", "tuning"), study: str | None = None
                      ) -> dict[tuple[str, int | None], tuple[np.ndarray, np.ndarray]]:
        """Per trial ``(config_hash, seed)``: its rows' out-of-sample returns stitched in time order
        as ``(timestamps, returns)``; a bar recorded twice keeps its first row's return."""
        parts: dict[tuple[str, int | None], list[tuple[np.ndarray, np.ndarray]]] = {}
        for run in self.runs(data_hash=data_hash, factor_set_hash=factor_set_hash, kinds=kinds, study=study):
            if run.n_obs == 0:
                continue
            parts.setdefault((run.config_hash, run.seed), []).append(self.returns(run.id))
        out = {}
        for key, chunks in parts.items():
            ts = np.concatenate([c[0] for c in chunks])
            r = np.concatenate([c[1] for c in chunks])
            order = np.argsort(ts, kind="stable")
            ts, r = ts[order], r[order]
            keep = np.concatenate([[True], np.diff(ts) > 0])
            out[key] = (ts[keep], r[keep])
        return out

    def trial_stats(self, *, data_hash: str | None = None, factor_set_hash: str | None = None,
                    kinds: Iterable[str] = ("train", "fold", "tuning"), study: str | None = None) -> TrialStats:
        """Number of trials (every ``(config hash, seed)`` among the matching rows, with or without
        returns) and the variance of the per-period Sharpe ratios of those with returns (stitched)."""
        f = dict(data_hash=data_hash, factor_set_hash=factor_set_hash, kinds=tuple(kinds), study=study)
        keys = {(r.config_hash, r.seed) for r in self.runs(**f)}
        sharpes = {k: sample_moments(r)[0] for k, (_, r) in self.trial_returns(**f).items()}
        vals = np.array([v for v in sharpes.values() if math.isfinite(v)])
        var = float(np.var(vals, ddof=1)) if vals.size > 1 else 0.0
        return TrialStats(n_trials=len(keys), sr_variance=var, sharpes=sharpes)

    def returns_matrix(self, **filters) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int | None]]]:
        """``(timestamps [T], returns [T, N], trial keys [N])`` on the bars every trial shares, for PBO."""
        trials = self.trial_returns(**filters)
        if not trials:
            return np.zeros(0, np.int64), np.zeros((0, 0)), []
        keys = list(trials)
        common = trials[keys[0]][0]
        for k in keys[1:]:
            common = np.intersect1d(common, trials[k][0], assume_unique=True)
        cols = [trials[k][1][np.searchsorted(trials[k][0], common)] for k in keys]
        return common, np.column_stack(cols) if cols else np.zeros((common.size, 0)), keys


#: keys of a training config that name the run or its data rather than the strategy tried
RUN_ONLY_KEYS = ("name", "seed", "tensor", "build", "resume")


def record_training_run(result, tensor, *, validation=None, runs_dir: str | Path | None = None) -> int | None:
    """Record a finished ``factorgym.agents.train.train`` run (kind ``train``) in the ledger of its
    runs folder (``runs_dir``, default the run directory's parent).

    The trial's config hash leaves out :data:`RUN_ONLY_KEYS` (so seeds of one config are one config
    tried several times). With the ``validation`` split, the run's best bundle (else the final one)
    is backtested on it and those per-bar returns are stored as the run's out-of-sample returns.
    A ledger that cannot be written is logged, never raised: the trained run stays intact.
    """
    import logging

    log = logging.getLogger(__name__)
    cfg = dict(getattr(result, "config", None) or {})
    strategy = {k: v for k, v in cfg.items() if k not in RUN_ONLY_KEYS}
    returns = timestamps = None
    try:
        if validation is not None:
            from factorgym.agents.bundle import load_policy
            from factorgym.agents.policy_backtest import backtest_policy
            from factorgym.envs.metrics import simple_returns

            res = backtest_policy(load_policy(result.best_bundle_path or result.bundle_path), validation, name="validation")
            returns = simple_returns(res.equity)
            timestamps = res.timestamps[1:1 + returns.size]
        meta = getattr(tensor, "meta", {}) or {}
        metrics = {k: v for k, v in (getattr(result, "validation", None) or {}).items() if isinstance(v, (int, float))}
        metrics["best_validation_sharpe"] = getattr(result, "best_validation_sharpe", math.nan)
        return Ledger(runs_dir if runs_dir is not None else Path(result.run_dir).parent).record(
            kind="train", config=strategy, seed=cfg.get("seed"), study=cfg.get("name"), run_dir=result.run_dir,
            data_hash=meta.get("data_hash") or tensor.content_hash()[:16], factor_set_hash=meta.get("factor_set_hash"),
            metrics=metrics, returns=returns, timestamps=timestamps)
    except (sqlite3.Error, OSError, ConfigError) as exc:
        log.warning("the run %s was not recorded in the ledger: %s", result.run_dir, exc)
        return None
