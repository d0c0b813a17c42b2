"""The reward-model objective and evaluation against their parts: an ensemble's objective is the sum of its
members' losses (one PRNG key each; WARM: one batch each), evaluation decodes the latent mean with the configured KL
reduction, and an ensemble's evaluation aggregates its members."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_rm_trainer import TINY, marked_pairs

from inform_jax.losses import aggregate_rewards, gaussian_kl
from inform_jax.models import DecoderConfig
from inform_jax.models.reward_model import EnsembleRewardModel, HeadConfig, RewardModel
from inform_jax.train.config import LossSection
from inform_jax.train.rm.methods import get_method
from inform_jax.train.rm.objective import evaluate_pairs, member_loss, objective

K = 3


def members(kind: str) -> list[RewardModel]:
    config = DecoderConfig(**TINY)
    return [RewardModel.create(config, HeadConfig(kind=kind, latent_dim=8), rngs=nnx.Rngs(10 + i)) for i in range(K)]


def batch_of(seed: int, n: int = 6) -> dict:
    batch = {k: jnp.asarray(v) for k, v in marked_pairs(n, seed).items()}
    batch["weights"] = jnp.asarray(np.random.default_rng(seed).uniform(0.5, 1.5, n), jnp.float32)
    return batch


@pytest.mark.parametrize("method_name", ["inform+ensemble", "inform+warm"])
def test_ensemble_objective_is_the_sum_of_member_losses(method_name):
    method = get_method(method_name)
    parts = members("ib")
    ensemble = EnsembleRewardModel(parts, "mean")
    cfg = LossSection(beta=0.3)
    key = jax.random.key(4)
    if method.scheme == "warm":  # one batch per member: [K, B, ...]
        per_member = [batch_of(20 + i) for i in range(K)]
        batch = jax.tree.map(lambda *xs: jnp.stack(xs), *per_member)
    else:
        per_member = [batch_of(20)] * K
        batch = per_member[0]
    total, metrics = objective(ensemble, batch, key, cfg, method)
    keys = jax.random.split(key, K)
    expected = [member_loss(parts[i], per_member[i], keys[i], cfg, method) for i in range(K)]
    np.testing.assert_allclose(total, sum(loss for loss, _ in expected), rtol=1e-5)
    for name in ("bt_loss", "kl", "accuracy"):
        np.testing.assert_allclose(metrics[name], np.mean([aux[name] for _, aux in expected]), rtol=1e-5)
    # The members' losses differ (different inits, keys and, for WARM, batches): the sum is not K x one of them.
    assert len({round(float(loss), 4) for loss, _ in expected}) == K


@pytest.mark.parametrize("reduction", ["paper", "release"])
def test_evaluate_pairs_decodes_the_mean_with_the_configured_reduction(reduction):
    model = members("ib")[0]
    batch = batch_of(30)
    out = evaluate_pairs(model, batch, reduction)
    for side in ("chosen", "rejected"):
        direct = model(batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"])  # no key: the latent mean
        np.testing.assert_allclose(out[f"reward_{side}"], direct.reward, rtol=1e-5, atol=1e-6)
        kl = gaussian_kl(direct.head.latent_mean, direct.head.latent_logvar, reduction)
        np.testing.assert_allclose(out[f"kl_{side}"], kl, rtol=1e-5, atol=1e-6)
    scalar = evaluate_pairs(members("scalar")[0], batch)
    assert set(scalar) == {"reward_chosen", "reward_rejected"}  # no latent, no KL


def test_ensemble_evaluation_aggregates_members_and_averages_their_kl():
    parts = members("ib")
    ensemble = EnsembleRewardModel(parts, "uwo", uncertainty_coef=0.7)
    batch = batch_of(31)
    out = evaluate_pairs(ensemble, batch)
    ids, mask = batch["chosen_input_ids"], batch["chosen_attention_mask"]
    rewards = jnp.stack([m(ids, mask).reward for m in parts])  # [K, B]
    np.testing.assert_allclose(
        out["reward_chosen"], aggregate_rewards(rewards, "uwo", uncertainty_coef=0.7), rtol=1e-5, atol=1e-6
    )
    kls = [gaussian_kl(m(ids, mask).head.latent_mean, m(ids, mask).head.latent_logvar) for m in parts]
    np.testing.assert_allclose(out["kl_chosen"], np.mean(kls, axis=0), rtol=1e-5, atol=1e-6)
