"""Basic layers whose parameters carry logical sharding axes (metadata key `logical_axes`).

Kernels are stored [in, out] (transposed with respect to PyTorch's nn.Linear weight); the logical axis
names are mapped to mesh axes by `inform_jax.models.sharding`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def _normal(rngs: nnx.Rngs, shape, std: float, dtype):
    return (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


def _matmul_2d(x, w):
    """x [..., in] @ w [in, out] -> [..., out], as one [prod(...), in] x [in, out] matrix product.

    The leading axes are merged first (a free reshape of a contiguous array) because the backward pass's weight
    gradient then contracts a single axis: XLA's CPU backend runs the contraction over several axes (batch and
    sequence) of the un-merged form as a much slower loop (an MLP's forward + backward: 434 -> 296 ms).
    """
    lead = x.shape[:-1]
    return jnp.dot(x.reshape(-1, x.shape[-1]), w).reshape(*lead, w.shape[-1])


class Linear(nnx.Module):
    """y = x @ kernel (+ bias). x: [..., in] -> [..., out], computed in `dtype`."""

    def __init__(self, in_features, out_features, *, axes, use_bias, dtype, param_dtype, std, rngs):
        self.kernel = nnx.Param(_normal(rngs, (in_features, out_features), std, param_dtype), logical_axes=axes)
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype), logical_axes=axes[1:]) if use_bias else None
        self.dtype = dtype

    def __call__(self, x):
        y = _matmul_2d(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Embed(nnx.Module):
    """Token embedding table [vocab, embed]; `attend` gives tied output logits."""

    def __init__(self, vocab_size, features, *, dtype, param_dtype, std, rngs):
        self.embedding = nnx.Param(
            _normal(rngs, (vocab_size, features), std, param_dtype), logical_axes=("vocab", "embed")
        )
        self.dtype = dtype

    def __call__(self, ids):
        """ids: [B, T] int -> [B, T, embed]."""
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x):
        """x: [B, T, embed] -> [B, T, vocab] (logits with the embedding as output matrix)."""
        return _matmul_2d(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, normalized in float32 as transformers does. x: [..., D] -> [..., D]."""

    def __init__(self, features, *, eps, dtype, param_dtype):
        self.scale = nnx.Param(jnp.ones((features,), param_dtype), logical_axes=("norm",))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        # transformers casts back to the input dtype before multiplying by the weight.
        return self.scale[...].astype(self.dtype) * normed.astype(self.dtype)


class LayerNorm(nnx.Module):
    """Standard LayerNorm with scale and bias, statistics in float32. x: [..., D] -> [..., D]."""

    def __init__(self, features, *, eps, dtype, param_dtype):
        self.scale = nnx.Param(jnp.ones((features,), param_dtype), logical_axes=("norm",))
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype), logical_axes=("norm",))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        normed = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (normed * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(self.dtype)


def make_norm(kind: str, features: int, *, eps, dtype, param_dtype):
    if kind == "rms":
        return RMSNorm(features, eps=eps, dtype=dtype, param_dtype=param_dtype)
    if kind == "layer":
        return LayerNorm(features, eps=eps, dtype=dtype, param_dtype=param_dtype)
    raise ValueError(f"unknown norm {kind!r}")


ACTIVATIONS = {
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
