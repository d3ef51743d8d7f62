"""Agent layer: SB3 training from YAML, TensorBoard callbacks, baselines, deployment.

May import both ``factorgym.data_layer`` and ``factorgym.envs``; neither imports it.
"""
