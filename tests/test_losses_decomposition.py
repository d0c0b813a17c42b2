"""Reward decomposition: prompt-free gap (bisection vs brentq, gradients), its bias, and the weighting helpers.

Compilation dominates the run time, so the tests reuse a few array shapes and jit each function once per shape.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import expit, logit

from inform_jax.losses.decomposition import (
    importance_weights,
    priority_weights,
    prompt_free_gap,
    prompt_free_gap_logit,
    prompt_related_gap,
)

_gap = jax.jit(prompt_free_gap, static_argnames="iterations")
_gap_logit = jax.jit(prompt_free_gap_logit)


def _np_root(dr, w):
    """Root ``c`` of ``sum_i w_i sigmoid(dr_i - c) = 1/2`` for one row, float64 brentq (positive weights only)."""
    dr, w = np.asarray(dr, np.float64), np.asarray(w, np.float64)
    dr, w = dr[w > 0], w[w > 0] / w[w > 0].sum()
    lo, hi = dr.min(), dr.max()
    if lo == hi:
        return lo
    return brentq(lambda c: np.sum(w * expit(dr - c)) - 0.5, lo, hi, xtol=1e-14, rtol=1e-15)


def _np_roots(dr, w):
    return np.array([_np_root(d, x) for d, x in zip(dr, np.broadcast_to(w, np.shape(dr)), strict=True)])


def _random_rows(rng, p, n):
    """``[P, N]`` gaps with a per-row scale log-uniform in [0.1, 10] and an offset, and positive weights."""
    scale = 10 ** rng.uniform(-1, 1, (p, 1))
    dr = rng.normal(size=(p, n)) * scale + rng.normal(0, 2, (p, 1))
    return dr, rng.uniform(0.05, 2.0, (p, n))


@pytest.mark.parametrize("p,n", [(1, 1), (5, 7), (6, 64)])
def test_prompt_free_gap_matches_brentq(p, n):
    rng = np.random.default_rng(p * 100 + n)
    dr, w = _random_rows(rng, p, n)
    with jax.enable_x64(True):
        got = np.asarray(_gap(jnp.asarray(dr), jnp.asarray(w)))
    assert got.shape == (p,) and got.dtype == np.float64
    np.testing.assert_allclose(got, _np_roots(dr, w), rtol=0, atol=1e-5)

    # float32 (the training dtype): the reference solves the equation on the float32-rounded inputs.
    dr32, w32 = dr.astype(np.float32), w.astype(np.float32)
    got32 = np.asarray(_gap(dr32, w32))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, _np_roots(dr32, w32), rtol=0, atol=1e-5)


def test_prompt_free_gap_error_bound_and_edge_rows():
    rng = np.random.default_rng(1)
    dr, w = _random_rows(rng, 6, 9)
    want = _np_roots(dr, w)
    with jax.enable_x64(True):
        for k in (0, 5):
            # The midpoint of the bracket after k halvings is within width * 2^-(k+1) of the root.
            got = np.asarray(_gap(jnp.asarray(dr), jnp.asarray(w), iterations=k))
            bound = (dr.max(1) - dr.min(1)) * 2.0 ** -(k + 1)
            assert np.all(np.abs(got - want) <= bound * (1 + 1e-9))

    # Uniform weights (None).
    dr_u = _random_rows(rng, 4, 5)[0].astype(np.float32)
    np.testing.assert_allclose(_gap(dr_u), _np_roots(dr_u, np.ones(5)), rtol=0, atol=1e-5)

    # All-equal rows give the value exactly, whatever the weights; so does a single positive weight.
    values = np.array([0.3, -7.25, 1e3, 0.0], np.float32)
    rows = np.repeat(values[:, None], 5, 1)
    np.testing.assert_array_equal(_gap(rows), values)
    np.testing.assert_array_equal(_gap(rows, rng.uniform(0.1, 3, (4, 5)).astype(np.float32)), values)
    one_hot = np.zeros((4, 5), np.float32)
    one_hot[np.arange(4), [2, 0, 4, 1]] = [0.7, 5.0, 1e-3, 1.0]
    spread = rng.normal(0, 3, (4, 5)).astype(np.float32)
    np.testing.assert_array_equal(_gap(spread, one_hot), spread[np.arange(4), [2, 0, 4, 1]])

    # Zero-weight entries are ignored, NaN ones included; an all-zero-weight row is NaN, and a NaN gap with
    # positive weight poisons its row only.
    dr3, w3 = (a.astype(np.float32) for a in _random_rows(rng, 4, 5))
    w3[0, [1, 4]] = 0.0
    dr3[0, 1] = np.nan
    w3[2] = 0.0
    dr3[3, 3] = np.nan
    got = np.asarray(_gap(dr3, w3))
    assert np.all(np.isfinite(got[:2])) and np.isnan(got[2]) and np.isnan(got[3])
    np.testing.assert_allclose(got[:2], _np_roots(dr3[:2], w3[:2]), rtol=0, atol=1e-5)
    got = np.asarray(_gap_logit(dr3, w3))
    assert np.all(np.isfinite(got[:2])) and np.isnan(got[2])
    wn = w3[0] / w3[0].sum()
    np.testing.assert_allclose(got[0], logit(np.nansum(wn * expit(dr3[0]))), rtol=1e-5, atol=1e-6)


def test_prompt_free_gap_jit_and_vmap():
    rng = np.random.default_rng(2)
    b, p, n = 3, 4, 5
    dr, w = (a.astype(np.float32).reshape(b, p, n) for a in _random_rows(rng, b * p, n))
    eager = np.asarray(prompt_free_gap(dr, w))  # leading axes are batch axes
    assert eager.shape == (b, p)
    np.testing.assert_allclose(eager, _np_roots(dr.reshape(-1, n), w.reshape(-1, n)).reshape(b, p), atol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.vmap(prompt_free_gap))(dr, w), eager, rtol=1e-6, atol=1e-6)
    # vmap over the pairs too: each call then sees one [N] row.
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.vmap(prompt_free_gap)))(dr, w), eager, rtol=1e-6, atol=1e-6)
    wn = w / w.sum(-1, keepdims=True)
    want = logit(np.sum(wn * expit(dr.astype(np.float64)), -1))
    np.testing.assert_allclose(jax.jit(jax.vmap(prompt_free_gap_logit))(dr, w), want, rtol=1e-5, atol=1e-5)


def test_prompt_free_gap_gradient_is_implicit():
    rng = np.random.default_rng(3)
    dr, w = _random_rows(rng, 3, 5)
    w[1, 2] = 0.0  # the one-sided derivative w.r.t. a zero weight still uses its gap
    coef = np.arange(1.0, 4.0)
    with jax.enable_x64(True):

        @jax.jit
        def f(d, v):
            # iterations=60: the bisection resolves the float64 finite-difference steps below.
            return jnp.sum(prompt_free_gap(d, v, iterations=60) * coef)

        g_dr, g_w = jax.jit(jax.grad(f, argnums=(0, 1)))(dr, w)
        s = expit(dr - _np_roots(dr, w)[:, None])
        slope = w * s * (1 - s)
        np.testing.assert_allclose(g_dr, coef[:, None] * slope / slope.sum(1, keepdims=True), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(g_w, coef[:, None] * (s - 0.5) / slope.sum(1, keepdims=True), rtol=1e-8, atol=1e-12)
        # And against finite differences (one-sided at the zero weight).
        h = 1e-6
        for i, j in [(0, 0), (1, 2), (2, 4)]:
            e = np.zeros_like(dr)
            e[i, j] = h
            np.testing.assert_allclose(g_dr[i, j], (f(dr + e, w) - f(dr - e, w)) / (2 * h), rtol=1e-5, atol=1e-7)
            fd_w = (f(dr, w + e) - f(dr, w)) / h if w[i, j] == 0 else (f(dr, w + e) - f(dr, w - e)) / (2 * h)
            np.testing.assert_allclose(g_w[i, j], fd_w, rtol=1e-4, atol=1e-6)
    # A zero-weight row: NaN value, but finite gradients, zero for that row.
    w0 = np.ones((2, 3), np.float32)
    w0[1] = 0.0
    g = jax.jit(jax.grad(lambda d: jnp.nansum(prompt_free_gap(d, w0))))(jnp.ones((2, 3)) * jnp.arange(3.0))
    assert np.all(np.isfinite(g)) and np.all(g[1] == 0)
    slopes = expit(np.arange(3.0) - 1) * expit(1 - np.arange(3.0))  # the root of row 0 is 1, by symmetry
    np.testing.assert_allclose(g[0], slopes / slopes.sum(), rtol=1e-5)


def _symmetric_dr1(rng, half):
    """``dr1`` of ``2 * half`` prompts in +/- pairs with equal weights per pair: ``sum w sigmoid(dr1) = 1/2``."""
    a = rng.uniform(0.1, 4.0, half)
    w = rng.uniform(0.2, 2.0, half)
    return np.concatenate([a, -a]), np.concatenate([w, w])


def test_identifiability_and_bias_direction():
    rng = np.random.default_rng(4)
    dr2s = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
    dr1, w = _symmetric_dr1(rng, 6)
    r2_chosen, r2_rejected = dr2s + 1.0, np.ones_like(dr2s)  # r2(y_w), r2(y_l): dr2 is their difference
    r1_chosen = rng.normal(size=(1, dr1.size)) + dr1  # r1(x_i, y_w) - r1(x_i, y_l) = dr1_i
    r1_rejected = r1_chosen - dr1
    dr = (r1_chosen + r2_chosen[:, None]) - (r1_rejected + r2_rejected[:, None])
    got = _gap(dr.astype(np.float32), np.broadcast_to(w, dr.shape).astype(np.float32))
    np.testing.assert_allclose(got, dr2s, rtol=0, atol=1e-5)

    # dr1 all positive: sum w sigmoid(dr1) > 1/2 and the estimate is above dr2 by delta, the root of the same
    # equation on dr1 alone, whatever dr2 is; dr1 all negative: below.
    for sign in (1.0, -1.0):
        dr1_biased = sign * rng.uniform(0.1, 3.0, 12)
        w_b = rng.uniform(0.2, 2.0, 12)
        assert np.sign(np.sum(w_b * expit(dr1_biased)) / w_b.sum() - 0.5) == sign
        delta = _np_root(dr1_biased, w_b)
        assert np.sign(delta) == sign
        dr_b = (dr1_biased[None, :] + dr2s[:, None]).astype(np.float32)
        got = np.asarray(_gap(dr_b, np.broadcast_to(w_b, dr_b.shape).astype(np.float32)))
        assert np.all(np.sign(got - dr2s) == sign)
        np.testing.assert_allclose(got - dr2s, delta, rtol=0, atol=1e-5)


def test_logit_estimator_closed_form_and_bias():
    rng = np.random.default_rng(5)
    dr, w = _random_rows(rng, 4, 7)
    wn = w / w.sum(1, keepdims=True)
    with jax.enable_x64(True):
        got = np.asarray(_gap_logit(jnp.asarray(dr), jnp.asarray(w)))
    np.testing.assert_allclose(got, logit(np.sum(wn * expit(dr), 1)), rtol=1e-10, atol=1e-12)

    # Large gaps: finite where the naive logit(p) rounds p to 1 (or 0 to float32).
    big = np.array([[60.0, 60.0], [60.0, 80.0], [-300.0, -1e4], [3.0, -1.0]], np.float32)
    got = np.asarray(_gap_logit(big))
    want = [60.0, 60.0 + np.log(2.0) - np.log1p(np.exp(-20.0)), -300.0 - np.log(2.0), 0.4504986]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[3], logit(0.5 * (expit(3.0) + expit(-1.0))), rtol=1e-6)  # dr2 = 1, dr1 = +/-2

    # dr1 = 0 (first 5 rows): exact. Symmetric nonzero dr1 (last 5): same sign as dr2, strictly smaller in
    # magnitude, 0 at dr2 = 0.
    dr2s = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
    dr1, w1 = _symmetric_dr1(rng, 5)
    rows = np.concatenate([np.broadcast_to(dr2s[:, None], (5, 10)), dr1[None, :] + dr2s[:, None]])
    got = np.asarray(_gap_logit(rows.astype(np.float32), np.broadcast_to(w1, rows.shape).astype(np.float32)))
    np.testing.assert_allclose(got[:5], dr2s, rtol=1e-6)
    est, nz = got[5:], dr2s != 0
    assert np.all(np.sign(est[nz]) == np.sign(dr2s[nz])) and np.all(np.abs(est[nz]) < np.abs(dr2s[nz]))
    assert abs(est[2]) < 1e-6
    # ... while the bisection root recovers dr2 on the same rows.
    np.testing.assert_allclose(_np_roots(rows, w1), np.concatenate([dr2s, dr2s]), atol=1e-9)


def test_prompt_related_gap_broadcasting():
    rng = np.random.default_rng(6)
    dr, dr2 = rng.normal(size=(4, 5)), rng.normal(size=4)
    np.testing.assert_allclose(prompt_related_gap(dr, dr2), dr - dr2[:, None], rtol=1e-6)
    np.testing.assert_allclose(prompt_related_gap(dr[:, 0], dr2), dr[:, 0] - dr2, rtol=1e-6)
    np.testing.assert_allclose(prompt_related_gap(dr, 0.5), dr - 0.5, rtol=1e-6)
    dr = dr.astype(np.float32)
    c = _gap(dr)
    dr1 = prompt_related_gap(dr, c)
    np.testing.assert_allclose(dr1 + np.asarray(c)[:, None], dr, rtol=1e-6, atol=1e-6)
    # The prompt-related part carries no preference on average: the root of its own equation is 0.
    np.testing.assert_allclose(_gap(dr1), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="dr2"):
        prompt_related_gap(dr[:, 0], dr)


def test_importance_weights():
    rng = np.random.default_rng(7)
    rw, rl = rng.normal(0, 2, (3, 6)), rng.normal(0, 2, (3, 6))
    u = np.asarray(importance_weights(rw, rl))
    assert u.shape == (3, 6)
    np.testing.assert_allclose(u, 1 / 6, rtol=1e-7)
    for tau in (0.5, 1.0, 3.0):
        logits = (rw + rl) / tau
        want = np.exp(logits - logits.max(1, keepdims=True))
        want /= want.sum(1, keepdims=True)
        got = np.asarray(importance_weights(rw, rl, kind="reward", tau=tau))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-6)
    # Prompt-independent terms (r2(y), constants) cancel; huge rewards don't overflow.
    r2 = rng.normal(0, 5, (3, 1))
    np.testing.assert_allclose(
        importance_weights(rw + r2, rl - 2 * r2, kind="reward"), importance_weights(rw, rl, kind="reward"), atol=1e-6
    )
    huge = np.asarray(importance_weights(rw * 1e3, rl * 1e3, kind="reward"))
    assert np.all(np.isfinite(huge)) and np.allclose(huge.sum(1), 1.0)
    jitted = jax.jit(importance_weights, static_argnames=("kind", "tau"))
    eager = importance_weights(rw, rl, kind="reward", tau=2.0)
    np.testing.assert_allclose(jitted(rw, rl, kind="reward", tau=2.0), eager, rtol=1e-6)


def _np_keep_lowest(dr2, q):
    p = dr2.size
    k = math.ceil(round(q * p, 9))
    order = [i for i in np.argsort(dr2, kind="stable") if not np.isnan(dr2[i])][:k]
    out = np.zeros(p)
    out[order] = p / max(len(order), 1)
    return out


def test_priority_weights_keep_lowest():
    # All inputs have P = 10: eager calls then reuse their compiled ops, whatever the keep_fraction.
    rng = np.random.default_rng(8)
    dr2 = rng.normal(size=10)
    for q in (0.05, 0.1, 0.25, 0.5, 0.7, 0.77, 1.0):
        got = np.asarray(priority_weights(dr2, keep_fraction=q))
        np.testing.assert_allclose(got, _np_keep_lowest(dr2, q), rtol=1e-6)
        np.testing.assert_allclose(got.mean(), 1.0, rtol=1e-6)
    assert np.count_nonzero(priority_weights(dr2, keep_fraction=0.7)) == 7  # 0.7 * 10 == 7.000000000000001
    # Ties by index: of the four zeros the first ones are kept.
    ties = np.array([1.0, 0.0, 0.0, 0.0, 2.0, 0.0, -1.0, 3.0, 0.5, 4.0])
    got = np.asarray(priority_weights(ties, keep_fraction=0.3))  # k = 3: index 6, then the zeros at 1 and 2
    np.testing.assert_array_equal(np.nonzero(got)[0], [1, 2, 6])
    np.testing.assert_allclose(got.mean(), 1.0)
    # NaN -> 0, never kept; the mean over all P stays 1; too few valid pairs: all valid ones kept.
    with_nan = np.array([0.3, np.nan, -1.0, np.inf, np.nan, 2.0, np.nan, np.nan, np.nan, np.nan], np.float32)
    for q, kept in [(0.2, [0, 2]), (0.3, [0, 2, 5]), (0.5, [0, 2, 3, 5])]:  # +inf is a value, kept before NaNs
        got = np.asarray(priority_weights(with_nan, keep_fraction=q))
        np.testing.assert_array_equal(np.nonzero(got)[0], kept)
        np.testing.assert_allclose(got.mean(), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(priority_weights(np.full(10, np.nan)), 0.0)
    # Rows of a [..., P] input are independent; jit (P static) agrees with eager.
    batch = rng.normal(size=(3, 10))
    jitted = jax.jit(priority_weights, static_argnames=("scheme", "keep_fraction", "tau"))
    np.testing.assert_allclose(jitted(batch, keep_fraction=0.3), [_np_keep_lowest(b, 0.3) for b in batch], rtol=1e-6)
    np.testing.assert_array_equal(jitted(dr2, keep_fraction=0.3), priority_weights(dr2, keep_fraction=0.3))


def test_priority_weights_sigmoid():
    rng = np.random.default_rng(9)
    dr2 = np.sort(rng.normal(0, 2, 12))
    for tau in (0.5, 2.0):
        got = np.asarray(priority_weights(dr2, scheme="sigmoid", tau=tau))
        want = expit(-dr2 / tau)
        np.testing.assert_allclose(got, want * 12 / want.sum(), rtol=1e-5)
        assert np.all(np.diff(got) < 0)
        np.testing.assert_allclose(got.mean(), 1.0, rtol=1e-6)
    with_nan = dr2.copy()
    with_nan[[2, 7]] = np.nan
    got = np.asarray(priority_weights(with_nan, scheme="sigmoid"))
    assert got[2] == 0 and got[7] == 0 and np.all(got[np.isfinite(with_nan)] > 0)
    np.testing.assert_allclose(got.mean(), 1.0, rtol=1e-6)
    # Large gaps everywhere: sigmoid underflows but the normalized weights don't.
    np.testing.assert_allclose(priority_weights(np.full(12, 500.0), scheme="sigmoid"), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(priority_weights(np.full(12, np.nan), scheme="sigmoid"), 0.0)
    jitted = jax.jit(priority_weights, static_argnames=("scheme", "keep_fraction", "tau"))
    eager = priority_weights(dr2, scheme="sigmoid", tau=2.0)
    np.testing.assert_allclose(jitted(dr2, scheme="sigmoid", tau=2.0), eager, rtol=1e-6)


def test_bad_arguments():
    r = np.zeros((2, 3))
    with pytest.raises(ValueError, match="kind"):
        importance_weights(r, r, kind="softmax")
    for tau in (0.0, -1.0):
        with pytest.raises(ValueError, match="tau"):
            importance_weights(r, r, kind="reward", tau=tau)
        with pytest.raises(ValueError, match="tau"):
            priority_weights(r[0], scheme="sigmoid", tau=tau)
    with pytest.raises(ValueError, match="r_chosen"):
        importance_weights(r, r[:, :2])
    with pytest.raises(ValueError, match="scheme"):
        priority_weights(r[0], scheme="top_k")
    for q in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="keep_fraction"):
            priority_weights(r[0], keep_fraction=q)
    for it in (-1, 2.5):
        with pytest.raises(ValueError, match="iterations"):
            prompt_free_gap(r, iterations=it)
    with pytest.raises(ValueError, match="dr"):
        prompt_free_gap(np.float32(1.0))
    with pytest.raises(ValueError, match="dr2"):
        priority_weights(np.float32(1.0))
