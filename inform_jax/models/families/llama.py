"""The Llama family: Llama 2/3 (llama3 RoPE scaling), Mistral (sliding window), Qwen2 (q/k/v bias), DeepSeek-LLM
(the Llama architecture): RMSNorm, RoPE, grouped-query attention, SwiGLU MLP, tied or untied embeddings."""

from __future__ import annotations

from typing import Any

from inform_jax.models.families.rules import Rules, UnsupportedModelError, add_linear, linear, vector

NAME = "llama"
MODEL_TYPES = ("llama", "mistral", "qwen2")
CAUSAL_LM_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
EMBED_TENSOR = "embed_tokens.weight"
HF_PREFIX = "model."  # the base model's attribute in *ForCausalLM checkpoints

_LLAMA = dict(model_type="llama", norm="rms", activation="silu", gated_mlp=True)
PRESETS: dict[str, dict] = {
    "llama-3-8b": dict(_LLAMA, vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
                       num_heads=32, num_kv_heads=8, rope_theta=500000.0, norm_eps=1e-5,
                       max_position_embeddings=8192),
    "llama-3.2-1b": dict(_LLAMA, vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
                         num_heads=32, num_kv_heads=8, rope_theta=500000.0, norm_eps=1e-5, tie_word_embeddings=True,
                         rope_type="llama3", rope_scaling=(("factor", 32.0), ("high_freq_factor", 4.0),
                                                           ("low_freq_factor", 1.0),
                                                           ("original_max_position_embeddings", 8192)),
                         max_position_embeddings=131072),
    "llama-2-7b": dict(_LLAMA, vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                       num_heads=32, num_kv_heads=32, norm_eps=1e-5, max_position_embeddings=4096),
    "mistral-7b": dict(_LLAMA, model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                       num_layers=32, num_heads=32, num_kv_heads=8, norm_eps=1e-5, max_position_embeddings=32768),
    "qwen2-7b": dict(_LLAMA, model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                     num_layers=28, num_heads=28, num_kv_heads=4, rope_theta=1e6, qkv_bias=True,
                     max_position_embeddings=32768),
    "deepseek-llm-7b": dict(_LLAMA, vocab_size=102400, hidden_size=4096, intermediate_size=11008, num_layers=30,
                            num_heads=32, num_kv_heads=32, max_position_embeddings=4096),
}  # fmt: skip


def config_fields(hf_config, model_type: str) -> dict[str, Any]:
    """The family-specific DecoderConfig fields of a transformers config (the shared ones are read by the caller)."""
    attention_bias = bool(getattr(hf_config, "attention_bias", False))
    return dict(
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


def to_hf(config, common: dict[str, Any], rope_parameters: dict[str, Any]):
    """A transformers config for ``config`` (a DecoderConfig); ``common`` holds the fields every family shares."""
    import transformers

    windows = {w for w in config.layer_windows if w}
    kwargs = dict(
        **common, num_key_value_heads=config.num_kv_heads, rms_norm_eps=config.norm_eps, rope_parameters=rope_parameters
    )
    if config.model_type == "qwen2":
        kwargs.update(
            use_sliding_window=bool(windows),
            sliding_window=max(windows) if windows else None,
            layer_types=["sliding_attention" if w else "full_attention" for w in config.layer_windows],
        )
        return transformers.Qwen2Config(**kwargs)
    if config.model_type == "mistral":
        return transformers.MistralConfig(
            **kwargs, head_dim=config.resolved_head_dim, sliding_window=max(windows) if windows else None
        )
    if config.qkv_bias != config.o_bias:
        raise UnsupportedModelError("Llama configs have one attention_bias flag for q, k, v and o")
    return transformers.LlamaConfig(
        **kwargs, head_dim=config.resolved_head_dim, attention_bias=config.qkv_bias, mlp_bias=config.mlp_bias
    )


def layer_rules(config) -> Rules:
    """(our path inside a Block, rule) pairs; HF names use {prefix} and {i}."""
    base = "{prefix}layers.{i}"
    rules: Rules = [
        (("attn_norm", "scale"), vector(f"{base}.input_layernorm.weight")),
        (("mlp_norm", "scale"), vector(f"{base}.post_attention_layernorm.weight")),
    ]
    for proj in ("q", "k", "v"):
        add_linear(rules, ("attn", proj), f"{base}.self_attn.{proj}_proj", config.qkv_bias)
    add_linear(rules, ("attn", "o"), f"{base}.self_attn.o_proj", config.o_bias)
    for proj in ("gate", "up", "down"):
        add_linear(rules, ("mlp", proj), f"{base}.mlp.{proj}_proj", config.mlp_bias)
    return rules


def top_rules(config, lm_head: bool) -> Rules:
    """Embedding, final norm and (untied) LM head."""
    rules: Rules = [
        (("embed", "embedding"), vector("{prefix}embed_tokens.weight")),
        (("final_norm", "scale"), vector("{prefix}norm.weight")),
    ]
    if lm_head and not config.tie_word_embeddings:
        rules.append((("lm_head",), linear("lm_head.weight")))
    return rules


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
