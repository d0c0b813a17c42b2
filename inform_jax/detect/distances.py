"""Nearest-neighbour distances between two point sets, jitted and blocked so memory stays O(block * M).

CSI measures each RLHF cluster centroid's distance to the nearest SFT output; the per-sample version of the
same distance ranks individual responses as likely hacked (the detection AUROC).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def check_points(name: str, x, dim: int | None = None) -> np.ndarray:
    """x as a finite float32 [N, D] array with N >= 1; a ValueError naming ``name`` otherwise."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{name} contains NaN or inf (first at row {bad})")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[1]}, expected {dim}")
    return arr


def pairwise_sq_dists(x: jax.Array, y: jax.Array) -> jax.Array:
    """Squared Euclidean distances [N, M] between x [N, D] and y [M, D], float32, clamped at 0."""
    # HIGHEST: GPUs and TPUs default to TF32 / bf16 passes, which ruin the expanded form's cancellation.
    cross = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    d = jnp.sum(x * x, axis=1)[:, None] - 2.0 * cross + jnp.sum(y * y, axis=1)[None, :]
    return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames=("block",))
def _nearest(queries: jax.Array, refs: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
    n = queries.shape[0]
    pad = (-n) % block
    q = jnp.pad(queries, ((0, pad), (0, 0))).reshape(-1, block, queries.shape[1])

    def one_block(qb):
        d = pairwise_sq_dists(qb, refs)
        return jnp.min(d, axis=1), jnp.argmin(d, axis=1).astype(jnp.int32)

    d, idx = jax.lax.map(one_block, q)
    return jnp.sqrt(d.reshape(-1)[:n]), idx.reshape(-1)[:n]


def nearest_distances(queries, refs, *, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the Euclidean distance to the nearest reference point and that point's index.

    Args:
      queries: [N, D]. refs: [M, D] (same D).
      block: queries per jitted block (memory is O(block * M)).

    Returns:
      (distances [N] float32, indices [N] int32) as NumPy arrays.
    """
    queries = check_points("queries", queries)
    refs = check_points("refs", refs, dim=queries.shape[1])
    d, idx = _nearest(jnp.asarray(queries), jnp.asarray(refs), block=int(min(block, queries.shape[0])))
    return np.asarray(d), np.asarray(idx)
