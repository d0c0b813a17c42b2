"""Jitted k-means (greedy k-means++ init, Lloyd iterations, restarts in one program) in pure jax.numpy.

Used as the default clusterer for CSI (docs/reference.md section 2): cluster RLHF outputs in the IB latent space,
then measure each centroid's distance to the nearest SFT output.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans`.

    centroids: [k, D] float32. labels: [N] int32 index of the assigned centroid.
    inertia: scalar float32, sum of squared distances of points to their assigned centroid.
    iterations_run: scalar int32, Lloyd iterations run by the returned (best) restart.
    """

    centroids: jax.Array
    labels: jax.Array
    inertia: jax.Array
    iterations_run: jax.Array


def _sq_dists(x: jax.Array, x_sq: jax.Array, c: jax.Array) -> jax.Array:
    """Squared Euclidean distances [N, M] between x [N, D] (with row norms x_sq [N]) and c [M, D]."""
    # HIGHEST precision: GPUs/TPUs default to TF32/bf16 matmuls, which wreck the expanded-form distances.
    cross = jnp.matmul(x, c.T, precision=jax.lax.Precision.HIGHEST)
    c_sq = jnp.sum(c * c, axis=-1)
    # The expanded form can go slightly negative from cancellation; distances are >= 0.
    return jnp.maximum(x_sq[:, None] - 2.0 * cross + c_sq[None, :], 0.0)


def _kmeanspp_init(key: jax.Array, x: jax.Array, x_sq: jax.Array, k: int, local_trials: int) -> jax.Array:
    """Greedy k-means++ seeding; returns centroids [k, D] chosen among the rows of x [N, D].

    Each step samples ``local_trials`` candidates proportional to the current min squared distance and keeps the
    one that most reduces the potential (sum of min squared distances), as scikit-learn does.
    """
    n = x.shape[0]
    key0, key_loop = jax.random.split(key)
    first = jax.random.randint(key0, (), 0, n)
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    min_d = _sq_dists(x, x_sq, x[first][None, :])[:, 0]

    def step(i, carry):
        centroids, min_d = carry
        total = jnp.sum(min_d)
        # All points already sit on a centroid (duplicates): fall back to uniform sampling instead of 0/0.
        p = jnp.where(total > 0, min_d / jnp.where(total > 0, total, 1.0), 1.0 / n)
        cand = jax.random.choice(jax.random.fold_in(key_loop, i), n, shape=(local_trials,), replace=True, p=p)
        cand_d = jnp.minimum(min_d[None, :], _sq_dists(x, x_sq, x[cand]).T)  # [T, N]
        best = jnp.argmin(jnp.sum(cand_d, axis=1))
        return centroids.at[i].set(x[cand[best]]), cand_d[best]

    centroids, _ = jax.lax.fori_loop(1, k, step, (centroids, min_d))
    return centroids


def _assign(x: jax.Array, x_sq: jax.Array, centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Labels [N] int32 and min squared distances [N] of x [N, D] to centroids [k, D]."""
    d = _sq_dists(x, x_sq, centroids)
    return jnp.argmin(d, axis=1).astype(jnp.int32), jnp.min(d, axis=1)


def _lloyd(x: jax.Array, centroids: jax.Array, iterations: int, tol: float) -> KMeansResult:
    """Lloyd iterations from initial centroids [k, D] on x [N, D] until shift <= tol or ``iterations`` steps.

    Shift is the sum over centroids of the squared move. An empty cluster is relocated to the point farthest from
    its current centroid (the j-th empty cluster takes the j-th largest per-point min distance), so centroids never
    become NaN and, when x has at least k distinct rows, every cluster ends non-empty.
    """
    k = centroids.shape[0]
    x_sq = jnp.sum(x * x, axis=-1)

    def cond(state):
        i, _, shift = state
        return (i < iterations) & (shift > tol)

    def body(state):
        i, c, _ = state
        labels, min_d = _assign(x, x_sq, c)
        sums = jax.ops.segment_sum(x, labels, num_segments=k)
        counts = jax.ops.segment_sum(jnp.ones_like(min_d), labels, num_segments=k)
        new_c = sums / jnp.maximum(counts, 1.0)[:, None]
        empty = counts == 0
        # Distinct farthest points for distinct empty clusters; deterministic (no extra randomness).
        far_idx = jax.lax.top_k(min_d, k)[1]
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
        new_c = jnp.where(empty[:, None], x[far_idx[rank]], new_c)
        shift = jnp.sum((new_c - c) ** 2)
        return i + 1, new_c, shift

    i, c, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), centroids, jnp.float32(jnp.inf)))
    # Final E-step so labels/inertia are consistent with the returned centroids.
    labels, min_d = _assign(x, x_sq, c)
    return KMeansResult(c, labels, jnp.sum(min_d), i)


@functools.partial(jax.jit, static_argnames=("k", "iterations", "restarts", "local_trials"))
def _kmeans_jit(
    key: jax.Array, x: jax.Array, k: int, iterations: int, restarts: int, tol: float, local_trials: int
) -> KMeansResult:
    x_sq = jnp.sum(x * x, axis=-1)
    tol_abs = tol * jnp.mean(jnp.var(x, axis=0))  # scale-free, as scikit-learn's tol

    def one_run(run_key):
        init = _kmeanspp_init(run_key, x, x_sq, k, local_trials)
        return _lloyd(x, init, iterations, tol_abs)

    # One restart after another (lax.map), not vmapped: a vmapped while_loop runs every restart for as many
    # iterations as the slowest one needs, so a single slow restart would cost restarts x its iterations.
    runs = jax.lax.map(one_run, jax.random.split(key, restarts))
    best = jnp.argmin(runs.inertia)
    return jax.tree.map(lambda a: a[best], runs)


def kmeans(
    key: jax.Array,
    x,
    k: int,
    *,
    iterations: int = 100,
    restarts: int = 4,
    tol: float = 1e-4,
    local_trials: int | None = None,
) -> KMeansResult:
    """Cluster x [N, D] into k clusters; returns the lowest-inertia of ``restarts`` k-means++/Lloyd runs.

    Args:
      key: PRNG key; split into one key per restart.
      x: [N, D] array-like, cast to float32. Must be finite, with 1 <= k <= N. A jax.Array sharded over its rows
        (a mesh's data axis) is clustered in place: the distances and centroid sums run sharded under jit.
      k: number of clusters (static).
      iterations: max Lloyd iterations per restart (static).
      restarts: independent k-means++ initialisations, run one after another in the jitted program (static).
      tol: relative tolerance, scikit-learn's rule: a restart stops when the sum of squared centroid moves in one
        iteration is <= tol x the mean per-feature variance of x (0: run until the centroids stop moving or for
        ``iterations``).
      local_trials: k-means++ candidates per seeding step (static); default ``2 + int(log(k))``.

    Returns:
      KMeansResult(centroids [k, D], labels [N] int32, inertia scalar, iterations_run scalar).

    Raises:
      ValueError: for non-2-D or empty x, non-finite values, k < 1, k > N, or non-positive iterations/restarts.
    """
    # Validate before jit: inside it these would be silent garbage (NaN centroids, out-of-range top_k). A
    # jax.Array stays where it is (e.g. sharded over a mesh's data axis): the check runs as a jax reduction.
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"kmeans expects 2-D input [N, D], got shape {x.shape}")
    n = x.shape[0]
    if n == 0 or x.shape[1] == 0:
        raise ValueError(f"kmeans got empty input of shape {x.shape}")
    if not bool(jnp.all(jnp.isfinite(x)) if isinstance(x, jax.Array) else np.all(np.isfinite(x))):
        raise ValueError("kmeans input contains NaN or inf")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of points N={n}")
    if iterations < 1 or restarts < 1:
        raise ValueError(f"iterations and restarts must be >= 1, got {iterations} and {restarts}")
    if local_trials is None:
        local_trials = 2 + int(math.log(k))
    if local_trials < 1:
        raise ValueError(f"local_trials must be >= 1, got {local_trials}")
    return _kmeans_jit(
        key,
        x.astype(jnp.float32) if isinstance(x, jax.Array) else jnp.asarray(x, jnp.float32),
        k=k,
        iterations=int(iterations),
        restarts=int(restarts),
        tol=jnp.float32(tol),
        local_trials=int(local_trials),
    )
