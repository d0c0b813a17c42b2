"""Batches padded to bucket lengths: the lengths, the padding side, and a reward model trained on bucketed batches
equal to one trained on batches padded to max_length."""

import jax
import numpy as np
import pytest
from test_rm_trainer import make_config, marked_pairs, one_device

from inform_jax.data.buckets import bucket_for, bucket_lengths, cut, padded_length, padding_side
from inform_jax.train.rm.trainer import RewardModelTrainer


def test_bucket_lengths_are_powers_of_two_and_their_midpoints_up_to_max_length():
    assert bucket_lengths(2048) == (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
    assert bucket_lengths(300, multiple=128) == (128, 256, 300)  # 192 and 384 round to 256 and beyond 300
    assert bucket_lengths(20) == (20,)
    assert bucket_for(300, bucket_lengths(2048)) == 384 and bucket_for(384, bucket_lengths(2048)) == 384
    with pytest.raises(ValueError, match="longer than the longest bucket"):
        bucket_for(2049, bucket_lengths(2048))


def test_padding_side_and_cut():
    right = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])
    assert padding_side(right) == "right" and padding_side(right[:, ::-1]) == "left"
    assert padding_side(np.array([[1, 0, 1, 0]])) is None
    assert padding_side(np.ones((2, 4))) == "right"
    assert cut(np.arange(8).reshape(2, 4), 3, "right").tolist() == [[0, 1, 2], [4, 5, 6]]
    assert cut(np.arange(8).reshape(2, 4), 3, "left").tolist() == [[1, 2, 3], [5, 6, 7]]
    assert padded_length([right, right[:1]], (2, 3, 4)) == 3 and padded_length(right, None) == 4


@pytest.mark.parametrize("side", ["right", "left"])
def test_bucketed_training_equals_padding_to_max_length(tmp_path, side):
    """Rows of 2 to 12 real tokens padded to 64: bucketed batches (at most 32 tokens here) train the same model."""
    data = marked_pairs(64, 0)
    for key in list(data):  # widen to 64 columns of padding: max_length 64, rows of at most 12 tokens
        if key.endswith(("input_ids", "attention_mask")):
            wide = np.zeros((64, 64), data[key].dtype)
            wide[:, :12] = data[key]
            data[key] = wide if side == "right" else wide[:, ::-1].copy()
    runs = {}
    for pad_to in ("bucket", "max_length"):
        config = make_config(tmp_path / pad_to, "inform", data=dict(pad_to=pad_to), train=dict(max_steps=4))
        trainer = RewardModelTrainer(config, data, data, mesh=one_device())
        trainer.fit()
        runs[pad_to] = trainer
    assert runs["bucket"].lengths_seen == {32} and runs["max_length"].lengths_seen == {64}
    for a, b in zip(*(jax.tree.leaves(jax.device_get(r.params)) for r in runs.values()), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert runs["bucket"].evaluate() == pytest.approx(runs["max_length"].evaluate(), rel=1e-6)


def test_rows_padded_inside_are_refused_with_bucketing(tmp_path):
    data = marked_pairs(16, 1)
    data["chosen_attention_mask"][0, :2] = [1, 0]  # a hole in row 0
    with pytest.raises(ValueError, match="data.pad_to=max_length"):
        RewardModelTrainer(make_config(tmp_path, "standard"), data, mesh=one_device())


def test_length_plan_covers_every_row_once_within_the_token_budget():
    from inform_jax.models.batched import length_plan

    rng = np.random.default_rng(0)
    lengths = np.minimum(np.ceil(rng.lognormal(np.log(250), 0.8, 500)), 2048).astype(int)  # HH-like
    buckets = bucket_lengths(2048)
    plan = length_plan(lengths, buckets, batch_size=64, token_budget=8192, multiple=2)
    real = np.concatenate([index[:count] for index, count, _ in plan])
    assert sorted(real.tolist()) == list(range(500))  # every row once
    for index, count, length in plan:
        assert index.size % 2 == 0 and count <= index.size <= 64
        assert index.size * length <= 8192 or index.size == 2  # within the budget (one multiple at least)
        assert lengths[index].max() <= length and length in buckets
    assert len({(index.size, length) for index, _, length in plan}) <= 2 * len(buckets)  # bounded programs
    padded = sum(index.size * length for index, _, length in plan)
    assert padded < 1.6 * lengths.sum() and padded < 500 * 2048 / 3  # padding follows the data, not max_length


def test_pair_and_spliced_scores_by_length_equal_scores_padded_to_max_length():
    """Pairs of 3 to 20 tokens padded to 256: scored in length buckets, they get the rewards of the full width."""
    from flax import nnx

    from inform_jax.eval.decomposition import PairTokens, _score_spliced, score_spliced
    from inform_jax.eval.rm_eval import pair_scores
    from inform_jax.models import DecoderConfig
    from inform_jax.models.reward_model import HeadConfig, RewardModel
    from inform_jax.train.rm.objective import evaluate_pairs

    config = DecoderConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                           num_kv_heads=2)  # fmt: skip
    model = RewardModel.create(config, HeadConfig(kind="ib", latent_dim=8), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(4)
    n, width = 24, 256
    arrays = {"prompt_lengths": np.stack([rng.integers(1, 8, n)] * 2, axis=1)}
    for side in ("chosen", "rejected"):
        lengths = arrays["prompt_lengths"][:, 0] + rng.integers(2, 13, n)
        mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
        arrays[f"{side}_input_ids"] = np.where(mask > 0, rng.integers(1, 50, (n, width)), 0).astype(np.int32)
        arrays[f"{side}_attention_mask"] = mask
    full = evaluate_pairs(model, {k: jax.numpy.asarray(v) for k, v in arrays.items() if k != "prompt_lengths"})
    chosen, rejected = pair_scores(model, arrays, batch_size=8, token_budget=1024)
    np.testing.assert_allclose(chosen, np.asarray(full["reward_chosen"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rejected, np.asarray(full["reward_rejected"]), rtol=1e-5, atol=1e-6)

    tokens = PairTokens(arrays)
    p_idx, r_idx = rng.integers(0, n, 40), rng.integers(0, 2 * n, 40)
    graphdef, params = nnx.split(model)
    sources = tuple(jax.numpy.asarray(x) for x in tokens.sources())
    expected = _score_spliced(graphdef, params, sources, jax.numpy.asarray(p_idx), jax.numpy.asarray(r_idx), 0,
                              None)  # fmt: skip
    got = score_spliced(model, tokens, p_idx, r_idx, batch_size=16, token_budget=512)
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_evaluate_rm_on_400_short_pairs_with_default_options_stays_small(tmp_path):
    """The default --max-length 2048 only truncates: 400 pairs of under 30 tokens, with the prompt diagnostics'
    256-row batches, need well under a GB beyond the loaded libraries (padded to 2048, their attention scores alone
    would need ~17 GB)."""
    import json
    import os
    import subprocess
    import sys

    from world_models import world_sft_and_rm

    world, _ = world_sft_and_rm(tmp_path, n_train=8, n_test=400, hidden_size=64)
    out = tmp_path / "eval.json"
    # The growth of the peak resident memory over the command, measured from after the imports (their ~1-2 GB of
    # libraries vary with the machine and are not the command's).
    code = (
        "import sys, jax; from inform_jax.cli import main; jax.devices()\n"
        "def kb(key): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))\n"
        "before = kb('VmRSS'); main(sys.argv[1:]); print('GROWTH_KB', kb('VmHWM') - before)"
    )
    args = ["evaluate-rm", "--rm", str(tmp_path / "rm"), "--tokenizer", str(tmp_path / "sft"), "--data",
            world["prefs_test.jsonl"], "--out", str(out)]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    growth_gb = int(result.stdout.split("GROWTH_KB")[-1]) / 2**20
    assert json.loads(out.read_text())["n"] == 400 and "prompt_diagnostics" in json.loads(out.read_text())
    print(f"evaluate-rm: peak resident memory {growth_gb:.2f} GB above the imports")
    assert growth_gb < 1.5, f"evaluate-rm grew by {growth_gb:.2f} GB"
