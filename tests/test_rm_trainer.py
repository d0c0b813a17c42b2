"""The reward-model trainer: sharded = single device, exact resume, accumulation, the bottleneck acting."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inform_jax.models import make_mesh
from inform_jax.models.reward_model import load_reward_model
from inform_jax.train.config import config_from_dict, load_config
from inform_jax.train.loop import TrainingDivergedError
from inform_jax.train.metrics_log import read_metrics
from inform_jax.train.rm.trainer import RewardModelTrainer

VOCAB, LENGTH = 40, 12
TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)


def marked_pairs(n, seed):
    """Pairs where the chosen sequence contains the marker token 5 and the rejected one does not."""
    rng = np.random.default_rng(seed)
    chosen = rng.integers(6, VOCAB, (n, LENGTH))
    chosen[np.arange(n), rng.integers(0, LENGTH, n)] = 5
    lengths = rng.integers(LENGTH // 2, LENGTH + 1, (n, 2))
    masks = [(np.arange(LENGTH)[None] < lengths[:, i : i + 1]).astype(np.int32) for i in range(2)]
    chosen = np.where(masks[0] > 0, chosen, 0)
    chosen[np.arange(n), rng.integers(0, lengths[:, 0])] = 5  # the marker inside the real tokens
    rejected = np.where(masks[1] > 0, rng.integers(6, VOCAB, (n, LENGTH)), 0)
    return dict(
        chosen_input_ids=chosen,
        chosen_attention_mask=masks[0],
        rejected_input_ids=rejected,
        rejected_attention_mask=masks[1],
        response_lengths=lengths,
    )


def make_config(tmp_path, method="inform", **sections):
    values = dict(
        method=method,
        model=dict(config=TINY, dtype="float32"),
        head=dict(latent_dim=8),
        loss=dict(num_members=2),
        optim=dict(lr=3e-3, warmup_ratio=0.1),
        train=dict(batch_size=16, max_steps=6, save_every=3, eval_every=1000, log_every=1, output_dir=str(tmp_path),
                   progress=False),
    )  # fmt: skip
    for name, update in sections.items():
        values[name] = {**values.get(name, {}), **update}
    return config_from_dict(values)


def one_device():
    return make_mesh(devices=jax.devices()[:1])


def params_of(trainer):
    return jax.device_get(jax.tree.leaves(trainer.params))


def assert_same_params(a, b, rtol=1e-5, atol=1e-7):
    for x, y in zip(params_of(a), params_of(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("method", ["inform", "standard"])
def test_sharded_train_steps_equal_single_device(tmp_path, method):
    data = marked_pairs(64, 0)
    single = RewardModelTrainer(
        make_config(tmp_path / "single", method, train=dict(max_steps=3)), data, mesh=one_device()
    )
    sharded = RewardModelTrainer(
        make_config(tmp_path / "sharded", method, train=dict(max_steps=3)), data, mesh=make_mesh(data=2, fsdp=4)
    )
    assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(sharded.params))  # really sharded
    single.fit()
    sharded.fit()
    # Sharded reductions sum in another order: Adam's normalized steps (up to lr = 3e-3 each) carry the float32
    # rounding of the gradients, so compare to 1e-6 absolute (0.03% of one step) instead of bit-for-bit.
    assert_same_params(single, sharded, atol=1e-6)


@pytest.mark.parametrize("method", ["inform", "inform+warm"])
def test_killed_run_resumes_to_the_same_parameters(tmp_path, method):
    data = marked_pairs(40, 1)
    whole = RewardModelTrainer(make_config(tmp_path / "whole", method), data, mesh=one_device())
    whole.fit()
    killed = RewardModelTrainer(make_config(tmp_path / "killed", method), data, mesh=one_device())
    killed.fit(stop_after=4)  # checkpoint at step 3, then one more step is lost
    assert killed.step == 4
    resumed = RewardModelTrainer(make_config(tmp_path / "killed", method), data, mesh=one_device())
    resumed.fit()
    assert resumed.step == 6
    assert_same_params(whole, resumed, rtol=0, atol=0)
    steps = [r["step"] for r in read_metrics(str(tmp_path / "killed" / "metrics.jsonl")) if r["split"] == "train"]
    assert steps[-3:] == [4, 5, 6]


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    data = marked_pairs(64, 2)
    full = RewardModelTrainer(
        make_config(tmp_path / "full", "standard", train=dict(max_steps=3)), data, mesh=one_device()
    )
    accum = RewardModelTrainer(
        make_config(tmp_path / "acc", "standard", train=dict(max_steps=3, grad_accum=4)), data, mesh=one_device()
    )
    full.fit()
    accum.fit()
    assert_same_params(full, accum, rtol=2e-4, atol=1e-6)


def test_exported_model_restores_and_evaluates_deterministically(tmp_path):
    data = marked_pairs(64, 3)
    trainer = RewardModelTrainer(make_config(tmp_path, "inform"), data, marked_pairs(32, 4), mesh=one_device())
    model = trainer.fit()
    first, second = trainer.evaluate(), trainer.evaluate()
    assert first == second  # evaluation decodes the latent mean: no sampling
    restored = load_reward_model(str(tmp_path / "final"))
    ids, mask = data["chosen_input_ids"][:8], data["chosen_attention_mask"][:8]
    np.testing.assert_allclose(restored(ids, mask).reward, model(ids, mask).reward, rtol=1e-6, atol=1e-7)
    out = model(ids, mask)
    np.testing.assert_array_equal(out.head.latent, out.head.latent_mean)
    sampled = model(ids, mask, key=jax.random.key(0))
    assert not np.allclose(sampled.head.latent, sampled.head.latent_mean)


def test_the_bottleneck_acts(tmp_path):
    data, held_out = marked_pairs(256, 5), marked_pairs(128, 6)
    results = {}
    for beta in (1e-3, 1.0, 1e3):
        config = make_config(
            tmp_path / str(beta),
            "inform",
            loss=dict(beta=beta),
            train=dict(max_steps=80, save_every=1000, log_every=20),
        )
        trainer = RewardModelTrainer(config, data, held_out, mesh=one_device())
        trainer.fit()
        results[beta] = trainer.evaluate()
    assert results[1e-3]["accuracy"] >= 0.9
    assert results[1e-3]["kl"] > results[1.0]["kl"] > results[1e3]["kl"]
    # A huge beta squeezes the latent to the prior: the reward carries almost no preference.
    assert abs(results[1e3]["accuracy"] - 0.5) < 0.15


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path):
    data = marked_pairs(32, 7)
    config = make_config(tmp_path, "standard", optim=dict(lr=1e30, warmup_ratio=0.0, grad_clip=0.0))
    trainer = RewardModelTrainer(config, data, mesh=one_device())
    with pytest.raises(TrainingDivergedError, match="last good checkpoint"):
        trainer.fit()


@pytest.mark.parametrize("broken", ["params", "opt_state"])
def test_divergence_names_a_checkpoint_that_is_on_disk_and_finite(tmp_path, broken):
    """NaN parameters (the next loss is NaN) or infinite Adam moments (the next loss is still finite, the state
    is not) after step 5: the run stops before saving step 6 and names checkpoint 4, which is complete and finite."""

    def poison(trainer, step):
        def spoil(x):
            return x * np.inf if jnp.issubdtype(x.dtype, jnp.floating) else x

        setattr(trainer, broken, jax.tree.map(spoil, getattr(trainer, broken)))

    config = make_config(tmp_path, "standard", train=dict(max_steps=8, save_every=2, keep_checkpoints=5))
    trainer = RewardModelTrainer(config, marked_pairs(32, 9), mesh=one_device(), callbacks=[(5, poison)])
    with pytest.raises(TrainingDivergedError, match=r"at step 6.*last good checkpoint: step 4"):
        trainer.fit()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]  # no partial or poisoned save left
    fresh = RewardModelTrainer(make_config(tmp_path, "standard", train=dict(max_steps=8, save_every=2)),
                               marked_pairs(32, 9), mesh=one_device())  # fmt: skip
    fresh._restore()
    assert fresh.step == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves((fresh.params, fresh.opt_state)))


def test_resume_with_a_changed_config_stops_unless_allowed(tmp_path):
    data = marked_pairs(32, 8)
    first = RewardModelTrainer(make_config(tmp_path, "inform"), data, mesh=one_device())
    first.fit(stop_after=4)  # checkpoint at step 3
    changed = make_config(tmp_path, "inform", optim=dict(lr=1e-2), loss=dict(beta=0.5))
    with pytest.raises(ValueError, match=r"loss\.beta: 0\.1 -> 0\.5; optim\.lr: 0\.003 -> 0\.01"):
        RewardModelTrainer(changed, data, mesh=one_device()).fit()
    # So is a longer run: the warmup-cosine schedule is laid over the total step count.
    with pytest.raises(ValueError, match=r"train\.max_steps: 6 -> 8"):
        RewardModelTrainer(make_config(tmp_path, "inform", train=dict(max_steps=8)), data, mesh=one_device()).fit()
    # Logging keys may change; the stored config stays the one the run started with.
    RewardModelTrainer(make_config(tmp_path, "inform", train=dict(log_every=2)), data, mesh=one_device()).fit()
    allowed = make_config(tmp_path, "inform", optim=dict(lr=1e-2), train=dict(max_steps=10, allow_config_change=True))
    RewardModelTrainer(allowed, data, mesh=one_device()).fit()
    stored = load_config(str(tmp_path / "config.yaml"))
    assert stored.optim.lr == pytest.approx(3e-3) and stored.train.max_steps == 6
    changes = [json.loads(line) for line in open(tmp_path / "config_changes.jsonl")]
    assert changes == [{"from": 6, "changes": {"optim.lr": [0.003, 0.01], "train.max_steps": [6, 10]}}]
    # One metrics line per step although step 4 ran twice (the killed run logged it after its last checkpoint);
    # steps 5-6 logged every 2, 7-10 every step.
    steps = [r["step"] for r in read_metrics(str(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 6, 7, 8, 9, 10]
