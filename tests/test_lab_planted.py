"""The lab's planted methods (experiments/lab/PROTOCOL.md section 4): what each one is built from."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from inform_jax.lab.config import METHODS, PLANTED_METHODS, LabConfig
from inform_jax.lab.stages import Lab, method_runs

TINY = dict(n_pairs=200, n_sft=100, n_prompts=16, n_eval_prompts=8, hidden_size=16, intermediate_size=32,
            num_layers=2, num_heads=2, new_tokens=8, sft_steps=20, rm_steps=10, rm_batch=16, latent_dim=8)  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(LabConfig(**TINY), str(tmp_path_factory.mktemp("planted-lab")), log=lambda *_: None)


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_the_clean_world_has_the_same_prompts_and_gold_ordered_pairs(lab):
    clean = lab._world_files(clean=True)
    assert clean["prefs_train.jsonl"] != lab.files["prefs_train.jsonl"]
    with open(clean["prompts_test.jsonl"]) as a, open(lab.files["prompts_test.jsonl"]) as b:
        assert a.read() == b.read()  # the same held-out prompts: only the pairs' labels and mix differ
    noisy = _rows(lab.files["prefs_train.jsonl"])
    clean_rows = _rows(clean["prefs_train.jsonl"])
    score = lambda row, side: lab.world.score_text(row["prompt"], row[side])  # noqa: E731
    # no label noise: the gold judge (recomputed from the text) prefers every chosen side
    assert not any(r["flipped"] for r in clean_rows)
    assert all(score(r, "chosen").gold >= score(r, "rejected").gold for r in clean_rows)
    assert any(r["flipped"] for r in noisy)  # while the lab's own pairs do have flips
    # no spurious correlation: the chosen side scores higher on the spurious features about half the time (0.5 is
    # uninformative), where the lab's pairs are built so that it does in 60% of them
    higher = np.mean([score(r, "chosen").spurious > score(r, "rejected").spurious for r in clean_rows])
    assert abs(higher - 0.5) < 4 * np.sqrt(0.25 / len(clean_rows)) + 0.05


def test_planted_reward_models_differ_from_the_standard_one(lab):
    sft = lab.sft_policy()
    standard = jax.tree.leaves(nnx.state(lab.reward_model("standard", sft), nnx.Param))
    for kind in ("standard-seed2", "planted-good"):
        planted = jax.tree.leaves(nnx.state(lab.reward_model(kind, sft), nnx.Param))
        assert not all(np.array_equal(a, b) for a, b in zip(standard, planted, strict=True)), kind


def test_flipped_eppo_runs_with_the_negative_eta():
    config = LabConfig(**TINY, methods=PLANTED_METHODS + ("EPPO",))
    runs = {name: (kind, overrides) for name, kind, overrides in method_runs(config, eta=3.0)}
    assert runs["Planted flipped EPPO"][1]["energy.eta"] == -3.0 and runs["EPPO"][1]["energy.eta"] == 3.0
    assert runs["Planted good RM"][0] == "planted-good" and runs["Planted RM seed"][0] == "standard-seed2"
    assert all(name in METHODS for name in PLANTED_METHODS)
