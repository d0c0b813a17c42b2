"""The PPO reward shaping as one pure function, on hand-computed examples, and the fixed values of the core losses
(each number below is worked out by hand in its comment, not read off the code)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inform_jax.losses import (
    GaussianReference,
    bradley_terry_loss,
    gae,
    gaussian_kl,
    kl_penalty,
    ppo_advantages,
    shape_rewards,
    whiten,
)

MASK = jnp.asarray([[1, 1, 1]])
LOGP = jnp.asarray([[0.2, 0.0, -0.1]])  # log-ratios [0.2, 0, -0.1] against a reference at 0
REF = jnp.zeros((1, 3))


def test_eppo_penalty_and_kl_by_hand():
    # score 1.0, eta 2, |dE| = |0.5 - 0.6| = 0.1 -> 1.0 - 2 * 0.1 = 0.8;
    # kl_coef 0.1: tokens -0.1 * 0.2 = -0.02, 0, and -0.1 * (-0.1) + 0.8 = 0.81 at the last one.
    shaped = jax.jit(lambda s, e0, e1: shape_rewards(
        s, LOGP, REF, MASK, kl_coef=0.1, eta=2.0, sft_energy=e0, policy_energy=e1
    ))(jnp.asarray([1.0]), jnp.asarray([0.5]), jnp.asarray([0.6]))  # fmt: skip
    np.testing.assert_allclose(shaped.score, [0.8], rtol=1e-6)
    np.testing.assert_allclose(shaped.energy_penalty, [0.2], rtol=1e-6)
    np.testing.assert_allclose(shaped.token_rewards, [[-0.02, 0.0, 0.81]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(shaped.sequence_kl, [0.1], rtol=1e-6)  # k1: 0.2 + 0 - 0.1
    np.testing.assert_array_equal(shaped.ibl_penalty, [0.0])
    np.testing.assert_array_equal(shaped.length_bonus, [0.0])


def test_length_penalty_ibl_clamp_and_estimator_by_hand():
    mask = jnp.asarray([[1, 1, 0, 0]])  # 2 of 4 tokens
    # LP: 1 + 0.5 * (1 - 2/4) = 1.25; IBL: features [3, 4] at identity precision around 0 are 5 away,
    # 0.1 * 5 = 0.5 -> 0.75; with clamp 0.5 the last valid token (index 1) gets 0.5.
    reference = GaussianReference(mean=jnp.zeros(2), precision=jnp.eye(2))
    shaped = shape_rewards(
        jnp.asarray([1.0]), jnp.asarray([[0.5, -0.5, 9.0, 9.0]]), jnp.zeros((1, 4)), mask, kl_coef=0.0, clip=0.5,
        length_sigma=0.5, max_length=4, ibl_coef=0.1, features=jnp.asarray([[3.0, 4.0]]), ibl_reference=reference,
    )  # fmt: skip
    np.testing.assert_allclose(shaped.length_bonus, [0.25], rtol=1e-6)
    np.testing.assert_allclose(shaped.ibl_penalty, [0.5], rtol=1e-6)
    np.testing.assert_allclose(shaped.score, [0.75], rtol=1e-6)
    np.testing.assert_allclose(shaped.token_rewards, [[0.0, 0.5, 0.0, 0.0]], atol=1e-7)
    # k2 = d^2 / 2: 0.125 at both valid tokens, nothing at the masked 9s.
    k2 = shape_rewards(jnp.asarray([0.0]), jnp.asarray([[0.5, -0.5, 9.0, 9.0]]), jnp.zeros((1, 4)), mask,
                       kl_estimator="k2", kl_coef=1.0)  # fmt: skip
    np.testing.assert_allclose(k2.kl, [[0.125, 0.125, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(k2.sequence_kl, [0.25], rtol=1e-6)
    with pytest.raises(ValueError, match="max_length"):
        shape_rewards(jnp.asarray([1.0]), LOGP, REF, MASK, length_sigma=1.0)


def test_shaping_equals_its_parts_on_random_inputs():
    rng = np.random.default_rng(31)
    b, t = 5, 7
    lengths = rng.integers(1, t + 1, b)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    score, e_sft, e_pol = rng.normal(size=(3, b)).astype(np.float32)
    logp, ref = rng.normal(size=(2, b, t)).astype(np.float32)
    shaped = shape_rewards(score, logp, ref, mask, kl_coef=0.3, kl_estimator="k3", clip=0.7, eta=1.5,
                           sft_energy=e_sft, policy_energy=e_pol)  # fmt: skip
    d = logp.astype(np.float64) - ref
    k3 = np.where(mask > 0, np.expm1(-d) + d, 0.0)
    s = score - 1.5 * np.abs(e_sft - e_pol)
    expected = -0.3 * k3
    expected[np.arange(b), lengths - 1] += np.clip(s, -0.7, 0.7)
    np.testing.assert_allclose(shaped.score, s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shaped.token_rewards, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shaped.kl, np.asarray(kl_penalty(logp, ref, "k3")) * mask, rtol=1e-6)


def test_gae_of_a_terminal_reward_by_hand():
    # rewards [0, 0, 1], gamma = lambda = 1, zero values: every advantage is the terminal reward 1.
    adv, ret = gae(jnp.asarray([[0.0, 0.0, 1.0]]), jnp.zeros((1, 3)), MASK, 1.0, 1.0)
    np.testing.assert_allclose(adv, [[1.0, 1.0, 1.0]])
    np.testing.assert_allclose(ret, [[1.0, 1.0, 1.0]])
    # gamma 0.5, lambda 1: 0.25, 0.5, 1.
    adv, _ = gae(jnp.asarray([[0.0, 0.0, 1.0]]), jnp.zeros((1, 3)), MASK, 0.5, 1.0)
    np.testing.assert_allclose(adv, [[0.25, 0.5, 1.0]])
    rewards = jnp.asarray([[0.0, 1.0, 2.0]])
    whitened, returns = ppo_advantages(rewards, jnp.zeros((1, 3)), MASK, 1.0, 1.0, whiten_advantages=True)
    raw, _ = gae(rewards, jnp.zeros((1, 3)), MASK, 1.0, 1.0)  # [3, 3, 2]
    np.testing.assert_allclose(whitened, whiten(raw, MASK), rtol=1e-6)
    np.testing.assert_allclose(returns, [[3.0, 3.0, 2.0]])  # the critic's targets stay unwhitened


def test_fixed_values_of_the_core_losses():
    # Bradley-Terry at gap 0: -log sigmoid(0) = log 2.
    np.testing.assert_allclose(bradley_terry_loss(jnp.zeros(4), jnp.zeros(4)), np.log(2.0), rtol=1e-7)
    # KL(N(1, 1) || N(0, 1)) = 0.5 * (1 + 1 - 1 - 0) = 0.5; two such dims sum to 1.
    np.testing.assert_allclose(gaussian_kl(jnp.ones((1, 1)), jnp.zeros((1, 1))), [0.5], rtol=1e-7)
    np.testing.assert_allclose(gaussian_kl(jnp.ones((1, 2)), jnp.zeros((1, 2))), [1.0], rtol=1e-7)
    # KL(N(0, e) || N(0, 1)) = 0.5 * (e - 1 - 1).
    np.testing.assert_allclose(gaussian_kl(jnp.zeros((1, 1)), jnp.ones((1, 1))), [0.5 * (np.e - 2)], rtol=1e-6)
