"""Helpers shared by the loss modules (public names, so no module imports another's private ones)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def as_float(x: jax.Array) -> jax.Array:
    """``x`` cast to at least float32: bf16 rewards, latents and log-probs lose too much precision in log-sigmoids,
    means and covariances."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean of ``values`` [B], or ``sum(w * values) / max(sum(w), tiny)`` with ``weights`` [B] >= 0.

    The ``tiny`` floor makes all-zero weights give 0 instead of NaN.
    """
    if weights is None:
        return jnp.mean(values)
    weights = jnp.asarray(weights, values.dtype)
    return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), jnp.finfo(values.dtype).tiny)


def masked_mean(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """``sum(mask * x) / sum(mask)`` over ``axis`` (all axes when None); 0 where the mask is empty.

    Args:
      x: float array.
      mask: 0/1 (or float weights >= 0) broadcastable to ``x``. Values of ``x`` under a 0 are ignored even
        when they are NaN or inf.
      axis: the axes to reduce.

    Returns:
      ``x`` reduced over ``axis``, at least float32.
    """
    x = as_float(x)
    m = jnp.broadcast_to(jnp.asarray(mask, x.dtype), x.shape)
    total = jnp.sum(jnp.where(m != 0, x, 0.0) * m, axis=axis)
    return total / jnp.maximum(jnp.sum(m, axis=axis), jnp.finfo(x.dtype).tiny)
