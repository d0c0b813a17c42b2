"""Reward-model training: the method registry, the objective, the jitted step, the trainer, the data."""
