"""InfoRM: the variational information-bottleneck reward-model loss (Miao et al., NeurIPS 2024).

The reward model encodes a sequence to a diagonal Gaussian ``N(mean, exp(logvar))`` over a latent ``S``
of ``Z`` dims, samples ``z`` from it and decodes a scalar reward ``g(z)``. The loss is the Bradley-Terry
loss on the decoded rewards plus ``beta`` times the KL of both sequences' latents to ``N(0, I)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inform_jax.losses._utils import as_float, weighted_mean
from inform_jax.losses.preference import bradley_terry_loss, preference_accuracy

KL_REDUCTIONS = ("paper", "release")


def reparameterize(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Samples ``z = mean + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``, differentiably in mean and logvar.

    Args:
      key: a PRNG key.
      mean: ``[..., Z]`` float.
      logvar: ``[..., Z]`` float, log-variances.

    Returns:
      ``[..., Z]`` samples, in the dtype of ``mean``.
    """
    eps = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
    return mean + jnp.exp(0.5 * logvar) * eps


def gaussian_kl(mean: jax.Array, logvar: jax.Array, reduction: str = "paper") -> jax.Array:
    """KL of ``N(mean, diag(exp(logvar)))`` to ``N(0, I)``, per sample.

    Args:
      mean: ``[..., Z]`` float.
      logvar: ``[..., Z]`` float.
      reduction: how the ``Z`` latent dims are reduced.

        * ``"paper"`` (default): the full KL, summed over dims,
          ``0.5 * sum_z(exp(logvar) + mean**2 - 1 - logvar)``.
        * ``"release"``: what the authors' released code computes: average ``mean`` and ``logvar`` over
          the dims first, then take the KL of that scalar Gaussian,
          ``0.5 * (exp(lv) + m**2 - 1 - lv)`` with ``m = mean.mean(-1)``, ``lv = logvar.mean(-1)``.
          By convexity this is at most ``paper / Z`` (equal when all dims agree), so the same ``beta`` is
          roughly ``latent_dim`` times weaker (more when dims differ and average out).

    Returns:
      ``[...]`` KL per sample, at least float32.
    """
    mean, logvar = as_float(mean), as_float(logvar)
    if reduction == "paper":
        return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)
    if reduction == "release":
        m, lv = jnp.mean(mean, axis=-1), jnp.mean(logvar, axis=-1)
        return 0.5 * (jnp.exp(lv) + m**2 - 1.0 - lv)
    raise ValueError(f"reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")


def inform_loss(
    chosen_rewards: jax.Array,
    rejected_rewards: jax.Array,
    chosen_mean: jax.Array,
    chosen_logvar: jax.Array,
    rejected_mean: jax.Array,
    rejected_logvar: jax.Array,
    beta: float = 0.1,
    kl_reduction: str = "paper",
    margin: jax.Array | float | None = None,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoRM loss, averaged over pairs::

        L = -log σ(g(z_w) - g(z_l)) + β (KL[p(S|x_w)||N(0,I)] + KL[p(S|x_l)||N(0,I)])

    The rewards are already decoded by the caller from latents sampled with :func:`reparameterize`
    (during training; evaluation decodes the mean).

    Note: the authors' release averages the KL over the 2B sequences, i.e. it weighs the KL half as much as
    the formula above, on top of its ``kl_reduction="release"`` reduction; pass ``beta / 2`` to match it.

    Args:
      chosen_rewards: ``[B]`` float, ``g(z_w)``.
      rejected_rewards: ``[B]`` float, ``g(z_l)``.
      chosen_mean, chosen_logvar: ``[B, Z]`` float, the chosen sequences' latent Gaussians.
      rejected_mean, rejected_logvar: ``[B, Z]`` float, the rejected sequences' latent Gaussians.
      beta: KL weight (paper default 0.1).
      kl_reduction: ``"paper"`` (default) or ``"release"``, see :func:`gaussian_kl`.
      margin: optional scalar or ``[B]`` Bradley-Terry margin.
      weights: optional ``[B]`` per-pair weights, applied to the BT and KL terms alike.

    Returns:
      ``(loss, aux)``: the scalar loss, and scalars ``"bt_loss"``, ``"kl_chosen"``, ``"kl_rejected"``
      (weighted means over pairs, so ``loss = bt_loss + beta * (kl_chosen + kl_rejected)``), ``"kl"``
      (mean of the two) and ``"accuracy"`` (unweighted).
    """
    bt = bradley_terry_loss(chosen_rewards, rejected_rewards, margin=margin, weights=weights)
    kl_chosen = weighted_mean(gaussian_kl(chosen_mean, chosen_logvar, kl_reduction), weights)
    kl_rejected = weighted_mean(gaussian_kl(rejected_mean, rejected_logvar, kl_reduction), weights)
    aux = {
        "bt_loss": bt,
        "kl_chosen": kl_chosen,
        "kl_rejected": kl_rejected,
        "kl": 0.5 * (kl_chosen + kl_rejected),
        "accuracy": preference_accuracy(chosen_rewards, rejected_rewards),
    }
    return bt + beta * (kl_chosen + kl_rejected), aux
