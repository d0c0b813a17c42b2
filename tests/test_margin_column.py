"""TRL's optional per-pair ``margin`` column (``loss.margin: column``): read and checked per row, carried into the
batches (tokenized up front or per process), and subtracted per pair in the loss, as TRL's
``-logsigmoid(r_c - r_r - margin)``."""

import json
import types

import numpy as np
import pytest

from inform_jax.cli import main
from inform_jax.data.preference import PreferenceDataError, load_preferences
from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.train.config import LossSection, load_config
from inform_jax.train.metrics_log import read_metrics
from inform_jax.train.rm.data import prepare_pairs
from inform_jax.train.rm.methods import bradley_terry_member_loss, hinge_member_loss
from inform_jax.train.rm.pair_source import ArrayPairs, ProcessPairs
from inform_jax.world.world import SyntheticWorld

TINY = "{vocab_size: 96, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 4}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return SyntheticWorld().write(out, n_train=32, n_test=8, n_sft=4, n_prompts_train=4, n_prompts_test=4)


def with_margins(world, folder, margins):
    """The world's prompt/chosen/rejected train file with a ``margin`` column added (None: the row has none)."""
    with open(world["prefs_train.jsonl"]) as f:
        rows = [json.loads(line) for line in f]
    for row, margin in zip(rows, margins, strict=False):
        row.pop("margin", None)
        if margin is not None:
            row["margin"] = margin
    path = folder / "margins.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path), len(rows)


def fake_outputs(rewards):
    return types.SimpleNamespace(reward=rewards)


def test_per_pair_margin_loss_equals_trl_formula():
    rng = np.random.default_rng(0)
    r_c, r_r, margin = (rng.normal(size=16).astype(np.float32) for _ in range(3))
    batch = {"weights": np.ones(16, np.float32), "margins": margin}
    loss, _ = bradley_terry_member_loss(None, fake_outputs(r_c), fake_outputs(r_r), batch, LossSection(margin="column"))
    trl = np.mean(np.log1p(np.exp(-(r_c - r_r - margin))))  # -logsigmoid(r_c - r_r - margin), averaged
    np.testing.assert_allclose(float(loss), trl, rtol=1e-5)
    hinge, _ = hinge_member_loss(None, fake_outputs(r_c), fake_outputs(r_r), batch, LossSection(margin="column"))
    np.testing.assert_allclose(float(hinge), np.mean(np.maximum(0, margin - (r_c - r_r))), rtol=1e-5)


def test_margin_config_values():
    assert load_config(None, ["loss.margin=column"]).loss.margin == "column"
    assert load_config(None, ["loss.margin=0.5"]).loss.margin == 0.5
    with pytest.raises(ValueError, match=r"'loss.margin'.*or one of \['column'\]"):
        load_config(None, ["loss.margin=colum"])


def test_margins_reach_both_pair_sources_and_a_bad_row_is_named(tmp_path, world):
    margins = [float(i) / 4 for i in range(32)]
    path, n = with_margins(world, tmp_path, margins)
    tokenizer = load_tokenizer(world["tokenizer"])
    section = load_config(None, ["data.max_length=40"]).data
    arrays = prepare_pairs(path, tokenizer, section, margins=True, log=lambda *_: None)
    np.testing.assert_array_equal(arrays["margins"], np.float32(margins[:n]))
    up_front = ArrayPairs(arrays).rows(np.array([3, 1]), 40)
    pairs, _ = load_preferences(path, tokenizer=tokenizer, margin_column="margin")
    per_process = ProcessPairs(pairs, tokenizer, 40, margins=True, log=lambda *_: None).rows(np.array([3, 1]), 40)
    assert up_front["margins"].tolist() == per_process["margins"].tolist() == [0.75, 0.25]

    bad = [*margins[:5], None, *margins[6:]]
    path, _ = with_margins(world, tmp_path, bad)
    with pytest.raises(PreferenceDataError, match=r"margins\.jsonl: row 5: column 'margin' is missing"):
        load_preferences(path, margin_column="margin")
    path, _ = with_margins(world, tmp_path, [*margins[:2], "wide", *margins[3:]])
    with pytest.raises(PreferenceDataError, match=r"row 2: column 'margin' should be a finite number, got 'wide'"):
        load_preferences(path, margin_column="margin")


def test_train_rm_with_a_margin_column(tmp_path, world, capsys):
    # Large margins: at random init (rewards near 0) the loss is about the mean margin, far above log 2.
    path, _ = with_margins(world, tmp_path, [10.0 + i % 3 for i in range(32)])
    out = tmp_path / "run"
    code = main([
        "train-rm", "--method", "standard", "--output-dir", str(out),
        "--set", f"model.config={TINY}", "--set", "model.dtype=float32", "--set", "mesh.fsdp=1",
        "--set", f"data.train={path}", "--set", f"data.tokenizer={world['tokenizer']}", "--set", "data.max_length=40",
        "--set", "loss.margin=column", "--set", "train.batch_size=8", "--set", "train.max_steps=2",
        "--set", "train.log_every=1", "--set", "train.progress=false",
    ])  # fmt: skip
    assert code == 0
    train = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["split"] == "train"]
    assert len(train) == 2 and all(9.0 < r["bt_loss"] < 13.0 for r in train), train
