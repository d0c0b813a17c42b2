"""Jitted DBSCAN (Euclidean) that reproduces scikit-learn's labels exactly, plus the k-distance knee rule for eps.

An alternative to :mod:`inform_jax.detect.kmeans` for CSI (docs/reference.md section 2) when the number of clusters is
unknown and outlying RLHF outputs should be left as noise instead of being forced into a cluster.

The pairwise distances, the core mask and the connected components of core points run in one jitted program on an
N x N adjacency matrix, so memory is O(N^2) and inputs are capped at ``MAX_POINTS`` points.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inform_jax.detect.kmeans import _sq_dists

# The N x N float32 distance matrix alone is 10 GB at this size.
MAX_POINTS = 50_000
# Up to this many N*N*D elements the distances use the direct difference form (exact for small-integer data, closest
# to scikit-learn's float64 results near eps); above it the matmul form, whose cost is dominated by one GEMM.
_DIRECT_FORM_MAX_ELEMENTS = 50_000_000
# Returned by knee_eps when every k-distance is 0; positive so it is a valid eps, and its float32 square is normal.
_TINY_EPS = 1e-12


class DBSCANResult(NamedTuple):
    """Result of :func:`dbscan`.

    labels: [N] int32 numpy array, cluster ids 0..num_clusters-1 and -1 for noise (identical to scikit-learn's
    ``DBSCAN.labels_``). core: [N] bool numpy array, True for core points. num_clusters: int, number of clusters.
    """

    labels: np.ndarray
    core: np.ndarray
    num_clusters: int


def _pairwise_sq_dists(x: jax.Array, direct: bool) -> jax.Array:
    """Squared Euclidean distances [N, N] float32 between the rows of x [N, D]; the diagonal is exactly 0."""
    if direct:
        # XLA fuses the difference, square and sum, so the [N, N, D] intermediate is not materialised.
        return jnp.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    # Centring leaves distances unchanged but shrinks the row norms, and with them the cancellation error of the
    # expanded form ||a||^2 - 2 a.b + ||b||^2.
    xc = x - jnp.mean(x, axis=0)
    d2 = _sq_dists(xc, jnp.sum(xc * xc, axis=-1), xc)
    # Every point must be in its own neighbourhood even when rounding leaves a self-distance above eps^2.
    return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, d2)


@functools.partial(jax.jit, static_argnames=("direct",))
def _dbscan_jit(x: jax.Array, eps_sq: jax.Array, min_samples: jax.Array, direct: bool):
    """Labels [N] int32, core mask [N] bool and cluster count (scalar int32) for x [N, D] float32."""
    n = x.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    adj = _pairwise_sq_dists(x, direct) <= eps_sq  # [N, N]; includes self, like scikit-learn's radius query
    core = jnp.sum(adj, axis=1, dtype=jnp.int32) >= min_samples
    core_adj = adj & core[None, :]  # edges into core points only; row i still lists all core neighbours of i

    # Connected components of the core-core graph by min-label propagation. Invariant: a core point's label is the
    # index of a core point in its component and is <= its own index, so lab[lab] (pointer jumping) stays in the
    # component and only lowers labels; the fixed point is the smallest core index of each component.
    def propagate(lab):
        nb_min = jnp.min(jnp.where(core_adj, lab[None, :], n), axis=1)
        new = jnp.where(core, jnp.minimum(lab, nb_min), n)
        return jnp.where(core, new[jnp.minimum(new, n - 1)], n)

    def cond(state):
        return state[1]

    def body(state):
        lab, _ = state
        new = propagate(lab)
        return new, jnp.any(new != lab)

    lab0 = jnp.where(core, idx, n)
    lab, _ = jax.lax.while_loop(cond, body, (lab0, jnp.bool_(True)))

    # Every point (core or border) takes the smallest component root among its core neighbours. For a border point
    # this is scikit-learn's rule: its loop expands clusters in order of their smallest core index, so the earliest
    # cluster reaching the point claims it. n means "no core neighbour", i.e. noise.
    root = jnp.min(jnp.where(core_adj, lab[None, :], n), axis=1)
    # Renumber roots 0..C-1 in increasing index order, matching scikit-learn's cluster numbering.
    is_root = core & (lab == idx)
    rank = jnp.cumsum(is_root, dtype=jnp.int32) - 1
    labels = jnp.where(root < n, rank[jnp.minimum(root, n - 1)], -1).astype(jnp.int32)
    return labels, core, jnp.sum(is_root, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnames=("k", "direct"))
def _kdist_jit(x: jax.Array, k: int, direct: bool) -> jax.Array:
    """Distance [N] float32 from each row of x [N, D] to its k-th nearest row, the row itself counting as the first."""
    d2 = _pairwise_sq_dists(x, direct)
    kth = -jax.lax.top_k(-d2, k)[0][:, k - 1]
    return jnp.sqrt(kth)


def _validate_x(x, name: str) -> np.ndarray:
    """x as a float32 [N, D] numpy array, after the checks shared by dbscan and knee_eps."""
    x_np = np.asarray(x)
    if x_np.ndim != 2:
        raise ValueError(f"{name} expects 2-D input x [N, D], got shape {x_np.shape}")
    if x_np.shape[0] == 0 or x_np.shape[1] == 0:
        raise ValueError(f"{name} got empty input x of shape {x_np.shape}")
    if x_np.shape[0] > MAX_POINTS:
        raise ValueError(
            f"{name} got x with N={x_np.shape[0]} points > {MAX_POINTS}: DBSCAN here builds an N x N distance "
            "matrix; subsample x or use inform_jax.detect.kmeans instead"
        )
    if not np.all(np.isfinite(x_np)):
        raise ValueError(f"{name} input x contains NaN or inf")
    return x_np.astype(np.float32, copy=False)


def _use_direct(x: np.ndarray) -> bool:
    n, d = x.shape
    return n * n * d <= _DIRECT_FORM_MAX_ELEMENTS


def _validate_min_samples(min_samples) -> int:
    if int(min_samples) != min_samples or min_samples < 1:
        raise ValueError(f"min_samples must be an integer >= 1, got min_samples={min_samples}")
    return int(min_samples)


def dbscan(x, *, eps: float, min_samples: int = 5) -> DBSCANResult:
    """DBSCAN with the Euclidean metric; labels equal ``sklearn.cluster.DBSCAN(eps, min_samples).fit(x).labels_``.

    Semantics (scikit-learn's): the neighbourhood of a point is every point at distance <= eps, itself included; a
    point is core if its neighbourhood has >= min_samples points; clusters are the connected components of core
    points (core-core pairs within eps), numbered 0, 1, ... in increasing order of their smallest core-point index;
    a non-core point within eps of a core point is a border point and takes the smallest label among the clusters of
    those core points; every other point is noise (-1).

    Distances are computed in float32 (x is cast to float32) and compared as squared distance <= eps**2, while
    scikit-learn compares float64 distances. The two agree except for pairs whose distance is within float32
    rounding of eps; for N*N*D <= 5e7 the direct form sum((xi - xj)**2) is used, which is exact for data with
    small integer (or dyadic) coordinates, so exact ties such as grid points at distance eps match too. Larger
    inputs use the matmul (expanded) form, whose error grows with the spread of x.

    Args:
      x: [N, D] array-like (numpy or jax), finite, with 1 <= N <= 50_000.
      eps: neighbourhood radius, > 0.
      min_samples: neighbourhood size (self included) for a point to be core, >= 1.

    Returns:
      DBSCANResult(labels [N] int32 numpy, core [N] bool numpy, num_clusters int).

    Raises:
      ValueError: for non-2-D or empty x, NaN/inf in x, N > 50_000, eps <= 0 (or NaN), min_samples < 1.
    """
    x_np = _validate_x(x, "dbscan")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got eps={eps}")
    min_samples = _validate_min_samples(min_samples)
    # eps and min_samples are traced, so sweeping them reuses one compiled program per input shape.
    labels, core, num_clusters = _dbscan_jit(
        jnp.asarray(x_np),
        jnp.float32(float(eps) ** 2),
        jnp.int32(min(min_samples, np.iinfo(np.int32).max)),
        direct=_use_direct(x_np),
    )
    return DBSCANResult(np.asarray(labels, np.int32), np.asarray(core, bool), int(num_clusters))


def knee_eps(x, min_samples: int = 5) -> float:
    """Choose DBSCAN's eps for x [N, D] by the knee of the sorted k-distance curve, k = min_samples.

    Rule: the k-distance of a point is its distance to its min_samples-th nearest neighbour, the point itself
    counting as the first (scikit-learn's ``NearestNeighbors(n_neighbors=min_samples).kneighbors(x)`` last column).
    Sort the N k-distances ascending into y_0 <= ... <= y_{N-1}, and scale both axes to [0, 1]:
    u_i = i / (N - 1), v_i = (y_i - y_0) / (y_{N-1} - y_0). The knee is the point farthest from the straight line
    joining the first and last points, i.e. argmax_i |u_i - v_i| (first index on ties); return its k-distance y_i.
    If all k-distances are equal (N = 1 included) return that value, or 1e-12 when it is 0 (all points have at least
    min_samples exact duplicates) so the result is still a valid, positive eps.

    Distances are computed in float32 as in :func:`dbscan`.

    Args:
      x: [N, D] array-like, finite, with 1 <= N <= 50_000.
      min_samples: k of the k-distance, 1 <= min_samples <= N; use the value intended for :func:`dbscan`.

    Returns:
      The chosen eps as a Python float.

    Raises:
      ValueError: for non-2-D or empty x, NaN/inf in x, N > 50_000, min_samples < 1 or min_samples > N.
    """
    x_np = _validate_x(x, "knee_eps")
    min_samples = _validate_min_samples(min_samples)
    n = x_np.shape[0]
    if min_samples > n:
        raise ValueError(f"min_samples={min_samples} exceeds the number of points N={n}")
    kdist = np.asarray(_kdist_jit(jnp.asarray(x_np), k=min_samples, direct=_use_direct(x_np)), np.float64)
    # The knee itself is an O(N log N) scan of one curve; float64 on the host keeps the argmax stable.
    y = np.sort(kdist)
    if y[-1] == y[0]:
        return float(y[0]) if y[0] > 0 else _TINY_EPS
    u = np.arange(n, dtype=np.float64) / (n - 1)
    v = (y - y[0]) / (y[-1] - y[0])
    return float(y[int(np.argmax(np.abs(u - v)))])
