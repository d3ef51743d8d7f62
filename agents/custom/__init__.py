"""Algorithms written here rather than taken from a library (``ppo``: a single-file PPO)."""
