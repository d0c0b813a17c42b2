"""Attention backends: which one runs where (and the refusals of an explicit fused kernel), the blocked CPU
attention against the full float32 einsum, and, on a GPU, cuDNN against the einsum."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inform_jax.models import CausalLM, DecoderConfig
from inform_jax.models.attention import (
    SelfAttentionMask,
    blocked_causal_attention,
    head_major_attention,
    self_attention,
)
from inform_jax.models.attention_backends import choose_backend, rows_padded_on_the_right, rows_right_padded
from inform_jax.models.decoder import positions_from_mask

BF16 = jnp.bfloat16


def qkv(rng, b, t, hq, hkv, d, dtype=jnp.float32):
    shapes = [(b, t, hq, d), (b, t, hkv, d), (b, t, hkv, d)]
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in shapes]


def padded_mask(rng, b, t, side):
    """[B, T] int mask with random lengths in [T / 4, T] (one full row), padded on `side` ("none": all ones)."""
    if side == "none":
        return np.ones((b, t), np.int32)
    lengths = rng.integers(t // 4, t + 1, size=b)
    lengths[0] = t
    idx = np.arange(t)[None]
    valid = idx < lengths[:, None] if side == "right" else idx >= (t - lengths)[:, None]
    return valid.astype(np.int32)


def reference(q, k, v, mask: SelfAttentionMask):
    return head_major_attention(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), mask.dense())


def structured(mask_np, window=0):
    m = jnp.asarray(mask_np)
    return SelfAttentionMask(positions_from_mask(m), m.astype(bool), window)


# ------------------------------------------------------------------------------------------- the choice


def test_auto_picks_the_platforms_kernel_and_falls_back_with_a_logged_reason(caplog):
    q, k = (2, 256, 8, 64), (2, 256, 2, 64)
    assert choose_backend("auto", q, k, jnp.float32, platform="cpu") == "blocked"
    assert choose_backend("auto", (2, 100, 8, 64), (2, 100, 2, 64), jnp.float32, platform="cpu") == "einsum"
    gpu = dict(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    assert choose_backend("auto", q, k, BF16, right_padded=True, **gpu) == "cudnn"
    with caplog.at_level(logging.INFO, logger="inform_jax.models.attention_backends"):
        assert choose_backend("auto", q, k, jnp.float32, right_padded=True, **gpu) == "einsum"
        assert choose_backend("auto", q, k, BF16, right_padded=False, **gpu) == "einsum"
        assert choose_backend("auto", q, k, BF16, right_padded=True, windowed=True, **gpu) == "einsum"
    said = caplog.text
    assert "einsum instead of cudnn" in said and "float32" in said and "right-padded" in said and "windows" in said
    # Head dims: multiples of 8, up to 256 on Hopper, 128 elsewhere.
    big = ((2, 256, 8, 160), (2, 256, 2, 160))
    assert choose_backend("auto", *big, BF16, right_padded=True, **gpu) == "cudnn"
    a100 = dict(platform="gpu", device_kind="NVIDIA A100-SXM4-80GB")
    assert choose_backend("auto", *big, BF16, right_padded=True, **a100) == "einsum"
    odd = ((2, 256, 8, 60), (2, 256, 2, 60))
    assert choose_backend("auto", *odd, BF16, right_padded=True, **gpu) == "einsum"
    # Explicit choices are honoured; explicit fused kernels that cannot run raise and say why.
    for impl in ("einsum", "blocked", "jax"):
        assert choose_backend(impl, q, k, BF16, platform="gpu", device_kind="") == impl
    amd = dict(platform="gpu", device_kind="AMD Instinct MI300X")
    assert choose_backend("auto", q, k, BF16, right_padded=True, **amd) == "einsum"
    with pytest.raises(ValueError, match="cudnn cannot run.*not on cpu"):
        choose_backend("cudnn", q, k, BF16, right_padded=True, platform="cpu", device_kind="cpu")
    with pytest.raises(ValueError, match="bfloat16 or float16, not float32"):
        choose_backend("cudnn", q, k, jnp.float32, right_padded=True, **gpu)
    with pytest.raises(ValueError, match="sliding windows"):
        choose_backend("splash", q, k, BF16, windowed=True, platform="tpu", device_kind="TPU v4")
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        choose_backend("flash", q, k, BF16, platform="gpu", device_kind="")


def test_right_padding_is_declared_inside_the_trace_and_restored():
    assert not rows_right_padded()
    with rows_padded_on_the_right():
        assert rows_right_padded()
        with rows_padded_on_the_right():
            assert rows_right_padded()
        assert rows_right_padded()
    assert not rows_right_padded()


def test_a_config_with_an_unknown_attention_impl_is_refused():
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        DecoderConfig(model_type="llama", vocab_size=8, hidden_size=8, num_layers=1, num_heads=2,
                      num_kv_heads=1, intermediate_size=8, attention_impl="flash")  # fmt: skip


# ------------------------------------------------------------------------------ the blocked CPU attention


@pytest.mark.parametrize(
    "side, t, block, window",
    [("right", 192, 64, 0), ("left", 200, 64, 0), ("none", 130, 48, 0), ("right", 192, 64, 48)],
)
def test_blocked_attention_equals_the_full_einsum_with_gradients(side, t, block, window):
    rng = np.random.default_rng(t + block + window)
    q, k, v = qkv(rng, 2, t, 4, 2, 16)
    mask = structured(padded_mask(rng, 2, t, side), window)
    real = mask.key_valid[:, :, None, None]

    def run(fn):  # the output, and the gradients of a loss over real query rows only (as everywhere downstream)
        def loss(q, k, v):
            out = fn(q, k, v)
            return jnp.sum(jnp.where(real, out, 0.0) ** 2), out

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    (_, got), grads = run(lambda q, k, v: blocked_causal_attention(q, k, v, mask.dense(), block=block))
    (_, want_out), want = run(lambda q, k, v: reference(q, k, v, mask))
    # Pad queries of left-padded rows see no real key: both spread their attention evenly over what they
    # compute, which differs; real queries agree.
    keep = np.asarray(mask.key_valid)
    np.testing.assert_allclose(np.asarray(got)[keep], np.asarray(want_out)[keep], rtol=1e-5, atol=1e-6)
    for g, w in zip(grads, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)


def test_every_self_attention_backend_on_the_cpu_agrees_on_real_tokens():
    rng = np.random.default_rng(3)
    q, k, v = qkv(rng, 2, 192, 4, 2, 16)
    for side in ("left", "right"):
        mask = structured(padded_mask(rng, 2, 192, side))
        want = np.asarray(reference(q, k, v, mask))
        real = np.asarray(mask.key_valid)
        for impl in ("auto", "blocked", "einsum", "jax"):
            run = jax.jit(lambda q, k, v, impl=impl, mask=mask: self_attention(q, k, v, mask, impl=impl))
            got = np.asarray(run(q, k, v))
            assert np.isfinite(got).all(), (impl, side)
            np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-5, err_msg=f"{impl}, {side}")


def test_a_model_with_blocked_attention_computes_what_the_einsum_model_computes():
    kw = dict(model_type="llama", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
              intermediate_size=64, scan_layers=True)  # fmt: skip
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, 97, size=(2, 160)))
    mask = jnp.asarray(padded_mask(rng, 2, 160, "left"))
    outs = {}
    for impl in ("blocked", "einsum"):
        model = CausalLM(DecoderConfig(**kw, attention_impl=impl), rngs=nnx.Rngs(0))
        outs[impl] = np.asarray(model(ids, mask).logits)
    real = np.asarray(mask).astype(bool)
    np.testing.assert_allclose(outs["blocked"][real], outs["einsum"][real], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ cuDNN (a GPU)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN flash attention needs an NVIDIA GPU")
def test_cudnn_attention_equals_the_einsum_on_right_padded_rows():
    rng = np.random.default_rng(4)
    q, k, v = qkv(rng, 2, 256, 8, 2, 64, BF16)
    mask = structured(padded_mask(rng, 2, 256, "right"))
    with rows_padded_on_the_right():
        got = np.asarray(jax.jit(lambda q, k, v: self_attention(q, k, v, mask, impl="cudnn"))(q, k, v), np.float32)
    want = np.asarray(reference(q, k, v, mask), np.float32)
    real = np.asarray(mask.key_valid)
    # bf16 inputs and output; the einsum's softmax is float32: a bf16 ulp of the output, ~1e-2 relative.
    np.testing.assert_allclose(got[real], want[real], rtol=2e-2, atol=2e-2)


def test_bucket_lengths_are_128_aligned_where_splash_may_run():
    from inform_jax.data.buckets import bucket_lengths
    from inform_jax.models.attention_backends import kernel_bucket_multiple

    tpu = bucket_lengths(2048, multiple=kernel_bucket_multiple(8, "tpu"))
    assert all(length % 128 == 0 for length in tpu) and 384 in tpu
    assert kernel_bucket_multiple(8, "tpu", "einsum") == 8 and kernel_bucket_multiple(8, "cpu") == 8
    assert kernel_bucket_multiple(96, "tpu") == 384  # the user's multiple is kept too
    q = (2, 384, 8, 128)
    assert choose_backend("auto", q, (2, 384, 2, 128), BF16, platform="tpu", device_kind="TPU v4") == "splash"
