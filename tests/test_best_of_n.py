"""Best-of-n: the unbiased estimator against exact enumeration and Monte Carlo, its KL against the exact KL of a
fine discrete distribution, Gao et al.'s fit on noiseless curves, and one pool on a tiny laboratory world."""

import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inform_jax.eval.best_of_n import (
    best_of_n,
    bon_curve,
    bon_kl,
    bon_weights,
    fit_bon_curve,
    powers_of_two,
    tie_averaged,
)
from inform_jax.lab.best_of_n import SamplePool, best_of_n_curves, sample_pool


def enumerate_best_of_n(proxy: np.ndarray, values: np.ndarray, n: int) -> float:
    """The kept sample's value averaged over every size-n subset of one pool, tied maxima split evenly."""
    kept = []
    for subset in itertools.combinations(range(len(proxy)), n):
        p, v = proxy[list(subset)], values[list(subset)]
        kept.append(v[p == p.max()].mean())
    return float(np.mean(kept))


def test_estimator_equals_enumeration_over_every_subset_with_ties():
    rng = np.random.default_rng(0)
    proxy = rng.integers(0, 4, size=(3, 8)).astype(float)  # 8 samples on 4 levels: ties in every pool
    values = rng.normal(size=(3, 8))
    ns = range(1, 9)
    expected = np.array([[enumerate_best_of_n(proxy[p], values[p], n) for p in range(3)] for n in ns])
    np.testing.assert_allclose(best_of_n(proxy, values, ns), expected, rtol=1e-12, atol=1e-12)
    # the estimate does not depend on the order of the samples in a pool (ties included)
    order = rng.permutation(8)
    np.testing.assert_allclose(best_of_n(proxy[:, order], values[:, order], ns), expected, atol=1e-12)


@pytest.mark.parametrize("tied", [False, True])
def test_estimator_equals_monte_carlo_over_random_subsets(tied):
    rng = np.random.default_rng(1)
    size, draws = 256, 20_000
    gold = rng.normal(size=size)
    proxy = gold + rng.normal(size=size)  # a noisy proxy: best-of-n by it gains less gold than by gold
    if tied:
        proxy = np.round(proxy)  # ~7 levels: large tie blocks
    for n in (2, 8, 40, 200):
        subsets = np.argsort(rng.random((draws, size)), axis=1)[:, :n]  # uniform n-subsets without replacement
        # uniform choice among tied maxima: a random jitter smaller than the gap between levels breaks ties
        jitter = rng.random((draws, n)) * (0.01 if tied else 0.0)
        kept = subsets[np.arange(draws), np.argmax(proxy[subsets] + jitter, axis=1)]
        monte_carlo, stderr = gold[kept].mean(), gold[kept].std() / np.sqrt(draws)
        assert abs(best_of_n(proxy, gold, [n])[0] - monte_carlo) < 4 * stderr, n


def test_one_sample_keeps_the_pool_mean_and_the_whole_pool_keeps_the_top():
    rng = np.random.default_rng(2)
    proxy, gold = rng.normal(size=(5, 32)), rng.normal(size=(5, 32))
    low, high = best_of_n(proxy, gold, [1, 32])
    np.testing.assert_allclose(low, gold.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(high, gold[np.arange(5), proxy.argmax(axis=1)], rtol=1e-12)
    proxy[:, :3] = proxy.max(axis=1, keepdims=True) + 1.0  # three tied tops: the whole pool keeps their mean
    np.testing.assert_allclose(best_of_n(proxy, gold, [32])[0], gold[:, :3].mean(axis=1), rtol=1e-12)


def test_weights_equal_exact_binomials_at_256_samples():
    size = 256
    for n in (1, 2, 3, 17, 128, 255, 256):
        exact = [math.comb(i, n - 1) / math.comb(size, n) for i in range(size)]  # integer binomials, then divided
        weights = bon_weights(size, n)
        np.testing.assert_allclose(weights, exact, rtol=1e-9, atol=1e-300)
        assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="n <= pool size"):
        bon_weights(4, 5)


def test_tie_averaged_sorts_and_averages_blocks():
    ranked = tie_averaged([[2.0, 1.0, 2.0, 0.0]], [[10.0, 5.0, 20.0, 1.0]])
    np.testing.assert_array_equal(ranked, [[1.0, 5.0, 15.0, 15.0]])


def test_kl_equals_the_exact_kl_of_a_fine_continuous_like_distribution():
    assert bon_kl(1) == 0.0
    ns = np.array(powers_of_two(256))
    assert np.all(np.diff(bon_kl(ns)) > 0)
    # base: M equally likely outcomes with distinct rewards; best-of-n keeps the i-th smallest with probability
    # (i / M)^n - ((i - 1) / M)^n, so its KL is exact to compute and tends to log n - (n - 1) / n as M grows
    m = 200_000
    cdf = np.arange(m + 1) / m
    for n in (2, 16, 256):
        probs = np.diff(cdf**n)
        exact = np.sum(probs * np.log(np.where(probs > 0, probs * m, 1.0)))
        assert bon_kl(n) == pytest.approx(exact, abs=1e-6), n
    with pytest.raises(ValueError):
        bon_kl(0)


def test_fit_recovers_alpha_and_beta_from_noiseless_curves():
    kl = bon_kl(powers_of_two(256))
    for alpha, beta in ((0.3, 0.05), (1.2, 0.4), (0.5, -0.02)):
        fitted = fit_bon_curve(kl, bon_curve(kl, alpha, beta))
        np.testing.assert_allclose(fitted, (alpha, beta), rtol=1e-9)
    with pytest.raises(ValueError, match="two distinct"):
        fit_bon_curve(bon_kl([1, 2]), [0.0, 0.1])


def test_powers_of_two_end_at_the_pool_size():
    assert powers_of_two(16) == [1, 2, 4, 8, 16]
    assert powers_of_two(24) == [1, 2, 4, 8, 16, 24]
    assert powers_of_two(1) == [1]


def test_curves_of_a_hand_made_pool():
    rng = np.random.default_rng(3)
    gold = rng.normal(size=(4, 16)).astype(np.float32)
    pool = SamplePool(np.zeros((4, 2)), np.ones((4, 2)), np.zeros((4, 16, 3)), np.ones((4, 16, 3)), gold, None,
                      {"noisy": gold + rng.normal(size=gold.shape), "oracle": gold})  # fmt: skip
    curves = best_of_n_curves(pool, [1, 4, 16])
    assert "hacked" not in curves["noisy"]  # no labels in this pool
    np.testing.assert_allclose(curves["oracle"]["gold"][[0, 2]], [gold.mean(), gold.max(1).mean()], rtol=1e-6)
    np.testing.assert_allclose(curves["oracle"]["gold"], curves["oracle"]["proxy"], rtol=1e-12)
    # the fit is on the gain over n = 1: refitting the curve's own gains gives the same alpha, beta
    noisy = curves["noisy"]
    refit = fit_bon_curve(noisy["kl"], noisy["gold"] - gold.mean())
    np.testing.assert_allclose((noisy["gold_alpha"], noisy["gold_beta"]), refit, rtol=1e-6)
    assert np.isnan(best_of_n_curves(pool, [1, 16])["noisy"]["gold_alpha"])  # one KL > 0: no fit


# ---------------------------------------------------------------------------------------------- the lab's world


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory):
    from inform_jax.lab.config import LabConfig
    from inform_jax.lab.stages import Lab

    config = LabConfig(n_pairs=64, n_sft=64, n_prompts=8, n_eval_prompts=6, hidden_size=16, intermediate_size=32,
                       new_tokens=8, sft_steps=20)  # fmt: skip
    return Lab(config, str(tmp_path_factory.mktemp("bon-lab")), log=lambda *_: None)


def test_pool_on_the_lab_world_gives_paired_curves(tiny_lab):
    from inform_jax.models.reward_model import EnsembleRewardModel, HeadConfig, RewardModel

    lab = tiny_lab
    sft = lab.sft_policy()
    config = lab.decoder_config()
    standard = RewardModel.create(config, HeadConfig(), rngs=nnx.Rngs(1))
    ensemble = EnsembleRewardModel([RewardModel.create(config, HeadConfig(), rngs=nnx.Rngs(s)) for s in (2, 3)])
    size, prompts = 16, lab.eval_prompts
    pool = sample_pool(lab, sft, prompts, {"standard": standard, "ensemble": ensemble}, samples_per_prompt=size,
                       seed=0, batch_size=32)  # fmt: skip
    n_prompts = len(prompts["input_ids"])
    assert pool.tokens.shape == (n_prompts, size, lab.config.new_tokens) and pool.gold.shape == (n_prompts, size)
    assert np.unique(pool.tokens.reshape(n_prompts * size, -1), axis=0).shape[0] > n_prompts  # sampled, not greedy
    # the pool's scores are the judge's and the reward model's on the same rows
    rows = pool.rows()
    judged = lab.judge_scores({"input_ids": rows["prompt_ids"], "attention_mask": rows["prompt_mask"]},
                              jnp.asarray(rows["tokens"]), jnp.asarray(rows["mask"]))  # fmt: skip
    np.testing.assert_array_equal(judged["gold"].reshape(pool.gold.shape), pool.gold)
    np.testing.assert_array_equal(judged["hacked"].reshape(pool.gold.shape), pool.hacked)
    ids = np.concatenate([rows["prompt_ids"], rows["tokens"]], 1)[:8]
    mask = np.concatenate([rows["prompt_mask"], rows["mask"]], 1)[:8]
    direct = np.asarray(standard(jnp.asarray(ids), jnp.asarray(mask)).reward)
    np.testing.assert_allclose(pool.proxy["standard"].reshape(-1)[:8], direct, rtol=1e-5, atol=1e-6)

    pool.proxy["oracle"] = pool.gold  # the gold judge as its own proxy: the positive control
    ns = [1, 2, 4, 8, 16]
    curves = best_of_n_curves(pool, ns)
    for name, curve in curves.items():
        assert curve["gold_per_prompt"].shape == curve["hacked_per_prompt"].shape == (len(ns), n_prompts), name
        np.testing.assert_allclose(curve["kl"], np.log(ns) - (np.array(ns) - 1) / np.array(ns), rtol=1e-12)
        # n = 1 keeps a random sample: the pool's mean gold, the same for every reward model (one shared pool)
        np.testing.assert_allclose(curve["gold_per_prompt"][0], pool.gold.mean(axis=1), rtol=1e-5)
        assert np.all((curve["hacked"] >= 0) & (curve["hacked"] <= 1))
        # every subset's best gold bounds the gold of whatever sample a proxy keeps from it
        assert np.all(curve["gold_per_prompt"] <= curves["oracle"]["gold_per_prompt"] + 1e-6), name
    oracle = curves["oracle"]["gold"]
    assert np.all(np.diff(oracle) >= -1e-6) and oracle[-1] > oracle[0]  # more samples never lose gold
    np.testing.assert_allclose(oracle[-1], pool.gold.max(axis=1).mean(), rtol=1e-6)
