"""Flax NNX decoders (Llama family, GPT-NeoX) that load and save Hugging Face checkpoints."""

from inform_jax.models.config import DecoderConfig, UnsupportedModelError
from inform_jax.models.decoder import CausalLM, DecoderOutput, last_token_index, positions_from_mask
from inform_jax.models.hf_io import (
    CheckpointError,
    config_from_pretrained,
    from_pretrained,
    hf_state_dict,
    save_pretrained,
)
from inform_jax.models.sharding import DEFAULT_RULES, batch_sharding, make_mesh, shard_module

__all__ = [
    "DEFAULT_RULES",
    "CausalLM",
    "CheckpointError",
    "DecoderConfig",
    "DecoderOutput",
    "UnsupportedModelError",
    "batch_sharding",
    "config_from_pretrained",
    "from_pretrained",
    "hf_state_dict",
    "last_token_index",
    "make_mesh",
    "positions_from_mask",
    "save_pretrained",
    "shard_module",
]
