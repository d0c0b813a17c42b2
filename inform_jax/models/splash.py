"""Causal grouped-query self-attention through the Pallas TPU splash attention kernel.

The kernel (`jax.experimental.pallas.ops.tpu.splash_attention`) computes attention block by block in VMEM with an
online softmax, skips the blocks the causal mask removes, and has its own backward kernels (a custom VJP), so the
[T, T] scores are never stored. It is a per-device kernel: under a mesh it runs inside `jax.shard_map` on each
device's rows and heads. On a platform other than TPU it runs in Pallas' interpret mode (tests only: slow).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from inform_jax.models.sharding import BATCH_AXES

# The kernel tiles the sequence in blocks of 128 lanes (NUM_LANES in the kernel): block sizes, hence sequence
# lengths, must be multiples of 128. Larger blocks amortize the per-block overhead; the largest that divides T is used.
# The head dim has no limit of its own (tiles span it whole): the forward and backward kernels compiled ahead of time
# for v5e at head dims 4, 8, 12, 16, 32, 64, 80, 96, 100, 128, 256 and 512. float16 does not compile (Mosaic: "Invalid
# vector type for load"; TPUs compute in bfloat16).
_LANES = 128
_BLOCKS = (512, 256, 128)
_DTYPES = ("float32", "bfloat16")


def splash_unsupported_reason(q_shape, k_shape, dtype) -> str | None:
    """None when the splash kernel runs self-attention of these shapes, else why not (for the fall-back log).

    q_shape: [B, T, Hq, D]; k_shape: [B, T, Hkv, D]; dtype: the dtype of q, k and v.
    """
    if len(q_shape) != 4 or len(k_shape) != 4:
        return f"expected q [B, T, Hq, D] and k [B, T, Hkv, D], got {tuple(q_shape)} and {tuple(k_shape)}"
    _, t, hq, d = q_shape
    _, s, hkv, dk = k_shape
    if s != t:
        return f"query length {t} differs from key length {s} (splash here is self-attention only)"
    if t % _LANES:
        return f"sequence length {t} is not a multiple of {_LANES}"
    if dk != d:
        return f"query head dim {d} differs from key head dim {dk}"
    if hq % hkv:
        return f"{hq} query heads are not a multiple of {hkv} key/value heads"
    if jnp.dtype(dtype).name not in _DTYPES:
        return f"dtype {jnp.dtype(dtype).name} is not one of {', '.join(_DTYPES)}"
    return None


def splash_attention(q, k, v, key_valid, *, interpret: bool = False):
    """Causal self-attention, grouped-query, padding as segments. Returns out [B, T, Hq, D] in q's dtype.

    q: [B, T, Hq, D]; k, v: [B, T, Hkv, D] (Hq a multiple of Hkv; query head h reads key/value head h // (Hq/Hkv));
    key_valid: [B, T] bool. Causality is over array indices; pad tokens are one segment and real tokens another,
    so a real query sees the real keys at or before it whether the row is left or right padded. A pad query sees
    pad keys at or before it (at least itself): its output is finite and meaningless. Scale 1/sqrt(D).
    Under a mesh in context (`jax.set_mesh`) the kernel runs per device in `jax.shard_map`: rows split over the
    data axes ("data", "fsdp") of size > 1 that divide B, heads over "tensor" when it divides Hq and Hkv.
    """
    reason = splash_unsupported_reason(q.shape, k.shape, q.dtype)
    if reason is not None:
        raise ValueError(f"splash attention cannot run this shape: {reason}")
    mesh = jax.sharding.get_abstract_mesh()
    run = functools.partial(_local_splash, interpret=interpret)
    if mesh.empty:
        return run(q, k, v, key_valid)
    b, _, hq, _ = q.shape
    hkv = k.shape[2]
    rows, size = [], 1
    for axis in BATCH_AXES:
        n = mesh.shape.get(axis, 1)
        if n > 1 and b % (size * n) == 0:
            rows.append(axis)
            size *= n
    rows = tuple(rows) or None
    tensor = mesh.shape.get("tensor", 1)
    heads = "tensor" if tensor > 1 and hq % tensor == 0 and hkv % tensor == 0 else None
    qkv_spec = PartitionSpec(rows, None, heads, None)
    # Every mesh axis is manual inside: an axis in no spec (e.g. "tensor" when it does not divide the heads) sees
    # its devices compute the same values, which the out spec declares replicated.
    return jax.shard_map(
        run,
        mesh=mesh,
        in_specs=(qkv_spec, qkv_spec, qkv_spec, PartitionSpec(rows, None)),
        out_specs=qkv_spec,
        check_vma=False,  # pallas_call does not annotate how its outputs vary over the mesh axes
    )(q, k, v, key_valid)


def _local_splash(q, k, v, key_valid, *, interpret: bool):
    """The kernel on one device's arrays: q [B, T, Hq, D], k, v [B, T, Hkv, D], key_valid [B, T] -> [B, T, Hq, D]."""
    _, t, hq, d = q.shape
    kernel = _kernel(hq, t, interpret)
    # The kernel takes head-major [H, T, D] per row and does not scale: the scale goes on q as in the reference.
    q = jnp.swapaxes(q * jnp.asarray(d**-0.5, q.dtype), 1, 2)
    k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    segments = key_valid.astype(jnp.int32)  # 1 real, 0 pad

    def one_row(q, k, v, segment):
        from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

        return kernel(q, k, v, segment_ids=SegmentIds(q=segment, kv=segment))

    out = jax.vmap(one_row)(q, k, v, segments)  # [B, Hq, T, D]
    return jnp.swapaxes(out, 1, 2)


def _kernel(num_heads: int, length: int, interpret: bool):
    """The splash kernel for `num_heads` query heads over length x length causal masks.

    Built afresh at each trace: its mask tables become the trace's constants. (A kernel cached across traces would
    have to hold them as concrete arrays on some device, which an ahead-of-time compile for a TPU topology from
    a CPU host has no device for.)
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    block = next(b for b in _BLOCKS if length % b == 0)
    sizes = sa.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    mask = sa.MultiHeadMask([sa.CausalMask((length, length)) for _ in range(num_heads)])
    return sa.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
