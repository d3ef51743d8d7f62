"""Agent layer: SB3 training from YAML, TensorBoard callbacks, baselines, deployment.

May import both ``factorgym.data_layer`` and ``factorgym.envs``; neither imports it.
"""

from factorgym._lazy import export_lazily

# name -> "module:attribute", imported on first use (SB3 and torch are heavy); add a line to
# export one more name, e.g. "load_policy": "factorgym.agents.bundle:load_policy".
_EXPORTS = {
    "make_vec_env": "factorgym.agents.sb3_vec:make_vec_env",
}
export_lazily(__name__, _EXPORTS)
