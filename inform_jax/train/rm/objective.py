"""The reward-model objective of a method (:mod:`inform_jax.train.rm.methods`) on a batch of tokenized pairs.

A batch holds `chosen_input_ids`, `chosen_attention_mask`, `rejected_input_ids`,
`rejected_attention_mask` [B, T], `response_lengths` [B, 2] and `weights` [B] (per-pair loss weights).
Chosen and rejected sequences run through the backbone together as one [2B, T] batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from inform_jax.losses import gaussian_kl
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


def member_loss(model: RewardModel, batch: dict, key, loss_cfg, method) -> tuple[jax.Array, dict]:
    """Loss and metrics of one reward model under ``method`` (a RewardModelMethod). ``key`` samples InfoRM's
    latent (unused by heads without one); ``loss_cfg`` is a LossSection."""
    chosen, rejected = score_pairs(model, batch, key if method.samples_latent else None)
    return method.loss(model, chosen, rejected, batch, loss_cfg)


def objective(model, batch: dict, key, loss_cfg, method) -> tuple[jax.Array, dict]:
    """Total loss of a single model or of stacked members under ``method`` (a RewardModelMethod); metrics
    averaged over members.

    scheme "ensemble": every member sees the same batch; "warm": batch arrays carry a leading [K] axis
    (one data order per member). Member losses are summed so each member's gradient is what it would be
    alone (only global-norm clipping couples them).
    """
    scheme = method.scheme
    if scheme == "single":
        return member_loss(model, batch, key, loss_cfg, method)
    graphdef, state = nnx.split(model.members)
    keys = jax.random.split(key, model.num_members)

    def one(member_state, member_batch, k):
        return member_loss(nnx.merge(graphdef, member_state), member_batch, k, loss_cfg, method)

    batch_axis = 0 if scheme == "warm" else None
    losses, aux = jax.vmap(one, in_axes=(0, batch_axis, 0))(state, batch, keys)
    return jnp.sum(losses), jax.tree.map(jnp.mean, aux)


def evaluate_pairs(model, batch: dict, kl_reduction: str = "paper") -> dict[str, jax.Array]:
    """Deterministic per-pair scores (InfoRM decodes the latent mean): rewards [B] and, for IB heads, KLs [B]
    with the same reduction as the training loss (``loss.kl_reduction``), so train and eval "kl" agree.

    For an ensemble, the aggregated reward; the KL is averaged over members.
    """
    chosen, rejected = score_pairs(model, batch, key=None)
    out = {"reward_chosen": chosen.reward, "reward_rejected": rejected.reward}
    if chosen.latent_mean is not None:
        for name, side in (("kl_chosen", chosen), ("kl_rejected", rejected)):
            kl = gaussian_kl(side.latent_mean, side.latent_logvar, kl_reduction)
            out[name] = jnp.mean(kl, axis=0) if isinstance(model, EnsembleRewardModel) else kl
    return out
