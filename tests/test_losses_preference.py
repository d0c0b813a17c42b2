"""Bradley-Terry loss and pairwise metrics against NumPy references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.test_util import check_grads

from inform_jax.losses import bradley_terry_loss, preference_accuracy


def _np_bt(chosen, rejected, margin=0.0, weights=None):
    losses = np.logaddexp(0.0, -(chosen - rejected - margin))  # -log sigmoid(x) = log(1 + exp(-x))
    if weights is None:
        return losses.mean(), losses
    return (weights * losses).sum() / weights.sum(), weights * losses


@pytest.mark.parametrize("use_margin", [False, True])
@pytest.mark.parametrize("use_weights", [False, True])
def test_bt_matches_numpy(use_margin, use_weights):
    rng = np.random.default_rng(0)
    b = 64
    chosen, rejected = rng.normal(0, 3, b), rng.normal(0, 3, b)
    chosen[:2], rejected[:2] = 40.0, -40.0  # large gaps: the stable form must not overflow
    chosen[2], rejected[2] = -40.0, 40.0
    margin = rng.uniform(0, 1, b) if use_margin else None
    weights = rng.uniform(0, 2, b) if use_weights else None
    want_mean, want_none = _np_bt(chosen, rejected, 0.0 if margin is None else margin, weights)

    args = [jnp.asarray(a, jnp.float32) if a is not None else None for a in (chosen, rejected, margin, weights)]
    got = bradley_terry_loss(*args)
    got_none = bradley_terry_loss(*args, reduction="none")
    np.testing.assert_allclose(got, want_mean, rtol=1e-5)
    assert got_none.shape == (b,)
    np.testing.assert_allclose(got_none, want_none, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(got_none))


def test_bt_scalar_margin_and_zero_weights():
    rng = np.random.default_rng(1)
    chosen, rejected = rng.normal(size=16), rng.normal(size=16)
    want, _ = _np_bt(chosen, rejected, 0.7)
    np.testing.assert_allclose(bradley_terry_loss(chosen, rejected, margin=0.7), want, rtol=1e-5)
    # All-zero weights: no pair counts, the loss is 0 rather than NaN.
    assert bradley_terry_loss(chosen, rejected, weights=np.zeros(16)) == 0.0


def test_bt_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        bradley_terry_loss(jnp.zeros(3), jnp.zeros(3), reduction="sum")


def test_bt_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    b = 8
    with jax.enable_x64(True):
        chosen, rejected, margin = (jnp.asarray(rng.normal(size=b)) for _ in range(3))
        weights = jnp.asarray(rng.uniform(0.1, 2.0, b))
        f = functools.partial(bradley_terry_loss, weights=weights)
        got, _ = ravel_pytree(jax.jit(jax.grad(f, argnums=(0, 1, 2)))(chosen, rejected, margin))
        check_grads(f, (chosen, rejected, margin), order=2, modes=("fwd", "rev"))
        # The analytic gradient w.r.t. the chosen reward: -w * sigmoid(-(gap)) / sum(w).
        want_chosen = -weights * jax.nn.sigmoid(-(chosen - rejected - margin)) / weights.sum()
        np.testing.assert_allclose(got[:b], want_chosen, rtol=1e-10)


def test_bt_jit_vmap_and_bf16():
    rng = np.random.default_rng(3)
    chosen, rejected = rng.normal(size=(4, 16)), rng.normal(size=(4, 16))
    got = jax.jit(jax.vmap(bradley_terry_loss))(chosen, rejected)
    np.testing.assert_allclose(got, [_np_bt(c, r)[0] for c, r in zip(chosen, rejected, strict=True)], rtol=1e-5)
    # bf16 rewards are upcast: the loss is float32.
    assert bradley_terry_loss(jnp.asarray(chosen[0], jnp.bfloat16), rejected[0]).dtype == jnp.float32


def test_accuracy_and_margin():
    rng = np.random.default_rng(4)
    chosen = rng.integers(-3, 4, 200).astype(np.float32)  # small integers: many ties
    rejected = rng.integers(-3, 4, 200).astype(np.float32)
    want = np.mean(np.where(chosen > rejected, 1.0, np.where(chosen == rejected, 0.5, 0.0)))
    assert (chosen == rejected).any()
    np.testing.assert_allclose(preference_accuracy(chosen, rejected), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(preference_accuracy)(chosen, rejected), want, rtol=1e-6)
