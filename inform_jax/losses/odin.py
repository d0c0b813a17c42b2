"""ODIN: a reward model with disentangled quality and length heads (Chen et al. 2024).

The two heads' sum is trained on preferences; a correlation term pushes length information into the
length head and out of the quality head, and an orthogonality term separates the heads' weights. RL then
uses the quality head alone as the reward (no function needed: it is the head's output).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inform_jax.losses._utils import as_float
from inform_jax.losses.preference import bradley_terry_loss, preference_accuracy


def pearson_correlation(x: jax.Array, y: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Pearson correlation over the last axis.

    Args:
      x: ``[..., N]`` float.
      y: ``[..., N]`` float or int.
      eps: added to each variance: a constant input gives correlation 0 and finite gradients, not NaN.

    Returns:
      ``[...]`` float in [-1, 1].
    """
    x, y = as_float(x), as_float(y)
    xc = x - jnp.mean(x, axis=-1, keepdims=True)
    yc = y - jnp.mean(y, axis=-1, keepdims=True)
    cov = jnp.mean(xc * yc, axis=-1)
    # Separate rsqrt factors: the product of two large variances (lengths**2) could overflow.
    return cov * jax.lax.rsqrt(jnp.mean(xc**2, axis=-1) + eps) * jax.lax.rsqrt(jnp.mean(yc**2, axis=-1) + eps)


def odin_loss(
    quality_chosen: jax.Array,
    quality_rejected: jax.Array,
    length_chosen: jax.Array,
    length_rejected: jax.Array,
    lengths_chosen: jax.Array,
    lengths_rejected: jax.Array,
    length_corr_coef: float = 1.0,
    orthogonal_coef: float = 1.0,
    head_weights: tuple[jax.Array, jax.Array] | None = None,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ODIN loss ``L_rank + length_corr_coef * L_length + orthogonal_coef * L_orthogonal``.

    * ``L_rank``: Bradley-Terry on the summed heads, ``(q_c + l_c) - (q_r + l_r)``.
    * ``L_length = |ρ(r_Q, L)| - ρ(r_L, L)``: Pearson correlations with the response length ``L`` over the
      batch's 2B responses; the quality head should not correlate with length, the length head fully.
    * ``L_orthogonal = |W_Q · W_L|`` on the heads' linear weights; 0 without ``head_weights``.

    Args:
      quality_chosen, quality_rejected: ``[B]`` float, quality-head rewards ``r_Q``.
      length_chosen, length_rejected: ``[B]`` float, length-head rewards ``r_L``.
      lengths_chosen, lengths_rejected: ``[B]`` int or float, response lengths in tokens.
      length_corr_coef: weight of ``L_length``.
      orthogonal_coef: weight of ``L_orthogonal``.
      head_weights: optional ``(W_Q, W_L)``, each ``[D]`` float.
      weights: optional ``[B]`` per-pair weights for the ranking term (the batch-level correlation and
        orthogonality terms are unweighted).

    Returns:
      ``(loss, aux)``: the scalar loss, and scalars ``"rank_loss"``, ``"length_loss"``,
      ``"orthogonal_loss"``, ``"corr_quality"`` (ρ(r_Q, L)), ``"corr_length"`` (ρ(r_L, L)),
      ``"accuracy_quality"`` (quality head alone) and ``"accuracy"`` (summed heads).
    """
    total_chosen = as_float(quality_chosen) + as_float(length_chosen)
    total_rejected = as_float(quality_rejected) + as_float(length_rejected)
    rank = bradley_terry_loss(total_chosen, total_rejected, weights=weights)

    lengths = jnp.concatenate([jnp.asarray(lengths_chosen), jnp.asarray(lengths_rejected)])
    corr_quality = pearson_correlation(jnp.concatenate([quality_chosen, quality_rejected]), lengths)
    corr_length = pearson_correlation(jnp.concatenate([length_chosen, length_rejected]), lengths)
    length_term = jnp.abs(corr_quality) - corr_length

    if head_weights is None:
        orthogonal = jnp.zeros((), rank.dtype)
    else:
        w_quality, w_length = head_weights
        # An elementwise sum, not jnp.dot: TPU matmuls default to bf16 passes.
        orthogonal = jnp.abs(jnp.sum(as_float(w_quality) * as_float(w_length)))

    loss = rank + length_corr_coef * length_term + orthogonal_coef * orthogonal
    aux = {
        "rank_loss": rank,
        "length_loss": length_term,
        "orthogonal_loss": orthogonal,
        "corr_quality": corr_quality,
        "corr_length": corr_length,
        "accuracy_quality": preference_accuracy(quality_chosen, quality_rejected),
        "accuracy": preference_accuracy(total_chosen, total_rejected),
    }
    return loss, aux
