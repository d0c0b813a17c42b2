"""Latent features of (prompt, response) sequences under a reward model, for CSI, MOP and IBL.

InfoRM's features are the IB latent means (the head's encoder output, no sampling); a standard reward model's
are its final hidden state (after the final norm) at the last non-pad token, the input of its reward head.
The second is the paper's control: overoptimized outputs separate in InfoRM's latent space and not (or less)
in a standard RM's hidden space.

One jitted program per (batch, length) shape, run over the reward model's mesh (every device of every host when
it runs on many; :func:`inform_jax.models.batched.map_batches`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.data.preference import ResponseRow
from inform_jax.data.tokenize import tokenize_sft
from inform_jax.models.batched import by_length, map_batches
from inform_jax.models.reward_model import EnsembleRewardModel, RewardModel
from inform_jax.models.sharding import model_mesh

FEATURES = ("auto", "latent", "hidden")


def resolve_feature(model: RewardModel, feature: str = "auto") -> str:
    """ "latent" (IB heads) or "hidden" for ``feature="auto"``; checks an explicit choice against the head."""
    if isinstance(model, EnsembleRewardModel):
        raise ValueError("latent features need a single reward model; pass one member's folder (member_<i>)")
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    is_ib = model.head_config.kind == "ib"
    if feature == "auto":
        return "latent" if is_ib else "hidden"
    if feature == "latent" and not is_ib:
        raise ValueError(f"feature 'latent' needs an InfoRM (ib) head; this reward model's head is "
                         f"{model.head_config.kind!r}: use feature='hidden'")  # fmt: skip
    return feature


def features_of(model: RewardModel, input_ids: jax.Array, attention_mask: jax.Array, feature: str) -> jax.Array:
    """[B, F] features of right- or left-padded sequences [B, T] ("latent": IB mean [B, Z]; "hidden" [B, D])."""
    out = model(input_ids, attention_mask)
    if feature == "latent":
        return out.head.latent_mean.astype(jnp.float32)
    return out.backbone.pooled_hidden.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("graphdef", "feature"))
def _features_jit(graphdef, state, input_ids, attention_mask, feature):
    return features_of(nnx.merge(graphdef, state), input_ids, attention_mask, feature)


def extract_features(
    model: RewardModel,
    input_ids,
    attention_mask,
    *,
    feature: str = "auto",
    batch_size: int = 32,
    token_budget: int | None = None,
) -> np.ndarray:
    """Features [N, F] of token sequences input_ids / attention_mask [N, T] under ``model``, batched by length
    (at most ``batch_size`` rows and ``token_budget`` padded tokens per batch) and jitted.

    feature: "auto" (IB latent mean for InfoRM, final hidden state otherwise), "latent" or "hidden".
    """
    feature = resolve_feature(model, feature)
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids and attention_mask must be non-empty [N, T] of one shape, got "
                         f"{input_ids.shape} and {attention_mask.shape}")  # fmt: skip
    empty = np.nonzero(attention_mask.sum(1) == 0)[0]
    if empty.size:
        raise ValueError(f"sequence {int(empty[0])} has no tokens (all-zero attention mask)")
    mesh = model_mesh(model)  # first: it may place the model over every device
    graphdef, state = nnx.split(model)
    fn = lambda b, _: _features_jit(graphdef, state, b["input_ids"], b["attention_mask"], feature)  # noqa: E731
    rows = {"input_ids": input_ids, "attention_mask": attention_mask}
    return map_batches(fn, rows, batch_size=batch_size, mesh=mesh, token_budget=token_budget, **by_length(rows))


def embed_responses(
    model: RewardModel,
    rows: Sequence[ResponseRow],
    tokenizer,
    *,
    feature: str = "auto",
    max_length: int | str = "auto",
    max_length_cap: int = 2048,
    batch_size: int = 32,
    token_budget: int | None = None,
    log=print,
) -> np.ndarray:
    """Features [N, F] of loaded (prompt, response) rows, tokenized as the reward model was trained (prompt,
    response, eos; right-padded). Truncation is reported through ``log``."""
    if not rows:
        raise ValueError("no rows to embed")
    arrays, report = tokenize_sft(
        [(r.prompt, r.response) for r in rows], tokenizer, max_length, max_length_cap=max_length_cap
    )
    if report.sequences_truncated:
        log(str(report))
    return extract_features(
        model, arrays["input_ids"], arrays["attention_mask"], feature=feature, batch_size=batch_size,
        token_budget=token_budget,
    )  # fmt: skip
