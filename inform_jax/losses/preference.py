"""Bradley-Terry preference loss and pairwise metrics.

All functions take per-pair rewards ``[B]`` and are pure ``jax.numpy``: use ``jax.vmap`` for leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inform_jax.losses._utils import as_float, weighted_mean

REDUCTIONS = ("mean", "none")


def bradley_terry_loss(
    chosen_rewards: jax.Array,
    rejected_rewards: jax.Array,
    margin: jax.Array | float | None = None,
    weights: jax.Array | None = None,
    reduction: str = "mean",
) -> jax.Array:
    """Bradley-Terry negative log-likelihood ``-log sigmoid(r_c - r_l - margin)``.

    Args:
      chosen_rewards: ``[B]`` float, rewards of the preferred responses.
      rejected_rewards: ``[B]`` float, rewards of the dispreferred responses.
      margin: optional scalar or ``[B]`` float, the gap the chosen reward must exceed.
      weights: optional ``[B]`` float >= 0, per-pair weights (e.g. prioritized training).
      reduction: ``"mean"`` (default): weighted mean over pairs, a scalar;
        ``"none"``: per-pair losses ``[B]``, multiplied by ``weights`` when given.

    Returns:
      A scalar, or ``[B]`` for ``reduction="none"``. At least float32.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    gap = as_float(chosen_rewards) - as_float(rejected_rewards)
    if margin is not None:
        gap = gap - margin
    losses = -jax.nn.log_sigmoid(gap)  # = log(1 + exp(-gap)) without overflow
    if reduction == "none":
        return losses if weights is None else losses * jnp.asarray(weights, losses.dtype)
    return weighted_mean(losses, weights)


def preference_accuracy(chosen_rewards: jax.Array, rejected_rewards: jax.Array) -> jax.Array:
    """Fraction of pairs ranked correctly, ``mean(r_c > r_l)``; a tie counts 0.5 (a coin flip).

    Args:
      chosen_rewards: ``[B]`` float.
      rejected_rewards: ``[B]`` float.

    Returns:
      A float scalar in [0, 1].
    """
    c, r = as_float(chosen_rewards), as_float(rejected_rewards)
    return jnp.mean((c > r).astype(c.dtype) + 0.5 * (c == r).astype(c.dtype))
