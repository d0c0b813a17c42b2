"""Reward models to and from transformers' *ForSequenceClassification: export, parity with transformers' logits,
the exported tokenizer's eos and pad rules, refusals, ensembles, and import as the `rm:` judge and PPO's reward."""

import json

import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from world_models import world_sft_and_rm

from inform_jax.cli import main
from inform_jax.data.preference import PreferencePair
from inform_jax.data.tokenize import tokenize_pairs
from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.eval import load_judge
from inform_jax.models.config import DecoderConfig
from inform_jax.models.hf_export import (
    ENSEMBLE_NOTE,
    ExportError,
    choose_pad_token,
    export_reward_model,
    export_tokenizer,
)
from inform_jax.models.reward_model import EnsembleRewardModel, HeadConfig, RewardModel, load_reward_model
from inform_jax.train.config import config_from_dict
from inform_jax.train.ppo.build import build_ppo
from inform_jax.train.ppo.config import PPOConfig
from inform_jax.world.world import SyntheticWorld

GPT_NEOX = dict(norm="layer", activation="gelu", gated_mlp=False, qkv_bias=True, o_bias=True, mlp_bias=True,
                parallel_residual=True, partial_rotary_factor=0.25)  # fmt: skip
FAMILIES = {"llama": dict(num_kv_heads=2), "gpt_neox": dict(num_kv_heads=4, **GPT_NEOX)}
MAX_DIFF = {}  # (family, head) -> (max relative, max absolute) difference, printed at the end of the module


@pytest.fixture(scope="module")
def world_setup(tmp_path_factory):
    """World files, an SFT policy and its tokenizer (root/sft), as the PPO command tests make them."""
    root = tmp_path_factory.mktemp("hf_export")
    files, vocab = world_sft_and_rm(root, n_train=8, n_test=8, hidden_size=32)
    return root, files, vocab, load_tokenizer(str(root / "sft"))


def texts(n=5, seed=0):
    """Conversation texts (prompt + response) of the synthetic world, of different lengths."""
    world, rng = SyntheticWorld(), np.random.default_rng(seed)
    prompts = world.sample_prompts(rng, n)
    behaviours = ("correct", "overlong", "partial")
    return prompts, [world.generate_response(rng, p, behaviours[i % 3]) for i, p in enumerate(prompts)]


def make_rm(family, head, tokenizer, vocab, seed=1):
    config = DecoderConfig(
        model_type=family, vocab_size=vocab, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        initializer_range=0.2, **FAMILIES[family],
    )  # fmt: skip
    return RewardModel.create(config, HeadConfig(kind=head, latent_dim=8), rngs=nnx.Rngs(seed))


def hf_logits(model, batch):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(batch["attention_mask"]))
    return out.logits.numpy()


def assert_close(ours, ref, key=None):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert np.abs(ref).max() > 1e-2  # the parity below is not between near-zero numbers
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    if key is not None:
        rel = float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-12)))
        old = MAX_DIFF.get(key, (0.0, 0.0))
        MAX_DIFF[key] = (max(old[0], rel), max(old[1], float(np.abs(ours - ref).max())))


@pytest.fixture(scope="module", autouse=True)
def report_differences():
    yield
    for key, (rel, abs_) in sorted(MAX_DIFF.items()):
        print(f"\nmax difference {key}: rel {rel:.2e}, abs {abs_:.2e}")


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
@pytest.mark.parametrize("head", ["scalar", "ib", "odin"])
def test_exported_classifier_gives_our_reward_in_transformers(world_setup, tmp_path, family, head):
    root, _, vocab, tokenizer = world_setup
    model = make_rm(family, head, tokenizer, vocab)
    out = tmp_path / "export"
    if head == "scalar":  # the command on a saved folder; the function on a model object otherwise
        from inform_jax.models.reward_model import save_reward_model

        save_reward_model(model, str(tmp_path / "rm"))
        tokenizer.save_pretrained(str(tmp_path / "rm"))
        assert main(["export-rm", "--rm", str(tmp_path / "rm"), "--out", str(out)]) == 0
    else:
        assert export_reward_model(model, str(out), tokenizer=str(root / "sft")) == [str(out)]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [{"llama": "LlamaForSequenceClassification",
                                        "gpt_neox": "GPTNeoXForSequenceClassification"}[family]]  # fmt: skip
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    assert classifier.config.num_labels == 1
    exported = transformers.AutoTokenizer.from_pretrained(str(out))
    prompts, responses = texts()
    conversations = [f"{p} {r}" for p, r in zip(prompts, responses, strict=True)]
    for side in ("left", "right"):  # RewardBench-style use: tokenize the text, call the model, read logits[:, 0]
        exported.padding_side = side
        batch = exported(conversations, padding=True, return_tensors="np")
        assert (batch["attention_mask"] == 0).any()  # the rows are padded
        ref = hf_logits(classifier, batch)[:, 0]
        assert_close(model(batch["input_ids"], batch["attention_mask"]).reward, ref, (family, head))
    # The exported tokenizer's ids of `prompt + response` are our pipeline's (prompt, response, eos) ids.
    arrays, _ = tokenize_pairs([PreferencePair(p, r, r + " x") for p, r in zip(prompts, responses, strict=True)],
                               tokenizer, "auto")  # fmt: skip
    ours = [row[mask == 1].tolist() for row, mask in zip(arrays["chosen_input_ids"], arrays["chosen_attention_mask"],
                                                         strict=True)]  # fmt: skip
    assert ours == exported(conversations)["input_ids"]
    back = load_reward_model(str(out))  # and the folder reads back as a reward model with the same rewards
    assert_close(back(batch["input_ids"], batch["attention_mask"]).reward, ref)


def test_exported_tokenizer_appends_eos_and_pads_with_a_token_that_is_not_eos(world_setup, tmp_path):
    root, _, vocab, tokenizer = world_setup
    export_reward_model(make_rm("llama", "scalar", tokenizer, vocab), str(tmp_path), tokenizer=str(root / "sft"))
    exported = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert len(exported) == len(tokenizer) and config["vocab_size"] == vocab  # no token added
    ids = exported("hello there")["input_ids"]
    assert ids[-1] == exported.eos_token_id and ids[-2] != exported.eos_token_id
    assert exported("hello there", add_special_tokens=False)["input_ids"][-1] != exported.eos_token_id
    assert exported.pad_token_id == config["pad_token_id"] != exported.eos_token_id
    # The prompt of a pair gets no eos from the exported tokenizer in our pipeline: one eos ends the response.
    arrays, _ = tokenize_pairs([PreferencePair("hello there", "a", "b")], exported, "auto")
    row = arrays["chosen_input_ids"][0][arrays["chosen_attention_mask"][0] == 1].tolist()
    assert row.count(exported.eos_token_id) == 1 and row[-1] == exported.eos_token_id


def custom_tokenizer(tmp_path, specials):
    """A word-level fast tokenizer with `specials` first, eos "</s>" as its pad (no pad of its own)."""
    from tokenizers import Tokenizer, models
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {t: i for i, t in enumerate([*specials, "hello", "there"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>",
        additional_special_tokens=[t for t in specials if t not in ("<s>", "</s>", "<unk>")],
    )  # fmt: skip
    return tokenizer, DecoderConfig(vocab_size=len(vocab), eos_token_id=1, bos_token_id=0)


def test_the_pad_token_is_one_the_vocabulary_has_and_never_eos(tmp_path):
    tokenizer, config = custom_tokenizer(tmp_path, ["<s>", "</s>", "<unk>", "<|reserved_special_token_0|>"])
    assert choose_pad_token(tokenizer, config) == ("<|reserved_special_token_0|>", 3)  # pad == eos is passed over
    assert choose_pad_token(tokenizer, config, "there") == ("there", 5)
    with pytest.raises(ExportError, match="'</s>' is the eos"):
        choose_pad_token(tokenizer, config, "</s>")
    with pytest.raises(ExportError, match="not in the vocabulary"):
        choose_pad_token(tokenizer, config, "<new_pad>")
    bare, bare_config = custom_tokenizer(tmp_path, ["<s>", "</s>", "<unk>"])
    with pytest.raises(ExportError, match="--pad-token"):
        choose_pad_token(bare, bare_config)


def byte_level_tokenizer(kind):
    """A tiny byte-level BPE tokenizer shaped like Pythia's ("pythia": a ByteLevel post-processor, eos as bos and
    unk, `<|padding|>`) or Llama-3's ("llama3": ByteLevel then a bos template, `<|finetune_right_pad_id|>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = {"pythia": ["<|endoftext|>", "<|padding|>"],
                "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"]}[kind]  # fmt: skip
    vocab = {t: i for i, t in enumerate([*specials, "h", "e", "l", "o", "Ġ", "he", "ll", "hell", "hello", "Ġhello"])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"),
                                                     ("Ġ", "hello")]))  # fmt: skip
    core.pre_tokenizer, core.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    byte_level = processors.ByteLevel(trim_offsets=False)
    if kind == "pythia":
        core.post_processor = byte_level
        tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
        )
        return tokenizer, DecoderConfig(model_type="gpt_neox", vocab_size=len(vocab), eos_token_id=0, bos_token_id=0)
    bos = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    core.post_processor = processors.Sequence([byte_level, bos])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>"
    )
    return tokenizer, DecoderConfig(vocab_size=len(vocab), eos_token_id=1, bos_token_id=0)


@pytest.mark.parametrize("kind, pad, ids", [("pythia", 1, [10, 11, 0]), ("llama3", 2, [0, 11, 12, 1])])
def test_eos_is_appended_whatever_the_post_processor(tmp_path, kind, pad, ids):
    tokenizer, config = byte_level_tokenizer(kind)
    assert export_tokenizer(tokenizer, config, str(tmp_path / "plain")) == pad
    exported = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "plain"))
    assert exported("hello hello")["input_ids"] == ids and exported.pad_token_id == pad
    # A tokenizer_config.json with add_bos_token / add_eos_token flags: transformers rebuilds the template from them.
    tokenizer.save_pretrained(str(tmp_path / "flags"))
    config_file = tmp_path / "flags" / "tokenizer_config.json"
    flags = {"add_bos_token": kind == "llama3", "add_eos_token": False}
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **flags}))
    export_tokenizer(load_tokenizer(str(tmp_path / "flags")), config, str(tmp_path / "out"))
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))("hello hello")["input_ids"] == ids


def test_gated_inform_is_refused_and_an_ensemble_writes_member_folders(world_setup, tmp_path, capsys):
    root, _, vocab, tokenizer = world_setup
    gated = make_rm("llama", "ib", tokenizer, vocab)
    gated = RewardModel(gated.backbone, HeadConfig(kind="ib", latent_dim=8, decoder="gated"), rngs=nnx.Rngs(0))
    with pytest.raises(ExportError, match="gated decoder cannot be exported"):
        export_reward_model(gated, str(tmp_path / "gated"), tokenizer=str(root / "sft"))
    members = [make_rm("llama", "scalar", tokenizer, vocab, seed=s) for s in (1, 2)]
    ensemble = EnsembleRewardModel(members, aggregation="min")
    folders = export_reward_model(ensemble, str(tmp_path / "ens"), tokenizer=str(root / "sft"))
    assert [f.rsplit("/", 1)[1] for f in folders] == ["member_0", "member_1"]
    note = json.loads((tmp_path / "ens" / ENSEMBLE_NOTE).read_text())
    assert note["members"] == ["member_0", "member_1"] and note["aggregation"] == "min"
    assert "not itself one transformers model" in note["note"]
    batch = transformers.AutoTokenizer.from_pretrained(folders[1])(texts(3)[0], padding=True, return_tensors="np")
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(folders[1]).eval()
    assert_close(members[1](batch["input_ids"], batch["attention_mask"]).reward, hf_logits(classifier, batch)[:, 0])


@pytest.fixture(scope="module")
def hf_classifier(world_setup):
    """A random transformers LlamaForSequenceClassification over the world's vocabulary, with its tokenizer."""
    root, _, vocab, tokenizer = world_setup
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.2, num_labels=1, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip
    model = transformers.LlamaForSequenceClassification(config).eval()
    model.save_pretrained(str(root / "hf_rm"))
    tokenizer.save_pretrained(str(root / "hf_rm"))
    return root / "hf_rm", model


@pytest.mark.parametrize("pad", ["pad", "eos"])
def test_a_transformers_classifier_loads_as_a_reward_model_read_where_transformers_reads(
    world_setup, hf_classifier, tmp_path, pad
):
    _, _, _, tokenizer = world_setup
    folder, classifier = hf_classifier
    if pad == "eos":  # a published RM padding with eos: transformers reads before the text's final eos
        import shutil

        folder = shutil.copytree(folder, tmp_path / "eos_pad")
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "pad_token_id": tokenizer.eos_token_id}))
        classifier = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    model = load_reward_model(str(folder))
    prompts, responses = texts()
    rows = [f"{p} {r} {tokenizer.eos_token}" for p, r in zip(prompts, responses, strict=True)]
    for side in ("left", "right"):
        tokenizer.padding_side = side
        batch = tokenizer(rows, padding=True, return_tensors="np")
        if pad == "eos":
            batch["input_ids"][batch["attention_mask"] == 0] = tokenizer.eos_token_id
        assert_close(model(batch["input_ids"], batch["attention_mask"]).reward, hf_logits(classifier, batch)[:, 0],
                     ("import", pad))  # fmt: skip
    tokenizer.padding_side = "right"


def test_a_transformers_classifier_is_the_rm_judge_and_the_ppo_reward(world_setup, hf_classifier, tmp_path):
    root, files, _, _ = world_setup
    folder, classifier = hf_classifier
    judge = load_judge(f"rm:{folder}", batch_size=4)
    prompts, responses = texts(6, seed=3)
    others = [r + " again" for r in responses]
    prefs = judge.preferences(prompts, responses, others)
    pairs = [PreferencePair(p, a, b) for p, a, b in zip(prompts, responses, others, strict=True)]
    arrays, _ = tokenize_pairs(pairs, judge.tokenizer, "auto")
    rewards = [
        hf_logits(classifier, {"input_ids": arrays[f"{s}_input_ids"], "attention_mask": arrays[f"{s}_attention_mask"]})
        for s in ("chosen", "rejected")
    ]
    assert_close(prefs, rewards[0][:, 0] - rewards[1][:, 0], ("judge", "pad"))
    values = {
        "policy": {"path": str(root / "sft"), "dtype": "float32"},
        "reward": {"path": str(folder)},
        "data": {"prompts": files["prompts_train.jsonl"], "max_prompt_length": 12},
        "rollout": {"batch_size": 8, "max_new_tokens": 6},
        "train": {"iterations": 1, "output_dir": str(tmp_path), "progress": False},
        "mesh": {"fsdp": 1},
    }
    trainer = build_ppo(config_from_dict(values, PPOConfig), log=lambda *_: None)
    metrics, _ = trainer.iteration_step(0)
    assert np.isfinite(float(metrics["proxy_reward"]))  # the classifier scored the rollouts
    # The same prompts as a datasets.Dataset in place of data.prompts (Hub names' Python entry point).
    import datasets

    rows = [json.loads(line) for line in open(files["prompts_train.jsonl"])]
    from_dataset = build_ppo(config_from_dict(values, PPOConfig), log=lambda *_: None,
                             prompts=datasets.Dataset.from_list(rows))  # fmt: skip
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(np.asarray(from_dataset.prompts[key]), np.asarray(trainer.prompts[key]))
