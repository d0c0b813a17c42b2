"""Ensemble reward aggregation against NumPy."""

import functools

import jax
import numpy as np
import pytest

from inform_jax.losses import AGGREGATIONS, aggregate_rewards


def _np_aggregate(rewards, method, coef, axis):
    if method == "mean":
        return rewards.mean(axis)
    if method == "min":
        return rewards.min(axis)
    return rewards.mean(axis) - coef * rewards.var(axis)  # numpy's var is ddof 0


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_aggregate_matches_numpy(method):
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(5, 32)) * rng.uniform(0.1, 3.0, 32)  # members disagree more on some samples
    coef = rng.uniform(0.5, 2.0)
    got = aggregate_rewards(rewards, method, uncertainty_coef=coef)
    assert got.shape == (32,)
    np.testing.assert_allclose(got, _np_aggregate(rewards, method, coef, 0), rtol=1e-5, atol=1e-5)
    # Members on another axis: [B, K] with axis=1, and a 3-D batch.
    np.testing.assert_allclose(aggregate_rewards(rewards.T, method, coef, axis=1), got, rtol=1e-6)
    cube = rng.normal(size=(3, 4, 6))
    np.testing.assert_allclose(
        aggregate_rewards(cube, method, coef, axis=1), _np_aggregate(cube, method, coef, 1), rtol=1e-5, atol=1e-5
    )
    jitted = jax.jit(functools.partial(aggregate_rewards, method=method, uncertainty_coef=coef))
    np.testing.assert_allclose(jitted(rewards), got, rtol=1e-6)


def test_uwo_penalizes_disagreement():
    # Two samples with the same member mean, the second with more spread: only UWO ranks it lower.
    rng = np.random.default_rng(1)
    noise = rng.normal(size=8)
    noise -= noise.mean()
    rewards = np.stack([1.0 + noise, 1.0 + 3.0 * noise], axis=1)  # [K=8, B=2]
    mean = aggregate_rewards(rewards, "mean")
    uwo = aggregate_rewards(rewards, "uwo", uncertainty_coef=0.5)
    np.testing.assert_allclose(mean[0], mean[1], rtol=1e-6)
    assert uwo[1] < uwo[0] < mean[0]


def test_unknown_method():
    with pytest.raises(ValueError, match="method"):
        aggregate_rewards(np.zeros((2, 3)), "median")
