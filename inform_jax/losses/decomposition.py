"""Reward decomposition into a prompt-free and a prompt-related part (our reading of Mao et al., NeurIPS 2025).

A reward is read as ``r(x, y) = r1(x, y) + r2(y)``, with ``r2`` depending on the response only ("prompt-free").
The paper's exact algorithm is not public; this module implements our documented reading of it.

Estimator. For a preference pair ``(y_w, y_l)`` score it under ``N`` prompts ``x_i`` drawn from the training
prompts, ``dr_i = r(x_i, y_w) - r(x_i, y_l)``, with self-normalized weights ``w_i >= 0``, ``sum_i w_i = 1``
(:func:`importance_weights`). The prompt-free gap ``dr2`` is the root ``c`` of::

    sum_i w_i * sigmoid(dr_i - c) = 1/2                                                     (*)

i.e. the prompt-related part ``dr_i - c`` carries no response-only preference on average: under the weighted
prompts it prefers ``y_w`` exactly as often as ``y_l``. The left side decreases strictly in ``c`` and the root lies
in ``[min_i dr_i, max_i dr_i]`` over the ``i`` with ``w_i > 0`` (:func:`prompt_free_gap`, by bisection). The
prompt-related gap at a prompt ``x`` is then ``dr1(x) = dr(x) - dr2`` (:func:`prompt_related_gap`).
A closed-form diagnostic is ``dr2_logit = logit(sum_i w_i sigmoid(dr_i))`` (:func:`prompt_free_gap_logit`).

Identifiability. The split is not unique (any ``g(y)`` can move from ``r1`` to ``r2``); (*) fixes it. For a
decomposable reward, ``dr_i = dr1(x_i) + dr2`` exactly, substituting ``c = dr2 + delta`` in (*) shows that the
estimate is ``dr2 + delta``, with ``delta`` the root of ``sum_i w_i sigmoid(dr1(x_i) - delta) = 1/2``: the same
equation on ``dr1`` alone, independent of ``dr2``. Hence the bisection root equals ``dr2`` iff
``sum_i w_i sigmoid(dr1(x_i)) = 1/2``, e.g. when the weighted distribution of ``dr1`` over the sampled prompts
is symmetric about 0 (``sigmoid(a) + sigmoid(-a) = 1``).

Known bias. If ``sum_i w_i sigmoid(dr1(x_i)) > 1/2`` (the prompts favour ``y_w`` on balance), the estimate is
above ``dr2`` (``delta > 0``); if ``< 1/2`` it is below. The logit estimator equals ``dr2`` iff
``sum_i w_i sigmoid(dr1(x_i) + dr2) = sigmoid(dr2)``, a condition that depends on ``dr2`` itself: it holds for every
``dr2`` only when ``dr1`` is 0 over the (positive-weight) prompts. For a symmetric nonzero ``dr1`` it holds only at
``dr2 = 0``; otherwise the logit estimate is pulled toward 0 without changing sign (Jensen:
``(sigmoid(d + a) + sigmoid(d - a)) / 2`` lies strictly between ``1/2`` and ``sigmoid(d)`` for ``d != 0``,
``a != 0``), so ``0 < dr2_logit < dr2`` for ``dr2 > 0`` and ``dr2 < dr2_logit < 0`` for ``dr2 < 0``; e.g.
``dr2 = 1``, ``dr1 = +/-2`` gives ``dr2_logit = 0.450``.
Unlike the bisection root it is not shift-equivariant in ``dr``.

Everything is pure ``jax.numpy``, at least float32, jittable and vmappable; the string/float options are static
(checked at trace time).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from inform_jax.losses._utils import as_float

IMPORTANCE_KINDS = ("uniform", "reward")
PRIORITY_SCHEMES = ("keep_lowest", "sigmoid")


def _check_positive(value: float, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _dr_and_weights(dr: jax.Array, weights: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """``dr`` at least float32 and raw weights broadcast to its shape (ones for None), same dtype."""
    dr = as_float(dr)
    if dr.ndim < 1:
        raise ValueError(f"dr must be at least 1-D [..., N], got shape {dr.shape}")
    if weights is None:
        return dr, jnp.ones_like(dr)
    weights = jnp.asarray(weights)
    dtype = jnp.promote_types(dr.dtype, weights.dtype)
    return dr.astype(dtype), jnp.broadcast_to(weights.astype(dtype), dr.shape)


def _masked_log(w: jax.Array) -> jax.Array:
    """``log w`` with ``-inf`` for ``w <= 0`` (and no NaN from ``log`` of a negative)."""
    positive = w > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, w, 1.0)), -jnp.inf)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _bisect(dr: jax.Array, w: jax.Array, iterations: int) -> jax.Array:
    """Root of ``sum_i w_i (sigmoid(dr_i - c) - 1/2) = 0`` over the last axis, ``w`` unnormalized (scale-free).

    Entries with ``w_i <= 0`` are left out (their ``dr_i`` may be anything, NaN included); rows without any
    positive weight give NaN (an empty bracket).
    """
    positive = w > 0
    lo = jnp.min(jnp.where(positive, dr, jnp.inf), axis=-1)
    hi = jnp.max(jnp.where(positive, dr, -jnp.inf), axis=-1)
    drm = jnp.where(positive, dr, 0.0)
    wm = jnp.where(positive, w, 0.0)

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        z = drm - mid[..., None]
        # 2 (sigmoid(z) - 1/2) = tanh(z / 2) = sign(z) (1 - 2 sigmoid(-|z|)). Summing the exact sign(z) terms
        # apart from the small sigmoid(-|z|) corrections keeps those corrections when dr is spread wide
        # (|z| >~ 10): in sum w sigmoid(z) - 1/2 they drown in the rounding of terms near 1, which costs
        # float32 ~1e-5 of accuracy at |dr| ~ 10 instead of ~1e-6.
        s = jnp.sign(z)
        f = jnp.sum(wm * s, axis=-1) - 2.0 * jnp.sum(wm * s * jax.nn.sigmoid(-jnp.abs(z)), axis=-1)
        up = f > 0  # the left side of (*) is still above 1/2 at mid: the root is to the right
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    # All-equal rows: lo == hi == the value throughout, and (v + v) / 2 == v exactly.
    return 0.5 * (lo + hi)


@_bisect.defjvp
def _bisect_jvp(iterations, primals, tangents):
    # Implicit function theorem on F(c; dr, w) = sum_i w_i (sigmoid(dr_i - c) - 1/2) = 0:
    #   dc = [sum_i w_i sigmoid'(z_i) d dr_i + sum_i (sigmoid(z_i) - 1/2) d w_i] / sum_i w_i sigmoid'(z_i),
    # z_i = dr_i - c. The bisection loop itself has no useful derivative (it would move c with min/max dr).
    dr, w = primals
    ddr, dw = tangents
    c = _bisect(dr, w, iterations)
    positive = w > 0
    z = dr - c[..., None]
    zm = jnp.where(positive, z, 0.0)
    # log(w sigmoid'(z)), sigmoid' = sigmoid(z) sigmoid(-z): in logs so wide rows (|z| > ~88) don't underflow.
    log_slope = jnp.where(positive, _masked_log(w) + jax.nn.log_sigmoid(zm) + jax.nn.log_sigmoid(-zm), -jnp.inf)
    log_total = jax.scipy.special.logsumexp(log_slope, axis=-1)
    ok = jnp.isfinite(log_total)  # False for rows without positive weight: zero tangent, not NaN
    safe_total = jnp.where(ok, log_total, 0.0)
    share = jnp.where(ok[..., None], jnp.exp(log_slope - safe_total[..., None]), 0.0)
    excess = jnp.where(jnp.isnan(z), 0.0, jax.nn.sigmoid(z) - 0.5)
    dc = jnp.sum(share * ddr, axis=-1) + jnp.where(ok, jnp.exp(-safe_total), 0.0) * jnp.sum(excess * dw, axis=-1)
    return c, dc


def prompt_free_gap(dr: jax.Array, weights: jax.Array | None = None, *, iterations: int = 40) -> jax.Array:
    """The prompt-free reward gap ``dr2``: the root ``c`` of ``sum_i w_i sigmoid(dr_i - c) = 1/2``, by bisection.

    ``w = weights / sum(weights)`` per row. The bracket starts as ``[min_i dr_i, max_i dr_i]`` over the ``i`` with
    ``w_i > 0`` (the root always lies in it) and is halved ``iterations`` times (a ``lax.fori_loop``, all rows at
    once). Exactness: after ``k`` halvings the bracket, of width ``W * 2^-k`` with ``W = max - min``, still holds
    the root, and its midpoint is returned, so the error is at most ``W * 2^-(k + 1)``; for the default ``k = 40``
    that is below ``W * 2^-40`` (~1e-12 ``W``). Floating point adds the rounding of the equation itself: the
    bracket stops shrinking at an ulp of the root, and float32 gets within ~1e-6 of the exact root for ``|dr|``
    up to ~10 (the sign test sums ``tanh((dr_i - c) / 2)`` split into its exact sign and small corrections).
    When all positive-weight ``dr_i`` of a row are equal (or only one weight is positive) the result is that
    value exactly.

    Differentiable: the gradient is the implicit one,
    ``d c / d dr_i = w_i sigmoid'(dr_i - c) / sum_j w_j sigmoid'(dr_j - c)`` (a convex combination) and
    ``d c / d weights_i = (sigmoid(dr_i - c) - 1/2) / sum_j weights_j sigmoid'(dr_j - c)``, not the derivative
    of the bisection steps.

    Args:
      dr: ``[P, N]`` float, ``r(x_i, y_w) - r(x_i, y_l)`` of ``P`` pairs under ``N`` prompts each (any leading
        shape ``[..., N]`` works the same). Entries with zero weight are ignored, even if NaN; a non-finite
        entry with positive weight makes its row NaN.
      weights: optional ``[P, N]`` float >= 0 (or anything broadcastable to ``dr``), e.g. from
        :func:`importance_weights`; need not sum to 1. None: uniform. Negative weights are not checked (the
        function is jittable) and give a meaningless result.
      iterations: number of bisection halvings, a static Python int >= 0.

    Returns:
      ``[P]`` (``dr.shape[:-1]``), at least float32. NaN for rows whose weights are all zero.

    Raises:
      ValueError: for a 0-d ``dr`` or a negative or non-integer ``iterations``.
    """
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    dr, w = _dr_and_weights(dr, weights)
    positive = w > 0
    valid = jnp.any(positive, axis=-1) & jnp.all(jnp.isfinite(dr) | ~positive, axis=-1)
    # Bisect on the raw weights: the root is invariant to their scale, and integer weights (uniform: ones) sum
    # exactly in the sign test, where 1/N-normalized ones would round.
    root = _bisect(dr, w, iterations)
    return jnp.where(valid, root, jnp.nan)


def prompt_free_gap_logit(dr: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Closed-form diagnostic ``dr2_logit = logit(sum_i w_i sigmoid(dr_i))``, ``w = weights / sum(weights)``.

    Computed as ``logsumexp_i(log w_i + log_sigmoid(dr_i)) - logsumexp_i(log w_i + log_sigmoid(-dr_i))``
    (``1 - sum_i w_i sigmoid(dr_i) = sum_i w_i sigmoid(-dr_i)``), so no probability is ever rounded to 0 or 1 and
    no clipping is needed: the result is finite for all finite ``dr`` (e.g. ``dr = 60`` everywhere gives 60, not
    ``inf``). It is biased toward 0 for a symmetric nonzero prompt-related part, see the module docstring.

    Args:
      dr: ``[P, N]`` float (any ``[..., N]``). Zero-weight entries are ignored, even if NaN.
      weights: optional ``[P, N]`` float >= 0 (broadcastable to ``dr``); None: uniform.

    Returns:
      ``[P]`` (``dr.shape[:-1]``), at least float32. NaN for rows whose weights are all zero.
    """
    dr, w = _dr_and_weights(dr, weights)
    positive = w > 0
    drm = jnp.where(positive, dr, 0.0)
    log_w = _masked_log(w)  # unnormalized: the scale cancels in the difference
    log_p = jax.scipy.special.logsumexp(log_w + jax.nn.log_sigmoid(drm), axis=-1)
    log_q = jax.scipy.special.logsumexp(log_w + jax.nn.log_sigmoid(-drm), axis=-1)
    return jnp.where(jnp.any(positive, axis=-1), log_p - log_q, jnp.nan)


def prompt_related_gap(dr_at_prompt: jax.Array, dr2: jax.Array) -> jax.Array:
    """The prompt-related gap ``dr1(x) = dr(x) - dr2``.

    Args:
      dr_at_prompt: ``[P]`` (one prompt per pair) or ``[P, N]`` (``N`` prompts per pair) float, ``dr(x)``.
      dr2: ``[P]`` float, the prompt-free gaps (e.g. from :func:`prompt_free_gap`). Its axes are matched to the
        leading axes of ``dr_at_prompt`` (trailing unit axes are appended), so ``[P, N] - [P]`` subtracts
        ``dr2[p]`` from every prompt of pair ``p``; a scalar ``dr2`` works too.

    Returns:
      The shape of ``dr_at_prompt``, at least float32.

    Raises:
      ValueError: if ``dr2`` has more axes than ``dr_at_prompt``.
    """
    dr, dr2 = as_float(dr_at_prompt), as_float(dr2)
    if dr2.ndim > dr.ndim:
        raise ValueError(f"dr2 has more axes than dr_at_prompt: {dr2.shape} vs {dr.shape}")
    return dr - jnp.reshape(dr2, dr2.shape + (1,) * (dr.ndim - dr2.ndim))


def importance_weights(
    r_chosen: jax.Array, r_rejected: jax.Array, *, kind: str = "uniform", tau: float = 1.0
) -> jax.Array:
    """Self-normalized weights ``w_i`` of the ``N`` sampled prompts of each pair, rows summing to 1.

    * ``"uniform"``: ``w_i = 1/N``: the prompts are drawn from ``P(X)`` itself and (*) averages over it.
    * ``"reward"``: ``w_i = softmax_i((r(x_i, y_w) + r(x_i, y_l)) / tau)``, i.e.
      ``w_i ∝ exp((r(x_i, y_w) + r(x_i, y_l)) / tau)``. This reads the reward as a log-likelihood ratio,
      ``r(x, y) / tau = log P(y | x) / P(y) + const``; if ``y_w`` and ``y_l`` are independent given ``x``,
      ``P(x | y_w, y_l) ∝ P(x) P(y_w | x) P(y_l | x) ∝ P(x) exp((r(x, y_w) + r(x, y_l)) / tau)``, so with the
      ``x_i ~ P(X)`` these are the self-normalized importance weights toward the prompts that plausibly
      produced the pair. Anything prompt-independent in ``r`` (the constants, and ``r2(y)`` itself) cancels in
      the softmax over prompts. ``tau`` is the reward's scale (e.g. DPO's beta for an implicit reward).

    No gradient stopping is applied (wrap in ``jax.lax.stop_gradient`` if the weights must not be trained).

    Args:
      r_chosen: ``[P, N]`` float, ``r(x_i, y_w)`` for each pair's ``N`` prompts (any ``[..., N]``).
      r_rejected: ``[P, N]`` float, ``r(x_i, y_l)``, same shape.
      kind: ``"uniform"`` (default) or ``"reward"``.
      tau: temperature > 0, a static Python float; used by ``"reward"`` only.

    Returns:
      ``[P, N]`` at least float32, nonnegative, each row summing to 1.

    Raises:
      ValueError: for an unknown ``kind``, ``tau <= 0`` or mismatched shapes.
    """
    r_chosen, r_rejected = as_float(r_chosen), as_float(r_rejected)
    if r_chosen.shape != r_rejected.shape or r_chosen.ndim < 1:
        raise ValueError(
            f"r_chosen and r_rejected must share a [..., N] shape, got {r_chosen.shape}, {r_rejected.shape}"
        )
    if kind == "uniform":
        n = r_chosen.shape[-1]
        return jnp.full(r_chosen.shape, 1.0 / n, jnp.result_type(r_chosen, r_rejected))
    if kind == "reward":
        _check_positive(tau, "tau")
        return jax.nn.softmax((r_chosen + r_rejected) / tau, axis=-1)
    raise ValueError(f"kind must be one of {IMPORTANCE_KINDS}, got {kind!r}")


def priority_weights(
    dr2: jax.Array, *, scheme: str = "keep_lowest", keep_fraction: float = 0.5, tau: float = 1.0
) -> jax.Array:
    """Per-pair training weights that fall with the signed prompt-free gap ``dr2``, averaging 1 over the pairs.

    Pairs whose preference the reward already explains by the response alone (large ``dr2``) are the ones a
    reward model can fit without reading the prompt; these weights train on the others first.

    * ``"keep_lowest"``: 1 for the ``k = ceil(keep_fraction * P)`` pairs with the lowest ``dr2`` (ties broken by
      index, lower first: a stable sort), 0 for the rest, then scaled by ``P / (number kept)`` so the weights
      average 1 over all ``P`` pairs and the loss keeps its scale. ``k`` is computed in Python with a 1e-9
      guard against float rounding (``0.7 * 10`` keeps 7, not 8) and is at least 1.
    * ``"sigmoid"``: ``sigmoid(-dr2 / tau)``, strictly decreasing in ``dr2``, scaled to average 1 over all
      ``P`` pairs (normalized in the log domain, so it stays finite when every ``dr2 / tau`` is large).

    NaN entries of ``dr2`` (e.g. pairs whose prompt weights were all zero) get weight 0 and are never counted
    as kept; the other weights are still scaled so the mean over all ``P`` is 1 (with fewer than ``k``
    non-NaN pairs, ``"keep_lowest"`` keeps them all). If every entry is NaN all weights are 0.

    Args:
      dr2: ``[P]`` float, the prompt-free gaps (any ``[..., P]``: each row is handled on its own).
      scheme: ``"keep_lowest"`` (default) or ``"sigmoid"``.
      keep_fraction: in ``(0, 1]``, a static Python float; ``"keep_lowest"`` only.
      tau: temperature > 0, a static Python float; ``"sigmoid"`` only.

    Returns:
      ``[P]`` at least float32, nonnegative, mean 1 (unless all NaN). Gradients flow only through
      ``"sigmoid"`` (``"keep_lowest"`` is piecewise constant); stop them if ``dr2`` comes from the model.

    Raises:
      ValueError: for an unknown ``scheme``, ``keep_fraction`` outside ``(0, 1]`` or ``tau <= 0``.
    """
    dr2 = as_float(dr2)
    if dr2.ndim < 1:
        raise ValueError(f"dr2 must be at least 1-D [..., P], got shape {dr2.shape}")
    p = dr2.shape[-1]
    nan = jnp.isnan(dr2)
    if scheme == "keep_lowest":
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction!r}")
        k = max(1, math.ceil(keep_fraction * p - 1e-9))
        # Lexicographic stable sort on (is NaN, dr2, index): NaNs last, ties by index; real +inf stays before NaN.
        iota = jax.lax.broadcasted_iota(jnp.int32, dr2.shape, dr2.ndim - 1)
        filled = jnp.where(nan, 0.0, dr2)
        _, _, order = jax.lax.sort(
            (nan.astype(jnp.int32), filled, iota), dimension=dr2.ndim - 1, num_keys=2, is_stable=True
        )
        rank = jnp.argsort(order, axis=-1)  # inverse permutation
        kept = (rank < k) & ~nan
        n_kept = jnp.sum(kept, axis=-1, keepdims=True).astype(dr2.dtype)
        return jnp.where(kept, p / jnp.maximum(n_kept, 1.0), 0.0)
    if scheme == "sigmoid":
        _check_positive(tau, "tau")
        logits = jnp.where(nan, -jnp.inf, jax.nn.log_sigmoid(-jnp.where(nan, 0.0, dr2) / tau))
        any_valid = jnp.any(~nan, axis=-1, keepdims=True)
        # Normalized by the largest term first (a softmax), so it stays finite where sigmoid underflows.
        top = jax.lax.stop_gradient(jnp.where(any_valid, jnp.max(logits, axis=-1, keepdims=True), 0.0))
        unnormalized = jnp.exp(logits - top)  # 0 for NaN entries, 1 for the largest
        total = jnp.where(any_valid, jnp.sum(unnormalized, axis=-1, keepdims=True), 1.0)  # >= 1 where valid
        return p * unnormalized / total
    raise ValueError(f"scheme must be one of {PRIORITY_SCHEMES}, got {scheme!r}")
