"""PPO for language models as pure ``jax.numpy`` functions: GAE, KL estimators, clipped losses.

Shapes: B sequences, T token positions, V vocabulary. ``mask`` [B, T] marks the positions that are actions
(response tokens, 1) and those that are not (prompt, pads, 0); every masked mean and sum ignores the latter.
Position ``t`` holds the action token ``t`` with its log-probability, value and reward.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from inform_jax.losses._utils import as_float, masked_mean
from inform_jax.losses.energy import energy_penalty
from inform_jax.losses.mahalanobis import GaussianReference, ibl_penalty

KL_ESTIMATORS = ("k1", "k2", "k3")


def gae(
    rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float = 1.0, lam: float = 0.95
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation as a reverse ``lax.scan`` over time::

        delta_t = r_t + gamma * V_next - V_t,   A_t = delta_t + gamma * lam * A_next

    where "next" is the next *valid* position: masked positions are skipped (they are not steps of the
    episode), and the episode ends at the last valid token (``V_next = A_next = 0`` there). For the usual
    right-padded responses this is plain GAE over the valid prefix.

    Args:
      rewards: ``[B, T]`` float per-token rewards (see :func:`token_rewards`).
      values: ``[B, T]`` float value estimates.
      mask: ``[B, T]`` 0/1, valid response tokens (any pattern; usually a prefix).
      gamma: discount.
      lam: GAE lambda.

    Returns:
      ``(advantages, returns)``, both ``[B, T]`` at least float32, ``returns = advantages + values``, and
      both 0 at masked positions.
    """
    rewards, values = as_float(rewards), as_float(values)
    valid = jnp.asarray(mask) != 0

    def step(carry, xs):
        next_value, next_adv = carry
        r, v, m = xs
        adv = r + gamma * next_value - v + gamma * lam * next_adv
        carry = (jnp.where(m, v, next_value), jnp.where(m, adv, next_adv))
        return carry, jnp.where(m, adv, 0.0)

    zeros = jnp.zeros(rewards.shape[:1], rewards.dtype)
    _, adv = jax.lax.scan(step, (zeros, zeros), (rewards.T, values.T, valid.T), reverse=True)
    adv = adv.T
    return adv, jnp.where(valid, adv + values, 0.0)


def kl_penalty(logprobs: jax.Array, ref_logprobs: jax.Array, estimator: str = "k1") -> jax.Array:
    """Per-token estimate of ``KL(policy || reference)`` from the sampled tokens' log-probabilities.

    With ``d = logprobs - ref_logprobs`` (tokens sampled from the policy), Schulman's estimators are
    ``k1 = d`` (unbiased, can be negative), ``k2 = d**2 / 2`` (biased, >= 0) and
    ``k3 = exp(-d) - 1 + d`` (unbiased, >= 0).

    Args:
      logprobs: ``[B, T]`` float, policy log-probabilities of the sampled tokens.
      ref_logprobs: ``[B, T]`` float, reference-model log-probabilities of the same tokens.
      estimator: ``"k1"`` (default), ``"k2"`` or ``"k3"``.

    Returns:
      ``[B, T]`` at least float32 (unmasked: mask it where it is used).
    """
    d = as_float(logprobs) - as_float(ref_logprobs)
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d**2
    if estimator == "k3":
        return jnp.expm1(-d) + d
    raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def exact_kl(logits: jax.Array, ref_logits: jax.Array, mask: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Exact ``KL(policy || reference)`` per sequence, summed over the whole vocabulary at every valid position.

    Per position ``t``: ``kl_t = sum_v p_v (log p_v - log q_v)`` with ``p = softmax(logits_t / temperature)``
    and ``q = softmax(ref_logits_t / temperature)``; the sequence's KL is ``sum_t mask_t * kl_t``. Unlike the
    sampled estimators of :func:`kl_penalty` there is no sampling noise in the vocabulary sum; when the tokens
    were sampled from the policy, the sum along the sequence is an unbiased estimate of the sequence-level KL.

    Computed with ``log_softmax`` in (at least) float32. Each per-token value is clamped at 0: a KL is >= 0, but
    rounding can make it slightly negative when the two distributions are (nearly) equal. ``-inf`` policy logits
    (masked vocabulary entries) contribute 0; a token the policy can emit but the reference cannot (``q_v = 0``,
    ``p_v > 0``) gives ``inf``, as the KL is.

    Args:
      logits: ``[B, T, V]`` policy logits at the response positions.
      ref_logits: ``[B, T, V]`` reference (SFT) logits at the same positions.
      mask: ``[B, T]`` 0/1, the valid response tokens; positions under 0 are ignored even if NaN.
      temperature: both sets of logits are divided by it before the softmax (the KL between the two models'
        sampling distributions at that temperature); default 1.

    Returns:
      ``[B]`` at least float32, >= 0; 0 for a row with no valid token.
    """
    logp = jax.nn.log_softmax(as_float(logits) / temperature, axis=-1)
    logq = jax.nn.log_softmax(as_float(ref_logits) / temperature, axis=-1)
    p = jnp.exp(logp)
    # where(p > 0): a -inf policy logit gives p = 0 and 0 * (-inf - logq) = NaN; its true contribution is 0.
    per_token = jnp.maximum(jnp.sum(jnp.where(p > 0, p * (logp - logq), 0.0), axis=-1), 0.0)
    valid = jnp.asarray(mask) != 0
    return jnp.sum(jnp.where(valid, per_token, 0.0), axis=-1)


def last_valid_index(mask: jax.Array) -> jax.Array:
    """Index of the last nonzero entry of each row: ``[B, T] -> [B]`` int32 (0 for an all-zero row)."""
    t = mask.shape[-1]
    return (t - 1 - jnp.argmax(jnp.asarray(mask)[:, ::-1] != 0, axis=-1)).astype(jnp.int32)


def token_rewards(
    score: jax.Array, kl: jax.Array, mask: jax.Array, kl_coef: jax.Array | float, clip: float | None = None
) -> jax.Array:
    """Per-token rewards: ``-kl_coef * kl`` at every valid token, plus the sequence score at the last one.

    Args:
      score: ``[B]`` float sequence rewards (reward model output, possibly already penalized).
      kl: ``[B, T]`` float per-token KL estimates (:func:`kl_penalty`).
      mask: ``[B, T]`` 0/1 valid response tokens.
      kl_coef: scalar KL coefficient (0 disables the per-token penalty).
      clip: when given, the score is clipped to ``[-clip, clip]`` first.

    Returns:
      ``[B, T]`` at least float32, 0 at masked positions; a row with no valid token is all 0.
    """
    score, kl = as_float(score), as_float(kl)
    valid = jnp.asarray(mask) != 0
    if clip is not None:
        score = jnp.clip(score, -clip, clip)
    rewards = jnp.where(valid, -kl_coef * kl, 0.0)
    at_last = jax.nn.one_hot(last_valid_index(valid), valid.shape[-1], dtype=rewards.dtype) * valid
    return rewards + score[:, None] * at_last


def policy_loss(
    logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array, mask: jax.Array, clip_eps: float = 0.2
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO clipped surrogate ``mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))``, ``rho = p / p_old``.

    Args:
      logprobs: ``[B, T]`` float, current policy log-probabilities of the rollout tokens.
      old_logprobs: ``[B, T]`` float, the rollout policy's log-probabilities (no gradient flows into them).
      advantages: ``[B, T]`` float (usually whitened, :func:`whiten`).
      mask: ``[B, T]`` 0/1 valid response tokens; the mean is over them.
      clip_eps: the clip range eps.

    Returns:
      ``(loss, aux)``: the scalar loss and scalars ``"clip_fraction"`` (fraction of valid tokens where the
      clipped term is the larger one, i.e. whose gradient is cut) and ``"approx_kl"`` (the unbiased k3
      estimate of ``KL(old || new)``, ``mean((rho - 1) - log rho)``).
    """
    log_ratio = as_float(logprobs) - jax.lax.stop_gradient(as_float(old_logprobs))
    advantages = jax.lax.stop_gradient(as_float(advantages))
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    aux = {
        "clip_fraction": masked_mean((clipped > unclipped).astype(ratio.dtype), mask),
        "approx_kl": masked_mean(jax.lax.stop_gradient(jnp.expm1(log_ratio) - log_ratio), mask),
    }
    return masked_mean(jnp.maximum(unclipped, clipped), mask), aux


def value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    mask: jax.Array,
    clip_eps: float | None = 0.2,
) -> jax.Array:
    """Clipped value loss ``0.5 * mean_t max((v - R)**2, (clip(v, v_old - eps, v_old + eps) - R)**2)``.

    Args:
      values: ``[B, T]`` float, current value estimates.
      old_values: ``[B, T]`` float, the rollout's value estimates.
      returns: ``[B, T]`` float targets (:func:`gae`).
      mask: ``[B, T]`` 0/1 valid response tokens; the mean is over them.
      clip_eps: the value clip range; None for the unclipped ``0.5 * mean((v - R)**2)``.

    Returns:
      A scalar, at least float32.
    """
    values = as_float(values)
    old_values, returns = (jax.lax.stop_gradient(as_float(a)) for a in (old_values, returns))
    loss = (values - returns) ** 2
    if clip_eps is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        loss = jnp.maximum(loss, (clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


def token_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of ``softmax(logits)`` over the last axis: ``[..., V] -> [...]``, at least float32.

    ``-inf`` logits (masked vocabulary entries) contribute 0.
    """
    logp = jax.nn.log_softmax(as_float(logits), axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)


def entropy(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean token entropy over valid tokens. logits: ``[B, T, V]``; mask: ``[B, T]`` -> a scalar."""
    return masked_mean(token_entropy(logits), mask)


def whiten(x: jax.Array, mask: jax.Array, shift_mean: bool = True, eps: float = 1e-8) -> jax.Array:
    """Masked whitening ``(x - mean) / sqrt(var + eps)`` with the mean and (population) variance of valid entries.

    Args:
      x: ``[B, T]`` float (e.g. advantages).
      mask: ``[B, T]`` 0/1, the entries that count.
      shift_mean: when False, the mean is added back (only the scale changes).
      eps: added to the variance.

    Returns:
      ``[B, T]`` at least float32, 0 at masked positions.
    """
    x = as_float(x)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return jnp.where(jnp.asarray(mask) != 0, out, 0.0)


def adaptive_kl_coef(
    coef: jax.Array | float,
    observed_kl: jax.Array | float,
    target: float,
    horizon: float,
    n_steps: jax.Array | int,
) -> jax.Array:
    """One update of Ziegler et al.'s (2019) adaptive KL controller::

        err = clip(observed_kl / target - 1, -0.2, 0.2);   coef <- coef * (1 + err * n_steps / horizon)

    Args:
      coef: the current KL coefficient.
      observed_kl: the batch's mean sequence KL (sum over tokens, mean over sequences).
      target: the target KL.
      horizon: the controller's horizon (in samples).
      n_steps: samples seen since the last update (usually the batch size).

    Returns:
      The new coefficient, a scalar.
    """
    err = jnp.clip(jnp.asarray(observed_kl, jnp.float32) / target - 1.0, -0.2, 0.2)
    return jnp.asarray(coef, jnp.float32) * (1.0 + err * n_steps / horizon)


def length_penalty(
    score: jax.Array, lengths: jax.Array, max_length: int | float, sigma: jax.Array | float
) -> jax.Array:
    """The EPPO paper's length-penalty (LP) baseline reward ``r + sigma * (1 - L / N)``.

    Shorter responses get a bonus of up to ``sigma``; a response of the maximum length gets none.

    Args:
      score: ``[B]`` float rewards ``r``.
      lengths: ``[B]`` response lengths ``L`` in tokens.
      max_length: the maximum response length ``N``.
      sigma: scalar, the running standard deviation of the rewards (kept by the caller).

    Returns:
      ``[B]`` at least float32.
    """
    return as_float(score) + sigma * (1.0 - as_float(lengths) / max_length)


class ShapedRewards(NamedTuple):
    """The output of :func:`shape_rewards`. B sequences, T response positions.

    score: ``[B]`` the sequence reward after the missing-EOS, length, energy and IBL terms, before the clamp;
    length_bonus, energy_penalty, ibl_penalty, eos_penalty: ``[B]`` what each term added (LP) or took off (EPPO,
    IBL, a truncated response's penalty), 0 when off; kl: ``[B, T]`` the per-token KL estimate (the chosen
    estimator), 0 at masked positions;
    sequence_kl: ``[B]`` its sum over each response; token_rewards: ``[B, T]`` ``-kl_coef * kl`` at every valid
    token plus the clamped score at the last one.
    """

    score: jax.Array
    length_bonus: jax.Array
    energy_penalty: jax.Array
    ibl_penalty: jax.Array
    kl: jax.Array
    sequence_kl: jax.Array
    token_rewards: jax.Array
    eos_penalty: jax.Array


def shape_rewards(
    score: jax.Array,
    logprobs: jax.Array,
    ref_logprobs: jax.Array,
    mask: jax.Array,
    *,
    kl_coef: jax.Array | float = 0.0,
    kl_estimator: str = "k1",
    truncated: jax.Array | None = None,
    missing_eos_penalty: float = 0.0,
    clip: float | None = None,
    length_sigma: jax.Array | float | None = None,
    max_length: int | None = None,
    eta: float = 0.0,
    sft_energy: jax.Array | None = None,
    policy_energy: jax.Array | None = None,
    ibl_coef: float = 0.0,
    features: jax.Array | None = None,
    ibl_reference: GaussianReference | None = None,
) -> ShapedRewards:
    """The whole PPO reward: proxy score, length penalty, EPPO's energy penalty, IBL, clamp and per-token KL.

    In this order (each term only when its settings are given)::

        s = score - missing_eos_penalty * truncated            TRL's missing_eos_penalty (truncated not None)
        s = score + length_sigma * (1 - L / max_length)        LP baseline (length_sigma not None)
        s = s - eta * |sft_energy - policy_energy|             EPPO (sft_energy not None)
        s = s - ibl_coef * Mahalanobis(features; reference)    IBL (ibl_reference not None)
        r_t = -kl_coef * kl_t + [t = last valid] * clip(s, -clip, clip)

    with ``kl_t`` Schulman's ``kl_estimator`` of ``logprobs_t - ref_logprobs_t``. Example: score 1.0, eta 2 and
    ``|dE| = 0.1`` give s = 0.8; kl_coef 0.1 and log-ratios ``[0.2, 0, -0.1]`` then give ``[-0.02, 0, 0.81]``.

    Args:
      score: ``[B]`` proxy reward of each response.
      logprobs, ref_logprobs: ``[B, T]`` policy and reference log-probabilities of the response tokens.
      mask: ``[B, T]`` 0/1 valid response tokens (a prefix of each row).
      kl_coef: the per-token KL coefficient (a scalar; may be traced, e.g. adaptive).
      kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (:func:`kl_penalty`).
      truncated, missing_eos_penalty: ``[B]`` bool, the responses cut before their EOS, and what their score loses.
      clip: clamp of the sequence reward (None: none).
      length_sigma, max_length: the LP baseline's scale (running reward std) and maximum response length.
      eta, sft_energy, policy_energy: EPPO's weight and the ``[B]`` final-layer energies.
      ibl_coef, features, ibl_reference: IBL's weight, the ``[B, D]`` reward-model features and the SFT Gaussian.

    Returns:
      :class:`ShapedRewards`, at least float32.
    """
    valid = jnp.asarray(mask) != 0
    kl = jnp.where(valid, kl_penalty(logprobs, ref_logprobs, kl_estimator), 0.0)
    score = as_float(score)
    zeros = jnp.zeros_like(score)
    length_bonus = energy = ibl = eos = zeros
    if truncated is not None:
        eos = missing_eos_penalty * jnp.asarray(truncated).astype(score.dtype)
        score = score - eos
    if length_sigma is not None:
        if max_length is None:
            raise ValueError("shape_rewards: the length penalty needs max_length")
        shaped = length_penalty(score, jnp.sum(valid, axis=1), max_length, length_sigma)
        length_bonus, score = shaped - score, shaped
    if sft_energy is not None:
        if policy_energy is None:
            raise ValueError("shape_rewards: the energy penalty needs policy_energy beside sft_energy")
        shaped = energy_penalty(score, sft_energy, policy_energy, eta, clamp=None)
        energy, score = score - shaped, shaped
    if ibl_reference is not None:
        if features is None:
            raise ValueError("shape_rewards: IBL needs the reward model's features")
        shaped = ibl_penalty(score, features, ibl_reference, ibl_coef)
        ibl, score = score - shaped, shaped
    rewards = token_rewards(score, kl, valid, kl_coef, clip=clip)
    return ShapedRewards(score, length_bonus, energy, ibl, kl, jnp.sum(kl, axis=1), rewards, eos)


def ppo_advantages(
    rewards: jax.Array,
    values: jax.Array,
    mask: jax.Array,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten_advantages: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """GAE advantages (whitened over the valid tokens when asked) and returns. All ``[B, T]``; see :func:`gae`.

    The returns are the unwhitened advantages plus the values (the critic's targets)."""
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    if whiten_advantages:
        advantages = whiten(advantages, mask)
    return advantages, returns
