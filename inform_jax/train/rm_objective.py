"""The reward-model objective for each method, on a batch of tokenized preference pairs.

A batch holds `chosen_input_ids`, `chosen_attention_mask`, `rejected_input_ids`,
`rejected_attention_mask` [B, T], `response_lengths` [B, 2] and `weights` [B] (per-pair loss weights).
Chosen and rejected sequences run through the backbone together as one [2B, T] batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from inform_jax.losses import bradley_terry_loss, gaussian_kl, inform_loss, odin_loss, preference_accuracy
from inform_jax.models.heads import HeadOutput
from inform_jax.models.reward_model import EnsembleRewardModel, RewardModel


def score_pairs(model, batch: dict, key=None) -> tuple[HeadOutput, HeadOutput]:
    """(chosen, rejected) head outputs with `reward` [B]; one backbone pass over [2B, T].

    For an ensemble, `reward` is the aggregate and the other head fields keep a leading [K] member axis.
    """
    ids = jnp.concatenate([batch["chosen_input_ids"], batch["rejected_input_ids"]])
    mask = jnp.concatenate([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
    out = model(ids, mask, key=key)
    b = batch["chosen_input_ids"].shape[0]
    axis = 1 if isinstance(model, EnsembleRewardModel) else 0
    head = out.head._replace(reward=out.reward)

    def part(x, lo, hi, ax):
        return None if x is None else jax.lax.slice_in_dim(x, lo, hi, axis=ax)

    chosen = HeadOutput(*(part(x, 0, b, 0 if i == 0 else axis) for i, x in enumerate(head)))
    rejected = HeadOutput(*(part(x, b, 2 * b, 0 if i == 0 else axis) for i, x in enumerate(head)))
    return chosen, rejected


def member_loss(model: RewardModel, batch: dict, key, loss_cfg) -> tuple[jax.Array, dict]:
    """Loss and metrics of one reward model. `key` samples InfoRM's latent; `loss_cfg` a LossSection."""
    kind = model.head_config.kind
    chosen, rejected = score_pairs(model, batch, key if kind == "ib" else None)
    r_c, r_r = chosen.reward, rejected.reward
    weights = batch["weights"]
    if kind == "ib":
        loss, aux = inform_loss(
            r_c, r_r, chosen.latent_mean, chosen.latent_logvar, rejected.latent_mean, rejected.latent_logvar,
            beta=loss_cfg.beta, kl_reduction=loss_cfg.kl_reduction, margin=loss_cfg.margin, weights=weights,
        )  # fmt: skip
        return loss, aux
    if kind == "odin":
        lengths = batch["response_lengths"].astype(jnp.float32)
        loss, aux = odin_loss(
            r_c, r_r, chosen.length_reward, rejected.length_reward, lengths[:, 0], lengths[:, 1],
            length_corr_coef=loss_cfg.odin_length_coef, orthogonal_coef=loss_cfg.odin_orthogonal_coef,
            head_weights=model.head.head_weights(), weights=weights,
        )  # fmt: skip
        return loss, aux
    loss = bradley_terry_loss(r_c, r_r, margin=loss_cfg.margin, weights=weights)
    return loss, {"bt_loss": loss, "accuracy": preference_accuracy(r_c, r_r)}


def objective(model, batch: dict, key, loss_cfg, scheme: str) -> tuple[jax.Array, dict]:
    """Total loss of a single model or of stacked members; metrics averaged over members.

    scheme "ensemble": every member sees the same batch; "warm": batch arrays carry a leading [K] axis
    (one data order per member). Member losses are summed so each member's gradient is what it would be
    alone (only global-norm clipping couples them).
    """
    if scheme == "single":
        return member_loss(model, batch, key, loss_cfg)
    graphdef, state = nnx.split(model.members)
    keys = jax.random.split(key, model.num_members)

    def one(member_state, member_batch, k):
        return member_loss(nnx.merge(graphdef, member_state), member_batch, k, loss_cfg)

    batch_axis = 0 if scheme == "warm" else None
    losses, aux = jax.vmap(one, in_axes=(0, batch_axis, 0))(state, batch, keys)
    return jnp.sum(losses), jax.tree.map(jnp.mean, aux)


def evaluate_pairs(model, batch: dict) -> dict[str, jax.Array]:
    """Deterministic per-pair scores (InfoRM decodes the latent mean): rewards [B] and KLs [B] (0 if no IB).

    For an ensemble, the aggregated reward; the KL is averaged over members.
    """
    chosen, rejected = score_pairs(model, batch, key=None)
    out = {"reward_chosen": chosen.reward, "reward_rejected": rejected.reward}
    if chosen.latent_mean is not None:
        for name, side in (("kl_chosen", chosen), ("kl_rejected", rejected)):
            kl = gaussian_kl(side.latent_mean, side.latent_logvar)
            out[name] = jnp.mean(kl, axis=0) if isinstance(model, EnsembleRewardModel) else kl
    return out
