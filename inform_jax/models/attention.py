"""Causal self-attention with grouped-query heads, RoPE, padding masks and optional sliding windows.

Self-attention (no KV cache) goes through `self_attention`, which runs the backend `model.attention_impl`
names (see `inform_jax.models.attention_backends`): a fused kernel where the platform has one (cuDNN flash
attention on GPU, Pallas splash attention on TPU), a causal attention that skips fully masked blocks on the
CPU, or the plain float32 einsum. Cached attention (prefill and decoding) always takes the einsum path.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from inform_jax.models.attention_backends import choose_backend, cpu_block, current_platform, rows_right_padded
from inform_jax.models.config import DecoderConfig
from inform_jax.models.layers import Linear
from inform_jax.models.rope import apply_rope

_MASKED = float(jnp.finfo(jnp.float32).min)


class SelfAttentionMask(NamedTuple):
    """What a query may see in self-attention, kept structured so a fused kernel can take it without a dense mask.

    positions: [B, T] int token positions; key_valid: [B, T] bool (real tokens); window: int or traced int
    scalar, 0 = unlimited. `dense()` is the [B, 1, T, T] bool mask of `make_attention_mask`.
    """

    positions: jax.Array
    key_valid: jax.Array
    window: jax.Array | int

    def dense(self) -> jax.Array:
        return make_attention_mask(self.positions, self.key_valid, self.window)


def make_attention_mask(positions: jnp.ndarray, key_valid: jnp.ndarray, window, query_index=None) -> jnp.ndarray:
    """Which keys each query may see: causal, non-pad keys, and within `window` when window > 0.

    positions: [B, T] int (token positions; pads may hold anything); key_valid: [B, T] bool;
    window: int or traced int scalar (0 = unlimited); query_index: None (every position queries) or [B] int (one
    query per row, without building the [T, T] square). Returns [B, 1, Q, T] bool (query, key), Q = T or 1.
    Causality uses array indices, so it holds for left and right padding alike.
    """
    keys = jnp.arange(positions.shape[1])
    if query_index is None:
        queries, query_positions = keys[None, :], positions  # [1, T], [B, T]
    else:
        queries, query_positions = query_index[:, None], take_positions(positions, query_index)  # [B, 1] each
    causal = queries[:, :, None] >= keys[None, None, :]
    allowed = causal & key_valid[:, None, :]
    distance = query_positions[:, :, None] - positions[:, None, :]
    in_window = jnp.where(window > 0, distance < window, True)
    return (allowed & in_window)[:, None]


def make_cache_attention_mask(query_slots: jnp.ndarray, key_valid: jnp.ndarray, window) -> jnp.ndarray:
    """Mask for queries at cache slots `query_slots` [T] over keys in all slots; key_valid: [B, S] bool.

    A query sees valid keys at slots up to its own and, when window > 0, fewer than `window` slots back
    (real tokens of a row occupy consecutive slots, so slot distance is position distance).
    Returns [B, 1, T, S] bool.
    """
    key_slots = jnp.arange(key_valid.shape[1])
    distance = query_slots[:, None] - key_slots[None, :]
    allowed = (distance >= 0) & jnp.where(window > 0, distance < window, True)
    return (allowed[None] & key_valid[:, None, :])[:, None]


def dot_product_attention(q, k, v, mask, *, impl: str = "einsum"):
    """Grouped-query attention under a dense mask. q: [B, T, Hq, D]; k, v: [B, S, Hkv, D]; mask: [B, 1, T, S]
    -> [B, T, Hq, D].

    "einsum" computes logits and softmax in float32 (as transformers' eager path does); "jax" calls
    `jax.nn.dot_product_attention` with its default (XLA) implementation.
    """
    if impl == "jax":
        return jax.nn.dot_product_attention(q, k, v, mask=mask)
    return head_major_attention(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), mask)


def self_attention(q, k, v, mask: SelfAttentionMask, *, impl: str = "auto", windowed: bool = False):
    """Causal grouped-query self-attention by the backend `impl` resolves to for this shape and platform.

    q: [B, T, Hq, D]; k, v: [B, T, Hkv, D]; mask: the rows' positions and valid keys -> [B, T, Hq, D].
    windowed: the model has sliding-window layers (the fused kernels here take no per-layer window).
    Outputs at pad query positions are finite but backend-specific: read only real tokens' outputs.
    """
    platform = current_platform()
    backend = choose_backend(
        impl, q.shape, k.shape, q.dtype, windowed=windowed, right_padded=rows_right_padded(), platform=platform
    )
    if backend == "cudnn":
        lengths = jnp.sum(mask.key_valid, axis=1, dtype=jnp.int32)
        return jax.nn.dot_product_attention(
            q, k, v, is_causal=True, query_seq_lengths=lengths, key_value_seq_lengths=lengths, implementation="cudnn"
        )
    if backend == "splash":
        from inform_jax.models.splash import splash_attention  # Pallas: imported only where it runs

        return splash_attention(q, k, v, mask.key_valid, interpret=platform != "tpu")
    if backend == "blocked":
        return blocked_causal_attention(q, k, v, mask.dense())
    return dot_product_attention(q, k, v, mask.dense(), impl=backend)


def blocked_causal_attention(q, k, v, mask, *, block: int | None = None):
    """Causal attention that computes no fully masked block: query rows [s, s + block) see keys [0, s + block).

    q: [B, T, Hq, D]; k, v: [B, T, Hkv, D]; mask: [B, 1, T, T] (causal, padding, windows) -> [B, T, Hq, D].
    Exactly `head_major_attention` for each block of queries (the keys it leaves out are masked for every one of
    them), so results equal the full einsum's. Skipping the upper triangle halves the work at long T: the CPU's
    fused kernels (PyTorch's SDPA) do the same, and XLA's CPU backend has no fused attention of its own.
    """
    t = q.shape[1]
    block = block or cpu_block(t)
    k_heads, v_heads = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, Hkv, T, D]
    outs = []
    for start in range(0, t, block):
        end = min(start + block, t)
        outs.append(
            head_major_attention(q[:, start:end], k_heads[:, :, :end], v_heads[:, :, :end], mask[:, :, start:end, :end])
        )
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def head_major_attention(q, k, v, mask, *, keys_transposed: bool = False):
    """Grouped-query attention over head-major keys and values, softmax in float32.

    q: [B, T, Hq, D]; k: [B, Hkv, S, D], or [B, Hkv, D, S] with `keys_transposed`; v: [B, Hkv, S, D];
    mask: [B, 1, T, S] -> [B, T, Hq, D]. With (batch, head) leading and each operand's contracted axis where
    a matmul reads it, both products are plain batched matmuls: the KV cache is stored this way so that a
    decode step reads it as is, instead of transposing every layer's cache on every step.
    """
    b, t, hq, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    # A group's G query heads and the T positions form one axis of G * T rows: each product then has a single
    # free axis per operand, and the backward pass's gradients contract one axis (XLA's CPU backend runs a
    # contraction over two axes, here (group, position), as a much slower loop).
    q = q.reshape(b, t, hkv, g, d).transpose(0, 2, 3, 1, 4).reshape(b, hkv, g * t, d)  # [B, Hkv, G*T, D]
    spec = "bkqd,bkds->bkqs" if keys_transposed else "bkqd,bksd->bkqs"
    # The scale goes on q ([.., D] wide), not on the logits ([.., S] wide): one pass less over the largest array.
    logits = jnp.einsum(spec, q * jnp.asarray(d**-0.5, q.dtype), k, preferred_element_type=jnp.float32)
    s = logits.shape[-1]
    allowed = jnp.broadcast_to(mask[:, :, None], (b, mask.shape[1], g, t, s)).reshape(b, mask.shape[1], g * t, s)
    logits = jnp.where(allowed, logits, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, v).reshape(b, hkv, g, t, d)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, hq, d)


def take_positions(x: jax.Array, index: jax.Array) -> jax.Array:
    """Each row's entry at one position: x [B, T, ...], index [B] int -> [B, 1, ...]."""
    return jnp.take_along_axis(x, index.reshape(-1, *([1] * (x.ndim - 1))), axis=1)


class Attention(nnx.Module):
    """Multi-head attention with separate q/k/v projections (GPT-NeoX's fused qkv is split on load)."""

    def __init__(self, config: DecoderConfig, *, rngs: nnx.Rngs):
        c = config
        d, hd = c.hidden_size, c.resolved_head_dim
        kw = dict(dtype=c.dtype, param_dtype=c.param_dtype, std=c.initializer_range, rngs=rngs)
        self.q = Linear(d, c.num_heads * hd, axes=("embed", "heads"), use_bias=c.qkv_bias, **kw)
        self.k = Linear(d, c.num_kv_heads * hd, axes=("embed", "kv_heads"), use_bias=c.qkv_bias, **kw)
        self.v = Linear(d, c.num_kv_heads * hd, axes=("embed", "kv_heads"), use_bias=c.qkv_bias, **kw)
        self.o = Linear(c.num_heads * hd, d, axes=("heads", "embed"), use_bias=c.o_bias, **kw)
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, hd
        self.impl = c.attention_impl
        self.windowed = any(w > 0 for w in c.layer_windows)

    def __call__(self, x, cos, sin, mask, kv=None, index=None, layer=None):
        """x: [B, T, D]; cos, sin: [B, T, R] -> [B, T, D].

        Without a cache, mask is a `SelfAttentionMask` (run by the backend `model.attention_impl` chooses)
        or a dense [B, 1, T, T] bool mask (the einsum or "jax" path). With `kv` = (k, v) caches, this
        layer's (k [B, Hkv, hd, S], v [B, Hkv, S, hd]) or, with `layer`, every layer's stacked ([L, ...],
        scanned layers), the new keys and values are written in place at slots [index, index + T) (of entry
        `layer`), attention runs over the S slots (mask [B, 1, T, S]) and the result is (output, (k, v))
        with the updated caches. Writing in place (rather than slicing a layer out and stacking the layers
        back) keeps a decode step from copying the cache, and the layouts from transposing it. Cached
        attention always takes the float32 einsum path: a decode step's single query has nothing for a
        fused kernel to fuse.
        """
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is not None:
            k_cache, v_cache = kv
            zero, index = jnp.zeros((), jnp.int32), jnp.asarray(index, jnp.int32)
            new_k = k.transpose(0, 2, 3, 1).astype(k_cache.dtype)  # [B, Hkv, hd, T]
            new_v = jnp.swapaxes(v, 1, 2).astype(v_cache.dtype)  # [B, Hkv, T, hd]
            if layer is None:  # this layer's own caches
                k_cache = jax.lax.dynamic_update_slice(k_cache, new_k, (zero, zero, zero, index))
                v_cache = jax.lax.dynamic_update_slice(v_cache, new_v, (zero, zero, index, zero))
                k, v = k_cache, v_cache
            else:  # entry `layer` of the stacked caches (scanned layers)
                layer = jnp.asarray(layer, jnp.int32)
                k_cache = jax.lax.dynamic_update_slice(k_cache, new_k[None], (layer, zero, zero, zero, index))
                v_cache = jax.lax.dynamic_update_slice(v_cache, new_v[None], (layer, zero, zero, index, zero))
                k = jax.lax.dynamic_index_in_dim(k_cache, layer, axis=0, keepdims=False)
                v = jax.lax.dynamic_index_in_dim(v_cache, layer, axis=0, keepdims=False)
            out = head_major_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, keys_transposed=True)
        elif isinstance(mask, SelfAttentionMask):
            out = self_attention(q, k, v, mask, impl=self.impl, windowed=self.windowed)
        else:
            out = dot_product_attention(q, k, v, mask, impl="jax" if self.impl == "jax" else "einsum")
        out = self.o(out.reshape(b, t, self.num_heads * self.head_dim))
        return out if kv is None else (out, (k_cache, v_cache))

    def at_positions(self, x, cos, sin, mask: SelfAttentionMask, index):
        """The output of `__call__` at one query position per row, computing no other query's output.

        x: [B, T, D] (every position gives keys and values); cos, sin: [B, T, R]; index: [B] int -> [B, 1, D].
        Where only one position's output is read (a reward model's last block), this spares the query and
        output projections and the attention of every other position. Runs the float32 einsum: one query
        per row leaves a fused kernel nothing to fuse.
        """
        b, t, _ = x.shape
        q = self.q(take_positions(x, index)).reshape(b, 1, self.num_heads, self.head_dim)
        k = self.k(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q = apply_rope(q, take_positions(cos, index), take_positions(sin, index))
        k = apply_rope(k, cos, sin)
        rows = make_attention_mask(mask.positions, mask.key_valid, mask.window, query_index=index)  # [B, 1, 1, T]
        out = head_major_attention(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), rows)
        return self.o(out.reshape(b, 1, self.num_heads * self.head_dim))
