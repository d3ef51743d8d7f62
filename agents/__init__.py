"""Agent layer: SB3 training from YAML, TensorBoard callbacks, baselines, deployment.

May import both ``factorgym.data_layer`` and ``factorgym.envs``; neither imports it.

``load_policy(path)`` loads a policy bundle (see :mod:`factorgym.agents.bundle`);
``factorgym.agents.train.train(config, ...)`` trains one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys


def _import_gym_quietly() -> None:
    """SB3 imports the legacy ``gym`` when it is installed (pyqlib pulls it in), which prints a
    deprecation notice to stderr on import; import it once here with stderr captured."""
    if "gym" in sys.modules or importlib.util.find_spec("gym") is None:
        return
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            import gym  # noqa: F401
        except Exception:  # a broken legacy gym must not break the agent layer; SB3 copes without it
            pass


_import_gym_quietly()


def __getattr__(name: str):
    if name in ("load_policy", "save_bundle", "PolicySpec", "Policy", "register_policy_loader"):
        from factorgym.agents import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'factorgym.agents' has no attribute {name!r}")
