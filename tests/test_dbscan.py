"""DBSCAN in jax against scikit-learn (labels, core mask), border ties, duplicates, noise, knee_eps, input errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.datasets import make_blobs
from sklearn.neighbors import NearestNeighbors

from inform_jax.detect.dbscan import _TINY_EPS, _dbscan_jit, dbscan, knee_eps


def _sklearn(x, eps, min_samples):
    sk = DBSCAN(eps=eps, min_samples=min_samples).fit(x)
    core = np.zeros(len(x), bool)
    core[sk.core_sample_indices_] = True
    return sk.labels_, core


def _assert_matches_sklearn(x, eps, min_samples):
    res = dbscan(x, eps=eps, min_samples=min_samples)
    labels, core = _sklearn(x, eps, min_samples)
    assert res.labels.dtype == np.int32 and res.labels.shape == (len(x),)
    assert res.core.dtype == bool
    np.testing.assert_array_equal(res.labels, labels)
    np.testing.assert_array_equal(res.core, core)
    assert res.num_clusters == len(set(labels.tolist()) - {-1})
    return res


def _blobs(seed):
    # float32 first, so both implementations see the same values.
    x, _ = make_blobs(n_samples=400, centers=4, n_features=3, cluster_std=1.0, random_state=seed)
    return x.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("eps,min_samples", [(0.4, 5), (0.7, 5), (1.0, 10), (1.5, 3), (3.0, 20)])
def test_blobs_match_sklearn(seed, eps, min_samples):
    _assert_matches_sklearn(_blobs(seed), eps, min_samples)


def test_blobs_cover_noise_and_border_points():
    # Guards the parametrised test above against only exercising trivial cases.
    res = _assert_matches_sklearn(_blobs(0), 0.7, 5)
    assert res.num_clusters >= 2
    assert np.any(res.labels == -1)
    assert np.any((res.labels >= 0) & ~res.core)


@pytest.mark.parametrize("seed", [0, 1])
def test_matmul_form_matches_sklearn(seed):
    # Large inputs switch to the expanded (matmul) distance form; check it on small data directly.
    x = _blobs(seed)
    for eps, min_samples in [(0.7, 5), (1.5, 3)]:
        labels, core, num_clusters = _dbscan_jit(
            jnp.asarray(x), jnp.float32(eps**2), jnp.int32(min_samples), direct=False
        )
        sk_labels, sk_core = _sklearn(x, eps, min_samples)
        np.testing.assert_array_equal(np.asarray(labels), sk_labels)
        np.testing.assert_array_equal(np.asarray(core), sk_core)
        assert int(num_clusters) == sk_labels.max() + 1


def _two_clusters_and_shared_border(first: str):
    """Clusters A (left) and B (right) on a line; b = -0.05 is within eps=1.1 of a core of each but not core itself.

    b is nearer A's core (0.95 vs 1.05), so nearest-core assignment would differ from scikit-learn's rule.
    """
    a = [-1.0, -1.5, -2.0, -2.5]
    bb = [1.0, 1.5, 2.0, 2.5]
    coords = [-0.05] + (bb + a if first == "B" else a + bb)
    x = np.stack([np.asarray(coords, np.float32), np.zeros(len(coords), np.float32)], axis=1)
    return x, 1.1, 4


@pytest.mark.parametrize("first", ["A", "B"])
def test_border_point_takes_lowest_cluster_label(first):
    x, eps, min_samples = _two_clusters_and_shared_border(first)
    res = _assert_matches_sklearn(x, eps, min_samples)
    assert res.num_clusters == 2
    assert not res.core[0]
    # b comes first in index order but cannot start a cluster; it goes to cluster 0, whichever cluster that is.
    assert res.labels[0] == 0
    cluster_of = {"A": res.labels[np.isclose(x[:, 0], -1.0)][0], "B": res.labels[np.isclose(x[:, 0], 1.0)][0]}
    assert cluster_of[first] == 0 and cluster_of["A" if first == "B" else "B"] == 1
    # -2.5 and 2.5 are border points of a single cluster each.
    assert not res.core[np.isclose(x[:, 0], -2.5)][0] and not res.core[np.isclose(x[:, 0], 2.5)][0]


def test_duplicated_points():
    rng = np.random.default_rng(0)
    distinct = rng.uniform(-10, 10, size=(40, 2)).astype(np.float32)
    x = np.repeat(distinct, rng.integers(1, 9, size=40), axis=0)
    x = x[rng.permutation(len(x))]
    res = _assert_matches_sklearn(x, 0.01, 4)  # only exact duplicates are neighbours
    assert res.num_clusters >= 1 and np.any(res.labels == -1)
    _assert_matches_sklearn(x, 2.5, 4)
    same = np.ones((30, 3), np.float32)
    res = _assert_matches_sklearn(same, 0.5, 30)
    assert res.num_clusters == 1 and res.core.all()


def test_exact_ties_at_eps_on_integer_grid():
    # Neighbours at distance exactly eps count (distance <= eps), as in scikit-learn.
    g = np.arange(6, dtype=np.float32)
    x = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    x = np.concatenate([x, x[:5] + np.float32(20.0)])  # a short row of points far away
    for eps, min_samples in [(1.0, 5), (1.0, 3), (1.0, 4)]:
        _assert_matches_sklearn(x, eps, min_samples)


def test_all_noise():
    x = np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32)
    for eps, min_samples in [(1e-3, 2), (1.0, 101)]:
        res = _assert_matches_sklearn(x, eps, min_samples)
        assert res.num_clusters == 0
        assert np.all(res.labels == -1) and not res.core.any()


def test_min_samples_one_every_point_core():
    x = np.random.default_rng(2).normal(size=(100, 3)).astype(np.float32)
    res = _assert_matches_sklearn(x, 0.3, 1)
    assert res.core.all()


def test_jax_input_and_no_recompile_across_eps():
    x = jnp.asarray(_blobs(0))
    dbscan(x, eps=0.5, min_samples=5)
    size = _dbscan_jit._cache_size()
    res = dbscan(x, eps=0.9, min_samples=7)
    assert _dbscan_jit._cache_size() == size
    np.testing.assert_array_equal(res.labels, _sklearn(np.asarray(x), 0.9, 7)[0])


def _np_knee(kdist):
    y = np.sort(np.asarray(kdist, np.float64))
    n = len(y)
    if y[-1] == y[0]:
        return y[0]
    u = np.arange(n) / (n - 1)
    v = (y - y[0]) / (y[-1] - y[0])
    return y[np.argmax(np.abs(u - v))]


@pytest.mark.parametrize("seed,min_samples", [(0, 5), (1, 10), (2, 4)])
def test_knee_eps_matches_numpy_rule(seed, min_samples):
    x = _blobs(seed)
    # The k-distance of the stated rule: scikit-learn's k-th neighbour distance with the point itself first.
    kdist = NearestNeighbors(n_neighbors=min_samples).fit(x).kneighbors(x)[0][:, -1]
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(np.sort(d, axis=1)[:, min_samples - 1], kdist, rtol=1e-6, atol=1e-6)
    eps = knee_eps(x, min_samples)
    assert isinstance(eps, float)
    assert eps == pytest.approx(_np_knee(kdist), rel=1e-5)
    # The knee is an eps that separates dense blobs from their sparse fringe.
    assert dbscan(x, eps=eps, min_samples=min_samples).num_clusters >= 1


def test_knee_eps_constant_curves():
    line = np.arange(10, dtype=np.float32)[:, None]
    assert knee_eps(line, 2) == 1.0  # every k-distance is the unit spacing
    assert knee_eps(np.ones((8, 2), np.float32), 3) == _TINY_EPS > 0  # all duplicates: k-distances are 0
    assert knee_eps(np.zeros((1, 2), np.float32), 1) == _TINY_EPS


def test_errors():
    x = np.zeros((5, 2), np.float32)
    for fn in (lambda a: dbscan(a, eps=1.0), knee_eps):
        with pytest.raises(ValueError, match="2-D input x"):
            fn(np.zeros(5, np.float32))
        with pytest.raises(ValueError, match="empty input x"):
            fn(np.zeros((0, 2), np.float32))
        bad = x.copy()
        bad[1, 1] = np.inf
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            fn(bad)
        bad[1, 1] = np.nan
        with pytest.raises(ValueError, match="x contains NaN or inf"):
            fn(bad)
        with pytest.raises(ValueError, match=r"N=50001.*N x N distance matrix.*subsample.*kmeans"):
            fn(np.zeros((50_001, 1), np.float32))
    for eps in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eps must be > 0"):
            dbscan(x, eps=eps)
    for min_samples in (0, -3, 2.5):
        with pytest.raises(ValueError, match="min_samples must be an integer >= 1"):
            dbscan(x, eps=1.0, min_samples=min_samples)
        with pytest.raises(ValueError, match="min_samples must be an integer >= 1"):
            knee_eps(x, min_samples)
    with pytest.raises(ValueError, match=r"min_samples=6 exceeds the number of points N=5"):
        knee_eps(x, 6)
