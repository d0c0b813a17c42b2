"""The protocol's mechanism checks (experiments/lab/PROTOCOL.md, section 5) as exact tests: a zero coefficient is
plain PPO bit for bit, InfoRM at beta 0 without latent noise is Bradley-Terry, and the fair protocol's PPO options
(reward normalization over SFT samples, truncated responses, EPPO's teacher-forced reference) do what they say."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_ppo import EOS, VOCAB, make_trainer, metrics, policy, prompts
from test_rm_objective import batch_of

from inform_jax.models import DecoderConfig, make_mesh
from inform_jax.models.reward_model import EnsembleRewardModel, HeadConfig, RewardModel
from inform_jax.train.config import LossSection, load_config
from inform_jax.train.ppo.config import PPOConfig
from inform_jax.train.ppo.trainer import PPOTrainer, append_eos, reward_model_score_fn
from inform_jax.train.rm.methods import get_method
from inform_jax.train.rm.objective import member_loss

ITERATIONS = "train.iterations=3"


def actor_leaves(trainer):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(trainer.actor_params)]


# ---------------------------------------------------------------------------- (a) a zero coefficient is plain PPO


@pytest.fixture(scope="module")
def plain_ppo(tmp_path_factory):
    trainer = make_trainer(tmp_path_factory.mktemp("plain"), ITERATIONS)
    trainer.fit()
    return actor_leaves(trainer)


@pytest.mark.parametrize(
    "overrides",
    [
        ("kl.coef=0",),  # PPO w/ KL at coefficient 0, fixed
        ("kl.coef=0", "kl.adaptive=true", "kl.estimator=k3"),  # and adaptive (0 stays 0), another estimator
        ("energy.eta=0", "energy.sft_energy=regenerate", "energy.sft_samples=2"),  # EPPO at eta 0
        ("energy.eta=0", "energy.site=mlp", "energy.reference=teacher_forced"),
    ],
    ids=["kl0", "kl0-adaptive-k3", "eta0-regenerate", "eta0-teacher-forced"],
)
def test_a_zero_coefficient_is_plain_ppo_bit_for_bit(tmp_path, plain_ppo, overrides):
    trainer = make_trainer(tmp_path, ITERATIONS, *overrides)
    trainer.fit()
    got = actor_leaves(trainer)
    assert all(np.array_equal(a, b) for a, b in zip(plain_ppo, got, strict=True))


# ---------------------------------------------------------------------------- (b) InfoRM at beta 0 is Bradley-Terry


def test_inform_at_beta_zero_without_latent_noise_is_bradley_terry():
    """The objective decodes the latent mean when no key reaches the head (key=None: the noise off); with beta 0
    the InfoRM loss is then the Bradley-Terry loss of the same head, exactly. With the noise on it is not."""
    config = DecoderConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2)  # fmt: skip
    model = RewardModel.create(config, HeadConfig(kind="ib", latent_dim=8), rngs=nnx.Rngs(3))
    batch, cfg = batch_of(40), LossSection(beta=0.0)
    inform, aux = member_loss(model, batch, None, cfg, get_method("inform"))
    bt, _ = member_loss(model, batch, None, cfg, get_method("standard"))
    assert np.array_equal(np.asarray(inform), np.asarray(bt)) and float(aux["kl"]) > 0  # the KL is there, weighed 0
    noisy, _ = member_loss(model, batch, jax.random.key(0), cfg, get_method("inform"))
    assert not np.array_equal(np.asarray(noisy), np.asarray(bt))
    # "inform-mean" is that noise-off objective in training too: a key reaches it and changes nothing
    mean_only, _ = member_loss(model, batch, jax.random.key(0), cfg, get_method("inform-mean"))
    assert np.array_equal(np.asarray(mean_only), np.asarray(bt)) and not get_method("inform-mean").samples_latent


# ---------------------------------------------------------------------------- reward-model trainers


def reward_trainer(tmp_path, reward_model, *overrides):
    """A tiny PPO trainer (test_ppo's policy and prompts) scored by ``reward_model`` (a RewardModel or ensemble)."""
    config = load_config(
        None,
        [f"train.output_dir={tmp_path}", "train.progress=false", "rollout.batch_size=16", "rollout.max_new_tokens=8",
         "reward.clip=null", *overrides],
        cls=PPOConfig,
    )  # fmt: skip
    graph, params = nnx.split(reward_model)
    return PPOTrainer(
        config, prompts(), policy(), score_fn=reward_model_score_fn(graph), reward_params=params, eos_id=EOS,
        mesh=make_mesh(devices=jax.devices()[:1]),
    )  # fmt: skip


def tiny_reward_model(seed, dtype=jnp.float32):
    config = DecoderConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                           num_kv_heads=2, initializer_range=0.2, dtype=dtype)  # fmt: skip
    return RewardModel.create(config, HeadConfig(kind="scalar"), rngs=nnx.Rngs(seed))


def score(trainer, sequences, sequence_mask):
    """The trainer's scoring pass (at its initial state) on sequences [B, P + N]: its Scored."""
    s = trainer.state
    with jax.set_mesh(trainer.mesh):
        return trainer._score(
            s.actor, trainer.ref_params, s.critic, trainer.reward_params, sequences, sequence_mask, trainer.reward_norm
        )


# ---------------------------------------------------------------------------- (c) reward normalization


def _normalize(trainer):
    mean, std = trainer.reference.reward_normalization()
    trainer.reward_norm = (jnp.asarray(mean), jnp.asarray(std))
    return mean, std


def test_normalized_score_over_the_sft_samples_has_mean_0_and_std_1(tmp_path):
    trainer = reward_trainer(tmp_path, tiny_reward_model(1), "reward.normalize=sft", "reward.normalize_samples=20")
    mean, std = _normalize(trainer)
    raw = trainer.reference.sft_scores()
    assert raw.shape == (1, 32)  # 20 samples rounded up to 2 rollout batches
    np.testing.assert_allclose(mean, raw.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(std, raw.std(axis=1), rtol=1e-6)
    assert std[0] > 0
    scores = np.concatenate([np.asarray(score(trainer, g.sequences, g.sequence_mask).score)
                             for g in trainer.reference.sft_samples()])  # fmt: skip
    np.testing.assert_allclose([scores.mean(), scores.std()], [0.0, 1.0], atol=1e-5)
    # Stored with the run: a second trainer on the folder reads the same numbers without sampling.
    again = reward_trainer(tmp_path, tiny_reward_model(2), "reward.normalize=sft", "reward.normalize_samples=20")
    np.testing.assert_array_equal(np.stack(again.reference.reward_normalization()), np.stack([mean, std]))


def test_a_normalize_cache_shares_the_statistics_between_runs_against_one_reward_model(tmp_path):
    """reward.normalize_cache: a second run folder against the same reward model reads the first's statistics
    (equal to computing them afresh) without sampling; another reward model, another compute precision of the same
    parameters, another seed or the gold reward (no parameters) are not served from it."""
    shared = tmp_path / "norm"
    settings = ("reward.normalize=sft", "reward.normalize_samples=20", f"reward.normalize_cache={shared}")
    first = np.stack(reward_trainer(tmp_path / "a", tiny_reward_model(1), *settings).reference.reward_normalization())
    assert len(list(shared.glob("reward_norm-*.npy"))) == 1 and (tmp_path / "a" / "reward_norm.npy").exists()
    again = reward_trainer(tmp_path / "b", tiny_reward_model(1), *settings)
    again.reference.sft_scores = lambda: pytest.fail("the shared statistics were computed again")
    np.testing.assert_array_equal(np.stack(again.reference.reward_normalization()), first)
    assert np.array_equal(np.load(tmp_path / "b" / "reward_norm.npy"), first)  # the run folder keeps its copy
    resumed = reward_trainer(tmp_path / "b", tiny_reward_model(1), *settings)  # reads its folder: no digest needed
    resumed.reference.reward_digest = lambda: pytest.fail("a resumed run hashed the reward model again")
    np.testing.assert_array_equal(np.stack(resumed.reference.reward_normalization()), first)
    fresh = reward_trainer(tmp_path / "c", tiny_reward_model(1), *settings[:2]).reference.reward_normalization()
    np.testing.assert_array_equal(np.stack(fresh), first)
    other_model = reward_trainer(tmp_path / "d", tiny_reward_model(2), *settings).reference.reward_normalization()
    other_seed = reward_trainer(tmp_path / "e", tiny_reward_model(1), *settings, "train.seed=7")
    assert not np.allclose(np.stack(other_model), first)
    assert not np.allclose(np.stack(other_seed.reference.reward_normalization()), first)
    precision = reward_trainer(tmp_path / "f", tiny_reward_model(1, jnp.bfloat16), *settings)
    assert precision.reference.reward_digest() != again.reference.reward_digest()
    gold = make_trainer(tmp_path / "g", *settings)  # the world's gold score: a function without parameters
    assert gold.reference.reward_digest() is None
    assert len(list(shared.glob("reward_norm-*.npy"))) == 3


def test_ensemble_members_are_normalized_before_the_min(tmp_path):
    ensemble = EnsembleRewardModel([tiny_reward_model(10 + i) for i in range(3)], "min")
    trainer = reward_trainer(tmp_path, ensemble, "reward.normalize=sft", "reward.normalize_samples=32")
    raw = trainer.reference.sft_scores()  # [K, S]
    assert raw.shape == (3, 32)
    mean, std = _normalize(trainer)
    normalized = (raw - raw.mean(axis=1, keepdims=True)) / raw.std(axis=1, keepdims=True)
    np.testing.assert_allclose(normalized.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalized.std(axis=1), 1.0, atol=1e-5)
    scores = np.concatenate([np.asarray(score(trainer, g.sequences, g.sequence_mask).score)
                             for g in trainer.reference.sft_samples()])  # fmt: skip
    np.testing.assert_allclose(scores, normalized.min(axis=0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(scores, raw.min(axis=0))  # the normalization changed the aggregate


def test_normalization_is_logged_and_off_by_default(tmp_path):
    trainer = reward_trainer(tmp_path / "on", tiny_reward_model(1), "reward.normalize=sft", "train.iterations=1",
                             "reward.normalize_samples=16")  # fmt: skip
    trainer.fit()
    row = metrics(tmp_path / "on")[0]
    mean, std = np.load(tmp_path / "on" / "reward_norm.npy")
    assert row["reward_norm_mean"] == pytest.approx(mean[0]) and row["reward_norm_std"] == pytest.approx(std[0])
    off = reward_trainer(tmp_path / "off", tiny_reward_model(1), "train.iterations=1")
    off.fit()
    assert "reward_norm_mean" not in metrics(tmp_path / "off")[0]
    assert not (tmp_path / "off" / "reward_norm.npy").exists()


# ---------------------------------------------------------------------------- (d) truncated responses


def hand_built(prompt_len=6, n=8):
    """Two rows: a response that ends with EOS at position 3, and one cut at n tokens (no EOS)."""
    batch = prompts()
    p_ids, p_mask = batch["input_ids"][:2], batch["attention_mask"][:2]
    rng = np.random.default_rng(5)
    response = rng.integers(3, VOCAB, (2, n))
    response[0, 3], response[0, 4:] = EOS, 0
    r_mask = np.ones((2, n), np.int32)
    r_mask[0, 4:] = 0
    return p_ids, p_mask, response, r_mask


def test_append_eos_scores_the_response_with_eos_appended(tmp_path):
    reward_model = tiny_reward_model(4)
    trainer = reward_trainer(tmp_path, reward_model, "reward.missing_eos=append_eos")
    p_ids, p_mask, response, r_mask = hand_built()
    ids, mask = append_eos(jnp.asarray(response), jnp.asarray(r_mask), EOS)
    assert ids.shape == (2, 9) and np.array_equal(np.asarray(ids[:, :8]), response)
    assert int(ids[1, 8]) == EOS and int(mask[1, 8]) == 1 and int(mask[0, 8]) == 0  # the finished row is as it was
    scored = score(trainer, jnp.asarray(np.concatenate([p_ids, response], 1)),
                   jnp.asarray(np.concatenate([p_mask, r_mask], 1)))  # fmt: skip
    assert np.array_equal(np.asarray(scored.truncated), [False, True])
    # By hand: the truncated row with EOS written after its last token; the finished row as it is.
    cut = reward_model(jnp.asarray(np.concatenate([p_ids[1:], response[1:], [[EOS]]], 1)),
                       jnp.asarray(np.concatenate([p_mask[1:], r_mask[1:], [[1]]], 1))).reward  # fmt: skip
    done = reward_model(jnp.asarray(np.concatenate([p_ids[:1], response[:1]], 1)),
                        jnp.asarray(np.concatenate([p_mask[:1], r_mask[:1]], 1))).reward  # fmt: skip
    np.testing.assert_allclose(np.asarray(scored.score), [float(done[0]), float(cut[0])], rtol=1e-5, atol=1e-6)
    plain = reward_trainer(tmp_path / "plain", reward_model)
    plain_score = score(plain, jnp.asarray(np.concatenate([p_ids, response], 1)),
                        jnp.asarray(np.concatenate([p_mask, r_mask], 1))).score  # fmt: skip
    assert not np.isclose(float(plain_score[1]), float(cut[0]))  # without EOS the reward is read elsewhere


def test_missing_eos_penalty_subtracts_the_penalty_from_truncated_rows_only(tmp_path):
    trainer = reward_trainer(tmp_path, tiny_reward_model(4), "reward.missing_eos=penalty",
                             "reward.missing_eos_penalty=0.75")  # fmt: skip
    p_ids, p_mask, response, r_mask = hand_built()
    scored = score(trainer, jnp.asarray(np.concatenate([p_ids, response], 1)),
                   jnp.asarray(np.concatenate([p_mask, r_mask], 1)))  # fmt: skip
    s = trainer.state
    shaped, *_ = trainer._advantages(scored, jnp.asarray(r_mask), jnp.zeros(2), None, s.kl_coef, s.score_std)
    expected = np.asarray(scored.score) - np.asarray([0.0, 0.75], np.float32)
    assert np.array_equal(np.asarray(shaped.score), expected)
    assert np.array_equal(np.asarray(shaped.eos_penalty), [0.0, 0.75])


# ---------------------------------------------------------------------------- (e) EPPO's teacher-forced reference


def test_teacher_forced_energy_penalty_is_exactly_0_at_iteration_0(tmp_path):
    trainer = make_trainer(tmp_path, "energy.eta=2.0", "energy.reference=teacher_forced", "train.iterations=2")
    trainer.fit()
    rows = metrics(tmp_path)
    assert rows[0]["energy_penalty"] == 0.0 and rows[1]["energy_penalty"] > 0.0  # the policy moved after one update
    assert 0.0 <= rows[0]["truncated_fraction"] <= 1.0
    assert not list(tmp_path.glob("sft_energy-*.npy"))  # no sampled reference computed
    null = trainer.reference.null_penalty(count=32)
    assert null["penalty_mean"] == 0.0 and null["penalty_std"] == 0.0


def test_sampled_reference_has_a_nonzero_sft_vs_sft_null(tmp_path):
    trainer = make_trainer(tmp_path, "energy.eta=2.0", "energy.sft_samples=4")
    null = trainer.reference.null_penalty(count=32)
    assert null["gap"].shape == (32,) and null["penalty_mean"] > 0 and null["penalty_std"] > 0
    np.testing.assert_allclose(null["penalty"], 2.0 * null["gap"])
    assert null["penalty_mean"] == pytest.approx(float(np.mean(null["penalty"])))
