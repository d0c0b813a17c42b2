"""`inform-jax ppo` end to end on synthetic-world files: a saved SFT policy, a reward model folder."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from world_models import world_sft_and_rm

from inform_jax.cli import main
from inform_jax.models import from_pretrained
from inform_jax.models.reward_model import load_reward_model
from inform_jax.train.config import config_from_dict, load_config
from inform_jax.train.ppo.build import build_ppo
from inform_jax.train.ppo.config import PPOConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo_cli")
    files, _ = world_sft_and_rm(root, n_train=8, n_test=8, hidden_size=32)
    return root, files


@pytest.mark.parametrize("reward", ["model", "gold"])
def test_ppo_command_runs_logs_and_saves_the_policy(setup, reward):
    root, files = setup
    out = root / f"run-{reward}"
    code = main([
        "ppo", "--set", f"policy.path={root / 'sft'}", "--set", "policy.dtype=float32",
        "--set", f"reward.kind={reward}", "--set", f"reward.path={root / 'rm'}", "--set", "reward.gold=world",
        "--set", f"data.prompts={files['prompts_train.jsonl']}", "--set", "data.max_prompt_length=12",
        "--set", "rollout.batch_size=8", "--set", "rollout.max_new_tokens=6", "--set", "energy.eta=2.0",
        "--set", "train.iterations=2", "--set", f"train.output_dir={out}", "--set", "train.progress=false",
        "--set", "mesh.fsdp=1",
    ])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert {"proxy_reward", "gold_reward", "kl", "energy_penalty", "energy_policy_layer1", "clip_fraction"} <= set(
        rows[0]
    )
    policy = from_pretrained(str(out / "final"))
    assert policy(jnp.ones((1, 3), jnp.int32)).logits.shape == (1, 3, policy.config.vocab_size)


def test_ppo_with_ibl_penalty_and_detection_logs_csi_and_mop(setup):
    root, files = setup
    out = root / "run-ibl"
    code = main([
        "ppo", "--set", f"policy.path={root / 'sft'}", "--set", "policy.dtype=float32",
        "--set", f"reward.path={root / 'rm'}", "--set", "reward.gold=world",
        "--set", f"data.prompts={files['prompts_train.jsonl']}",
        "--set", "data.max_prompt_length=12", "--set", "rollout.batch_size=8", "--set", "rollout.max_new_tokens=6",
        "--set", "ibl.coef=0.5", "--set", "ibl.covariance=ledoit_wolf", "--set", "detect.every=2",
        "--set", "detect.num_prompts=16", "--set", "detect.k=3",
        "--set", "train.iterations=2", "--set", f"train.output_dir={out}", "--set", "train.progress=false",
        "--set", "mesh.fsdp=1",
    ])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert rows[0]["ibl_penalty"] > 0 and rows[0]["energy_penalty"] == 0
    assert "csi" not in rows[0] and rows[1]["csi"] > 0 and 0 <= rows[1]["mop"] <= 1
    assert 0 <= rows[1]["detect_hacked_fraction"] <= 1
    saved = np.load(out / "detect" / "step_2.npz")
    assert saved["latents"].shape == (16, 8) and saved["hacked"].shape == (16,)
    assert np.load(out / "detect" / "sft_latents.npy").shape == (16, 8)


def test_build_ppo_is_the_library_form_of_the_command(setup, tmp_path):
    root, files = setup
    values = {
        "policy": {"path": str(root / "sft"), "dtype": "float32"},
        "reward": {"path": str(root / "rm"), "gold": "world"},
        "data": {"prompts": files["prompts_train.jsonl"], "max_prompt_length": 12},
        "rollout": {"batch_size": 8, "max_new_tokens": 6},
        "ppo": {"critic_init": "reward_model"},
        "train": {"iterations": 1, "output_dir": str(tmp_path), "progress": False},
        "mesh": {"fsdp": 1},
    }
    trainer = build_ppo(config_from_dict(values, PPOConfig), log=lambda *_: None)
    assert trainer.gold_fn is not None and trainer.hacked_fn is not None
    assert trainer.num_prompts == 32 and trainer.prompt_len == 12
    # The critic starts from the reward model's backbone, not the policy's.
    reward = load_reward_model(str(root / "rm"))
    np.testing.assert_array_equal(
        jax.tree.leaves(nnx.state(reward.backbone))[0], jax.tree.leaves(trainer.critic_params["backbone"])[0]
    )
    metrics, _ = trainer.iteration_step(0)
    assert np.isfinite(metrics["gold_reward"]) and 0 <= metrics["hacked_fraction"] <= 1
    values["reward"] = {"path": str(root / "rm")}
    assert build_ppo(config_from_dict(values, PPOConfig), log=lambda *_: None).gold_fn is None


@pytest.mark.parametrize(
    "key, value", [("kl.estimator", "k9"), ("energy.site", "nowhere"), ("reward.kind", "oracle"), ("reward.gold", "x")]
)
def test_ppo_config_refuses_bad_choices_before_any_model_loads(key, value):
    with pytest.raises(
        ValueError,
        match=key.replace(".", r"\."),
    ):
        load_config(None, [f"{key}={value}"], cls=PPOConfig)
