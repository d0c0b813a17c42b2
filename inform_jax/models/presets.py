"""Architectures of the papers' models (public Hugging Face configs), for random init and ahead-of-time plans.

Real weights load from local folders with `from_pretrained`; a preset gives the same architecture with
no files, e.g. to plan a Llama-3-8B run's memory on a TPU topology from any CPU machine.
"""

from __future__ import annotations

from inform_jax.models.config import DecoderConfig

_LLAMA = dict(model_type="llama", norm="rms", activation="silu", gated_mlp=True)
_PYTHIA = dict(
    model_type="gpt_neox", norm="layer", norm_eps=1e-5, activation="gelu", gated_mlp=False, qkv_bias=True,
    o_bias=True, mlp_bias=True, parallel_residual=True, partial_rotary_factor=0.25, max_position_embeddings=2048,
)  # fmt: skip


def _pythia(hidden, layers, heads, vocab=50304):
    return dict(_PYTHIA, vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_layers=layers,
                num_heads=heads, num_kv_heads=heads)  # fmt: skip


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
    "pythia-70m": _pythia(512, 6, 8),
    "pythia-160m": _pythia(768, 12, 12),
    "pythia-410m": _pythia(1024, 24, 16),
    "pythia-1.4b": _pythia(2048, 24, 16),
    "pythia-6.9b": _pythia(4096, 32, 32, vocab=50432),
}  # fmt: skip


def preset_config(name: str, **overrides) -> DecoderConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return DecoderConfig(**{**PRESETS[name], **overrides})
