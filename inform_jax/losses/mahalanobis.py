"""Mahalanobis distance to the SFT latent distribution: the IBL reward penalty and the MOP outlier statistic.

InfoRM's journal extension measures how far an RLHF response's IB latent mean ``mu`` lies from the
distribution of the SFT model's (greedy) responses' latents, modelled as a Gaussian ``N(m, C)``:

* IBL (the reward penalty): ``r_hat = r - coef * sqrt((mu - m)^T C^-1 (mu - m))`` with ``C`` the sample
  covariance ``+ 1e-6 * I`` (:func:`fit_gaussian_reference` with ``covariance="empirical"``).
* MOP (the overoptimization detector, :func:`inform_jax.detect.outliers.mop`): the fraction of RLHF
  latents whose squared distance exceeds a chi-square quantile, with ``C`` the Ledoit-Wolf shrunk covariance
  (``covariance="ledoit_wolf"``, the default).

Everything is at least float32, and the matmuls use ``Precision.HIGHEST`` so GPUs/TPUs don't drop to
TF32/bf16 (a precision matrix amplifies those errors by the covariance's condition number).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg

from inform_jax.losses._utils import as_float

COVARIANCES = ("ledoit_wolf", "empirical")

_HIGHEST = jax.lax.Precision.HIGHEST


class GaussianReference(NamedTuple):
    """A Gaussian reference distribution ``N(mean, precision^-1)`` (a pytree: pass it through jit/vmap).

    mean: [D] float. precision: [D, D] float, the symmetric positive-definite inverse covariance.
    """

    mean: jax.Array
    precision: jax.Array


def _check_2d(x: jax.Array, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {x.shape}")


def empirical_covariance(x: jax.Array) -> jax.Array:
    """Maximum-likelihood covariance of the rows of ``x``, normalized by ``N`` (``np.cov(x.T, bias=True)``).

    Args:
      x: ``[N, D]`` float, N samples of D features; centered by its column means.

    Returns:
      ``[D, D]`` at least float32.
    """
    x = as_float(x)
    _check_2d(x, "x")
    xc = x - jnp.mean(x, axis=0)
    cov = jnp.matmul(xc.T, xc, precision=_HIGHEST) / x.shape[0]
    return 0.5 * (cov + cov.T)


def ledoit_wolf_covariance(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ledoit-Wolf shrunk covariance, as ``sklearn.covariance.LedoitWolf().fit(x)`` computes it.

    ``C = (1 - s) * S + s * mu * I`` with ``S`` the empirical covariance (:func:`empirical_covariance`,
    normalized by N), ``mu = trace(S) / D`` and the shrinkage ``s = min(beta, delta) / delta``, where
    ``delta = ||S - mu I||_F^2 / D`` and ``beta = (mean_n ||x_n||^4 - ||S||_F^2) / (D N)`` on the centered
    rows ``x_n`` (``s = 0`` when ``delta = 0``, e.g. D = 1). Same formula as scikit-learn's
    ``ledoit_wolf_shrinkage`` (``sum(X2.T @ X2) = sum_n ||x_n||^4``, so no ``[D, D]`` matmul of squares is
    needed); ``delta`` is computed directly as a Frobenius norm instead of by expansion, which avoids a
    cancellation in float32 when ``S`` is close to isotropic.

    Args:
      x: ``[N, D]`` float (assume_centered=False: the column means are removed first). Any N >= 1, D > N
        included (the shrunk covariance is then still positive definite unless all rows are equal).

    Returns:
      ``(covariance [D, D], shrinkage scalar in [0, 1])``, at least float32.
    """
    x = as_float(x)
    _check_2d(x, "x")
    n, d = x.shape
    xc = x - jnp.mean(x, axis=0)
    s = jnp.matmul(xc.T, xc, precision=_HIGHEST) / n
    s = 0.5 * (s + s.T)
    mu = jnp.trace(s) / d
    eye = jnp.eye(d, dtype=s.dtype)
    delta = jnp.sum((s - mu * eye) ** 2) / d
    sq_norms = jnp.sum(xc * xc, axis=1)  # [N]
    beta = (jnp.mean(sq_norms**2) - jnp.sum(s * s)) / (d * n)
    beta = jnp.minimum(beta, delta)
    shrinkage = jnp.where(delta > 0, beta / jnp.where(delta > 0, delta, 1.0), 0.0)
    shrinkage = jnp.clip(shrinkage, 0.0, 1.0)
    return (1.0 - shrinkage) * s + shrinkage * mu * eye, shrinkage


def fit_gaussian_reference(
    latents: jax.Array, *, covariance: str = "ledoit_wolf", ridge: float = 1e-6
) -> GaussianReference:
    """Fits the reference Gaussian (e.g. of the SFT responses' IB latent means) for Mahalanobis distances.

    The precision is ``(C + ridge * I)^-1`` computed through a Cholesky factorization (``cho_solve`` against
    the identity, then symmetrized), never a plain inverse.

    Args:
      latents: ``[N, D]`` float, one latent per row.
      covariance: how ``C`` is estimated.

        * ``"ledoit_wolf"`` (default): the Ledoit-Wolf shrunk covariance (:func:`ledoit_wolf_covariance`),
          what the authors' MOP detector uses; well conditioned even for D > N.
        * ``"empirical"``: the plain maximum-likelihood covariance (normalized by N), what the authors' IBL
          reward penalty uses (sample covariance ``+ 1e-6 * I``). Singular when N <= D: only the ridge
          keeps it invertible then.
      ridge: added to the covariance's diagonal (authors: 1e-6).

    Returns:
      GaussianReference(mean [D], precision [D, D]), at least float32. If ``C + ridge * I`` is not
      numerically positive definite (e.g. ``"empirical"`` with N <= D and a ridge below float32 rounding)
      the precision is NaN: this function is jittable, so it cannot raise; check with ``jnp.isfinite``.

    Raises:
      ValueError: for non-2-D latents or an unknown ``covariance`` (both static, checked at trace time).
    """
    x = as_float(latents)
    _check_2d(x, "latents")
    if covariance == "ledoit_wolf":
        cov, _ = ledoit_wolf_covariance(x)
    elif covariance == "empirical":
        cov = empirical_covariance(x)
    else:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    d = x.shape[1]
    eye = jnp.eye(d, dtype=cov.dtype)
    chol = jnp.linalg.cholesky(cov + ridge * eye)
    precision = jax.scipy.linalg.cho_solve((chol, True), eye)
    return GaussianReference(jnp.mean(x, axis=0), 0.5 * (precision + precision.T))


def squared_mahalanobis(x: jax.Array, reference: GaussianReference) -> jax.Array:
    """Squared Mahalanobis distance ``(x - mean)^T P (x - mean)`` of each ``x`` to the reference.

    Args:
      x: ``[..., D]`` float.
      reference: a :class:`GaussianReference` with ``mean [D]`` and ``precision P [D, D]``.

    Returns:
      ``[...]`` at least float32, >= 0.
    """
    diff = as_float(x) - as_float(reference.mean)
    pd = jnp.matmul(diff, as_float(reference.precision), precision=_HIGHEST)
    return jnp.maximum(jnp.sum(pd * diff, axis=-1), 0.0)


def mahalanobis_distance(x: jax.Array, reference: GaussianReference) -> jax.Array:
    """Mahalanobis distance ``sqrt((x - mean)^T P (x - mean))`` of each ``x`` to the reference.

    Differentiable everywhere: the gradient is ``P (x - mean) / distance``, and 0 (a subgradient) at
    ``x == mean`` instead of the NaN a plain ``sqrt`` would give.

    Args:
      x: ``[..., D]`` float.
      reference: a :class:`GaussianReference`.

    Returns:
      ``[...]`` at least float32, >= 0.
    """
    q = squared_mahalanobis(x, reference)
    positive = q > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, q, 1.0)), 0.0)


def ibl_penalty(rewards: jax.Array, latents: jax.Array, reference: GaussianReference, coef: float) -> jax.Array:
    """IBL's penalized reward ``r_hat = r - coef * Mahalanobis(latent; SFT reference)``.

    Args:
      rewards: ``[B]`` float reward-model scores.
      latents: ``[B, D]`` float, the reward model's IB latent means of the responses.
      reference: the SFT latent Gaussian, from :func:`fit_gaussian_reference` on the IB latent means of the
        SFT model's greedy responses (authors: ``covariance="empirical"``, ``ridge=1e-6``).
      coef: the penalty weight.

    Returns:
      ``[B]`` at least float32.
    """
    return as_float(rewards) - coef * mahalanobis_distance(latents, reference)
