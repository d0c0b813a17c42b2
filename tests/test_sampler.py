"""The KV-cache sampler: parity with transformers' generate, cache = full forward, filtering, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hf_models import make_hf_checkpoint, random_batch

from inform_jax.models import CausalLM, DecoderConfig, batch_sharding, from_pretrained, make_mesh, sampler, shard_module
from inform_jax.models.sampler import _first_argmax, generate, pads_single_row, process_logits

EOS = 5


@pytest.mark.parametrize("variant", ["llama3-gqa", "pythia-parallel-partial-rotary", "mistral-sliding-window"])
def test_greedy_equals_transformers_generate_with_left_padding(tmp_path, variant):
    torch_model = make_hf_checkpoint(variant, tmp_path, seed=3)
    model = from_pretrained(str(tmp_path), scan_layers=True)
    ids, mask = random_batch(np.random.default_rng(7), batch=4, length=8, padding="left")
    with torch.no_grad():
        ref = torch_model.generate(
            torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=12, do_sample=False,
            eos_token_id=EOS, pad_token_id=0,
        )[:, ids.shape[1]:].numpy()  # fmt: skip
    out = generate(model, jnp.asarray(ids), jnp.asarray(mask), max_new_tokens=12, greedy=True, eos_id=EOS)
    tokens = np.asarray(out.tokens)
    np.testing.assert_array_equal(tokens[:, : ref.shape[1]], ref)
    # The mask covers each row's tokens up to and including its first EOS.
    for row, m in zip(tokens, np.asarray(out.mask), strict=True):
        stop = np.nonzero(row == EOS)[0]
        assert m.sum() == (stop[0] + 1 if len(stop) else len(row))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cached_decode_logits_equal_the_full_forward(scan_layers):
    config = DecoderConfig(
        vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
        initializer_range=0.3, scan_layers=scan_layers, sliding_windows=(0, 3),
    )  # fmt: skip
    model = CausalLM(config, rngs=nnx.Rngs(0))
    ids, mask = random_batch(np.random.default_rng(1), batch=3, length=11, padding="left")
    ids %= 50
    full = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits)
    prompt = 6
    out = model(jnp.asarray(ids[:, :prompt]), jnp.asarray(mask[:, :prompt]), cache=model.init_cache(3, 11))
    pieces, cache = [out.logits], out.cache
    for t in range(prompt, 11):
        out = model(jnp.asarray(ids[:, t : t + 1]), jnp.asarray(mask[:, t : t + 1]), cache=cache)
        pieces.append(out.logits)
        cache = out.cache
    cached = np.asarray(jnp.concatenate(pieces, axis=1))
    sel = mask.astype(bool)
    np.testing.assert_allclose(cached[sel], full[sel], rtol=1e-4, atol=1e-4 * np.abs(full).max())


def test_a_single_row_decoded_as_two_copies_gives_the_rows_own_output(monkeypatch):
    # The rule: only a batch of one, and by default only on the GPU backend (these tests run on the CPU).
    assert pads_single_row(1, True) and not pads_single_row(2, True) and not pads_single_row(1, False)
    assert pads_single_row(1) == (jax.default_backend() == "gpu")
    decoded_batches = []  # the batch the jitted decoder really got, so the test fails if no copy is made
    inner = sampler._generate
    monkeypatch.setattr(
        sampler, "_generate", lambda m, i, k, **o: decoded_batches.append(i.shape[0]) or inner(m, i, k, **o)
    )
    config = DecoderConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                           num_kv_heads=2, initializer_range=0.3)  # fmt: skip
    model = CausalLM(config, rngs=nnx.Rngs(2))
    ids, mask = random_batch(np.random.default_rng(1001), batch=1, length=7, padding="left")
    ids, mask = jnp.asarray(ids % 64), jnp.asarray(mask)
    alone, doubled = (generate(model, ids, mask, max_new_tokens=9, greedy=True, eos_id=EOS, pad_single_row=pad)
                      for pad in (False, True))  # fmt: skip
    assert decoded_batches == [1, 2]
    assert doubled.tokens.shape == alone.tokens.shape == (1, 9)
    for a, b in zip(alone, doubled, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def test_greedy_choice_is_numpys_argmax_first_index_on_ties():
    rng = np.random.default_rng(1002)
    logits = rng.integers(-3, 4, size=(16, 300)).astype(np.float32)  # many tied maxima per row
    logits[0] = rng.normal(size=300)  # and a row without ties
    np.testing.assert_array_equal(np.asarray(jax.jit(_first_argmax)(jnp.asarray(logits))), np.argmax(logits, -1))


def test_top_k_and_top_p_keep_the_right_tokens():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 30)).astype(np.float32) * 2
    kept = np.isfinite(np.asarray(process_logits(jnp.asarray(logits), temperature=1.0, top_k=5, top_p=1.0)))
    for row, k in zip(logits, kept, strict=True):
        assert set(np.nonzero(k)[0]) == set(np.argsort(row)[-5:])
    kept = np.isfinite(np.asarray(process_logits(jnp.asarray(logits), temperature=0.7, top_k=0, top_p=0.8)))
    for row, k in zip(logits, kept, strict=True):
        probs = np.exp(row / 0.7 - np.max(row / 0.7))
        probs /= probs.sum()
        order = np.argsort(-probs)
        needed = np.searchsorted(np.cumsum(probs[order]), 0.8) + 1  # smallest prefix with mass >= 0.8
        assert set(np.nonzero(k)[0]) == set(order[:needed])


def test_sampled_logprobs_are_the_models_and_tokens_respect_top_k():
    config = DecoderConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=4
    )
    model = CausalLM(config.replace(initializer_range=0.3), rngs=nnx.Rngs(4))
    ids, mask = random_batch(np.random.default_rng(5), batch=4, length=6, padding="left")
    ids %= 40
    out = generate(model, jnp.asarray(ids), jnp.asarray(mask), max_new_tokens=8, key=jax.random.key(0), top_k=3)
    full = model(out.sequences, out.sequence_mask).logits
    logprobs = jax.nn.log_softmax(full[:, 5:-1], axis=-1)  # position t predicts token t + 1
    expected = np.take_along_axis(np.asarray(logprobs), np.asarray(out.tokens)[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(out.logprobs, expected, rtol=1e-4, atol=1e-5)
    ranks = (np.asarray(logprobs) > expected[..., None]).sum(-1)
    assert ranks.max() < 3  # every sampled token was among the 3 most likely


def test_sharded_generation_equals_single_device():
    config = DecoderConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=4
    )
    model = CausalLM(config.replace(initializer_range=0.3), rngs=nnx.Rngs(6))
    ids, mask = random_batch(np.random.default_rng(8), batch=8, length=6, padding="left")
    ids %= 64
    single = generate(model, jnp.asarray(ids), jnp.asarray(mask), max_new_tokens=6, key=jax.random.key(3))
    mesh = make_mesh(data=2, fsdp=4)
    shard_module(model, mesh)
    with jax.set_mesh(mesh):
        sharded = generate(
            model, jax.device_put(jnp.asarray(ids), batch_sharding(mesh)), jax.device_put(jnp.asarray(mask),
            batch_sharding(mesh)), max_new_tokens=6, key=jax.random.key(3),
        )  # fmt: skip
    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_allclose(sharded.logprobs, single.logprobs, rtol=1e-5, atol=1e-6)
