"""PPO math: GAE, KL estimators, token rewards, clipped losses, whitening, adaptive KL, against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inform_jax.losses.ppo import (
    adaptive_kl_coef,
    entropy,
    gae,
    kl_penalty,
    length_penalty,
    masked_mean,
    policy_loss,
    token_rewards,
    value_loss,
    whiten,
)


def _right_padded_mask(rng, b, t, min_len=0):
    lengths = rng.integers(min_len, t + 1, size=b)
    return (np.arange(t)[None] < lengths[:, None]).astype(np.float32)


def _np_masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def _np_gae(rewards, values, mask, gamma, lam):
    """GAE over each row's valid positions in order (masked positions skipped), last valid = terminal."""
    adv = np.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        idx = np.flatnonzero(mask[i])
        next_value = next_adv = 0.0
        for t in idx[::-1]:
            delta = rewards[i, t] + gamma * next_value - values[i, t]
            next_adv = delta + gamma * lam * next_adv
            next_value = values[i, t]
            adv[i, t] = next_adv
    return adv, np.where(mask != 0, adv + values, 0.0)


@pytest.mark.parametrize("layout", ["right_padded", "holes"])
def test_gae_matches_numpy_loop(layout):
    rng = np.random.default_rng(1001)
    b, t = 6, 13
    rewards, values = rng.normal(size=(2, b, t)).astype(np.float32)
    if layout == "right_padded":
        mask = _right_padded_mask(rng, b, t)
    else:
        mask = (rng.random((b, t)) < 0.6).astype(np.float32)
    gamma, lam = rng.uniform(0.8, 1.0), rng.uniform(0.0, 1.0)
    adv, ret = jax.jit(gae)(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = _np_gae(rewards.astype(np.float64), values.astype(np.float64), mask, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(adv)[mask == 0] == 0) and np.all(np.asarray(ret)[mask == 0] == 0)


def test_gae_terminal_reward_gamma_one():
    """gamma = lam = 1 with a single terminal reward: every advantage is score - V_t."""
    rng = np.random.default_rng(1002)
    b, t = 4, 9
    mask = _right_padded_mask(rng, b, t, min_len=1)
    values = rng.normal(size=(b, t)).astype(np.float32)
    score = rng.normal(size=b).astype(np.float32)
    rewards = np.asarray(token_rewards(score, np.zeros((b, t)), mask, 0.0))
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    np.testing.assert_allclose(adv, (score[:, None] - values) * mask, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, score[:, None] * mask, rtol=1e-5, atol=1e-5)


def test_kl_estimators_match_numpy_and_k3_nonnegative():
    rng = np.random.default_rng(1003)
    logp, ref = (rng.normal(size=(2, 5, 7)) * 2).astype(np.float32)
    d = logp.astype(np.float64) - ref
    np.testing.assert_allclose(kl_penalty(logp, ref, "k1"), d, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(kl_penalty(logp, ref, "k2"), 0.5 * d**2, rtol=1e-5, atol=1e-6)
    k3 = np.asarray(kl_penalty(logp, ref, "k3"))
    np.testing.assert_allclose(k3, np.exp(ref - logp) - 1 - (ref - logp), rtol=1e-5, atol=1e-5)
    assert np.all(k3 >= 0)
    with pytest.raises(ValueError, match="estimator"):
        kl_penalty(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_for_the_true_kl():
    rng = np.random.default_rng(1004)
    k, n = 6, 200_000
    p, q = rng.dirichlet(np.ones(k), size=2)
    true_kl = np.sum(p * np.log(p / q))
    tokens = rng.choice(k, size=n, p=p)
    logp, ref = np.log(p[tokens]).astype(np.float32), np.log(q[tokens]).astype(np.float32)
    for name in ("k1", "k3"):
        samples = np.asarray(kl_penalty(logp, ref, name), np.float64)
        stderr = samples.std() / np.sqrt(n)
        assert abs(samples.mean() - true_kl) < 5 * stderr + 1e-4, name


def test_token_rewards_places_clipped_score_at_last_valid_token():
    rng = np.random.default_rng(1005)
    b, t = 7, 10
    mask = _right_padded_mask(rng, b, t)
    mask[0] = 0  # an empty row gets no reward at all
    mask[1] = 1  # a full row
    score = rng.normal(size=b).astype(np.float32) * 4
    kl = rng.normal(size=(b, t)).astype(np.float32)
    kl_coef, clip = rng.uniform(0.01, 0.5), 2.0
    out = np.asarray(jax.jit(token_rewards, static_argnums=4)(score, kl, mask, kl_coef, clip))
    expected = -kl_coef * kl * mask
    for i in range(b):
        idx = np.flatnonzero(mask[i])
        if idx.size:
            expected[i, idx[-1]] += np.clip(score[i], -clip, clip)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert np.all(out[0] == 0) and np.all(out[mask == 0] == 0)
    unclipped = np.asarray(token_rewards(score, kl, mask, 0.0))
    np.testing.assert_allclose(unclipped[1, -1], score[1], rtol=1e-6)


def _np_policy_loss(logp, old, adv, mask, eps):
    ratio = np.exp(logp - old)
    l1, l2 = -adv * ratio, -adv * np.clip(ratio, 1 - eps, 1 + eps)
    approx_kl = _np_masked_mean((ratio - 1) - np.log(ratio), mask)
    return _np_masked_mean(np.maximum(l1, l2), mask), _np_masked_mean(l2 > l1, mask), approx_kl


def test_policy_loss_matches_numpy():
    rng = np.random.default_rng(1006)
    b, t, eps = 5, 8, rng.uniform(0.1, 0.3)
    old = rng.normal(size=(b, t)).astype(np.float32)
    logp = (old + 0.3 * rng.normal(size=(b, t))).astype(np.float32)
    adv = rng.normal(size=(b, t)).astype(np.float32)
    mask = _right_padded_mask(rng, b, t, min_len=1)
    loss, aux = jax.jit(policy_loss)(logp, old, adv, mask, eps)
    ref_loss, ref_clip, ref_kl = _np_policy_loss(*(a.astype(np.float64) for a in (logp, old, adv, mask)), eps)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["clip_fraction"], ref_clip, rtol=1e-6)
    np.testing.assert_allclose(aux["approx_kl"], ref_kl, rtol=1e-4, atol=1e-6)


def test_policy_loss_clip_fraction_and_gradient_on_constructed_case():
    eps = 0.2
    # ratio, advantage sign -> clipped? (clipped term larger, gradient cut)
    cases = [(1.5, 1.0, True), (1.5, -1.0, False), (0.5, 1.0, False), (0.5, -1.0, True), (1.1, 1.0, False)]
    cases += [(1.1, -1.0, False), (3.0, 2.0, True), (0.9, -2.0, False)]
    ratio = np.array([c[0] for c in cases], np.float32)
    adv = np.array([c[1] for c in cases], np.float32)
    clipped = np.array([c[2] for c in cases])
    old = np.zeros((1, len(cases) + 2), np.float32)
    logp = np.concatenate([np.log(ratio), [np.log(5.0), np.log(5.0)]])[None].astype(np.float32)
    adv = np.concatenate([adv, [1.0, 1.0]])[None].astype(np.float32)
    mask = np.concatenate([np.ones(len(cases)), [0, 0]])[None].astype(np.float32)  # masked tokens would clip
    (_, aux), grad = jax.value_and_grad(policy_loss, has_aux=True)(logp, old, adv, mask, eps)
    assert float(aux["clip_fraction"]) == pytest.approx(clipped.mean())
    grad = np.asarray(grad)[0]
    assert np.all(grad[: len(cases)][clipped] == 0) and np.all(grad[: len(cases)][~clipped] != 0)
    assert np.all(grad[len(cases) :] == 0)


def test_value_loss_matches_numpy():
    rng = np.random.default_rng(1007)
    b, t, eps = 8, 16, rng.uniform(0.1, 0.3)
    old, ret = rng.normal(size=(2, b, t)).astype(np.float32)
    values = (old + 0.4 * rng.normal(size=(b, t))).astype(np.float32)
    mask = _right_padded_mask(rng, b, t, min_len=4)
    v, o, r = (a.astype(np.float64) for a in (values, old, ret))
    clipped = np.clip(v, o - eps, o + eps)
    expected = 0.5 * _np_masked_mean(np.maximum((v - r) ** 2, (clipped - r) ** 2), mask)
    np.testing.assert_allclose(jax.jit(value_loss)(values, old, ret, mask, eps), expected, rtol=1e-5)
    unclipped = 0.5 * _np_masked_mean((v - r) ** 2, mask)
    np.testing.assert_allclose(value_loss(values, old, ret, mask, None), unclipped, rtol=1e-5)
    assert abs(expected - unclipped) > 1e-4  # the clip mattered on this draw


def test_entropy_matches_numpy_with_masked_vocabulary():
    rng = np.random.default_rng(1008)
    b, t, v = 3, 6, 11
    logits = (rng.normal(size=(b, t, v)) * 2).astype(np.float32)
    logits[0, 0, :4] = -np.inf  # a masked vocabulary must not give NaN
    mask = _right_padded_mask(rng, b, t, min_len=1)
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    np.testing.assert_allclose(jax.jit(entropy)(logits, mask), _np_masked_mean(h, mask), rtol=1e-5)


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_matches_numpy(shift_mean):
    rng = np.random.default_rng(1009)
    b, t = 5, 8
    x = (rng.normal(size=(b, t)) * 3 + 2).astype(np.float32)
    mask = _right_padded_mask(rng, b, t, min_len=1)
    x[mask == 0] = 1e6  # ignored
    valid = x[mask != 0].astype(np.float64)
    expected = (x - valid.mean()) / np.sqrt(valid.var() + 1e-8)
    if not shift_mean:
        expected += valid.mean()
    out = np.asarray(whiten(x, mask, shift_mean=shift_mean))
    np.testing.assert_allclose(out, np.where(mask != 0, expected, 0.0), rtol=1e-4, atol=1e-5)
    if shift_mean:
        assert abs(out[mask != 0].mean()) < 1e-5 and abs(out[mask != 0].std() - 1) < 1e-4


def test_adaptive_kl_coef_matches_formula():
    rng = np.random.default_rng(1010)
    coef, target, horizon = rng.uniform(0.01, 0.5), rng.uniform(1, 10), rng.uniform(1e3, 1e4)
    n_steps = int(rng.integers(8, 256))
    fn = jax.jit(adaptive_kl_coef, static_argnums=(2, 3))
    for observed in (0.0, target * 0.9, target * 1.05, target * 3):
        err = np.clip(observed / target - 1, -0.2, 0.2)
        expected = coef * (1 + err * n_steps / horizon)  # float64; ours is float32
        np.testing.assert_allclose(fn(coef, observed, target, horizon, n_steps), expected, rtol=1e-6)


def test_length_penalty_and_masked_mean():
    rng = np.random.default_rng(1011)
    score, sigma = rng.normal(size=6), rng.uniform(0.1, 2)
    lengths = rng.integers(1, 65, size=6)
    np.testing.assert_allclose(
        length_penalty(score, lengths, 64, sigma), score + sigma * (1 - lengths / 64), rtol=1e-6, atol=1e-6
    )

    x = rng.normal(size=(3, 5)).astype(np.float32)
    mask = (rng.random((3, 5)) < 0.5).astype(np.float32)
    mask[0] = 0
    x[mask == 0] = np.nan  # values under a 0 are ignored, NaN included
    rows = np.asarray(masked_mean(x, mask, axis=-1))
    assert rows[0] == 0 and np.all(np.isfinite(rows))
    for i in (1, 2):
        if mask[i].any():
            np.testing.assert_allclose(rows[i], np.mean(x[i][mask[i] != 0]), rtol=1e-6)
    assert float(masked_mean(jnp.ones(3), jnp.zeros(3))) == 0.0
