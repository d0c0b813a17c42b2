"""Exact per-sequence KL(policy || reference): against NumPy, against a Monte Carlo k1 estimate, and its edge cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inform_jax.losses import exact_kl


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_exact_kl(logits, ref_logits, mask, temperature=1.0):
    logp = _np_log_softmax(np.asarray(logits, np.float64) / temperature)
    logq = _np_log_softmax(np.asarray(ref_logits, np.float64) / temperature)
    per_token = (np.exp(logp) * (logp - logq)).sum(-1)
    return (per_token * mask).sum(-1)


def _inputs(rng, b=4, t=7, v=11, scale=2.0):
    logits = rng.normal(size=(b, t, v)) * scale
    ref = rng.normal(size=(b, t, v)) * scale
    lengths = rng.integers(0, t + 1, size=b)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
    return logits.astype(np.float32), ref.astype(np.float32), mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_matches_numpy(seed, temperature):
    logits, ref, mask = _inputs(np.random.default_rng(seed))
    got = np.asarray(exact_kl(logits, ref, mask, temperature=temperature))
    want = _np_exact_kl(logits, ref, mask, temperature)
    assert got.shape == (logits.shape[0],)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_default_temperature_is_one_and_temperature_changes_kl():
    logits, ref, mask = _inputs(np.random.default_rng(3))
    mask[:] = 1.0
    np.testing.assert_array_equal(np.asarray(exact_kl(logits, ref, mask)), exact_kl(logits, ref, mask, 1.0))
    # Dividing both sets of logits by a large temperature flattens both distributions toward uniform: smaller KL.
    assert np.all(np.asarray(exact_kl(logits, ref, mask, temperature=4.0)) < np.asarray(exact_kl(logits, ref, mask)))


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_monte_carlo_k1(seed):
    """Sample a token per position from the policy, average the summed k1 log-ratios over many draws; the exact KL
    must sit within a few standard errors of that mean."""
    rng = np.random.default_rng(100 + seed)
    b, t, v, n = 3, 5, 9, 200_000
    logits, ref, mask = _inputs(rng, b, t, v, scale=1.5)
    mask[0] = 1.0  # at least one full row
    logp = _np_log_softmax(logits.astype(np.float64))
    logq = _np_log_softmax(ref.astype(np.float64))
    # Inverse-CDF sampling of n tokens per (b, t) from the policy.
    cdf = np.cumsum(np.exp(logp), -1)
    u = rng.random(size=(n, b, t, 1))
    tokens = np.minimum((u > cdf[None]).sum(-1), v - 1)  # [n, B, T]
    log_ratio = np.take_along_axis(np.broadcast_to(logp - logq, (n, b, t, v)), tokens[..., None], axis=-1)[
        ..., 0
    ]  # [n, B, T]
    seq = (log_ratio * mask[None]).sum(-1)  # [n, B]
    mc_mean, mc_se = seq.mean(0), seq.std(0, ddof=1) / np.sqrt(n)
    got = np.asarray(exact_kl(logits, ref, mask))
    valid_rows = mask.sum(-1) > 0
    assert np.all(np.abs(got - mc_mean)[valid_rows] < 5 * mc_se[valid_rows] + 1e-6)
    assert np.all(got[valid_rows] > 10 * mc_se[valid_rows])  # the check is not vacuous: KL well above the noise


def test_zero_when_logits_equal():
    rng = np.random.default_rng(4)
    logits, _, mask = _inputs(rng, scale=20.0)
    mask[:] = 1.0
    got = np.asarray(exact_kl(logits, logits, mask))
    assert np.all(got >= 0.0)
    np.testing.assert_allclose(got, 0.0, atol=1e-6)
    # A constant shift of the logits is the same distribution.
    np.testing.assert_allclose(np.asarray(exact_kl(logits, logits + 3.0, mask)), 0.0, atol=1e-4)


def test_never_negative():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(8, 16, 32)).astype(np.float32) * 10
    # Nearly equal distributions: the regime where rounding could make a per-token KL negative.
    ref = logits + rng.normal(size=logits.shape).astype(np.float32) * 1e-6
    got = np.asarray(exact_kl(logits, ref, np.ones((8, 16), np.float32)))
    assert np.all(got >= 0.0)


def test_mask_respected():
    rng = np.random.default_rng(6)
    logits, ref, mask = _inputs(rng, b=5, t=6)
    mask[0] = 0.0  # an empty row
    mask[1] = 1.0
    mask[2] = np.array([0, 1, 0, 1, 1, 0], np.float32)  # a non-prefix pattern
    base = np.asarray(exact_kl(logits, ref, mask))
    assert base[0] == 0.0
    np.testing.assert_allclose(base, _np_exact_kl(logits, ref, mask), rtol=1e-5, atol=1e-5)
    # Anything at masked positions, NaN included, leaves the result unchanged.
    junk_logits, junk_ref = logits.copy(), ref.copy()
    junk_logits[mask == 0] = np.nan
    junk_ref[mask == 0] = rng.normal(size=junk_ref[mask == 0].shape) * 50
    np.testing.assert_array_equal(np.asarray(exact_kl(junk_logits, junk_ref, mask)), base)
    # Unmasking a position adds exactly that position's KL.
    more = mask.copy()
    more[2, 0] = 1.0
    one = np.zeros_like(mask)
    one[2, 0] = 1.0
    np.testing.assert_allclose(
        np.asarray(exact_kl(logits, ref, more))[2], base[2] + np.asarray(exact_kl(logits, ref, one))[2], rtol=1e-5
    )


def test_minus_inf_policy_logits_contribute_zero():
    rng = np.random.default_rng(7)
    logits, ref, mask = _inputs(rng)
    mask[:] = 1.0
    banned = logits.copy()
    banned[..., :3] = -np.inf  # entries the policy can never emit
    got = np.asarray(exact_kl(banned, ref, mask))
    assert np.all(np.isfinite(got))
    # Same as the KL of the renormalized remaining vocabulary against the full reference.
    logp = _np_log_softmax(logits[..., 3:].astype(np.float64))
    logq = _np_log_softmax(ref.astype(np.float64))[..., 3:]
    want = (np.exp(logp) * (logp - logq)).sum(-1).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bf16_jit_and_grad():
    rng = np.random.default_rng(8)
    logits, ref, mask = _inputs(rng)
    got = jax.jit(exact_kl)(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(ref, jnp.bfloat16), mask)
    assert got.dtype == jnp.float32
    want = _np_exact_kl(
        np.asarray(jnp.asarray(logits, jnp.bfloat16), np.float32),
        np.asarray(jnp.asarray(ref, jnp.bfloat16), np.float32),
        mask,
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    # Differentiable in the policy logits; the gradient at equal logits is 0 (KL's minimum).
    g = jax.grad(lambda x: exact_kl(x, jnp.asarray(logits), mask).sum())(jnp.asarray(logits))
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)
