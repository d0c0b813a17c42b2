"""Latent extraction from reward-model folders, response files, and `inform-jax detect` end to end."""

import json

import numpy as np
import pytest
from flax import nnx

from inform_jax.cli import main
from inform_jax.data.preference import PreferenceDataError, load_responses
from inform_jax.detect.latents import embed_responses, extract_features
from inform_jax.models.config import DecoderConfig
from inform_jax.models.reward_model import EnsembleRewardModel, HeadConfig, RewardModel, save_reward_model
from inform_jax.world.files import write_jsonl
from inform_jax.world.world import SyntheticWorld


def tiny_rm(world, kind, seed=0):
    config = DecoderConfig(
        vocab_size=world.vocab_size, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
    )
    return RewardModel.create(config, HeadConfig(kind=kind, latent_dim=8), rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld()


def responses(world, behaviours, n, seed):
    rng = np.random.default_rng(seed)
    prompts = world.sample_prompts(rng, n)
    rows = []
    for i, prompt in enumerate(prompts):
        behaviour = behaviours[i % len(behaviours)]
        response = world.generate_response(rng, prompt, behaviour)
        rows.append({"prompt": prompt, "response": response, "hacked": world.hacked_text(prompt, response)})
    return rows


def test_extract_features_batches_and_pads_without_changing_results(world):
    model = tiny_rm(world, "ib")
    rng = np.random.default_rng(0)
    ids = rng.integers(4, world.vocab_size, size=(7, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[2, 9:] = 0  # right padding
    whole = np.asarray(model(ids, mask).head.latent_mean)
    np.testing.assert_allclose(extract_features(model, ids, mask, batch_size=3), whole, rtol=1e-5, atol=1e-6)
    hidden = extract_features(model, ids, mask, feature="hidden", batch_size=4)
    np.testing.assert_allclose(hidden, np.asarray(model(ids, mask).backbone.pooled_hidden), rtol=1e-5, atol=1e-6)
    scalar = tiny_rm(world, "scalar")
    assert extract_features(scalar, ids, mask).shape == (7, 32)  # a standard RM: its final hidden state
    with pytest.raises(ValueError, match="needs an InfoRM"):
        extract_features(scalar, ids, mask, feature="latent")
    with pytest.raises(ValueError, match="single reward model"):
        extract_features(EnsembleRewardModel([model, tiny_rm(world, "ib", 1)]), ids, mask)
    mask[5] = 0
    with pytest.raises(ValueError, match="sequence 5 has no tokens"):
        extract_features(model, ids, mask)


def test_load_responses_reads_labels_and_names_bad_rows(tmp_path, world):
    path = tmp_path / "r.jsonl"
    write_jsonl(str(path), [{"prompt": "p", "response": "a", "hacked": True, "step": 3},
                            {"prompt": "q", "response": "b", "hacked": 0}])  # fmt: skip
    rows, report = load_responses(path)
    assert [r.label for r in rows] == [True, False] and rows[0].extra == {"step": 3} and report.rows_kept == 2
    assert load_responses(path, label_column=None)[0][0].label is None
    write_jsonl(str(path), [{"prompt": "p", "response": "a", "hacked": True}, {"prompt": "q", "response": "b",
                                                                               "hacked": "maybe"}])  # fmt: skip
    with pytest.raises(PreferenceDataError, match=r"r.jsonl: row 1: label column 'hacked'"):
        load_responses(path)
    write_jsonl(str(path), [{"prompt": "p", "response": "  "}])
    with pytest.raises(PreferenceDataError, match="row 0: column 'response' is blank"):
        load_responses(path)


def test_embed_responses_matches_direct_token_features(tmp_path, world):
    model = tiny_rm(world, "ib")
    tokenizer_dir = world.save_tokenizer(tmp_path / "tok")
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    path = tmp_path / "r.jsonl"
    write_jsonl(str(path), responses(world, ["correct", "overlong"], 6, seed=1))
    rows, _ = load_responses(path)
    feats = embed_responses(model, rows, tokenizer, batch_size=4)
    one = rows[3]
    ids = tokenizer(one.prompt)["input_ids"] + tokenizer(one.response, add_special_tokens=False)["input_ids"]
    ids = np.asarray([ids + [tokenizer.eos_token_id]], np.int32)
    direct = np.asarray(model(ids, np.ones_like(ids)).head.latent_mean)[0]
    np.testing.assert_allclose(feats[3], direct, rtol=1e-4, atol=1e-5)


def test_detect_command_writes_report_figures_and_selection(tmp_path, world):
    for name, kind in (("inform", "ib"), ("standard", "scalar")):
        save_reward_model(tiny_rm(world, kind), str(tmp_path / name))
        world.save_tokenizer(tmp_path / name)
    write_jsonl(str(tmp_path / "sft.jsonl"), responses(world, ["correct", "partial"], 24, seed=0))
    write_jsonl(str(tmp_path / "rl0.jsonl"), responses(world, ["correct", "partial"], 24, seed=1))
    write_jsonl(str(tmp_path / "rl1.jsonl"), responses(world, ["correct", "overlong", "repetition"], 24, seed=2))
    out = tmp_path / "report"
    code = main([
        "detect", "--rm", str(tmp_path / "inform"), "--control-rm", str(tmp_path / "standard"),
        "--sft", str(tmp_path / "sft.jsonl"), "--rlhf", str(tmp_path / "rl0.jsonl"), str(tmp_path / "rl1.jsonl"),
        "--steps", "10", "20", "--out", str(out), "--k", "3", "--plot-projection", "pca",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    for name, feature in (("reward_model", "latent"), ("control", "hidden")):
        section = report["models"][name]
        assert section["feature"] == feature
        assert [c["step"] for c in section["checkpoints"]] == [10, 20]
        last = section["checkpoints"][1]
        assert last["num_rlhf"] == 24 and last["num_clusters"] == 3 and 0 <= last["mop"] <= 1
        assert "auroc_distance_to_sft" in last  # the world's judge labelled some overlong responses hacked
        assert section["selection"]["selected_step"] in (10, 20)
        assert (out / f"latents-{name}-step20.png").stat().st_size > 1000
        assert (out / f"csi-{name}.png").exists()
