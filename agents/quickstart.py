"""The main job on the shipped sample data, end to end and offline: data -> factors -> training ->
backtest beside the baselines.

1. load the shipped real candles into a store under ``out/store`` and print what was loaded;
2. build a point-in-time factor tensor of Bitfinex BTC/USD 1h with a few TA-Lib factors and a few
   Qlib expressions (``configs/train/quickstart_build.yaml``; the Qlib ones are dropped, with a note,
   when the [qlib] extra is missing) and save it under ``out/tensors/``;
3. train PPO with the fast preset (``configs/train/ppo_fast.yaml``, one torch thread, fixed seed and
   budget, so the run is deterministic) into ``out/run`` (replaced on each quickstart);
4. backtest the best policy beside the baselines on the test split through the same env, print the
   table, the report's path and the ``tensorboard --logdir`` command.
"""

from __future__ import annotations

import logging
import shutil
import time
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

BUILD_CONFIG = "train/quickstart_build.yaml"
TRAIN_PRESET = "train/ppo_fast.yaml"
#: env steps of the quickstart's training: a few minutes on 2 cores with the fast preset
QUICKSTART_STEPS = 500_000


def packaged_config(rel: str) -> Path:
    """Path of a YAML shipped in ``factorgym.configs`` (works from a wheel as well as a checkout)."""
    return Path(str(resources.files("factorgym.configs").joinpath(rel)))


def _build_config(config: str | Path | None) -> tuple[str | Path | dict, str]:
    """The build config to use, and a note when the Qlib factors had to be dropped."""
    import importlib.util

    from factorgym.agents.config import load_yaml

    if config is not None:
        return Path(config), ""
    path = packaged_config(BUILD_CONFIG)
    if importlib.util.find_spec("qlib") is not None:
        return path, ""
    raw = load_yaml(path)
    raw["factors"] = [f for f in raw["factors"] if f.get("kind") != "qlib"]
    return raw, "(the [qlib] extra is not installed: the Qlib expressions were left out)"


def run_quickstart(out: str | Path = "runs/quickstart", config: str | Path | None = None, progress: bool = True,
                   total_timesteps: int = QUICKSTART_STEPS, seed: int = 0) -> str:
    """Run the job; returns the text summary. ``config`` replaces the packaged build config."""
    from factorgym.agents.policy_backtest import backtest_run
    from factorgym.agents.train import summary, train
    from factorgym.data_layer.build import build_from_config
    from factorgym.data_layer.sample import load_sample_into_store
    from factorgym.data_layer.store import CandleStore
    from factorgym.envs.baselines import format_table

    out = Path(out)
    t0 = time.perf_counter()
    store = CandleStore(out / "store")
    loaded = load_sample_into_store(store)
    lines = [f"store {store.root}: {len(loaded)} series loaded from the shipped samples"]
    build, note = _build_config(config)
    name = Path(config).stem if config else "bitfinex_btcusd_1h"
    tensor = build_from_config(build, store=store, progress=progress)
    saved = tensor.save(out / "tensors" / name)
    lines += [f"tensor {saved}: {tensor.n_bars} bars x {tensor.n_assets} assets x {tensor.n_features} features {note}".rstrip(),
              f"  features: {', '.join(tensor.feature_names)}"]

    t_data = time.perf_counter()
    run_dir = out / "run"
    if (run_dir / "config.yaml").is_file():
        shutil.rmtree(run_dir)  # the quickstart's own previous run: each quickstart starts afresh
    result = train(packaged_config(TRAIN_PRESET), tensor_dir=saved, run_dir=run_dir, total_timesteps=total_timesteps,
                   seed=seed, overrides={"name": "quickstart", "eval_freq": max(total_timesteps // 6, 1)}, progress=progress)
    lines += ["", summary(result)]
    t_train = time.perf_counter()
    results, files = backtest_run(run_dir, split="test")
    t_end = time.perf_counter()
    first = results["agent"]
    lines += ["", first.summary().splitlines()[0].replace("backtest agent:", "test split:"), format_table(results), "",
              f"report:  {files['report']}", f"metrics: {files['metrics']}",
              f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}",
              f"time: data and factors {t_data - t0:.0f} s, training {t_train - t_data:.0f} s, "
              f"backtest and report {t_end - t_train:.0f} s"]
    text = "\n".join(lines)
    log.debug(text)
    return text
