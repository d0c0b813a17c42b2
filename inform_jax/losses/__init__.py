"""Pure jnp loss functions (no Flax import): jittable, vmappable, differentiable."""

from inform_jax.losses.ensemble import AGGREGATIONS, aggregate_rewards
from inform_jax.losses.ib import KL_REDUCTIONS, gaussian_kl, inform_loss, reparameterize
from inform_jax.losses.odin import odin_loss, pearson_correlation
from inform_jax.losses.preference import bradley_terry_loss, preference_accuracy, reward_margin

__all__ = [
    "AGGREGATIONS",
    "KL_REDUCTIONS",
    "aggregate_rewards",
    "bradley_terry_loss",
    "gaussian_kl",
    "inform_loss",
    "odin_loss",
    "pearson_correlation",
    "preference_accuracy",
    "reparameterize",
    "reward_margin",
]
