"""Reward-model training: the method registry (:mod:`inform_jax.train.rm.methods`)."""
