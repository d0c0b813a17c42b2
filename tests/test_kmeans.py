"""k-means in jax against scikit-learn: blobs, overlapping data, empty clusters, input errors, jit caching."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from inform_jax.detect.kmeans import _kmeans_jit, _lloyd, kmeans


def _np_inertia(x, centroids, labels):
    x = np.asarray(x, np.float64)
    c = np.asarray(centroids, np.float64)
    return float(np.sum((x - c[np.asarray(labels)]) ** 2))


@pytest.mark.parametrize("seed,k", [(0, 3), (1, 4), (2, 5), (3, 6)])
def test_blobs_match_sklearn(seed, k):
    x, _ = make_blobs(n_samples=300, centers=k, n_features=4, cluster_std=0.5, center_box=(-20, 20), random_state=seed)
    x = x.astype(np.float32)
    res = kmeans(jax.random.key(seed), x, k)
    sk = KMeans(n_clusters=k, n_init=4, random_state=0).fit(x)
    assert res.labels.dtype == jnp.int32 and res.labels.shape == (300,)
    assert res.centroids.shape == (k, 4)
    assert adjusted_rand_score(sk.labels_, np.asarray(res.labels)) == 1.0
    assert float(res.inertia) == pytest.approx(sk.inertia_, rel=1e-4)
    assert 1 <= int(res.iterations_run) <= 100


@pytest.mark.parametrize("seed", [0, 1])
def test_overlapping_inertia_near_sklearn_and_consistent(seed):
    x = np.random.default_rng(seed).normal(size=(500, 3)).astype(np.float32)
    k = 8
    res = kmeans(jax.random.key(seed), x, k, restarts=8)
    sk = KMeans(n_clusters=k, n_init=10, random_state=0).fit(x)
    assert float(res.inertia) <= sk.inertia_ * 1.01
    assert float(res.inertia) == pytest.approx(_np_inertia(x, res.centroids, res.labels), rel=1e-4)
    # Labels are the nearest centroid (final E-step), not stale ones from the previous iteration.
    d = ((x[:, None, :] - np.asarray(res.centroids)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(res.labels), d.argmin(1))


def test_empty_cluster_relocated_from_bad_init():
    rng = np.random.default_rng(0)
    # Data away from the origin, so a zeroed empty centroid (sum 0 / count 1) would stay empty forever.
    x = jnp.asarray(rng.normal(size=(50, 2)) + 100.0, jnp.float32)
    # Centroids 1 and 2 are far from every point, so both are empty after the first assignment.
    init = jnp.asarray([[100.0, 100.0], [1e4, 1e4], [-1e4, 1e4]], jnp.float32)
    res = _lloyd(x, init, 100, 1e-6)
    assert np.all(np.isfinite(np.asarray(res.centroids)))
    assert np.all(np.abs(np.asarray(res.centroids) - 100.0) < 10)
    assert len(np.unique(np.asarray(res.labels))) == 3


def test_duplicated_points_all_clusters_nonempty():
    # Shape (300, 4) with k=6 matches a blob case above, so this reuses its compiled program.
    distinct = np.arange(24, dtype=np.float32).reshape(6, 4) * 3.0
    x = np.repeat(distinct, 50, axis=0)
    res = kmeans(jax.random.key(0), x, 6)
    assert np.all(np.isfinite(np.asarray(res.centroids)))
    assert np.bincount(np.asarray(res.labels), minlength=6).min() == 50
    assert float(res.inertia) == pytest.approx(0.0, abs=1e-4)


def test_errors():
    key = jax.random.key(0)
    x = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"k=6.*N=5"):
        kmeans(key, x, 6)
    with pytest.raises(ValueError, match="k must be >= 1"):
        kmeans(key, x, 0)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        kmeans(key, bad, 2)
    with pytest.raises(ValueError, match="empty"):
        kmeans(key, np.zeros((0, 2), np.float32), 1)
    with pytest.raises(ValueError, match="2-D"):
        kmeans(key, np.zeros(5, np.float32), 1)


def test_no_recompile_same_shapes():
    rng = np.random.default_rng(0)
    kmeans(jax.random.key(0), rng.normal(size=(300, 4)), 3)
    size = _kmeans_jit._cache_size()
    kmeans(jax.random.key(1), rng.normal(size=(300, 4)), 3, tol=1e-5)
    assert _kmeans_jit._cache_size() == size


def test_jit_and_eager_agree():
    x, _ = make_blobs(n_samples=60, centers=3, n_features=2, random_state=7)
    jitted = kmeans(jax.random.key(3), x, 3, restarts=2, iterations=20)
    with jax.disable_jit():
        eager = kmeans(jax.random.key(3), x, 3, restarts=2, iterations=20)
    np.testing.assert_array_equal(np.asarray(jitted.labels), np.asarray(eager.labels))
    np.testing.assert_allclose(float(jitted.inertia), float(eager.inertia), rtol=1e-5)


def test_sharded_latents_match_single_device():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    x, _ = make_blobs(n_samples=400, centers=5, n_features=8, random_state=2)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    sharded = jax.device_put(jnp.asarray(x, jnp.float32), NamedSharding(mesh, PartitionSpec("data", None)))
    assert len(sharded.sharding.device_set) == 8
    single = kmeans(jax.random.key(0), x, 5)
    multi = kmeans(jax.random.key(0), sharded, 5)
    assert adjusted_rand_score(np.asarray(single.labels), np.asarray(multi.labels)) == 1.0
    np.testing.assert_allclose(float(multi.inertia), float(single.inertia), rtol=1e-5)


def test_more_clusters_than_distinct_points_stays_finite():
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # 3 distinct points, k = 5
    res = kmeans(jax.random.key(0), x, 5)
    assert np.all(np.isfinite(np.asarray(res.centroids)))
    assert float(res.inertia) == pytest.approx(0.0, abs=1e-5)
    with warnings.catch_warnings():  # scikit-learn warns of the 3 distinct points; the reference is its inertia
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = KMeans(5, n_init=4, random_state=0).fit(x)
    assert float(res.inertia) == pytest.approx(sk.inertia_, abs=1e-5)
