"""Aggregation of an ensemble of reward models' scores (Coste et al. 2024; the EPPO paper's ERM baselines)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inform_jax.losses._utils import as_float

MEAN = "mean"  # ERM-Mean
MIN = "min"  # ERM-WCO, worst-case optimization
UWO = "uwo"  # ERM-UWO, uncertainty-weighted optimization
AGGREGATIONS = (MEAN, MIN, UWO)


def aggregate_rewards(
    rewards: jax.Array, method: str = MEAN, uncertainty_coef: float = 1.0, axis: int = 0
) -> jax.Array:
    """Combines the ``K`` members' rewards into one reward per sample.

    Args:
      rewards: ``[K, B]`` float (members along ``axis``; any other shape works the same).
      method: ``"mean"`` (ERM-Mean); ``"min"`` (ERM-WCO); ``"uwo"`` (ERM-UWO):
        ``mean - uncertainty_coef * var``, with the population variance over members (ddof 0).
      uncertainty_coef: the UWO penalty weight (lambda); unused by the other methods.
      axis: the members' axis.

    Returns:
      ``[B]`` float: ``rewards`` with ``axis`` reduced.
    """
    rewards = as_float(rewards)
    if method == MEAN:
        return jnp.mean(rewards, axis=axis)
    if method == MIN:
        return jnp.min(rewards, axis=axis)
    if method == UWO:
        # Disagreement between members marks inputs outside the RMs' training data: penalize it.
        return jnp.mean(rewards, axis=axis) - uncertainty_coef * jnp.var(rewards, axis=axis)
    raise ValueError(f"method must be one of {AGGREGATIONS}, got {method!r}")
