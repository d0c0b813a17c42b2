"""Hugging Face Hub names wherever a path is taken, resolved offline (HF_HUB_OFFLINE=1) from a Hub cache this module
lays out the way ``snapshot_download`` does: ``models--org--name/{blobs, refs/<ref>, snapshots/<commit>/...}`` with
the snapshot's files symlinks to ``../../blobs/<hash>``; ``datasets--org--name`` for datasets. Also a
``datasets.Dataset`` handed to the trainer in place of a file."""

import hashlib
import json
import os

import datasets
import jax
import numpy as np
import pytest
from flax import nnx
from huggingface_hub import constants

from inform_jax import cli
from inform_jax.data.preference import PreferenceDataError, load_preferences, load_prompts
from inform_jax.data.testing import make_word_tokenizer
from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.eval.judges import RewardModelJudge
from inform_jax.hub import HubName, HubNameError, parse_hub_name, resolve_data_file, resolve_path
from inform_jax.models import from_pretrained
from inform_jax.models.config import DecoderConfig
from inform_jax.models.decoder import CausalLM
from inform_jax.models.hf_io import INDEX_FILE, checkpoint_digest, save_pretrained
from inform_jax.models.reward_model import HeadConfig, RewardModel, load_reward_model, save_reward_model
from inform_jax.train.backbone import runtime_options
from inform_jax.train.config import DataSection, config_from_dict
from inform_jax.train.rm.data import prepare_pairs
from inform_jax.train.rm.trainer import RewardModelTrainer

WORDS = [f"w{i}" for i in range(24)]
TINY = dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
COMMIT_MAIN, COMMIT_V1 = "a" * 40, "b" * 40
ROWS = [{"prompt": f"w{i} w{i + 1}", "chosen": f"w{i + 2} w3", "rejected": f"w{i + 3}"} for i in range(12)]


def put_in_cache(cache, repo_id: str, folder, *, commit: str, refs=("main",), repo_type="model") -> str:
    """Lay ``folder``'s files into ``cache`` as snapshot_download does; returns the snapshot folder."""
    repo = os.path.join(cache, f"{repo_type}s--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", commit)
    for root, _, files in os.walk(folder):
        for name in files:
            data = open(os.path.join(root, name), "rb").read()
            blob = os.path.join(repo, "blobs", hashlib.sha256(data).hexdigest())
            os.makedirs(os.path.dirname(blob), exist_ok=True)
            open(blob, "wb").write(data)
            link = os.path.join(snapshot, os.path.relpath(os.path.join(root, name), folder))
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)  # relative, like huggingface_hub's
    for ref in refs:
        os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
        with open(os.path.join(repo, "refs", ref), "w") as f:
            f.write(commit)  # no newline: huggingface_hub reads the file whole
    return snapshot


def tiny_model(tok, seed: int) -> CausalLM:
    config = DecoderConfig(vocab_size=len(tok), **TINY, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id)  # fmt: skip
    return CausalLM(config, rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hub cache with ``org/tiny`` (main: one safetensors file; tag v1: another init, sharded with an index),
    ``org/tiny-rm`` (a reward model), datasets ``org/prefs`` (one data file) and ``org/multi`` (two); plus the
    local folders they were made from."""
    root = tmp_path_factory.mktemp("hub")
    cache = str(root / "cache")
    local = {name: root / name for name in ("main", "v1", "rm", "prefs", "multi")}
    tok = load_tokenizer(make_word_tokenizer(local["main"], WORDS))
    save_pretrained(tiny_model(tok, 0), str(local["main"]))
    make_word_tokenizer(local["v1"], WORDS)
    save_pretrained(tiny_model(tok, 1), str(local["v1"]), max_shard_bytes=20_000)
    assert os.path.exists(local["v1"] / INDEX_FILE)  # the sharded snapshot's index names links into blobs/
    config = DecoderConfig(vocab_size=len(tok), **TINY)
    save_reward_model(RewardModel.create(config, HeadConfig(), rngs=nnx.Rngs(2)), str(local["rm"]))
    make_word_tokenizer(local["rm"], WORDS)
    for name in ("prefs", "multi"):
        (local[name] / "data").mkdir(parents=True)
        (local[name] / "README.md").write_text("a dataset card, not data\n")
        (local[name] / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (local["multi"] / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    put_in_cache(cache, "org/tiny", local["main"], commit=COMMIT_MAIN)
    put_in_cache(cache, "org/tiny", local["v1"], commit=COMMIT_V1, refs=("v1",))
    put_in_cache(cache, "org/tiny-rm", local["rm"], commit=COMMIT_MAIN)
    for name in ("prefs", "multi"):
        put_in_cache(cache, f"org/{name}", local[name], commit=COMMIT_MAIN, repo_type="dataset")
    return cache, {k: str(v) for k, v in local.items()}


@pytest.fixture
def offline(hub, monkeypatch):
    """HF_HUB_OFFLINE=1 and HF_HUB_CACHE at the test's cache (huggingface_hub reads both into constants at import,
    so those are set too)."""
    cache, local = hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
    return cache, local


def leaves(model) -> list[np.ndarray]:
    return jax.device_get(jax.tree.leaves(nnx.state(model)))


def assert_same_params(a, b) -> None:
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_hub_names_parse_into_repo_revision_and_path():
    assert parse_hub_name("org/tiny@v1/sub/x.jsonl") == HubName("org/tiny", "v1", "sub/x.jsonl")
    assert parse_hub_name("org/prefs/data/train.jsonl") == HubName("org/prefs", None, "data/train.jsonl")
    for not_an_id in ("final", "/abs/org/x", "./org/x", "org/x/../../etc", "org//x", "org/bad name"):
        assert parse_hub_name(not_an_id) is None, not_an_id


def test_ids_resolve_to_their_cached_snapshot_and_local_paths_stay(offline):
    cache, local = offline
    snapshots = os.path.join(cache, "models--org--tiny", "snapshots")
    assert resolve_path(local["main"]) == local["main"]
    assert resolve_path("org/tiny") == os.path.join(snapshots, COMMIT_MAIN)
    assert resolve_path("org/tiny@v1") == os.path.join(snapshots, COMMIT_V1)  # a tag, through refs/v1
    assert resolve_path(f"org/tiny@{COMMIT_V1}") == os.path.join(snapshots, COMMIT_V1)  # a commit hash


def test_from_pretrained_tokenizer_and_digest_read_a_hub_id(offline):
    _, local = offline
    tiny = from_pretrained("org/tiny")
    assert_same_params(tiny, from_pretrained(local["main"]))
    v1 = from_pretrained("org/tiny@v1")  # sharded: the index's files are links into the cache's blobs/
    assert_same_params(v1, from_pretrained(local["v1"]))
    assert not np.array_equal(leaves(tiny)[0], leaves(v1)[0])
    assert checkpoint_digest("org/tiny@v1") == checkpoint_digest(local["v1"])
    assert load_tokenizer("org/tiny")("w3 w4")["input_ids"] == load_tokenizer(local["main"])("w3 w4")["input_ids"]


def test_load_reward_model_and_the_rm_judge_read_a_hub_id(offline):
    _, local = offline
    assert_same_params(load_reward_model("org/tiny-rm"), load_reward_model(local["rm"]))
    rows = (["w1 w2", "w3"], ["w4", "w5 w6"])
    quiet = lambda *_: None  # noqa: E731
    by_id, by_path = RewardModelJudge("org/tiny-rm", log=quiet), RewardModelJudge(local["rm"], log=quiet)
    np.testing.assert_array_equal(by_id.rewards(*rows), by_path.rewards(*rows))


def test_dataset_ids_pick_the_single_data_file_or_the_named_one(offline):
    cache, local = offline
    snapshot = os.path.join(cache, "datasets--org--prefs", "snapshots", COMMIT_MAIN)
    assert resolve_data_file("org/prefs") == os.path.join(snapshot, "data", "train.jsonl")  # README.md is no data
    pairs, report = load_preferences("org/prefs")
    assert [p.prompt for p in pairs] == [r["prompt"] for r in ROWS] and report.format == "prompt"
    pairs, _ = load_preferences("org/multi/data/test.jsonl")
    assert len(pairs) == 4
    prompts, _ = load_prompts(f"org/prefs@{COMMIT_MAIN}/data/train.jsonl")
    assert prompts == [r["prompt"] for r in ROWS]
    with pytest.raises(PreferenceDataError, match=r"exactly one data file.*data/test\.jsonl.*org/multi/<path/in/repo>"):
        load_preferences("org/multi")


def test_names_that_resolve_to_nothing_say_why(offline):
    cache, _ = offline
    with pytest.raises(HubNameError, match=r"model folder 'org/unknown': no such local path.*HF_HUB_OFFLINE is set "
                                           r"and it is not in the Hub cache " + cache):  # fmt: skip
        from_pretrained("org/unknown")
    with pytest.raises(HubNameError, match=r"'org/tiny@v9'.*at revision 'v9'"):
        load_reward_model("org/tiny@v9")
    with pytest.raises(HubNameError, match=r"'final': neither an existing local path nor a Hugging Face Hub id"):
        load_tokenizer("final")
    with pytest.raises(HubNameError, match=r"the model 'org/tiny' has no 'nowhere'"):
        from_pretrained("org/tiny/nowhere")
    with pytest.raises(PreferenceDataError, match=r"data file 'org/missing': no such local path"):
        load_preferences("org/missing")
    with pytest.raises(SystemExit, match=r"^error: [a-z ]+ 'org/unknown-rm': no such local path"):
        cli.main(["evaluate-rm", "--rm", "org/unknown-rm", "--data", "org/prefs"])


def rm_config(out, **data):
    return config_from_dict(dict(
        method="standard", model=dict(path="org/tiny", dtype="float32"),
        data=dict(dict(max_length=8), **data),
        train=dict(batch_size=8, max_steps=100, output_dir=str(out), progress=False),
    ))  # fmt: skip


def test_train_rm_config_with_hub_names_and_a_dataset(offline, tmp_path):
    _, local = offline
    quiet = lambda *_: None  # noqa: E731
    trainer = RewardModelTrainer.from_config(rm_config(tmp_path, train="org/prefs", eval="org/multi/data/test.jsonl"),
                                             log=quiet)  # fmt: skip
    assert (trainer.num_pairs, trainer.eval_data.num_pairs) == (12, 4)
    backbone = from_pretrained(local["main"], lm_head=False, **runtime_options(trainer.config.model))
    assert_same_params(trainer.current_model().backbone, backbone)

    # A datasets.Dataset in place of data.train: the same arrays as the same rows read from the file.
    dataset = datasets.Dataset.from_list(ROWS)
    from_dataset = RewardModelTrainer.from_config(rm_config(tmp_path), train_data=dataset, log=quiet)
    assert from_dataset.config.data.train == f"datasets.Dataset(12 rows, fingerprint {dataset._fingerprint})"
    for key, value in trainer.train_data.arrays.items():
        np.testing.assert_array_equal(from_dataset.train_data.arrays[key], value, err_msg=key)


def test_a_dataset_goes_through_the_same_checks_as_a_file(offline):
    tok = load_tokenizer("org/tiny")
    section = DataSection(max_length=8)
    bad = datasets.Dataset.from_list([*ROWS[:2], {"prompt": "w1", "chosen": "w2", "rejected": "w2"}])
    with pytest.raises(PreferenceDataError, match=r"datasets\.Dataset\(3 rows.*row 2"):
        prepare_pairs(bad, tok, section, log=lambda *_: None)
    with pytest.raises(PreferenceDataError, match=r"DatasetDict.*dataset\['train'\]"):
        load_preferences(datasets.DatasetDict(train=bad))
