"""One architecture description for every decoder we support, read from and written to Hugging Face configs.

The families (``inform_jax.models.families``) map their Hugging Face configs onto these fields: ``llama``
(Llama 2/3, Mistral, Qwen2, DeepSeek-LLM) and ``gpt_neox`` (Pythia).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from inform_jax.models.attention_backends import ATTENTION_IMPLS
from inform_jax.models.families import BY_MODEL_TYPE, family_of
from inform_jax.models.families.rules import UnsupportedModelError

# Hugging Face model_type -> our family name (kept for callers that list what is supported).
SUPPORTED_MODEL_TYPES = {t: family.NAME for t, family in BY_MODEL_TYPE.items()}

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Architecture of a decoder-only transformer plus runtime options (dtype, scan, remat).

    The architecture fields mirror Hugging Face configs; `from_hf` / `to_hf` convert. Runtime fields
    (`dtype`, `param_dtype`, `scan_layers`, `remat`, `attention_impl`) are ours and are not saved.
    """

    model_type: str = "llama"
    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int | None = None
    norm: str = "rms"  # "rms" | "layer"
    norm_eps: float = 1e-6
    activation: str = "silu"
    gated_mlp: bool = True
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_scaling: tuple[tuple[str, Any], ...] = ()
    partial_rotary_factor: float = 1.0
    parallel_residual: bool = False
    tie_word_embeddings: bool = False
    # Per-layer attention window (0 = full causal attention); empty means full everywhere.
    sliding_windows: tuple[int, ...] = ()
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    # Runtime options (not part of the checkpoint).
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scan_layers: bool = False
    remat: bool | str = False  # False | True/"full" | "dots" (save matmul outputs)
    # "auto" | "cudnn" | "splash" | "blocked" | "einsum" | "jax": see inform_jax.models.attention_backends.
    attention_impl: str = "auto"

    def __post_init__(self):
        family_of(self.model_type)  # an unsupported model_type raises naming the supported ones
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads} (set head_dim to "
                "use heads that do not divide the width)"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise UnsupportedModelError(
                f"rope_type {self.rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}"
            )
        if self.sliding_windows and len(self.sliding_windows) != self.num_layers:
            raise ValueError("sliding_windows needs one entry per layer")
        if self.remat not in (False, True, "full", "dots"):
            raise ValueError(f"remat must be False, True, 'full' or 'dots', got {self.remat!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")

    @property
    def family(self) -> str:
        return family_of(self.model_type).NAME

    @property
    def family_module(self):
        """The module of ``inform_jax.models.families`` that maps this architecture to Hugging Face's."""
        return family_of(self.model_type)

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.resolved_head_dim * self.partial_rotary_factor)

    @property
    def layer_windows(self) -> tuple[int, ...]:
        return self.sliding_windows or (0,) * self.num_layers

    @property
    def rope_scaling_dict(self) -> dict[str, Any]:
        return dict(self.rope_scaling)

    def replace(self, **changes) -> DecoderConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ Hugging Face conversion

    @classmethod
    def from_hf(cls, hf_config, **runtime) -> DecoderConfig:
        """Our config from a transformers `PretrainedConfig` (v5 layout, `rope_parameters`)."""
        model_type = getattr(hf_config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"architecture {model_type!r} ({getattr(hf_config, 'architectures', None)}) is not supported; "
                f"supported model types: {sorted(SUPPORTED_MODEL_TYPES)}"
            )
        rope = dict(getattr(hf_config, "rope_parameters", None) or {})
        rope_type = rope.pop("rope_type", rope.pop("type", "default"))
        rope_theta = rope.pop("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        partial = rope.pop("partial_rotary_factor", getattr(hf_config, "partial_rotary_factor", 1.0))
        fields: dict[str, Any] = dict(
            model_type=model_type,
            vocab_size=hf_config.vocab_size,
            hidden_size=hf_config.hidden_size,
            intermediate_size=hf_config.intermediate_size,
            num_layers=hf_config.num_hidden_layers,
            num_heads=hf_config.num_attention_heads,
            rope_theta=float(rope_theta),
            rope_type=rope_type,
            rope_scaling=tuple(sorted(rope.items())),
            partial_rotary_factor=float(partial),
            tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
            max_position_embeddings=hf_config.max_position_embeddings,
            initializer_range=getattr(hf_config, "initializer_range", 0.02),
            pad_token_id=getattr(hf_config, "pad_token_id", None),
            bos_token_id=getattr(hf_config, "bos_token_id", None),
            eos_token_id=_as_hashable(getattr(hf_config, "eos_token_id", None)),
        )
        fields.update(family_of(model_type).config_fields(hf_config, model_type))
        fields.update(runtime)
        return cls(**fields)

    def to_hf(self):
        """A transformers config object that reproduces this architecture (for `save_pretrained`)."""
        rope_parameters = {
            "rope_type": self.rope_type,
            "rope_theta": self.rope_theta,
            **self.rope_scaling_dict,
        }
        common = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            hidden_act=self.activation,
            max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.initializer_range,
            tie_word_embeddings=self.tie_word_embeddings,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            eos_token_id=list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
        )
        return self.family_module.to_hf(self, common, rope_parameters)


def _as_hashable(value):
    return tuple(value) if isinstance(value, list) else value
