"""Rotary position embeddings (RoPE): inverse frequencies per scaling rule, and their application.

Matches transformers' `rotate_half` convention: the rotary part of each head is split into two halves
that are rotated as (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin); with partial rotary (GPT-NeoX's
`rotary_pct`) only the first `rotary_dim` features of each head rotate.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from inform_jax.models.config import DecoderConfig


def inverse_frequencies(config: DecoderConfig) -> np.ndarray:
    """Inverse frequencies for the config's RoPE type. Returns [rotary_dim // 2] float32."""
    dim = config.rotary_dim
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    scaling = config.rope_scaling_dict
    if config.rope_type == "default":
        return inv_freq.astype(np.float32)
    if config.rope_type == "linear":
        return (inv_freq / scaling["factor"]).astype(np.float32)
    if config.rope_type == "llama3":
        return _llama3_inverse_frequencies(inv_freq, **scaling)
    raise AssertionError(config.rope_type)  # refused in DecoderConfig


def _llama3_inverse_frequencies(
    inv_freq: np.ndarray,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: int,
    **_,
) -> np.ndarray:
    """Llama 3.1 scaling: long wavelengths divided by `factor`, short ones kept, a smooth blend between."""
    low_freq_wavelen = original_max_position_embeddings / low_freq_factor
    high_freq_wavelen = original_max_position_embeddings / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_tables(positions: jnp.ndarray, inv_freq) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin tables. positions: [B, T] int -> ([B, T, rotary_dim], [B, T, rotary_dim]) float32."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)[None, None, :]
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate the first `rotary_dim` features of every head. x: [B, T, H, D]; cos, sin: [B, T, R], R <= D."""
    rotary_dim = cos.shape[-1]
    x32 = x.astype(jnp.float32)
    rot, rest = x32[..., :rotary_dim], x32[..., rotary_dim:]
    half = rotary_dim // 2
    rotated_half = jnp.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
    rot = rot * cos[:, :, None, :] + rotated_half * sin[:, :, None, :]
    return jnp.concatenate([rot, rest], axis=-1).astype(x.dtype)
