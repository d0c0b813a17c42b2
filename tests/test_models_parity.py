"""Our decoders against transformers' PyTorch classes on tiny random checkpoints."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from hf_models import VARIANTS, make_hf_checkpoint, random_batch, rel_err, torch_forward

from inform_jax.models import CausalLM, DecoderConfig, from_pretrained, save_pretrained
from inform_jax.models.decoder import response_logits


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {v: (root / v, make_hf_checkpoint(v, root / v, seed=i)) for i, v in enumerate(VARIANTS)}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("scan_layers,attention_impl", [(False, "einsum"), (True, "einsum"), (True, "jax")])
def test_float32_logits_and_hidden_states_match(checkpoints, variant, scan_layers, attention_impl):
    path, torch_model = checkpoints[variant]
    model = from_pretrained(str(path), scan_layers=scan_layers, attention_impl=attention_impl)
    forward = jax.jit(lambda ids, mask: model(ids, mask, output_hidden_states=True))
    rng = np.random.default_rng(hash((variant, scan_layers)) % 2**32)
    for padding in ("left", "right", "none"):
        ids, mask = random_batch(rng, padding=padding)
        ref_logits, ref_hidden = torch_forward(torch_model, ids, mask)
        out = forward(jnp.asarray(ids), jnp.asarray(mask))
        assert len(out.hidden_states) == len(ref_hidden)
        assert rel_err(out.logits, ref_logits, mask) < 1e-4, padding
        for layer, (ours, ref) in enumerate(zip(out.hidden_states, ref_hidden, strict=True)):
            assert rel_err(ours, ref, mask) < 1e-4, (padding, layer)


@pytest.mark.parametrize("variant", ["llama3-gqa", "pythia-parallel-partial-rotary"])
def test_bfloat16_forward_is_finite_and_close(checkpoints, variant):
    path, torch_model = checkpoints[variant]
    model = from_pretrained(str(path), dtype=jnp.bfloat16)
    ids, mask = random_batch(np.random.default_rng(1), padding="left")
    ref_f32, _ = torch_forward(torch_model, ids, mask)
    ref_bf16, _ = torch_forward(copy.deepcopy(torch_model).to(torch.bfloat16), ids, mask)
    logits = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits, np.float32)
    assert np.isfinite(logits).all()
    sel = mask.astype(bool)

    def norm_err(a, b):  # relative to the logits' overall size: bf16 has an 8-bit mantissa
        return np.linalg.norm(a[sel] - b[sel]) / np.linalg.norm(b[sel])

    assert norm_err(logits, ref_bf16.astype(np.float32)) < 2e-2
    # No worse than PyTorch's own bf16 forward is against float32 (with a little slack).
    assert norm_err(logits, ref_f32) < 1.25 * norm_err(ref_bf16.astype(np.float32), ref_f32) + 1e-3


@pytest.mark.parametrize("variant", ["llama3-gqa", "pythia-sequential-full-rotary", "qwen2-qkv-bias"])
def test_last_block_output_is_before_the_final_norm(checkpoints, variant):
    path, torch_model = checkpoints[variant]
    model = from_pretrained(str(path))
    ids, mask = random_batch(np.random.default_rng(2), padding="right")
    out = model(jnp.asarray(ids), jnp.asarray(mask), output_hidden_states=True)
    last_block = model.layers[-1]
    x = out.hidden_states[-2]  # input of the last block
    # The residual sum by hand, from the block's own submodules.
    from inform_jax.models.attention import make_attention_mask
    from inform_jax.models.decoder import positions_from_mask
    from inform_jax.models.rope import rope_tables

    positions = positions_from_mask(jnp.asarray(mask))
    cos, sin = rope_tables(positions, model.inv_freq)
    window = model.config.layer_windows[-1]
    attn = last_block.attn(last_block.attn_norm(x), cos, sin, make_attention_mask(positions, mask > 0, window))
    if model.config.parallel_residual:
        expected = x + attn + last_block.mlp(last_block.mlp_norm(x))
    else:
        h = x + attn
        expected = h + last_block.mlp(last_block.mlp_norm(h))
    assert rel_err(out.final_block_output, expected, mask) < 1e-5
    assert rel_err(out.block_output(-1), expected, mask) < 1e-5
    # It is not the final-norm hidden state, which is what transformers returns last.
    assert rel_err(out.final_block_output, out.last_hidden_state, mask) > 0.1
    # And it matches PyTorch's last decoder layer output captured by a hook.
    captured = {}
    layers = torch_model.gpt_neox.layers if model.config.family == "gpt_neox" else torch_model.model.layers
    handle = layers[-1].register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    torch_forward(torch_model, ids, mask)
    handle.remove()
    ref = captured["out"][0] if isinstance(captured["out"], tuple) else captured["out"]
    assert rel_err(out.final_block_output, ref.numpy(), mask) < 1e-4
    # residual_l1 holds the L1 norms of exactly these streams.
    np.testing.assert_allclose(out.residual_l1[-1], np.abs(np.asarray(expected)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(out.residual_l1[0], np.abs(np.asarray(out.hidden_states[0])).sum(-1), rtol=1e-5)
    # The MLP site: its output is the last residual update of the block.
    mlp_out = last_block.mlp(out.final_mlp_input)
    assert rel_err(out.final_mlp_output, mlp_out, mask) < 1e-5


def test_pooled_hidden_is_at_the_last_real_token(checkpoints):
    path, _ = checkpoints["llama3-gqa"]
    model = from_pretrained(str(path))
    rng = np.random.default_rng(3)
    for padding in ("left", "right"):
        ids, mask = random_batch(rng, padding=padding)
        out = model(jnp.asarray(ids), jnp.asarray(mask), compute_logits=False)
        last = np.array([np.nonzero(row)[0].max() for row in mask])
        np.testing.assert_array_equal(out.last_token_index, last)
        np.testing.assert_allclose(out.pooled_hidden, np.asarray(out.last_hidden_state)[np.arange(len(last)), last])


def _pooled_and_param_grads(model, ids, mask, weights, **kwargs):
    """The pooled hidden state [B, D] and the gradient of <pooled, weights> in every parameter."""

    def objective(m):
        pooled = m(ids, mask, compute_logits=False, **kwargs).pooled_hidden
        return jnp.sum(pooled * weights), pooled

    grads, pooled = nnx.grad(objective, has_aux=True)(model)
    return pooled, {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(grads)}


@pytest.mark.parametrize(
    "variant,layers",
    [("llama3-gqa", "unrolled scan"), ("llama3-gqa", "rolled scan"), ("qwen2-qkv-bias", "unscanned"),
     ("pythia-parallel-partial-rotary", "unrolled scan"), ("one-layer", "unrolled scan")],
)  # fmt: skip
def test_pooled_only_gives_the_full_forwards_pooled_state_and_gradients(checkpoints, variant, layers, monkeypatch):
    """pooled_only (what a reward model runs: the last block at the pooled token alone) against the full forward,
    on left, right and no padding, sliding windows (qwen2's last layer), grouped-query and parallel-residual
    blocks, a one-layer model, and an explicit pool_index at a random real token of each row. A rolled layer
    scan (accelerators) runs every block in full and keeps the pooled token's outputs."""
    from inform_jax.models import decoder

    scan_layers = layers != "unscanned"
    if layers == "rolled scan":
        monkeypatch.setattr(decoder, "CPU_UNROLL_MAX_LAYERS", 0)
    if variant == "one-layer":
        config = DecoderConfig(vocab_size=101, hidden_size=32, intermediate_size=48, num_layers=1, num_heads=4,
                               num_kv_heads=2, scan_layers=scan_layers, initializer_range=0.2)  # fmt: skip
        model = CausalLM(config, rngs=nnx.Rngs(7), lm_head=False)
    else:
        model = from_pretrained(str(checkpoints[variant][0]), scan_layers=scan_layers)
    assert decoder.splits_last_block(model.config) == (layers != "rolled scan")
    rng = np.random.default_rng(hash((variant, layers)) % 2**32)
    width = model.config.hidden_size
    for padding in ("left", "right", "none"):
        ids, mask = random_batch(rng, padding=padding)
        ids = np.minimum(ids, model.config.vocab_size - 1)
        weights = jnp.asarray(rng.normal(size=(len(ids), width)), jnp.float32)
        full, full_grads = _pooled_and_param_grads(model, ids, mask, weights)
        pooled, pooled_grads = _pooled_and_param_grads(model, ids, mask, weights, pooled_only=True)
        assert rel_err(pooled, full) < 1e-5, padding
        assert full_grads.keys() == pooled_grads.keys()
        for name, grad in full_grads.items():  # the LM head's is 0 in both (the pooled state does not read it)
            assert rel_err(pooled_grads[name], grad) < 1e-4 if grad.any() else not pooled_grads[name].any(), name
        out = model(ids, mask, compute_logits=False, pooled_only=True)
        assert out.last_hidden_state.shape == (len(ids), 1, width) and out.residual_l1 is None
        index = np.array([rng.choice(np.nonzero(row)[0]) for row in mask], np.int32)
        at_index = model(ids, mask, compute_logits=False, pooled_only=True, pool_index=jnp.asarray(index))
        every = model(ids, mask, compute_logits=False).last_hidden_state
        assert rel_err(at_index.pooled_hidden, np.asarray(every)[np.arange(len(ids)), index]) < 1e-5, padding
    with pytest.raises(ValueError, match="pooled_only"):
        model(ids, mask, pooled_only=True, output_hidden_states=True)


@pytest.mark.parametrize("variant", ["llama3-gqa", "llama2-tied-bias-linear-rope"])
def test_response_logits_are_the_full_logits_response_window(checkpoints, variant):
    """PPO's and the exact KL's logits: the LM head at the N positions that predict the response (untied and tied
    heads), against the full forward's logits sliced there, on left-padded prompts; and the gradient of a loss on
    them."""
    model = from_pretrained(str(checkpoints[variant][0]))
    rng = np.random.default_rng(11)
    ids, mask = random_batch(rng, padding="left", length=12)
    prompt_len = 7
    mask[:, prompt_len:] = rng.integers(0, 2, size=(len(ids), 12 - prompt_len)).cumprod(axis=1)  # responses end
    weights = jnp.asarray(rng.normal(size=(len(ids), 12 - prompt_len, model.config.vocab_size)), jnp.float32)

    def objective(m, sliced):
        if sliced:
            logits = response_logits(m, ids, mask, prompt_len)[1]
        else:
            logits = m(ids, mask).logits[:, prompt_len - 1 : -1]
        return jnp.sum(logits * weights), logits

    (_, ours), grads = nnx.value_and_grad(objective, has_aux=True)(model, True)
    (_, full), full_grads = nnx.value_and_grad(objective, has_aux=True)(model, False)
    assert ours.shape == full.shape == (len(ids), 12 - prompt_len, model.config.vocab_size)
    assert rel_err(ours, full) < 1e-6
    for (name, g), (_, f) in zip(nnx.to_flat_state(grads), nnx.to_flat_state(full_grads), strict=True):
        assert rel_err(g[...], f[...]) < 1e-5, name


@pytest.mark.parametrize("variant", ["llama3-gqa", "mistral-sliding-window", "pythia-parallel-partial-rotary"])
@pytest.mark.parametrize("scan_layers", [False, True])
def test_save_pretrained_round_trips_through_transformers(tmp_path, variant, scan_layers):
    class_name, config_class, extra = VARIANTS[variant]
    hf = config_class(
        vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, **extra
    )
    config = DecoderConfig.from_hf(hf, scan_layers=scan_layers).replace(initializer_range=0.3)
    model = CausalLM(config, rngs=__import__("flax").nnx.Rngs(7))
    save_pretrained(model, str(tmp_path / "ours"))
    torch_model = getattr(transformers, class_name).from_pretrained(str(tmp_path / "ours")).eval()
    ids, mask = random_batch(np.random.default_rng(4), padding="left")
    ids = ids % 61
    ref_logits, _ = torch_forward(torch_model, ids, mask)
    assert rel_err(model(jnp.asarray(ids), jnp.asarray(mask)).logits, ref_logits, mask) < 1e-4
    # Loading our own save back gives the same parameters.
    again = from_pretrained(str(tmp_path / "ours"), scan_layers=not scan_layers)
    assert rel_err(again(jnp.asarray(ids), jnp.asarray(mask)).logits, ref_logits, mask) < 1e-4


def test_sharded_save_writes_an_index_that_transformers_reads(tmp_path, checkpoints):
    path, torch_model = checkpoints["pythia-sequential-full-rotary"]
    model = from_pretrained(str(path), param_dtype=jnp.float32)
    save_pretrained(model, str(tmp_path / "sharded"), max_shard_bytes=40_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    reloaded = transformers.GPTNeoXForCausalLM.from_pretrained(str(tmp_path / "sharded")).eval()
    for (name, a), (_, b) in zip(
        sorted(torch_model.state_dict().items()), sorted(reloaded.state_dict().items()), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    ours = from_pretrained(str(tmp_path / "sharded"))
    ids, mask = random_batch(np.random.default_rng(5))
    assert (
        rel_err(ours(jnp.asarray(ids), jnp.asarray(mask)).logits, torch_forward(torch_model, ids, mask)[0], mask) < 1e-4
    )


@pytest.mark.parametrize(
    "preset, published", [("llama-3.2-1b", 1_235_814_400), ("llama-3-8b", 8_030_261_248), ("llama-2-7b", 6_738_415_616)]
)
def test_presets_have_the_published_parameter_counts(preset, published):
    """Parameter counts from the models' Hugging Face pages (tied embeddings counted once), without allocating."""
    from inform_jax.models.presets import preset_config

    model = nnx.eval_shape(lambda: CausalLM(preset_config(preset), rngs=nnx.Rngs(0)))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == published
