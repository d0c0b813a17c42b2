"""InfoRM losses: reparameterization, Gaussian KL (Monte Carlo, torch, NumPy) and the full loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from inform_jax.losses import bradley_terry_loss, gaussian_kl, inform_loss, reparameterize


def _np_kl_paper(mean, logvar):
    return 0.5 * np.sum(np.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def _np_kl_release(mean, logvar):
    m, lv = mean.mean(-1), logvar.mean(-1)
    return 0.5 * (np.exp(lv) + m**2 - 1.0 - lv)


def _np_bt(chosen, rejected, margin=0.0):
    return np.logaddexp(0.0, -(chosen - rejected - margin))


def test_reparameterize_moments_and_gradient():
    rng = np.random.default_rng(0)
    n, z = 100_000, 4
    mean, logvar = rng.normal(size=z), rng.normal(size=z)
    mean_b, logvar_b = (jnp.broadcast_to(jnp.asarray(a, jnp.float32), (n, z)) for a in (mean, logvar))
    samples = np.asarray(reparameterize(jax.random.key(0), mean_b, logvar_b), np.float64)
    assert samples.shape == (n, z)
    var = np.exp(logvar)
    # Standard errors of the sample mean and sample variance of a Gaussian.
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * np.sqrt(var / n))
    assert np.all(np.abs(samples.var(0, ddof=1) - var) < 5 * var * np.sqrt(2 / (n - 1)))
    # Explicit keys: same key, same sample; another key, another sample.
    again = reparameterize(jax.random.key(0), mean_b[:3], logvar_b[:3])
    other = reparameterize(jax.random.key(1), mean_b[:3], logvar_b[:3])
    np.testing.assert_array_equal(again, reparameterize(jax.random.key(0), mean_b[:3], logvar_b[:3]))
    assert not np.allclose(again, other)

    key = jax.random.key(2)
    m, lv = jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32)
    g_mean, g_logvar = jax.jit(jax.grad(lambda m, lv: reparameterize(key, m, lv).sum(), argnums=(0, 1)))(m, lv)
    np.testing.assert_allclose(g_mean, np.ones(z))
    eps = (reparameterize(key, m, lv) - m) / jnp.exp(0.5 * lv)  # d z / d logvar = exp(logvar / 2) * eps / 2
    np.testing.assert_allclose(g_logvar, 0.5 * jnp.exp(0.5 * lv) * eps, rtol=1e-5, atol=1e-6)


def test_gaussian_kl_paper_monte_carlo():
    rng = np.random.default_rng(1)
    n, rows, z = 200_000, 3, 4
    mean, logvar = rng.normal(0, 0.7, (rows, z)), rng.normal(0, 0.7, (rows, z))
    got = np.asarray(gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    assert got.shape == (rows,)
    std = np.exp(0.5 * logvar)
    samples = mean + std * rng.standard_normal((n, rows, z))
    # log q(z) - log p(z) per sample, summed over dims; the 2*pi terms cancel.
    log_ratio = np.sum(-0.5 * ((samples - mean) / std) ** 2 - np.log(std) + 0.5 * samples**2, axis=-1)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(n)
    assert np.all(np.abs(got - mc) < 5 * se), (got, mc, se)


def test_gaussian_kl_paper_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    mean, logvar = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 5, 8))
    q = torch.distributions.Normal(torch.tensor(mean), torch.exp(0.5 * torch.tensor(logvar)))
    p = torch.distributions.Normal(torch.zeros(()), torch.ones(()))
    want = torch.distributions.kl_divergence(q, p).sum(-1).numpy()
    got = gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar), reduction="paper")
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_gaussian_kl_release():
    rng = np.random.default_rng(3)
    z = 64
    mean, logvar = rng.normal(0, 0.5, (10, z)), rng.normal(0, 0.5, (10, z))
    release = np.asarray(gaussian_kl(mean, logvar, reduction="release"))
    np.testing.assert_allclose(release, _np_kl_release(mean, logvar), rtol=1e-5, atol=1e-7)
    paper = _np_kl_paper(mean, logvar)
    # Convexity: release <= paper / Z, here (i.i.d. dims averaging out) far smaller still.
    assert np.all(release <= paper / z * (1 + 1e-5))
    assert np.all(release < 0.25 * paper / z)
    # Identical dims: exactly Z times weaker.
    same_m, same_lv = np.repeat(mean[:, :1], z, 1), np.repeat(logvar[:, :1], z, 1)
    np.testing.assert_allclose(gaussian_kl(same_m, same_lv, "release") * z, _np_kl_paper(same_m, same_lv), rtol=1e-5)


def test_gaussian_kl_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)), reduction="sum")
    with pytest.raises(ValueError, match="reduction"):
        inform_loss(*(jnp.zeros(2),) * 2, *(jnp.zeros((2, 3)),) * 4, kl_reduction="mean")


def _inputs(rng, b=6, z=5):
    return (
        rng.normal(size=b),
        rng.normal(size=b),
        rng.normal(size=(b, z)),
        rng.normal(0, 0.5, (b, z)),
        rng.normal(size=(b, z)),
        rng.normal(0, 0.5, (b, z)),
    )


@pytest.mark.parametrize("kl_reduction", ["paper", "release"])
def test_inform_loss_matches_numpy(kl_reduction):
    rng = np.random.default_rng(4)
    rc, rr, mc, lc, mr, lr = _inputs(rng)
    np_kl = _np_kl_paper if kl_reduction == "paper" else _np_kl_release
    kl_c, kl_r = np_kl(mc, lc), np_kl(mr, lr)
    beta, margin, weights = 0.3, rng.uniform(0, 1, 6), rng.uniform(0.1, 2.0, 6)

    loss, aux = inform_loss(rc, rr, mc, lc, mr, lr, beta=beta, kl_reduction=kl_reduction)
    want = np.mean(_np_bt(rc, rr) + beta * (kl_c + kl_r))
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(aux["bt_loss"], _np_bt(rc, rr).mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["kl_chosen"], kl_c.mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["kl_rejected"], kl_r.mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], 0.5 * (kl_c.mean() + kl_r.mean()), rtol=1e-5)
    np.testing.assert_allclose(aux["accuracy"], np.mean(rc > rr), rtol=1e-6)

    loss_w, _ = inform_loss(rc, rr, mc, lc, mr, lr, beta, kl_reduction, margin=margin, weights=weights)
    per_pair = _np_bt(rc, rr, margin) + beta * (kl_c + kl_r)
    np.testing.assert_allclose(loss_w, np.sum(weights * per_pair) / weights.sum(), rtol=1e-5)

    loss_0, aux_0 = inform_loss(rc, rr, mc, lc, mr, lr, beta=0.0, kl_reduction=kl_reduction)
    np.testing.assert_allclose(loss_0, bradley_terry_loss(rc, rr), rtol=1e-6)
    np.testing.assert_allclose(loss_0, aux_0["bt_loss"], rtol=1e-6)


def test_inform_loss_jit_and_vmap():
    rng = np.random.default_rng(5)
    n = 3
    batches = [_inputs(rng) for _ in range(n)]
    stacked = [jnp.asarray(np.stack(parts), jnp.float32) for parts in zip(*batches, strict=True)]
    f = jax.jit(jax.vmap(functools.partial(inform_loss, beta=0.2, kl_reduction="release")))
    losses, aux = f(*stacked)
    assert losses.shape == (n,) and aux["kl"].shape == (n,)
    for i, parts in enumerate(batches):
        want, _ = inform_loss(*parts, beta=0.2, kl_reduction="release")
        np.testing.assert_allclose(losses[i], want, rtol=1e-5)
    jitted = jax.jit(inform_loss, static_argnames="kl_reduction")
    np.testing.assert_allclose(jitted(*batches[0], kl_reduction="paper")[0], inform_loss(*batches[0])[0], rtol=1e-6)


@pytest.mark.parametrize("kl_reduction", ["paper", "release"])
def test_gradients_match_finite_differences(kl_reduction):
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        args = tuple(jnp.asarray(a) for a in _inputs(rng, b=4, z=3))
        weights = jnp.asarray(rng.uniform(0.1, 2.0, 4))

        def f(*a):
            return inform_loss(*a, beta=0.5, kl_reduction=kl_reduction, margin=0.2, weights=weights)[0]

        check_grads(f, args, order=1, modes=("fwd", "rev"))

        def kl(m, lv):
            return gaussian_kl(m, lv, kl_reduction).sum()

        check_grads(kl, args[2:4], order=2, modes=("fwd", "rev"))
