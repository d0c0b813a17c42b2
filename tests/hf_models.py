"""Tiny random Hugging Face checkpoints for parity tests (transformers' PyTorch classes, saved to disk)."""

from __future__ import annotations

import numpy as np
import torch
import transformers

VOCAB = 97
# A larger init than transformers' 0.02 so activations are O(1) and errors are not hidden by tiny values.
INIT = 0.2

VARIANTS = {
    "llama3-gqa": (
        "LlamaForCausalLM",
        transformers.LlamaConfig,
        dict(
            num_key_value_heads=2,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            },
        ),
    ),
    "llama2-tied-bias-linear-rope": (
        "LlamaForCausalLM",
        transformers.LlamaConfig,
        dict(
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
        ),
    ),
    "mistral-sliding-window": (
        "MistralForCausalLM",
        transformers.MistralConfig,
        dict(num_key_value_heads=1, sliding_window=4),
    ),
    "qwen2-qkv-bias": (
        "Qwen2ForCausalLM",
        transformers.Qwen2Config,
        dict(num_key_value_heads=2, use_sliding_window=True, sliding_window=5, max_window_layers=1),
    ),
    "pythia-parallel-partial-rotary": (
        "GPTNeoXForCausalLM",
        transformers.GPTNeoXConfig,
        dict(use_parallel_residual=True, rotary_pct=0.25),
    ),
    "pythia-sequential-full-rotary": (
        "GPTNeoXForCausalLM",
        transformers.GPTNeoXConfig,
        dict(use_parallel_residual=False, rotary_pct=1.0),
    ),
}


def make_hf_checkpoint(variant: str, path, *, hidden=64, layers=3, heads=4, seed=0):
    """Save a random `variant` model to `path`; returns the PyTorch model in eval mode (float32)."""
    class_name, config_class, extra = VARIANTS[variant]
    torch.manual_seed(seed)
    config = config_class(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden + 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=128,
        initializer_range=INIT,
        **extra,
    )
    model = getattr(transformers, class_name)(config).eval()
    with torch.no_grad():  # norms start at ones/zeros; perturb them so their weights are tested too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(path))
    return model


def random_batch(rng: np.random.Generator, batch=3, length=12, padding="left"):
    """Random ids [B, T] and a mask [B, T] with rows of different lengths padded on `padding` side."""
    ids = rng.integers(0, VOCAB, size=(batch, length))
    mask = np.ones((batch, length), np.int64)
    if padding != "none":
        for row, n_pad in enumerate(rng.integers(1, length // 2, size=batch - 1), start=1):
            if padding == "left":
                mask[row, :n_pad] = 0
            else:
                mask[row, length - n_pad :] = 0
    return ids, mask


def torch_forward(model, ids, mask):
    """Logits and hidden states from transformers: (logits [B,T,V], tuple of L+1 [B,T,D]) as NumPy."""
    with torch.no_grad():
        out = model(torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    return out.logits.float().numpy(), tuple(h.float().numpy() for h in out.hidden_states)


def rel_err(ours, ref, mask=None) -> float:
    """max |ours - ref| / max |ref| over the positions where mask is 1 (all when None)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if mask is not None:
        sel = np.asarray(mask).astype(bool)
        ours, ref = ours[sel], ref[sel]
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))
