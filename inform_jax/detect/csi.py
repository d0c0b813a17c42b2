"""The Cluster Separation Index (InfoRM, docs/reference.md section 2) and the clustering choices around it.

CSI clusters the RLHF model's outputs in the reward model's latent space, then sums over clusters the
cluster size times the distance from its centroid to the nearest SFT output:

    CSI = sum_i |C_i| * min_s ||c_i - s||

Overoptimized (hacked) responses form clusters far from every SFT output, so CSI rises when they appear.
CSI is the paper's unnormalized sum, which grows with the number N of RLHF samples; ``csi_per_sample``
(CSI / N) is reported beside it for comparing sets of different sizes.

Clustering:

- ``"kmeans"`` (default): the jitted k-means of :mod:`inform_jax.detect.kmeans`. k is given, or chosen by a
  rule: ``"silhouette"`` (default) picks the k in ``k_range`` (clipped to [2, N - 1]) with the highest mean
  silhouette coefficient; ``"sqrt"`` uses k = round(sqrt(N / 2)) clipped to [2, N - 1]. Neither gives 1 or N.
- ``"dbscan"`` (the paper's choice; its parameters are not published): eps given, or set by the k-distance
  knee rule of :func:`inform_jax.detect.dbscan.knee_eps` on the RLHF points; ``min_samples`` given (5). DBSCAN
  noise points are outliers by definition, so each counts as a singleton cluster (centroid = the point);
  ``noise="drop"`` leaves them out instead, and the result counts them either way.

Projection: ``projection="tsne"`` first maps RLHF and SFT points jointly to 2-D with scikit-learn's t-SNE
(init "pca", min-max normalized to [0, 1], the authors' visualization) and clusters there; the default
clusters in the latent space itself.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inform_jax.detect.distances import check_points, nearest_distances, pairwise_sq_dists
from inform_jax.detect.kmeans import kmeans

CLUSTERINGS = ("kmeans", "dbscan")
K_RULES = ("silhouette", "sqrt")


class ClusterTable(NamedTuple):
    """Per-cluster CSI terms, C clusters: size [C] int, centroid [C, D], distance [C] (centroid to the nearest
    SFT output), nearest_sft [C] int (that output's row in the SFT set)."""

    size: np.ndarray
    centroid: np.ndarray
    distance: np.ndarray
    nearest_sft: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """JSON-ready rows, largest contribution first."""
        order = np.argsort(-(self.size * self.distance), kind="stable")
        return [
            {"cluster": int(i), "size": int(self.size[i]), "distance": float(self.distance[i]),
             "contribution": float(self.size[i] * self.distance[i]), "nearest_sft": int(self.nearest_sft[i])}
            for i in order
        ]  # fmt: skip


class CSIResult(NamedTuple):
    """csi: the paper's sum; csi_per_sample: csi / N; labels [N] cluster of each RLHF sample (-1: a dropped
    DBSCAN noise point); clusters: the per-cluster table; rlhf_points [N, D'] and sft_points [M, D'] are the
    points clustered (the 2-D t-SNE coordinates under ``projection="tsne"``); params: the clustering choices
    actually used (k, eps, rule, scores)."""

    csi: float
    csi_per_sample: float
    labels: np.ndarray
    clusters: ClusterTable
    rlhf_points: np.ndarray
    sft_points: np.ndarray
    params: dict[str, Any]


def csi_from_labels(rlhf, labels, sft) -> tuple[float, ClusterTable]:
    """CSI for a given clustering: rlhf [N, D], labels [N] int (>= 0 cluster ids; -1 rows are left out),
    sft [M, D]. Returns (csi, table), the table in increasing cluster id over the ids present."""
    rlhf = check_points("rlhf_latents", rlhf)
    sft = check_points("sft_latents", sft, dim=rlhf.shape[1])
    labels = np.asarray(labels)
    if labels.shape != (rlhf.shape[0],):
        raise ValueError(f"labels must have shape ({rlhf.shape[0]},), got {labels.shape}")
    ids = np.unique(labels[labels >= 0])
    if ids.size == 0:
        raise ValueError("no clustered samples: every label is -1")
    size = np.array([np.sum(labels == i) for i in ids], dtype=np.int64)
    centroid = np.stack([rlhf[labels == i].mean(axis=0) for i in ids]).astype(np.float32)
    distance, nearest = nearest_distances(centroid, sft)
    table = ClusterTable(size=size, centroid=centroid, distance=distance, nearest_sft=nearest)
    return float(np.sum(size * distance.astype(np.float64))), table


# ------------------------------------------------------------------------------------------- silhouette


@functools.partial(jax.jit, static_argnames=("num_clusters",))
def _silhouette(x: jax.Array, labels: jax.Array, num_clusters: int) -> jax.Array:
    dist = jnp.sqrt(pairwise_sq_dists(x, x))
    onehot = jax.nn.one_hot(labels, num_clusters, dtype=jnp.float32)  # [N, K]
    counts = jnp.sum(onehot, axis=0)  # [K]
    sums = jnp.matmul(dist, onehot, precision=jax.lax.Precision.HIGHEST)  # [N, K]: distance to each cluster
    own = counts[labels]
    a = jnp.take_along_axis(sums, labels[:, None], axis=1)[:, 0] / jnp.maximum(own - 1, 1)
    mean_other = jnp.where(onehot > 0, jnp.inf, sums / jnp.maximum(counts, 1)[None, :])
    mean_other = jnp.where(counts[None, :] > 0, mean_other, jnp.inf)  # empty clusters are not neighbours
    b = jnp.min(mean_other, axis=1)
    s = (b - a) / jnp.maximum(jnp.maximum(a, b), 1e-30)
    # scikit-learn's convention: a sample alone in its cluster scores 0.
    return jnp.mean(jnp.where(own > 1, s, 0.0))


def silhouette_score(x, labels) -> float:
    """Mean silhouette coefficient of x [N, D] under labels [N] (Euclidean; equals scikit-learn's
    ``silhouette_score``). Needs 2 <= number of distinct labels <= N - 1. Memory O(N^2)."""
    x = check_points("x", x)
    labels = np.asarray(labels)
    _, dense = np.unique(labels, return_inverse=True)
    k = int(dense.max()) + 1
    if not 2 <= k <= x.shape[0] - 1:
        raise ValueError(f"silhouette needs 2 <= number of labels <= N - 1, got {k} labels for N={x.shape[0]}")
    return float(_silhouette(jnp.asarray(x), jnp.asarray(dense, jnp.int32), num_clusters=k))


def choose_k(
    key: jax.Array, x, *, rule: str = "silhouette", k_range: tuple[int, int] = (2, 10), max_points: int = 4000
) -> tuple[int, dict[int, float]]:
    """k for k-means on x [N, D] by a named rule (module docstring); returns (k, silhouette score per k tried).

    The silhouette rule scores at most ``max_points`` samples (a fixed random subset beyond that: silhouette
    is O(N^2) in memory) and breaks ties toward the smaller k.
    """
    x = check_points("rlhf_latents", x)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"choosing k needs at least 3 samples, got {n}")
    if rule == "sqrt":
        return int(min(max(round(math.sqrt(n / 2)), 2), n - 1)), {}
    if rule != "silhouette":
        raise ValueError(f"k_rule must be one of {K_RULES}, got {rule!r}")
    lo, hi = max(int(k_range[0]), 2), min(int(k_range[1]), n - 1)
    if lo > hi:
        raise ValueError(f"k_range {tuple(k_range)} has no k in [2, N - 1] for N={n}")
    subset = np.arange(n)
    if n > max_points:
        subset = np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))
    scores = {}
    for k in range(lo, hi + 1):
        labels = np.asarray(kmeans(jax.random.fold_in(key, k), x, k).labels)[subset]
        distinct = len(np.unique(labels))
        scores[k] = silhouette_score(x[subset], labels) if 2 <= distinct <= len(subset) - 1 else -1.0
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


# ------------------------------------------------------------------------------------------- projection


def tsne_project(rlhf, sft, *, seed: int = 0, perplexity: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """RLHF [N, D] and SFT [M, D] points mapped jointly to 2-D by t-SNE (scikit-learn, init "pca"), then
    min-max normalized to [0, 1] per axis, as in the authors' visualization. Row order is kept:
    returns (rlhf_2d [N, 2], sft_2d [M, 2]). Perplexity is lowered to (N + M - 1) / 3 for small sets."""
    from sklearn.manifold import TSNE

    rlhf = check_points("rlhf_latents", rlhf)
    sft = check_points("sft_latents", sft, dim=rlhf.shape[1])
    both = np.concatenate([rlhf, sft]).astype(np.float64)
    if both.shape[0] < 4:
        raise ValueError(f"t-SNE needs at least 4 points in all, got {both.shape[0]}")
    perplexity = float(min(perplexity, (both.shape[0] - 1) / 3))
    emb = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(both)
    span = np.maximum(emb.max(0) - emb.min(0), 1e-12)
    emb = ((emb - emb.min(0)) / span).astype(np.float32)
    return emb[: rlhf.shape[0]], emb[rlhf.shape[0] :]


# ------------------------------------------------------------------------------------------------- CSI


def cluster(
    key: jax.Array,
    x: np.ndarray,
    *,
    clustering: str = "kmeans",
    k: int | None = None,
    k_rule: str = "silhouette",
    k_range: tuple[int, int] = (2, 10),
    eps: float | None = None,
    min_samples: int = 5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Cluster labels [N] of x [N, D] (DBSCAN noise = -1) and the parameters used (module docstring)."""
    if clustering == "kmeans":
        params: dict[str, Any] = {"clustering": "kmeans"}
        if k is None:
            k, scores = choose_k(key, x, rule=k_rule, k_range=k_range)
            params.update(k_rule=k_rule, silhouette={str(kk): v for kk, v in scores.items()})
        params["k"] = int(k)
        return np.asarray(kmeans(key, x, int(k)).labels), params
    if clustering == "dbscan":
        from inform_jax.detect.dbscan import dbscan, knee_eps

        params = {"clustering": "dbscan", "min_samples": int(min_samples)}
        if eps is None:
            eps = knee_eps(x, min_samples=min_samples)
            params["eps_rule"] = "k-distance knee"
        params["eps"] = float(eps)
        result = dbscan(x, eps=float(eps), min_samples=min_samples)
        return np.asarray(result.labels), params
    raise ValueError(f"clustering must be one of {CLUSTERINGS}, got {clustering!r}")


def csi(
    rlhf_latents,
    sft_latents,
    *,
    key: jax.Array | None = None,
    clustering: str = "kmeans",
    k: int | None = None,
    k_rule: str = "silhouette",
    k_range: tuple[int, int] = (2, 10),
    eps: float | None = None,
    min_samples: int = 5,
    noise: str = "singletons",
    projection: str | None = None,
    perplexity: float = 30.0,
) -> CSIResult:
    """Cluster Separation Index of RLHF outputs against SFT outputs in a latent space.

    Args:
      rlhf_latents: [N, D] latents of the RLHF policy's responses (InfoRM: the IB latent means).
      sft_latents: [M, D] latents of the SFT policy's responses (usually to the same prompts).
      key: PRNG key for k-means (default ``jax.random.key(0)``; the t-SNE seed is drawn from it too).
      clustering, k, k_rule, k_range, eps, min_samples: see the module docstring.
      noise: DBSCAN noise points as ``"singletons"`` (default) or ``"drop"``.
      projection: None (cluster in the latent space) or ``"tsne"`` (2-D t-SNE of both sets first).

    Returns:
      :class:`CSIResult`.
    """
    rlhf = check_points("rlhf_latents", rlhf_latents)
    sft = check_points("sft_latents", sft_latents, dim=rlhf.shape[1])
    if noise not in ("singletons", "drop"):
        raise ValueError(f"noise must be 'singletons' or 'drop', got {noise!r}")
    key = jax.random.key(0) if key is None else key
    params: dict[str, Any] = {"projection": projection}
    if projection == "tsne":
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        rlhf, sft = tsne_project(rlhf, sft, seed=seed, perplexity=perplexity)
    elif projection is not None:
        raise ValueError(f"projection must be None or 'tsne', got {projection!r}")
    labels, cluster_params = cluster(
        key, rlhf, clustering=clustering, k=k, k_rule=k_rule, k_range=k_range, eps=eps, min_samples=min_samples
    )
    params.update(cluster_params)
    is_noise = labels < 0
    params["noise_points"] = int(is_noise.sum())
    if is_noise.any() and noise == "singletons":
        labels = labels.copy()
        labels[is_noise] = labels.max(initial=-1) + 1 + np.arange(int(is_noise.sum()))
    params["noise"] = noise
    kept = labels >= 0
    labels = labels.copy()
    labels[kept] = np.unique(labels[kept], return_inverse=True)[1]  # dense ids = rows of the cluster table
    value, table = csi_from_labels(rlhf, labels, sft)
    return CSIResult(
        csi=value, csi_per_sample=value / rlhf.shape[0], labels=labels, clusters=table, rlhf_points=rlhf,
        sft_points=sft, params=params,
    )  # fmt: skip
