"""One architecture description for every decoder we support, read from and written to Hugging Face configs.

Two families cover the papers' models:

- ``llama``: Llama 2/3 (llama3 RoPE scaling), Mistral (sliding window), Qwen2 (q/k/v bias), DeepSeek-LLM
  (Llama architecture): RMSNorm, RoPE, grouped-query attention, SwiGLU MLP, tied or untied embeddings.
- ``gpt_neox``: the Pythia suite: LayerNorm, partial rotary, parallel or sequential residual, GELU MLP.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# Hugging Face model_type -> our family. Anything else is refused by name.
SUPPORTED_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "gpt_neox": "gpt_neox",
}

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


class UnsupportedModelError(ValueError):
    """The checkpoint's architecture or one of its options is not implemented."""


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
    attention_impl: str = "jax"  # "jax" (jax.nn.dot_product_attention, fused where available) | "einsum"

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model_type {self.model_type!r} is not supported; supported: {sorted(SUPPORTED_MODEL_TYPES)}"
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
        if self.attention_impl not in ("einsum", "jax"):
            raise ValueError(f"attention_impl must be 'einsum' or 'jax', got {self.attention_impl!r}")

    @property
    def family(self) -> str:
        return SUPPORTED_MODEL_TYPES[self.model_type]

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
        if model_type == "gpt_neox":
            fields.update(
                num_kv_heads=hf_config.num_attention_heads,
                norm="layer",
                norm_eps=hf_config.layer_norm_eps,
                activation=hf_config.hidden_act,
                gated_mlp=False,
                qkv_bias=bool(getattr(hf_config, "attention_bias", True)),
                o_bias=bool(getattr(hf_config, "attention_bias", True)),
                mlp_bias=True,
                parallel_residual=bool(hf_config.use_parallel_residual),
            )
        else:
            attention_bias = bool(getattr(hf_config, "attention_bias", False))
            fields.update(
                num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads,
                head_dim=getattr(hf_config, "head_dim", None),
                norm="rms",
                norm_eps=hf_config.rms_norm_eps,
                activation=hf_config.hidden_act,
                gated_mlp=True,
                # Qwen2 has q/k/v bias and no o bias; Llama's attention_bias covers all four.
                qkv_bias=True if model_type == "qwen2" else attention_bias,
                o_bias=False if model_type == "qwen2" else attention_bias,
                mlp_bias=bool(getattr(hf_config, "mlp_bias", False)),
                sliding_windows=_sliding_windows(hf_config),
            )
        fields.update(runtime)
        return cls(**fields)

    def to_hf(self):
        """A transformers config object that reproduces this architecture (for `save_pretrained`)."""
        import transformers

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
        if self.family == "gpt_neox":
            if self.qkv_bias != self.o_bias or not self.mlp_bias:
                raise UnsupportedModelError("GPT-NeoX configs have one attention_bias flag and MLP biases")
            rope_parameters["partial_rotary_factor"] = self.partial_rotary_factor
            return transformers.GPTNeoXConfig(
                **common,
                layer_norm_eps=self.norm_eps,
                use_parallel_residual=self.parallel_residual,
                attention_bias=self.qkv_bias,
                rope_parameters=rope_parameters,
            )
        windows = {w for w in self.layer_windows if w}
        kwargs = dict(
            **common,
            num_key_value_heads=self.num_kv_heads,
            rms_norm_eps=self.norm_eps,
            rope_parameters=rope_parameters,
        )
        if self.model_type == "qwen2":
            kwargs.update(
                use_sliding_window=bool(windows),
                sliding_window=max(windows) if windows else None,
                layer_types=["sliding_attention" if w else "full_attention" for w in self.layer_windows],
            )
            return transformers.Qwen2Config(**kwargs)
        if self.model_type == "mistral":
            return transformers.MistralConfig(
                **kwargs, head_dim=self.resolved_head_dim, sliding_window=max(windows) if windows else None
            )
        if self.qkv_bias != self.o_bias:
            raise UnsupportedModelError("Llama configs have one attention_bias flag for q, k, v and o")
        return transformers.LlamaConfig(
            **kwargs, head_dim=self.resolved_head_dim, attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias
        )


def _as_hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _sliding_windows(hf_config) -> tuple[int, ...]:
    """Per-layer attention windows as transformers applies them (0 = full attention)."""
    window = getattr(hf_config, "sliding_window", None)
    layer_types = getattr(hf_config, "layer_types", None)
    n = hf_config.num_hidden_layers
    if layer_types is not None:
        if "sliding_attention" in layer_types and not window:
            raise UnsupportedModelError("layer_types asks for sliding attention but sliding_window is unset")
        return tuple(window if t == "sliding_attention" else 0 for t in layer_types)
    if hf_config.model_type == "qwen2" and not getattr(hf_config, "use_sliding_window", False):
        return ()
    return (window,) * n if window else ()
