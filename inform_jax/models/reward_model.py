"""Reward models: a decoder backbone (no LM head) plus a reward head, and ensembles of them.

A saved reward model is a folder: the backbone as a Hugging Face checkpoint (config.json +
safetensors, loadable by transformers as the base model) plus `reward_head.safetensors` and
`reward_config.json`, which names the head and its options. An ensemble folder holds `ensemble.json`
and one such folder per member.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.hub import resolve_path
from inform_jax.losses import aggregate_rewards
from inform_jax.models.config import DecoderConfig
from inform_jax.models.decoder import CausalLM, DecoderOutput, last_token_index
from inform_jax.models.heads import HeadOutput, IBHead, OdinHeads, ScalarHead
from inform_jax.models.hf_io import from_pretrained, save_pretrained
from inform_jax.models.safetensors_io import open_tensors, save_file
from inform_jax.models.sharding import to_host
from inform_jax.models.stacking import stack_modules, unstack_module

HEAD_KINDS = ("scalar", "ib", "odin")
REWARD_CONFIG = "reward_config.json"
HEAD_FILE = "reward_head.safetensors"
ENSEMBLE_CONFIG = "ensemble.json"


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """kind: "scalar" (standard RM), "ib" (InfoRM), "odin"; latent_dim and decoder for "ib"."""

    kind: str = "scalar"
    latent_dim: int = 128
    decoder: str = "linear"  # "linear" | "gated"

    def __post_init__(self):
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {self.kind!r}")


class RewardOutput(NamedTuple):
    """reward: [B] (ODIN: the quality head); head: all head outputs (latents [B, Z] for InfoRM);
    backbone: the decoder's outputs (hidden states, residual L1 norms for energy loss)."""

    reward: jax.Array
    head: HeadOutput
    backbone: DecoderOutput


def make_head(config: HeadConfig, hidden_size: int, *, std: float, rngs: nnx.Rngs):
    if config.kind == "scalar":
        return ScalarHead(hidden_size, std=std, rngs=rngs)
    if config.kind == "ib":
        return IBHead(hidden_size, config.latent_dim, decoder=config.decoder, std=std, rngs=rngs)
    return OdinHeads(hidden_size, std=std, rngs=rngs)


class RewardModel(nnx.Module):
    """The reward is the head applied at each row's last token with attention_mask 1.

    read_pad_id: when set, the reward is read where transformers' *ForSequenceClassification reads it instead:
    at the last token that is not `read_pad_id` (a reward model imported from such a folder; the two rules agree
    unless the pad token also stands inside the text, e.g. a pad token equal to the eos the text ends with).
    """

    def __init__(self, backbone: CausalLM, head_config: HeadConfig, *, rngs: nnx.Rngs, read_pad_id: int | None = None):
        self.backbone = backbone
        self.head = make_head(
            head_config, backbone.config.hidden_size, std=backbone.config.initializer_range, rngs=rngs
        )
        self.head_config = head_config
        self.read_pad_id = read_pad_id

    @classmethod
    def create(cls, config: DecoderConfig, head_config: HeadConfig, *, rngs: nnx.Rngs) -> RewardModel:
        """A randomly initialized reward model (tests, the synthetic world)."""
        return cls(CausalLM(config, rngs=rngs, lm_head=False), head_config, rngs=rngs)

    def __call__(self, input_ids, attention_mask, *, key=None, output_hidden_states: bool = False) -> RewardOutput:
        """input_ids, attention_mask: [B, T]; key: PRNG key to sample InfoRM's latent (training only).

        Only the reward token's hidden state is read, so the backbone runs with `pooled_only` (its last block at
        that token alone where `decoder.splits_last_block` allows; `backbone` then holds that token's outputs, see
        `DecoderOutput`), unless `output_hidden_states` asks for every position's."""
        index = None
        if self.read_pad_id is not None:  # transformers' rule: the last position whose id is not the pad id
            index = last_token_index((input_ids != self.read_pad_id) & attention_mask.astype(bool))
        out = self.backbone(
            input_ids, attention_mask, compute_logits=False, output_hidden_states=output_hidden_states,
            pooled_only=not output_hidden_states, pool_index=index,
        )  # fmt: skip
        head = self.head(out.pooled_hidden, key=key)
        return RewardOutput(reward=head.reward, head=head, backbone=out)


def normalize_scores(scores: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """(scores - mean) / std per member. scores: [K, B] (or [B] with K = 1); mean, std: [K]. -> float32, same shape.

    A member with std 0 (a constant score) is divided by 1e-8 at least, so it stays finite."""
    scores = jnp.asarray(scores, jnp.float32)
    mean, std = jnp.asarray(mean, jnp.float32), jnp.maximum(jnp.asarray(std, jnp.float32), 1e-8)
    if scores.ndim == 1:  # one model (or a plain score function): its single member's statistics
        return (scores - mean[0]) / std[0]
    return (scores - mean[:, None]) / std[:, None]


class EnsembleRewardModel(nnx.Module):
    """k reward models with stacked parameters (logical axis "members"), run with vmap."""

    def __init__(self, members: list[RewardModel], aggregation: str = "mean", uncertainty_coef: float = 1.0):
        self.members = stack_modules(members, "members")
        self.num_members = len(members)
        self.aggregation = aggregation
        self.uncertainty_coef = uncertainty_coef
        self.head_config = members[0].head_config

    def member_outputs(self, input_ids, attention_mask, *, key=None) -> RewardOutput:
        """Every member's outputs with a leading [K] axis; keys: one PRNG key, split per member."""
        graphdef, state = nnx.split(self.members)
        keys = None if key is None else jax.random.split(key, self.num_members)

        def run(member_state, k):
            return nnx.merge(graphdef, member_state)(input_ids, attention_mask, key=k)

        return jax.vmap(run)(state, keys)

    def __call__(self, input_ids, attention_mask, *, key=None, member_norm=None) -> RewardOutput:
        """Aggregated reward [B] (mean, min or mean - coef * variance over members); per-member in `head`.

        member_norm: None, or (mean [K], std [K]): each member's reward becomes (r_k - mean_k) / std_k before the
        aggregation (PPO's ``reward.normalize=sft``: members on different scales would otherwise let the widest
        one decide the min and the variance)."""
        out = self.member_outputs(input_ids, attention_mask, key=key)
        rewards = out.reward if member_norm is None else normalize_scores(out.reward, *member_norm)
        reward = aggregate_rewards(rewards, self.aggregation, uncertainty_coef=self.uncertainty_coef)
        return out._replace(reward=reward)

    def member(self, index: int) -> RewardModel:
        return unstack_module(self.members, index)

    def weight_average(self) -> RewardModel:
        """WARM: one reward model whose parameters are the members' average."""
        return unstack_module(self.members, mean=True)


# ---------------------------------------------------------------------------------------------- saving


def _head_tensors(model: RewardModel) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model.head, nnx.Param))
    return {".".join(map(str, k)): to_host(v[...]) for k, v in flat}  # a collective on many hosts


def save_reward_model(model: RewardModel | EnsembleRewardModel, path: str, extra: dict | None = None) -> None:
    """Write a reward model (or an ensemble, one folder per member) that `load_reward_model` restores."""
    if isinstance(model, EnsembleRewardModel):
        os.makedirs(path, exist_ok=True)
        for i in range(model.num_members):
            save_reward_model(model.member(i), os.path.join(path, f"member_{i}"), extra)
        if jax.process_index() != 0:  # every process gathers the tensors above; process 0 writes
            return
        with open(os.path.join(path, ENSEMBLE_CONFIG), "w") as f:
            json.dump(
                {"num_members": model.num_members, "aggregation": model.aggregation,
                 "uncertainty_coef": model.uncertainty_coef, **(extra or {})},
                f, indent=2,
            )  # fmt: skip
        return
    save_pretrained(model.backbone, path)
    head = _head_tensors(model)
    if jax.process_index() != 0:
        return
    save_file(head, os.path.join(path, HEAD_FILE))
    read = {} if model.read_pad_id is None else {"read_pad_id": model.read_pad_id}
    with open(os.path.join(path, REWARD_CONFIG), "w") as f:
        json.dump({"head": dataclasses.asdict(model.head_config), **read, **(extra or {})}, f, indent=2)


def load_reward_model(path: str, *, dtype=jnp.float32, param_dtype=None, mesh=None, **runtime):
    """Restore a folder written by `save_reward_model` (a RewardModel or an EnsembleRewardModel), or a transformers
    *ForSequenceClassification folder with one label (`hf_export.load_sequence_classifier`). ``path`` may be a Hub
    id ``org/name[@revision]``, read from its local snapshot folder (:func:`inform_jax.hub.resolve_path`)."""
    path = resolve_path(path, what="reward model")
    if os.path.exists(os.path.join(path, ENSEMBLE_CONFIG)):
        with open(os.path.join(path, ENSEMBLE_CONFIG)) as f:
            info = json.load(f)
        members = [
            load_reward_model(os.path.join(path, f"member_{i}"), dtype=dtype, param_dtype=param_dtype, **runtime)
            for i in range(info["num_members"])
        ]
        return EnsembleRewardModel(members, info["aggregation"], info.get("uncertainty_coef", 1.0))
    config_path = os.path.join(path, REWARD_CONFIG)
    if not os.path.exists(config_path):
        from inform_jax.models.hf_export import is_sequence_classifier, load_sequence_classifier

        if is_sequence_classifier(path):
            return load_sequence_classifier(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, **runtime)
        raise FileNotFoundError(
            f"{path}: no {REWARD_CONFIG} and no config.json of a *ForSequenceClassification; not a reward model folder"
        )
    with open(config_path) as f:
        saved = json.load(f)
    head_config = HeadConfig(**saved["head"])
    backbone = from_pretrained(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, lm_head=False, **runtime)
    model = RewardModel(backbone, head_config, rngs=nnx.Rngs(0), read_pad_id=saved.get("read_pad_id"))
    tensors = open_tensors(os.path.join(path, HEAD_FILE))
    for key, var in nnx.to_flat_state(nnx.state(model.head, nnx.Param)):
        name = ".".join(map(str, key))
        if name not in tensors:
            raise ValueError(f"{path}/{HEAD_FILE}: missing head tensor {name!r}")
        if tensors[name].shape != var.shape:
            raise ValueError(f"{path}/{HEAD_FILE}: {name!r} has shape {tensors[name].shape}, expected {var.shape}")
        var[...] = jnp.asarray(np.asarray(tensors[name]))
    return model
