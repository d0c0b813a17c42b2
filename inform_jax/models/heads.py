"""Reward heads read at the last non-pad token's final-norm hidden state.

- `ScalarHead`: the standard reward model, Linear(hidden, 1, no bias).
- `IBHead`: InfoRM's information bottleneck. Linear(hidden, 2 * latent, no bias) -> mean, logvar (no
  activation); in training the latent is sampled `z = mean + exp(logvar / 2) * eps`, in evaluation and RL
  it is the mean; the reward is decoded from z by Linear(latent, 1, no bias) or a gated MLP
  `down(act(gate(z)) * up(z))` with hidden 4 * latent (the authors' release).
- `OdinHeads`: ODIN's quality and length heads; the quality head is the reward used in RL.

Heads compute in float32 whatever the backbone's dtype: they are tiny and the latent KL is sensitive.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from inform_jax.losses import reparameterize
from inform_jax.models.layers import Linear


class HeadOutput(NamedTuple):
    """reward: [B]; latent_mean, latent_logvar, latent: [B, Z] for IB heads (None otherwise);
    length_reward: [B] for ODIN (the length head; `reward` is the quality head)."""

    reward: jax.Array
    latent_mean: jax.Array | None = None
    latent_logvar: jax.Array | None = None
    latent: jax.Array | None = None
    length_reward: jax.Array | None = None


def _linear(n_in, n_out, axes, std, rngs):
    return Linear(
        n_in, n_out, axes=axes, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32, std=std, rngs=rngs
    )


class ScalarHead(nnx.Module):
    def __init__(self, hidden_size: int, *, std: float = 0.02, rngs: nnx.Rngs):
        self.score = _linear(hidden_size, 1, ("embed", None), std, rngs)

    def __call__(self, pooled, *, key=None) -> HeadOutput:
        """pooled: [B, D] -> HeadOutput(reward [B])."""
        return HeadOutput(reward=self.score(pooled.astype(jnp.float32))[:, 0])


class GatedDecoder(nnx.Module):
    """down(silu(gate(z)) * up(z)) with hidden 4 * latent. z: [B, Z] -> [B, 1]."""

    def __init__(self, latent_dim: int, *, std: float, rngs: nnx.Rngs):
        hidden = 4 * latent_dim
        self.gate = _linear(latent_dim, hidden, (None, None), std, rngs)
        self.up = _linear(latent_dim, hidden, (None, None), std, rngs)
        self.down = _linear(hidden, 1, (None, None), std, rngs)

    def __call__(self, z):
        return self.down(jax.nn.silu(self.gate(z)) * self.up(z))


class IBHead(nnx.Module):
    def __init__(
        self, hidden_size: int, latent_dim: int = 128, *, decoder: str = "linear", std: float = 0.02, rngs: nnx.Rngs
    ):
        if decoder not in ("linear", "gated"):
            raise ValueError(f"IB decoder must be 'linear' or 'gated', got {decoder!r}")
        self.encoder = _linear(hidden_size, 2 * latent_dim, ("embed", None), std, rngs)
        self.decoder = (
            _linear(latent_dim, 1, (None, None), std, rngs)
            if decoder == "linear"
            else GatedDecoder(latent_dim, std=std, rngs=rngs)
        )
        self.latent_dim = latent_dim

    def __call__(self, pooled, *, key=None) -> HeadOutput:
        """pooled: [B, D]; key: PRNG key to sample the latent (training) or None for the mean (evaluation)."""
        mean, logvar = jnp.split(self.encoder(pooled.astype(jnp.float32)), 2, axis=-1)
        z = mean if key is None else reparameterize(key, mean, logvar)
        return HeadOutput(reward=self.decoder(z)[:, 0], latent_mean=mean, latent_logvar=logvar, latent=z)


class OdinHeads(nnx.Module):
    """Two linear heads on the same features: quality (the RL reward) and length."""

    def __init__(self, hidden_size: int, *, std: float = 0.02, rngs: nnx.Rngs):
        self.quality = _linear(hidden_size, 1, ("embed", None), std, rngs)
        self.length = _linear(hidden_size, 1, ("embed", None), std, rngs)

    def __call__(self, pooled, *, key=None) -> HeadOutput:
        x = pooled.astype(jnp.float32)
        return HeadOutput(reward=self.quality(x)[:, 0], length_reward=self.length(x)[:, 0])

    def head_weights(self) -> tuple[jax.Array, jax.Array]:
        """(W_quality [D], W_length [D]) for ODIN's orthogonality term."""
        return self.quality.kernel[...][:, 0], self.length.kernel[...][:, 0]
