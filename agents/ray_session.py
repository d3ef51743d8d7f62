"""Starting and stopping Ray the factorgym way: nothing phones home, nothing outlives the command.

Settings (README "Scale out on Ray"):

* ``RAY_USAGE_STATS_ENABLED=0``: no usage report;
* ``include_dashboard=False``: no dashboard head (the per-node agent still starts; Ray needs it);
* ``object_store_memory`` capped (default 256 MiB: trial results are small, bundles go to disk);
* Ray's session files under a temp folder we choose and delete afterwards. Ray's Unix sockets live
  there and a socket path may hold at most 107 bytes, so a long folder is replaced by a short
  ``/tmp/fg-ray-*`` one, removed when the session ends;
* ``address="local"`` unless a cluster is named, so an exported ``RAY_ADDRESS`` is never joined by accident.

Ray's processes still look for cloud metadata (169.254.169.254) at start; on a machine that must send
nothing off loopback, run inside a loopback-only network namespace (``unshare -n``), as the tests do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from factorgym.errors import ConfigError

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'factorgym[ray]'"
SAFE_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
            "RAY_AIR_NEW_OUTPUT": "0",
            "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "1000"}
# <temp>/session_YYYY-MM-DD_HH-MM-SS_ffffff_PID/sockets/plasma_store must fit in sun_path (108 bytes)
MAX_TEMP_DIR_LEN = 40
DEFAULT_OBJECT_STORE_MB = 256


def require_ray(what: str = "factorgym tune") -> None:
    """Raise a one-line ConfigError naming the extra when Ray Tune or Optuna is missing."""
    for module in ("ray", "ray.tune", "optuna"):
        try:
            __import__(module)
        except ImportError as exc:
            raise ConfigError(f"{what} needs Ray Tune and Optuna ({exc.name or module} is not installed): "
                              f"{INSTALL_HINT}") from None


def apply_safe_env() -> None:
    """Set the environment variables above (user values win) before Ray is imported or started."""
    for k, v in SAFE_ENV.items():
        os.environ.setdefault(k, v)


def short_temp_dir(preferred: str | Path | None) -> tuple[Path, bool]:
    """``(folder, made)``: ``preferred`` when its path is short enough for Ray's sockets, else a new
    ``/tmp/fg-ray-*`` folder; ``made``: this call created it (the caller deletes it afterwards)."""
    if preferred is not None:
        p = Path(preferred).resolve()
        if len(str(p)) <= MAX_TEMP_DIR_LEN:
            made = not p.exists()
            p.mkdir(parents=True, exist_ok=True)
            return p, made
    return Path(tempfile.mkdtemp(prefix="fg-ray-")), True


def _start_local(ray, *, num_cpus, object_store_memory: int, temp_dir: str, attempts: int = 3) -> None:
    """``ray.init`` of a new local node, retried: Ray 2.60's raylet aborts when its dashboard agent
    takes over 15 s to start, which happens on a busy machine (each Ray process imports ray, and with
    jsonschema's optional rfc3987-syntax installed, e.g. by [qlib]'s jupyter, that costs ~4 s of CPU)."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=object_store_memory,
                     _temp_dir=temp_dir, log_to_driver=False, configure_logging=False)
            return
        except Exception as exc:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            ray.shutdown()
            log.warning("Ray's node did not start in time (attempt %d of %d; a busy machine?); retrying", attempt, attempts)


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, temp_dir: str | Path | None = None,
                object_store_mb: int = DEFAULT_OBJECT_STORE_MB) -> Iterator[dict]:
    """A Ray runtime for the block: a new local one (settings above) or, with ``address``
    (``ray://host:10001`` or ``host:6379``), the cluster's. Shut down and its temp folder removed on exit."""
    require_ray()
    apply_safe_env()
    import ray

    info: dict = {"address": address or "local"}
    made = False
    if ray.is_initialized():
        raise ConfigError("Ray is already running in this process; factorgym starts and stops its own session")
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        tmp, made = short_temp_dir(temp_dir)
        info["temp_dir"] = str(tmp)
        _start_local(ray, num_cpus=num_cpus, object_store_memory=int(object_store_mb) * 2**20, temp_dir=str(tmp))
    try:
        yield info
    finally:
        ray.shutdown()
        if made:
            shutil.rmtree(info["temp_dir"], ignore_errors=True)
