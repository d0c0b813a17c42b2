"""The Pallas splash attention kernel (interpret mode on the CPU) against the reference attention: outputs and
gradients at the valid query positions, left / right / no padding, grouped-query heads, bf16, and on a mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inform_jax.models import make_mesh
from inform_jax.models.attention import head_major_attention, make_attention_mask
from inform_jax.models.splash import splash_attention, splash_unsupported_reason

B, T, HQ, HKV, D = 3, 256, 4, 2, 64
# Row 0 left-padded (40 pads), row 1 right-padded (56 pads), row 2 without padding.
VALID = np.stack([np.arange(T) >= 40, np.arange(T) < 200, np.ones(T, bool)])


def inputs(dtype, batch=B):
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (batch, T, HQ, D), dtype)
    k = jax.random.normal(keys[1], (batch, T, HKV, D), dtype)
    v = jax.random.normal(keys[2], (batch, T, HKV, D), dtype)
    weights = jax.random.normal(keys[3], (batch, T, HQ, D), jnp.float32)  # a loss that reads every output
    return q, k, v, weights


def reference(q, k, v, valid):
    positions = jnp.broadcast_to(jnp.arange(T), valid.shape)
    mask = make_attention_mask(positions, valid, 0)
    return head_major_attention(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), mask)


def splash(q, k, v, valid):
    return splash_attention(q, k, v, valid, interpret=True)


def masked_loss(attend, valid, weights):
    """Loss over the valid query positions only (pad queries' outputs are meaningless on either side)."""
    keep = valid[:, :, None, None]
    return lambda q, k, v: jnp.sum(jnp.where(keep, attend(q, k, v, valid).astype(jnp.float32) * weights, 0.0))


def max_error_at_valid(a, b, valid):
    return float(jnp.max(jnp.where(valid[:, :, None, None], jnp.abs(a.astype(jnp.float32) - b), 0.0)))


@pytest.fixture(scope="module")
def float32_case():
    q, k, v, weights = inputs(jnp.float32)
    valid = jnp.asarray(VALID)
    out = jax.jit(splash)(q, k, v, valid)
    grads = jax.jit(jax.grad(masked_loss(splash, valid, weights), argnums=(0, 1, 2)))(q, k, v)
    expected = reference(q, k, v, valid)
    expected_grads = jax.grad(masked_loss(reference, valid, weights), argnums=(0, 1, 2))(q, k, v)
    return valid, out, grads, expected, expected_grads


def test_float32_output_matches_the_reference_for_left_right_and_no_padding(float32_case):
    valid, out, _, expected, _ = float32_case
    assert out.shape == (B, T, HQ, D) and out.dtype == jnp.float32
    for row in range(B):  # each padding layout on its own, so that one cannot hide another's error
        assert max_error_at_valid(out[row : row + 1], expected[row : row + 1], valid[row : row + 1]) < 1e-5
    # Pad queries attend to pad keys (their own segment): meaningless but finite.
    assert bool(jnp.isfinite(out).all())
    assert not VALID.all()  # the case has pad queries to check


def test_float32_gradients_match_the_reference(float32_case):
    # Interpret mode runs the kernel's float32 arithmetic as written (online softmax, fp32 accumulation): the
    # gradients agree to rounding (measured: at most 1.7e-6, on gradients of magnitude up to ~9).
    _, _, grads, _, expected_grads = float32_case
    for name, got, want in zip(("dq", "dk", "dv"), grads, expected_grads, strict=True):
        scale = float(jnp.max(jnp.abs(want)))
        assert scale > 0, name
        assert bool(jnp.isfinite(got).all()), name
        assert float(jnp.max(jnp.abs(got - want))) < 1e-5, name


def test_bfloat16_matches_the_float32_reference_within_bf16_rounding():
    # bf16 inputs against the float32 reference on the same (rounded) inputs. The kernel rounds its outputs and
    # its gradients to bf16 (2^-8 relative); measured: outputs 0.0076 off (the bf16 reference itself: 0.0080),
    # gradients at most 0.3% of their largest magnitude (the bf16 reference: the same). Tolerances ~2-3x that.
    q, k, v, weights = inputs(jnp.bfloat16)
    valid = jnp.asarray(VALID)
    out = jax.jit(splash)(q, k, v, valid)
    exact = reference(*(x.astype(jnp.float32) for x in (q, k, v)), valid)
    assert out.dtype == jnp.bfloat16 and bool(jnp.isfinite(out.astype(jnp.float32)).all())
    assert max_error_at_valid(out, exact, valid) < 1.5e-2
    grads = jax.jit(jax.grad(masked_loss(splash, valid, weights), argnums=(0, 1, 2)))(q, k, v)
    exact_grads = jax.grad(masked_loss(reference, valid, weights), argnums=(0, 1, 2))(
        *(x.astype(jnp.float32) for x in (q, k, v))
    )
    for name, got, want in zip(("dq", "dk", "dv"), grads, exact_grads, strict=True):
        error = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want)))
        assert error < 1e-2 * float(jnp.max(jnp.abs(want))), name


def test_on_a_mesh_the_kernel_runs_per_device_under_shard_map():
    # Two devices on the FSDP axis split the 2 rows and two on the tensor axis the heads (2 of the 4 query heads
    # and 1 of the 2 key/value heads each); with a mesh in context splash_attention wraps the kernel in shard_map.
    # The same values as the reference.
    q, k, v, weights = inputs(jnp.float32, batch=2)
    valid = jnp.asarray(VALID[:2])
    mesh = make_mesh(data=1, fsdp=2, tensor=2, devices=jax.devices()[:4])
    with jax.set_mesh(mesh):
        jitted = jax.jit(splash)
        out = jitted(q, k, v, valid)
        text = jitted.lower(q, k, v, valid).as_text()
        dq = jax.jit(jax.grad(masked_loss(splash, valid, weights)))(q, k, v)
    assert "manual_computation" in text  # the kernel runs per device, not on the global arrays
    assert max_error_at_valid(out, reference(q, k, v, valid), valid) < 1e-5
    expected_dq = jax.grad(masked_loss(reference, valid, weights))(q, k, v)
    assert float(jnp.max(jnp.abs(dq - expected_dq))) < 1e-5


def test_unsupported_shapes_are_refused_with_a_reason():
    assert splash_unsupported_reason((2, 256, 32, 128), (2, 256, 8, 128), jnp.bfloat16) is None
    assert "multiple of 128" in splash_unsupported_reason((2, 200, 4, 64), (2, 200, 2, 64), jnp.float32)
    assert "multiple" in splash_unsupported_reason((2, 256, 3, 64), (2, 256, 2, 64), jnp.float32)
    assert "float16" in splash_unsupported_reason((2, 256, 4, 64), (2, 256, 2, 64), jnp.float16)
    q, k, v, _ = inputs(jnp.float32)
    with pytest.raises(ValueError, match="multiple of 128"):
        splash_attention(q[:, :200], k[:, :200], v[:, :200], jnp.asarray(VALID[:, :200]), interpret=True)


def test_a_model_with_splash_attention_computes_what_the_einsum_model_computes():
    # model.attention_impl=splash through the dispatcher (interpret mode off a TPU), scanned layers, left padding.
    from flax import nnx

    from inform_jax.models import CausalLM, DecoderConfig

    kw = dict(model_type="llama", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
              intermediate_size=64, scan_layers=True)  # fmt: skip
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 97, size=(2, 128)))
    mask = jnp.asarray(np.stack([np.arange(128) >= 30, np.arange(128) < 100]).astype(np.int32))  # left, right
    logits = {
        impl: np.asarray(CausalLM(DecoderConfig(**kw, attention_impl=impl), rngs=nnx.Rngs(0))(ids, mask).logits)
        for impl in ("splash", "einsum")
    }
    real = np.asarray(mask).astype(bool)
    assert np.isfinite(logits["splash"]).all()
    np.testing.assert_allclose(logits["splash"][real], logits["einsum"][real], rtol=1e-5, atol=1e-5)
