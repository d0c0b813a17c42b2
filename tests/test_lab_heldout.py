"""The lab's held-out readings (inform_jax.lab.heldout): paired sampling keys, exact KL, gold per prompt."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inform_jax.lab.config import LabConfig
from inform_jax.lab.heldout import HeldOutEvaluator
from inform_jax.lab.stages import Lab

TINY = dict(n_pairs=200, n_sft=100, n_prompts=16, n_eval_prompts=8, hidden_size=16, intermediate_size=32,
            num_layers=2, num_heads=2, new_tokens=8, sft_steps=20, rm_steps=10, rm_batch=16, latent_dim=8)  # fmt: skip


@pytest.fixture(scope="module")
def lab_and_sft(tmp_path_factory):
    lab = Lab(LabConfig(**TINY), str(tmp_path_factory.mktemp("heldout-lab")), log=lambda *_: None)
    return lab, lab.sft_policy()


def test_the_sft_policy_reads_kl_zero_and_the_same_checkpoint_draws_the_same_samples(lab_and_sft):
    lab, sft = lab_and_sft
    evaluator = HeldOutEvaluator(lab, sft, samples_per_prompt=3, seed=5)
    first, again, other = evaluator(sft, 0), evaluator(sft, 0), evaluator(sft, 1)
    assert first["samples"] == 8 * 3 and len(first["gold_per_prompt"]) == 8
    assert first["kl"] == 0.0 and first["kl_per_prompt"] == [0.0] * 8
    assert first == again  # keys depend on the seed and the checkpoint only
    assert other["gold_per_prompt"] != first["gold_per_prompt"] or other["hacked"] != first["hacked"]
    assert first["gold"] == pytest.approx(np.mean(first["gold_per_prompt"]))


def test_a_moved_policy_reads_its_exact_kl_from_the_full_distributions(lab_and_sft):
    lab, sft = lab_and_sft
    moved = nnx.clone(sft)
    leaves, treedef = jax.tree.flatten(nnx.state(moved, nnx.Param))
    noise = jax.random.split(jax.random.key(0), len(leaves))
    nnx.update(moved, jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape)
                                                   for x, k in zip(leaves, noise, strict=True)]))  # fmt: skip
    evaluator = HeldOutEvaluator(lab, sft, samples_per_prompt=2, seed=1)
    reading = evaluator(moved, 4)
    assert reading["kl"] > 0
    # recompute from the same samples: sum over response tokens of sum_v p (log p - log q), in NumPy
    from inform_jax.models.sampler import generate

    ids, mask = jnp.asarray(evaluator.prompts["input_ids"]), jnp.asarray(evaluator.prompts["attention_mask"])
    out = generate(moved, ids, mask, max_new_tokens=lab.config.new_tokens, key=evaluator.key(4), temperature=1.0,
                   eos_id=lab.tokenizer.eos_token_id, pad_id=lab.tokenizer.pad_token_id)  # fmt: skip
    p_len = ids.shape[1]
    logp = np.asarray(jax.nn.log_softmax(moved(out.sequences, out.sequence_mask).logits[:, p_len - 1 : -1], -1))
    logq = np.asarray(jax.nn.log_softmax(sft(out.sequences, out.sequence_mask).logits[:, p_len - 1 : -1], -1))
    per_token = np.maximum((np.exp(logp) * (logp - logq)).sum(-1), 0) * np.asarray(out.sequence_mask[:, p_len:])
    np.testing.assert_allclose(reading["kl"], per_token.sum(1).mean(), rtol=1e-4)
