"""MOP, the Mahalanobis outlier proportion: how many RLHF latents fall outside the SFT latent distribution.

InfoRM's journal extension detects reward overoptimization by fitting a Gaussian (Ledoit-Wolf covariance) to the
IB latents of the SFT model's responses and counting the RLHF responses whose latents are chi-square outliers
under it. A growing MOP during RLHF signals that the policy drifts into regions the SFT model never produced.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inform_jax.detect.distances import check_points
from inform_jax.losses.mahalanobis import COVARIANCES, fit_gaussian_reference, squared_mahalanobis


class MOPResult(NamedTuple):
    """Result of :func:`mop`.

    proportion: float, the fraction of RLHF latents flagged as outliers (``outlier.mean()``).
    threshold: float, the chi-square(D) quantile at ``1 - alpha`` that the squared distances are compared to.
    squared_distances: [N] numpy float32, each RLHF latent's squared Mahalanobis distance to the SFT Gaussian.
    outlier: [N] numpy bool, ``squared_distances > threshold``.
    """

    proportion: float
    threshold: float
    squared_distances: np.ndarray
    outlier: np.ndarray


@functools.partial(jax.jit, static_argnames=("covariance",))
def _squared_distances(rlhf: jax.Array, sft: jax.Array, covariance: str, ridge: jax.Array):
    reference = fit_gaussian_reference(sft, covariance=covariance, ridge=ridge)
    return squared_mahalanobis(rlhf, reference), jnp.all(jnp.isfinite(reference.precision))


def mop(
    rlhf_latents,
    sft_latents,
    *,
    alpha: float = 0.1,
    covariance: str = "ledoit_wolf",
    ridge: float = 1e-6,
) -> MOPResult:
    """Mahalanobis outlier proportion of RLHF latents with respect to the SFT latent distribution.

    Fits ``N(m, C)`` to the SFT latents (``C`` the Ledoit-Wolf shrunk covariance by default, ``+ ridge * I``)
    and flags an RLHF latent ``z`` as an outlier when ``(z - m)^T C^-1 (z - m) > chi2.ppf(1 - alpha, df=D)``.
    This is a per-sample test at level ``alpha``: under the null hypothesis that the RLHF latents are drawn from
    the same Gaussian as the SFT latents, the squared distances are (up to the estimation error of ``m`` and
    ``C``) chi-square with D degrees of freedom, so the proportion is about ``alpha``. A proportion well above
    ``alpha`` means the RLHF responses left the SFT distribution (overoptimization). Ledoit-Wolf shrinkage
    inflates the covariance's small eigenvalues, so with a badly conditioned SFT covariance (condition number
    in the hundreds or more) the null proportion drops below ``alpha``: the test becomes conservative.

    The authors first project all latents with UMAP to 75 dims and compute MOP there; this function does not
    (no UMAP dependency): it works in whatever space it is given, so pass projected latents to reproduce that.

    Args:
      rlhf_latents: ``[N, D]`` IB latents (means) of the RLHF policy's responses.
      sft_latents: ``[M, D]`` IB latents of the SFT model's responses, M >= 2.
      alpha: the test level, in (0, 1) (authors: 0.1).
      covariance: ``"ledoit_wolf"`` (default, the authors') or ``"empirical"``, see
        :func:`inform_jax.losses.mahalanobis.fit_gaussian_reference`.
      ridge: added to the covariance's diagonal before inverting.

    Returns:
      MOPResult(proportion, threshold, squared_distances [N], outlier [N]).

    Raises:
      ValueError: for empty, non-2-D or non-finite latents, a latent-dim mismatch, M < 2, alpha outside
        (0, 1), an unknown covariance, or a covariance that cannot be inverted (``"empirical"`` with M <= D).
    """
    rlhf = check_points("rlhf_latents", rlhf_latents)
    sft = check_points("sft_latents", sft_latents, dim=rlhf.shape[1])
    if sft.shape[0] < 2:
        raise ValueError(f"sft_latents needs at least 2 rows to estimate a covariance, got {sft.shape[0]}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    if not ridge >= 0.0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    sq, ok = _squared_distances(
        jnp.asarray(rlhf, jnp.float32), jnp.asarray(sft, jnp.float32), covariance, jnp.float32(ridge)
    )
    if not bool(ok):
        raise ValueError(
            f"the {covariance} covariance of sft_latents (+ ridge={ridge}) is not positive definite in float32; "
            "use covariance='ledoit_wolf', a larger ridge, or more SFT samples than latent dims"
        )
    from scipy.stats import chi2  # here, not at import: scipy.stats adds ~1 s to every PPO command's start

    sq = np.asarray(sq)
    threshold = float(chi2.ppf(1.0 - alpha, df=rlhf.shape[1]))
    outlier = sq > threshold
    return MOPResult(float(np.mean(outlier)), threshold, sq, outlier)
