"""`inform-jax demo`: what one forward pass of our decoders gives, on tiny random models."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.losses import layer_energy
from inform_jax.models import CausalLM, DecoderConfig

TINY_MODELS = {
    "llama (GQA, RMSNorm, SwiGLU)": DecoderConfig(
        model_type="llama", vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=4, num_heads=8,
        num_kv_heads=2,
    ),
    "pythia (GPT-NeoX, parallel residual, 25% rotary)": DecoderConfig(
        model_type="gpt_neox", vocab_size=512, hidden_size=128, intermediate_size=512, num_layers=4, num_heads=8,
        num_kv_heads=8, norm="layer", norm_eps=1e-5, activation="gelu", gated_mlp=False, qkv_bias=True,
        o_bias=True, mlp_bias=True, parallel_residual=True, partial_rotary_factor=0.25,
    ),
}  # fmt: skip


def run_forward_example(seed: int = 0, batch: int = 4, length: int = 32) -> None:
    """Build each tiny model, run one jitted forward pass on a left-padded batch, print a summary."""
    rng = np.random.default_rng(seed)
    for name, config in TINY_MODELS.items():
        model = CausalLM(config.replace(scan_layers=True), rngs=nnx.Rngs(seed))
        ids = jnp.asarray(rng.integers(0, config.vocab_size, (batch, length)))
        lengths = rng.integers(length // 2, length + 1, batch)
        mask = jnp.asarray(np.arange(length)[None, :] >= (length - lengths)[:, None], jnp.int32)  # left padding
        forward = nnx.jit(lambda m, i, a: m(i, a))
        start = time.perf_counter()
        out = jax.block_until_ready(forward(model, ids, mask))
        elapsed = time.perf_counter() - start
        # Energy loss per layer (the EPPO paper's quantity): mean |h_in| - mean |h_out| over real tokens. [B, L]
        energy = np.asarray(layer_energy(out.residual_l1, config.hidden_size, mask))
        print(f"{name}: {config.num_layers} layers, width {config.hidden_size}")
        print(f"  logits {tuple(out.logits.shape)}, reward features at last token {tuple(out.pooled_hidden.shape)}")
        print(f"  energy loss per layer (sequence 0): {[round(float(e), 4) for e in energy[0]]}")
        print(f"  compiled + ran in {elapsed:.2f}s on {jax.devices()[0].platform}")
