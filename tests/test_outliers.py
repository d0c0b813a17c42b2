"""Mahalanobis reference, IBL penalty and MOP against scikit-learn, scipy and numpy; Monte Carlo size of MOP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from scipy.stats import chi2
from sklearn.covariance import LedoitWolf

from inform_jax.detect.outliers import MOPResult, mop
from inform_jax.losses.mahalanobis import (
    GaussianReference,
    empirical_covariance,
    fit_gaussian_reference,
    ibl_penalty,
    ledoit_wolf_covariance,
    mahalanobis_distance,
    squared_mahalanobis,
)

# One compiled program per shape instead of dozens of eagerly dispatched ones: keeps the tests fast.
_fit = jax.jit(fit_gaussian_reference, static_argnames=("covariance",))


def _correlated(rng, n, d, scale=3.0, shift=5.0):
    """n rows of a correlated, non-centered Gaussian in d dims, its mixing matrix and its mean.

    The covariance ``mix^T mix`` has a random orientation and eigenvalues in
    ``scale^2 * [0.25, 4]`` (condition number <= 16), so float32 precision matrices stay accurate.
    """
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mix = q * np.sqrt(np.exp(rng.uniform(np.log(0.25), np.log(4.0), size=d))) @ q.T * scale
    mean = shift * rng.normal(size=d)
    return rng.normal(size=(n, d)) @ mix + mean, mix, mean


@pytest.mark.parametrize("n,d", [(50, 5), (200, 8), (20, 40), (10, 300), (100, 1), (3, 2)])
def test_ledoit_wolf_matches_sklearn(n, d):
    x, _, _ = _correlated(np.random.default_rng(n * 1000 + d), n, d)
    lw = LedoitWolf().fit(x)
    cov, shrinkage = jax.jit(ledoit_wolf_covariance)(x)
    assert cov.shape == (d, d) and cov.dtype == jnp.float32
    assert float(shrinkage) == pytest.approx(lw.shrinkage_, rel=1e-4, abs=1e-6)
    scale = np.abs(lw.covariance_).max()
    np.testing.assert_allclose(np.asarray(cov), lw.covariance_, rtol=1e-4, atol=1e-5 * scale)


def test_ledoit_wolf_eager_isotropic_data_shrinks():
    x = np.random.default_rng(0).normal(size=(30, 10))
    cov, shrinkage = ledoit_wolf_covariance(x)
    lw = LedoitWolf().fit(x)
    assert float(shrinkage) == pytest.approx(lw.shrinkage_, rel=1e-4)
    # Isotropic data with few samples: the estimate shrinks a lot toward mu * I.
    assert float(shrinkage) > 0.3
    np.testing.assert_allclose(np.asarray(cov), lw.covariance_, rtol=1e-4, atol=1e-6)


def test_empirical_reference_matches_numpy_inverse():
    x, _, _ = _correlated(np.random.default_rng(1), 300, 6, scale=1.0)
    ridge = 1e-3
    ref = _fit(x, covariance="empirical", ridge=ridge)
    expected = np.linalg.inv(np.cov(x.T, bias=True) + ridge * np.eye(6))
    np.testing.assert_allclose(np.asarray(ref.mean), x.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ref.precision), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_array_equal(np.asarray(ref.precision), np.asarray(ref.precision).T)
    np.testing.assert_allclose(np.asarray(empirical_covariance(x)), np.cov(x.T, bias=True), rtol=1e-5, atol=1e-5)


def test_ledoit_wolf_reference_matches_sklearn_precision():
    x, _, _ = _correlated(np.random.default_rng(2), 40, 12, scale=1.0)
    ref = _fit(x)  # ledoit_wolf, ridge 1e-6
    expected = np.linalg.inv(LedoitWolf().fit(x).covariance_ + 1e-6 * np.eye(12))
    np.testing.assert_allclose(np.asarray(ref.precision), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_squared_mahalanobis_matches_scipy():
    rng = np.random.default_rng(3)
    sft, _, _ = _correlated(rng, 200, 7)
    ref = _fit(sft)
    vi = np.asarray(ref.precision, np.float64)
    m = np.asarray(ref.mean, np.float64)
    x = np.asarray(ref.mean) + 4.0 * rng.normal(size=(3, 5, 7))
    expected = np.array([[mahalanobis(u, m, vi) for u in row] for row in x])
    sq = squared_mahalanobis(x, ref)
    assert sq.shape == (3, 5)
    np.testing.assert_allclose(np.asarray(sq), expected**2, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(mahalanobis_distance(x, ref)), expected, rtol=1e-4)
    assert float(mahalanobis_distance(ref.mean, ref)) == 0.0


def test_ibl_penalty_value_jit_and_grad():
    rng = np.random.default_rng(4)
    sft, _, _ = _correlated(rng, 500, 5, scale=1.0)
    ref = _fit(sft, covariance="empirical")
    latents = np.asarray(ref.mean) + rng.normal(size=(6, 5))
    latents[2] = np.asarray(ref.mean)  # distance 0: the gradient must stay finite
    rewards = rng.normal(size=6)
    coef = 0.3

    vi, m = np.asarray(ref.precision, np.float64), np.asarray(ref.mean, np.float64)
    dist = np.array([mahalanobis(u, m, vi) for u in latents])
    out = ibl_penalty(rewards, latents, ref, coef)
    np.testing.assert_allclose(np.asarray(out), rewards - coef * dist, rtol=1e-5, atol=1e-5)
    jitted = jax.jit(ibl_penalty)(jnp.asarray(rewards), jnp.asarray(latents), ref, coef)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(out), rtol=1e-6, atol=1e-6)

    grad = np.asarray(jax.grad(lambda z: jnp.sum(ibl_penalty(rewards, z, ref, coef)))(jnp.asarray(latents)))
    assert np.all(np.isfinite(grad))
    diff = latents - m
    with np.errstate(invalid="ignore", divide="ignore"):
        closed = -coef * (diff @ vi) / dist[:, None]
    closed[2] = 0.0
    np.testing.assert_allclose(grad, closed, rtol=1e-4, atol=1e-5)


def test_reference_is_a_pytree_and_bad_covariance_raises():
    ref = GaussianReference(jnp.zeros(3), jnp.eye(3))
    assert float(jax.jit(mahalanobis_distance)(jnp.array([3.0, 4.0, 0.0]), ref)) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="covariance"):
        fit_gaussian_reference(np.zeros((4, 2)), covariance="oas")
    with pytest.raises(ValueError, match="latents"):
        fit_gaussian_reference(np.zeros(4))
    with pytest.raises(ValueError, match="2-D"):
        ledoit_wolf_covariance(np.zeros(4))


@pytest.mark.parametrize("covariance", ["ledoit_wolf", "empirical"])
def test_mop_under_null_is_about_alpha(covariance):
    rng = np.random.default_rng(5)
    d = 8
    _, mix, mean = _correlated(rng, 1, d)
    sft = rng.normal(size=(2000, d)) @ mix + mean
    rlhf = rng.normal(size=(4000, d)) @ mix + mean
    res = mop(rlhf, sft, covariance=covariance)
    assert isinstance(res, MOPResult)
    assert res.threshold == pytest.approx(chi2.ppf(0.9, df=d))
    assert res.squared_distances.shape == (4000,) and res.outlier.shape == (4000,)
    assert res.outlier.dtype == np.bool_
    np.testing.assert_array_equal(res.outlier, res.squared_distances > res.threshold)
    assert res.proportion == pytest.approx(res.outlier.mean())
    assert abs(res.proportion - 0.1) < 0.03
    # A smaller level flags fewer points, still about alpha.
    assert abs(mop(rlhf, sft, alpha=0.02, covariance=covariance).proportion - 0.02) < 0.015


def test_mop_shifted_cluster_is_all_outliers():
    rng = np.random.default_rng(6)
    d = 8
    sft = rng.normal(size=(2000, d))
    rlhf = rng.normal(size=(500, d)) * 0.5 + 3.0  # shifted by 3 sd along every dim: distance ~ 8.5
    res = mop(rlhf, sft)
    assert res.proportion > 0.99
    # The SFT latents themselves are not outliers beyond the level.
    assert abs(mop(sft, sft).proportion - 0.1) < 0.03


def test_mop_errors():
    good = np.zeros((5, 3)) + np.arange(15).reshape(5, 3) ** 0.5
    with pytest.raises(ValueError, match="rlhf_latents is empty"):
        mop(np.zeros((0, 3)), good)
    with pytest.raises(ValueError, match="sft_latents is empty"):
        mop(good, np.zeros((5, 0)))
    with pytest.raises(ValueError, match="rlhf_latents must be 2-D"):
        mop(np.zeros(3), good)
    with pytest.raises(ValueError, match="sft_latents must be 2-D"):
        mop(good, np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="sft_latents has dimension"):
        mop(np.zeros((4, 2)), good)
    bad = good.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="rlhf_latents contains NaN or inf"):
        mop(bad, good)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="sft_latents contains NaN or inf"):
        mop(good, bad)
    for alpha in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            mop(good, good, alpha=alpha)
    with pytest.raises(ValueError, match="sft_latents needs at least 2 rows"):
        mop(good, good[:1])
    with pytest.raises(ValueError, match="covariance"):
        mop(good, good, covariance="oas")
