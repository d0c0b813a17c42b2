"""The reward-model method registry: every method is one object read by the config, the trainer and the CLI; the
hinge method (added as one registry entry) against NumPy; methods with callbacks or data transforms act from Python
too; held-out KL uses the training reduction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_rm_trainer import make_config, marked_pairs, one_device

from inform_jax.cli import build_parser
from inform_jax.losses import gaussian_kl
from inform_jax.models.heads import HeadOutput
from inform_jax.train.config import describe_fields
from inform_jax.train.rm.methods import METHODS, RewardModelMethod, get_method, hinge_member_loss, register
from inform_jax.train.rm.trainer import RewardModelTrainer


def test_every_registered_method_is_accepted_and_listed(tmp_path):
    parser = build_parser()
    train_rm = parser._subparsers._group_actions[0].choices["train-rm"]
    listed = train_rm.format_help()
    for name, method in METHODS.items():
        config = make_config(tmp_path, name)
        assert config.method_spec is method
        assert (config.head_kind, config.scheme) == (method.head, method.scheme)
        assert f"  {name}: " in listed
    assert "method (default 'inform')" in describe_fields()
    with pytest.raises(ValueError, match="method must be one of"):
        make_config(tmp_path, "no-such-method")
    with pytest.raises(ValueError, match="already registered"):
        register(METHODS["standard"])
    with pytest.raises(ValueError, match="scheme must be one of"):
        RewardModelMethod("x", "scalar", "bagging", hinge_member_loss, "x")


class _Loss:
    margin = None


def test_hinge_loss_matches_numpy():
    rng = np.random.default_rng(11)
    r_c, r_r = rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float32)
    weights = rng.uniform(0.0, 2.0, 64).astype(np.float32)
    batch = {"weights": jnp.asarray(weights)}
    for margin in (None, 0.5):
        cfg = _Loss()
        cfg.margin = margin
        loss, aux = hinge_member_loss(None, HeadOutput(jnp.asarray(r_c)), HeadOutput(jnp.asarray(r_r)), batch, cfg)
        m = 1.0 if margin is None else margin
        expected = np.sum(weights * np.maximum(0.0, m - (r_c - r_r))) / np.sum(weights)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
        np.testing.assert_allclose(float(aux["accuracy"]), np.mean(r_c > r_r), rtol=1e-6)

    # Pairs ranked beyond the margin give no gradient; the others pull with slope -w / sum(w).
    def of(chosen):
        return hinge_member_loss(None, HeadOutput(chosen), HeadOutput(jnp.asarray(r_r)), batch, _Loss())[0]

    grad = np.asarray(jax.grad(of)(jnp.asarray(r_c)))
    inside = (r_c - r_r) < 1.0
    np.testing.assert_allclose(grad[~inside], 0.0)
    np.testing.assert_allclose(grad[inside], -weights[inside] / weights.sum(), rtol=1e-5)


def test_hinge_method_trains_from_python(tmp_path):
    data, held_out = marked_pairs(128, 21), marked_pairs(64, 22)
    config = make_config(tmp_path, "hinge", train=dict(max_steps=40, save_every=1000, log_every=40))
    trainer = RewardModelTrainer(config, data, held_out, mesh=one_device())
    before = trainer.evaluate()["accuracy"]
    trainer.fit()
    after = trainer.evaluate()["accuracy"]
    assert after >= 0.9 > before


def test_a_method_that_transforms_pairs_refuses_untransformed_arrays(tmp_path):
    assert get_method("rrm").pair_transform is not None
    with pytest.raises(ValueError, match="transforms the pair list"):
        RewardModelTrainer(make_config(tmp_path, "rrm"), marked_pairs(16, 0), mesh=one_device())


def test_held_out_kl_uses_the_training_reduction(tmp_path):
    data = marked_pairs(32, 23)
    kls = {}
    for reduction in ("paper", "release"):
        config = make_config(tmp_path / reduction, "inform", loss=dict(kl_reduction=reduction))
        trainer = RewardModelTrainer(config, data, data, mesh=one_device())
        model = trainer.current_model()
        expected = []
        for side in ("chosen", "rejected"):
            out = model(data[f"{side}_input_ids"], data[f"{side}_attention_mask"])
            expected.append(np.mean(gaussian_kl(out.head.latent_mean, out.head.latent_logvar, reduction)))
        kls[reduction] = trainer.evaluate()["kl"]
        np.testing.assert_allclose(kls[reduction], np.mean(expected), rtol=1e-5)
    assert kls["release"] < kls["paper"] / 4  # the two reductions differ: the metric is not the paper one twice
