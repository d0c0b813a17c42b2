"""The GPT-NeoX family (the Pythia suite): LayerNorm, partial rotary, parallel or sequential residual, GELU MLP,
and a fused per-head query_key_value tensor that we split into q, k and v."""

from __future__ import annotations

from typing import Any

import numpy as np

from inform_jax.models.families.rules import Rules, TensorRule, UnsupportedModelError, add_linear, linear, vector

NAME = "gpt_neox"
MODEL_TYPES = ("gpt_neox",)
CAUSAL_LM_CLASSES = {"gpt_neox": "GPTNeoXForCausalLM"}
EMBED_TENSOR = "embed_in.weight"
HF_PREFIX = "gpt_neox."  # the base model's attribute in *ForCausalLM checkpoints

_PYTHIA = dict(
    model_type="gpt_neox", norm="layer", norm_eps=1e-5, activation="gelu", gated_mlp=False, qkv_bias=True,
    o_bias=True, mlp_bias=True, parallel_residual=True, partial_rotary_factor=0.25, max_position_embeddings=2048,
)  # fmt: skip


def _pythia(hidden, layers, heads, vocab=50304):
    return dict(_PYTHIA, vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_layers=layers,
                num_heads=heads, num_kv_heads=heads)  # fmt: skip


PRESETS: dict[str, dict] = {
    "pythia-70m": _pythia(512, 6, 8),
    "pythia-160m": _pythia(768, 12, 12),
    "pythia-410m": _pythia(1024, 24, 16),
    "pythia-1.4b": _pythia(2048, 24, 16),
    "pythia-6.9b": _pythia(4096, 32, 32, vocab=50432),
}


def config_fields(hf_config, model_type: str) -> dict[str, Any]:
    """The family-specific DecoderConfig fields of a transformers GPTNeoXConfig."""
    return dict(
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


def to_hf(config, common: dict[str, Any], rope_parameters: dict[str, Any]):
    """A transformers GPTNeoXConfig for ``config`` (a DecoderConfig)."""
    import transformers

    if config.qkv_bias != config.o_bias or not config.mlp_bias:
        raise UnsupportedModelError("GPT-NeoX configs have one attention_bias flag and MLP biases")
    return transformers.GPTNeoXConfig(
        **common,
        layer_norm_eps=config.norm_eps,
        use_parallel_residual=config.parallel_residual,
        attention_bias=config.qkv_bias,
        rope_parameters={**rope_parameters, "partial_rotary_factor": config.partial_rotary_factor},
    )


def _fuse_qkv(config, q, k, v):
    """Inverse of the per-head split: ([D, H*hd] kernels or [H*hd] biases) -> HF's fused layout."""
    h, hd = config.num_heads, config.resolved_head_dim
    if q.ndim == 2:
        d = q.shape[0]
        parts = [p.T.reshape(h, 1, hd, d) for p in (q, k, v)]
        return np.concatenate(parts, axis=1).reshape(3 * h * hd, d)
    parts = [p.reshape(h, 1, hd) for p in (q, k, v)]
    return np.concatenate(parts, axis=1).reshape(3 * h * hd)


def _qkv_rules(config, base: str) -> Rules:
    """GPT-NeoX's fused query_key_value is laid out per head as [H, (q, k, v), head_dim] on the output axis."""
    h, hd, d = config.num_heads, config.resolved_head_dim, config.hidden_size
    rules: Rules = []
    for j, proj in enumerate(("q", "k", "v")):

        def load_w(w, j=j):
            return w.reshape(h, 3, hd, d)[:, j].reshape(h * hd, d).T

        def load_b(b, j=j):
            return b.reshape(h, 3, hd)[:, j].reshape(h * hd)

        name = f"{base}.query_key_value"
        rules.append(((proj,), TensorRule(("kernel",), (f"{name}.weight",), load_w, None, _fuse_qkv)))
        if config.qkv_bias:
            rules.append(((proj,), TensorRule(("bias",), (f"{name}.bias",), load_b, None, _fuse_qkv)))
    return rules


def layer_rules(config) -> Rules:
    """(our path inside a Block, rule) pairs; HF names use {prefix} and {i}."""
    base = "{prefix}layers.{i}"
    rules: Rules = []
    for ours, theirs in (("attn_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")):
        rules.append(((ours, "scale"), vector(f"{base}.{theirs}.weight")))
        rules.append(((ours, "bias"), vector(f"{base}.{theirs}.bias")))
    rules += [(("attn", *p), r) for p, r in _qkv_rules(config, f"{base}.attention")]
    add_linear(rules, ("attn", "o"), f"{base}.attention.dense", config.o_bias)
    add_linear(rules, ("mlp", "up"), f"{base}.mlp.dense_h_to_4h", True)
    add_linear(rules, ("mlp", "down"), f"{base}.mlp.dense_4h_to_h", True)
    return rules


def top_rules(config, lm_head: bool) -> Rules:
    """Embedding, final LayerNorm and (untied) output embedding."""
    rules: Rules = [
        (("embed", "embedding"), vector("{prefix}embed_in.weight")),
        (("final_norm", "scale"), vector("{prefix}final_layer_norm.weight")),
        (("final_norm", "bias"), vector("{prefix}final_layer_norm.bias")),
    ]
    if lm_head and not config.tie_word_embeddings:
        rules.append((("lm_head",), linear("embed_out.weight")))
    return rules
