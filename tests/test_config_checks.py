"""Every config value with a fixed set of choices or a valid range is checked when the config is built, before any
model loads, with a message naming the key; shape constraints (heads divide the width, the tokenizer fits the
vocabulary) are checked before compute; the demo replaces only run folders it made."""

from types import SimpleNamespace

import numpy as np
import pytest

from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.data.word_tokenizer import build_word_tokenizer
from inform_jax.lab.runs import LAB_RUN_MARKER, run_method
from inform_jax.models import DecoderConfig
from inform_jax.train.config import load_config
from inform_jax.train.loop import TrainingDivergedError, ensure_finite
from inform_jax.train.ppo.config import PPOConfig
from inform_jax.train.rm.trainer import RewardModelTrainer

BAD_RM_VALUES = [
    ("optim.lr", -1e-5), ("optim.lr", 0), ("loss.beta", -0.1), ("train.keep_checkpoints", 0),
    ("loss.aggregation", "bogus"), ("loss.kl_reduction", "sum"), ("model.remat", "everything"), ("model.dtype", "int8"),
    ("model.attention_impl", "flash"), ("head.decoder", "mlp"), ("head.latent_dim", 0), ("data.format", "csv"),
    ("data.max_length", 1), ("optim.warmup_ratio", 1.0), ("optim.b2", 1.0), ("train.batch_size", 0),
    ("train.save_every", 0), ("train.log_every", 0), ("train.epochs", 0), ("loss.num_members", 0),
]  # fmt: skip
BAD_PPO_VALUES = [
    ("ppo.actor_lr", -1e-4), ("ppo.critic_lr", 0), ("kl.estimator", "k9"), ("energy.site", "nowhere"),
    ("rollout.top_p", 2), ("rollout.top_p", 0), ("rollout.temperature", 0), ("policy.remat", "everything"),
    ("ppo.gamma", 1.5), ("ppo.lam", -0.1), ("ppo.clip", 0), ("energy.eta", "inf"), ("kl.coef", -0.1),
    ("reward.kind", "oracle"), ("reward.gold", "x"), ("train.iterations", 0), ("train.keep_checkpoints", 0),
    ("ibl.covariance", "diag"), ("detect.num_prompts", 2), ("data.max_prompt_length", 0), ("ppo.critic_init", "x"),
    ("ppo.grad_clip", 0), ("energy.sft_samples", 1.5), ("detect.every", 0.5), ("rollout.top_k", -1),
]  # fmt: skip


@pytest.mark.parametrize("key, value", BAD_RM_VALUES)
def test_bad_reward_model_settings_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize("key, value", BAD_PPO_VALUES)
def test_bad_ppo_settings_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        load_config(None, [f"{key}={value}"], cls=PPOConfig)


def test_defaults_and_the_limits_pass():
    load_config(None, ["optim.warmup_ratio=0", "loss.beta=0", "optim.grad_clip=0", "model.remat=dots"])
    load_config(None, ["rollout.top_p=1", "ppo.gamma=1", "kl.estimator=k3", "reward.clip=null"], cls=PPOConfig)


def test_heads_that_do_not_divide_the_width_are_refused():
    with pytest.raises(ValueError, match="hidden_size=30 is not a multiple of num_heads=4"):
        DecoderConfig(hidden_size=30, num_heads=4, num_kv_heads=4)
    assert DecoderConfig(hidden_size=30, num_heads=4, num_kv_heads=4, head_dim=8).resolved_head_dim == 8


def test_a_tokenizer_larger_than_the_vocabulary_is_refused_before_compute(tmp_path):
    build_word_tokenizer([f"w{i}" for i in range(40)], tmp_path / "tok")
    tokenizer = load_tokenizer(str(tmp_path / "tok"))
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "w1", "chosen": "w2", "rejected": "w3"}\n')
    config = load_config(None, [
        f"data.train={data}", f"data.tokenizer={tmp_path / 'tok'}", "model.config.vocab_size=16",
        "model.config.hidden_size=16", "model.config.intermediate_size=32", "model.config.num_heads=2",
        "model.config.num_kv_heads=2",
    ])  # fmt: skip
    with pytest.raises(ValueError, match=f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is 16"):
        RewardModelTrainer.from_config(config, log=lambda *_: None)


def test_a_non_finite_state_is_never_saved():
    state = {"params": np.ones(3, np.float32), "moments": np.array([1.0, np.inf], np.float32)}
    with pytest.raises(TrainingDivergedError, match="not saved; last good checkpoint: step 4"):
        ensure_finite(state, 6, "step", lambda: 4)
    ensure_finite({"params": np.ones(3, np.float32), "count": np.int32(3)}, 6, "step", lambda: 4)


def test_the_demo_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "runs" / "ppo"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match="not made by the lab"):
        run_method(SimpleNamespace(config=None), "PPO", None, None, {}, None, {}, str(mine))
    assert (mine / "notes.txt").read_text() == "the user's"
    assert LAB_RUN_MARKER.startswith(".")
