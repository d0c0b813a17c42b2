"""data.tokenize=per_process: a metadata pass split over the processes, then each process tokenizes only the rows of
each batch its devices hold; on one process it trains exactly as data.tokenize=upfront (the suite's 8 CPU devices).
The two-process run is in test_multihost.py."""

import json

import jax
import numpy as np
import pytest

from inform_jax.data.testing import make_word_tokenizer
from inform_jax.data.tokenize import tokenize_pairs
from inform_jax.models import make_mesh
from inform_jax.models.sharding import local_positions
from inform_jax.train.config import DataSection, config_from_dict
from inform_jax.train.rm.data import load_pairs, prepare_pairs
from inform_jax.train.rm.pair_source import ArrayPairs, ProcessPairs
from inform_jax.train.rm.trainer import RewardModelTrainer

WORDS = [f"w{i}" for i in range(30)]
TINY = dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2)
MAX_LENGTH = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A preference file of 40 pairs, some cut to MAX_LENGTH, pair 7 identical after truncation; its tokenizer."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)

    def words(n):
        return " ".join(rng.choice(WORDS[:20], n))

    rows = [{"prompt": words(rng.integers(1, 8)), "chosen": "w20 " + words(rng.integers(1, 6)),
             "rejected": "w21 " + words(rng.integers(1, 6))} for _ in range(40)]  # fmt: skip
    tail = " ".join(WORDS[:14])
    rows[7] = {"prompt": "w1", "chosen": "w22 " + tail, "rejected": "w23 " + tail}  # differ only in the cut start
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer_path = make_word_tokenizer(root / "tok", WORDS)
    from transformers import AutoTokenizer

    return str(path), tokenizer_path, AutoTokenizer.from_pretrained(tokenizer_path)


def test_per_process_pairs_match_the_upfront_arrays_report_and_rows(data):
    path, _, tok = data
    section = DataSection(max_length=MAX_LENGTH)
    lines_up, lines_pp = [], []
    upfront = ArrayPairs(prepare_pairs(path, tok, section, log=lines_up.append))
    pairs = load_pairs(path, tok, section, log=lines_pp.append)
    source = ProcessPairs(pairs, tok, MAX_LENGTH, log=lines_pp.append)
    assert lines_pp == lines_up  # the load report, then the same truncation report
    assert "left out 1 of 40 pairs" in lines_up[-1] and "truncated" in lines_up[-1]
    assert source.num_pairs == upfront.num_pairs == 39 and 7 not in source.kept
    np.testing.assert_array_equal(source.lengths, upfront.lengths)
    np.testing.assert_array_equal(source.response_lengths, upfront.response_lengths)

    # A subset tokenizes to the same rows as the whole list (rows padded to max_length, not to the longest).
    whole, _ = tokenize_pairs(pairs, tok, MAX_LENGTH)
    part, _ = tokenize_pairs(pairs[30:33], tok, MAX_LENGTH)
    np.testing.assert_array_equal(part["chosen_input_ids"], whole["chosen_input_ids"][29:32])  # pair 7 left out

    indices = np.array([[3, 38, 7, 0], [12, 12, 5, 30]])  # [K, B], a row twice
    mine = np.array([[True, False, True, False], [False, True, True, True]])
    length = 10
    got, want = source.rows(indices, length, mine), upfront.rows(indices, length)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key][mine], value[mine], err_msg=key)
        if key.endswith("mask"):
            assert not got[key][~mine].any()  # not tokenized: padding no device of this process reads
    assert (source.rows_tokenized, source.rows_requested) == (5, 8)


def test_the_rows_a_process_supplies_are_those_of_its_devices():
    mesh = make_mesh(data=2, fsdp=-1)  # rows over 8 devices, 2 rows each for B = 16
    devices = list(mesh.devices.flat)
    assert local_positions(mesh, (16,)).all()  # one process: every row
    mine = local_positions(mesh, (16,), devices=devices[:4])
    np.testing.assert_array_equal(mine, np.arange(16) < 8)
    mine = local_positions(mesh, (3, 16), member_axis=True, devices=devices[6:7])
    np.testing.assert_array_equal(mine, np.broadcast_to((np.arange(16) >= 12) & (np.arange(16) < 14), (3, 16)))
    tensor = make_mesh(fsdp=4, tensor=2)  # rows split 4 ways, each block on 2 devices
    mine = local_positions(tensor, (8,), devices=list(tensor.devices.flat)[:2])
    np.testing.assert_array_equal(mine, np.arange(8) < 2)


def config(data, out, mode, method="inform", **train):
    path, tokenizer, _ = data
    return config_from_dict(dict(
        method=method, model=dict(config=dict(TINY, vocab_size=64), dtype="float32"), head=dict(latent_dim=8),
        loss=dict(num_members=2), optim=dict(lr=3e-3),
        data=dict(train=path, eval=path, tokenizer=tokenizer, max_length=MAX_LENGTH, tokenize=mode),
        train=dict(dict(batch_size=16, max_steps=6, save_every=3, eval_every=1000, log_every=1, output_dir=str(out),
                        progress=False), **train),
    ))  # fmt: skip


def losses(out):
    return [json.loads(line)["loss"] for line in open(out / "metrics.jsonl") if '"train"' in line]


def test_per_process_training_equals_upfront_and_resumes(data, tmp_path, capsys):
    up = RewardModelTrainer.from_config(config(data, tmp_path / "up", "upfront"), log=lambda *_: None)
    assert isinstance(up.train_data, ArrayPairs) and up.mesh.devices.size == 8
    up.fit()
    pp = RewardModelTrainer.from_config(config(data, tmp_path / "pp", "per_process"), log=lambda *_: None)
    assert isinstance(pp.train_data, ProcessPairs)
    pp.fit(stop_after=3)  # killed after step 3, resumed by a fresh trainer
    pp = RewardModelTrainer.from_config(config(data, tmp_path / "pp", "per_process"), log=lambda *_: None)
    pp.fit()
    assert "tokenized 48 of the 48 batch rows on this process" in capsys.readouterr().out  # steps 4-6, one process
    for x, y in zip(*(jax.device_get(jax.tree.leaves(t.params)) for t in (up, pp)), strict=True):
        np.testing.assert_array_equal(x, y)  # bitwise
    assert losses(tmp_path / "pp") == losses(tmp_path / "up")
    assert pp.evaluate() == up.evaluate()


def test_warm_members_per_process_equal_upfront(data, tmp_path):
    runs = {}
    for mode in ("upfront", "per_process"):
        trainer = RewardModelTrainer.from_config(config(data, tmp_path / mode, mode, "warm", max_steps=2),
                                                 log=lambda *_: None)  # fmt: skip
        trainer.fit()
        runs[mode] = losses(tmp_path / mode)
    assert runs["per_process"] == runs["upfront"]


def test_methods_that_score_every_pair_tokenize_up_front(data, tmp_path, capsys):
    trainer = RewardModelTrainer.from_config(config(data, tmp_path, "per_process", "dir"), log=lambda *_: None)
    assert isinstance(trainer.train_data, ArrayPairs)
    assert "method dir scores every pair: every process tokenizes the whole train file" in capsys.readouterr().out
    source = ProcessPairs(load_pairs(data[0], data[2], DataSection(max_length=MAX_LENGTH), log=lambda *_: None),
                          data[2], MAX_LENGTH, log=lambda *_: None)  # fmt: skip
    with pytest.raises(ValueError, match="method 'dir' scores every pair"):
        RewardModelTrainer(config(data, tmp_path, "per_process", "dir"), source)
