"""Pure jnp loss functions (no Flax import): jittable, vmappable, differentiable."""

from inform_jax.losses.energy import (
    ENERGY_SITES,
    energy_from_output,
    energy_penalty,
    layer_energy,
    mlp_energy,
    response_token_mask,
)
from inform_jax.losses.ensemble import AGGREGATIONS, aggregate_rewards
from inform_jax.losses.ib import KL_REDUCTIONS, gaussian_kl, inform_loss, reparameterize
from inform_jax.losses.odin import odin_loss, pearson_correlation
from inform_jax.losses.ppo import (
    KL_ESTIMATORS,
    adaptive_kl_coef,
    entropy,
    gae,
    kl_penalty,
    last_valid_index,
    length_penalty,
    masked_mean,
    policy_loss,
    token_entropy,
    token_rewards,
    value_loss,
    whiten,
)
from inform_jax.losses.preference import bradley_terry_loss, preference_accuracy, reward_margin

__all__ = [
    "ENERGY_SITES",
    "energy_from_output",
    "energy_penalty",
    "layer_energy",
    "mlp_energy",
    "response_token_mask",
    "KL_ESTIMATORS",
    "adaptive_kl_coef",
    "entropy",
    "gae",
    "kl_penalty",
    "last_valid_index",
    "length_penalty",
    "masked_mean",
    "policy_loss",
    "token_entropy",
    "token_rewards",
    "value_loss",
    "whiten",
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
