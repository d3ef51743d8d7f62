"""Agent layer: SB3 training from YAML, TensorBoard callbacks, baselines, deployment.

May import both ``factorgym.data_layer`` and ``factorgym.envs``; neither imports it.

``load_policy(path)`` loads a policy bundle (see :mod:`factorgym.agents.bundle`);
``factorgym.agents.train.train(config, ...)`` trains one.
"""

from factorgym._lazy import export_lazily

# name -> "module:attribute", imported on first use (SB3 and torch are heavy); add a line to
# export one more name.
_EXPORTS = {
    "make_vec_env": "factorgym.agents.sb3_vec:make_vec_env",
    "load_policy": "factorgym.agents.bundle:load_policy",
    "save_bundle": "factorgym.agents.bundle:save_bundle",
    "PolicySpec": "factorgym.agents.bundle:PolicySpec",
    "Policy": "factorgym.agents.bundle:Policy",
    "register_policy_loader": "factorgym.agents.bundle:register_policy_loader",
}
export_lazily(__name__, _EXPORTS)
