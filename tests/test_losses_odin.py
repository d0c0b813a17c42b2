"""ODIN loss and Pearson correlation against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from inform_jax.losses import odin_loss, pearson_correlation


def _np_odin(qc, qr, lc, lr, len_c, len_r, length_coef, orth_coef, head_weights=None):
    rank = np.mean(np.logaddexp(0.0, -((qc + lc) - (qr + lr))))
    lengths = np.concatenate([len_c, len_r]).astype(np.float64)
    corr_q = np.corrcoef(np.concatenate([qc, qr]), lengths)[0, 1]
    corr_l = np.corrcoef(np.concatenate([lc, lr]), lengths)[0, 1]
    orth = 0.0 if head_weights is None else abs(np.dot(*head_weights))
    length = abs(corr_q) - corr_l
    return rank + length_coef * length + orth_coef * orth, dict(
        rank_loss=rank, length_loss=length, orthogonal_loss=orth, corr_quality=corr_q, corr_length=corr_l
    )


def _batch(rng, b=64, d=16):
    len_c, len_r = rng.integers(10, 500, b), rng.integers(10, 500, b)
    # Length head partly tracks length, quality head partly too: both correlations are nonzero.
    lc, lr = 0.01 * len_c + rng.normal(size=b), 0.01 * len_r + rng.normal(size=b)
    qc, qr = 0.002 * len_c + rng.normal(size=b), 0.002 * len_r + rng.normal(size=b)
    return qc, qr, lc, lr, len_c, len_r, (rng.normal(size=d), rng.normal(size=d))


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 50))
    y = 0.5 * x + rng.normal(size=(4, 50)) * np.array([[0.1], [1.0], [3.0], [10.0]])
    y[3] = -y[3]
    got = pearson_correlation(x, y)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, [np.corrcoef(a, b)[0, 1] for a, b in zip(x, y, strict=True)], rtol=1e-5, atol=1e-6)
    # Integer lengths in the hundreds, and invariance to affine maps of either input.
    lengths = rng.integers(10, 2000, 50)
    np.testing.assert_allclose(pearson_correlation(x[0], lengths), np.corrcoef(x[0], lengths)[0, 1], rtol=1e-5)
    np.testing.assert_allclose(
        pearson_correlation(3.0 * x[0] - 7.0, 0.5 * lengths + 1), pearson_correlation(x[0], lengths), rtol=1e-5
    )


def test_pearson_constant_input_is_safe():
    x = jnp.full((8,), 3.0)
    y = jnp.arange(8.0)
    assert pearson_correlation(x, y) == 0.0
    grads = jax.jit(jax.grad(pearson_correlation, argnums=(0, 1)))(x, y)
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("with_weights", [False, True])
def test_odin_loss_matches_numpy(with_weights):
    rng = np.random.default_rng(6)
    qc, qr, lc, lr, len_c, len_r, weights = _batch(rng)
    head_weights = weights if with_weights else None
    coefs = rng.uniform(0.5, 2.0, 2)
    loss, aux = odin_loss(qc, qr, lc, lr, len_c, len_r, *coefs, head_weights=head_weights)
    want, want_aux = _np_odin(qc, qr, lc, lr, len_c, len_r, *coefs, head_weights)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
    for name, value in want_aux.items():
        np.testing.assert_allclose(aux[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(aux["accuracy_quality"], np.mean(qc > qr), rtol=1e-6)
    np.testing.assert_allclose(aux["accuracy"], np.mean(qc + lc > qr + lr), rtol=1e-6)
    # The terms are exercised, and the two accuracies differ, so swapping them would fail.
    assert abs(want_aux["corr_quality"]) > 0.1 and want_aux["corr_length"] > 0.5
    assert np.mean(qc > qr) != np.mean(qc + lc > qr + lr)


def test_odin_length_term_limits():
    rng = np.random.default_rng(2)
    b = 1000
    len_c, len_r = rng.integers(10, 500, b), rng.integers(10, 500, b)
    noise_c, noise_r = rng.normal(size=b), rng.normal(size=b)
    # Disentangled: length head an affine map of length, quality head independent of it -> about -1.
    _, aux = odin_loss(noise_c, noise_r, 0.01 * len_c - 2, 0.01 * len_r - 2, len_c, len_r)
    np.testing.assert_allclose(aux["corr_length"], 1.0, rtol=1e-5)
    assert abs(aux["corr_quality"]) < 0.1
    np.testing.assert_allclose(aux["length_loss"], abs(aux["corr_quality"]) - 1.0, rtol=1e-5)
    # Entangled the wrong way round (quality head = length, length head noise) -> about +1.
    _, aux = odin_loss(0.01 * len_c, 0.01 * len_r, noise_c, noise_r, len_c, len_r)
    np.testing.assert_allclose(aux["corr_quality"], 1.0, rtol=1e-5)
    assert abs(aux["corr_length"]) < 0.1
    np.testing.assert_allclose(aux["length_loss"], 1.0 - aux["corr_length"], rtol=1e-5)
    # No head weights: no orthogonality term.
    assert aux["orthogonal_loss"] == 0.0


def test_odin_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        qc, qr, lc, lr, len_c, len_r, (wq, wl) = _batch(rng, b=6, d=4)
        args = tuple(jnp.asarray(a) for a in (qc, qr, lc, lr, wq, wl))
        len_c, len_r = jnp.asarray(len_c), jnp.asarray(len_r)

        def f(qc, qr, lc, lr, wq, wl):
            return odin_loss(qc, qr, lc, lr, len_c, len_r, 0.7, 1.3, head_weights=(wq, wl))[0]

        check_grads(f, args, order=1, modes=("fwd", "rev"))


def test_odin_jit_and_vmap():
    rng = np.random.default_rng(4)
    batches = [_batch(rng, b=16, d=8) for _ in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *batches)

    def loss_fn(qc, qr, lc, lr, len_c, len_r, head_weights):
        return odin_loss(qc, qr, lc, lr, len_c, len_r, head_weights=head_weights)

    losses, aux = jax.jit(jax.vmap(loss_fn))(*stacked)
    assert aux["accuracy"].shape == (3,)
    assert losses.shape == (3,)
    for i, batch in enumerate(batches):
        want, _ = _np_odin(*batch[:6], 1.0, 1.0, batch[6])
        np.testing.assert_allclose(losses[i], want, rtol=1e-5, atol=1e-6)


def test_odin_pair_weights_weight_the_ranking_term_only():
    rng = np.random.default_rng(11)
    qc, qr, lc, lr, len_c, len_r, _ = _batch(rng)
    pair_weights = rng.uniform(0.0, 2.0, len(qc))
    loss, aux = odin_loss(qc, qr, lc, lr, len_c, len_r, 1.0, 1.0, weights=pair_weights)
    per_pair = np.logaddexp(0.0, -((qc + lc) - (qr + lr)))
    rank = np.sum(pair_weights * per_pair) / np.sum(pair_weights)
    np.testing.assert_allclose(aux["rank_loss"], rank, rtol=1e-5)
    _, unweighted = _np_odin(qc, qr, lc, lr, len_c, len_r, 1.0, 1.0)
    np.testing.assert_allclose(aux["length_loss"], unweighted["length_loss"], rtol=1e-5)
    np.testing.assert_allclose(loss, rank + unweighted["length_loss"], rtol=1e-5)
