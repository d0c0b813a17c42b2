"""EPPO energy loss on a tiny random decoder against NumPy, the penalized reward and the response mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inform_jax.losses.energy import (
    energy_from_output,
    energy_penalty,
    layer_energy,
    mlp_energy,
    response_token_mask,
)
from inform_jax.models import CausalLM, DecoderConfig

WIDTH, LAYERS = 32, 3


@pytest.fixture(scope="module")
def forward():
    """A tiny random model's forward pass on left-padded prompts + right-padded responses, and a token mask."""
    rng = np.random.default_rng(1001)
    config = DecoderConfig(
        vocab_size=50, hidden_size=WIDTH, intermediate_size=64, num_layers=LAYERS, num_heads=4, num_kv_heads=2
    )
    model = CausalLM(config, rngs=nnx.Rngs(int(rng.integers(1 << 30))))
    b, t = 4, 12
    ids = rng.integers(0, 50, size=(b, t)).astype(np.int32)
    mask = np.ones((b, t), np.int32)
    mask[1, :3] = 0  # left-padded prompt
    mask[2, 9:] = 0  # right-padded response
    token_mask = (rng.random((b, t)) < 0.6).astype(np.float32) * mask
    token_mask[0, 5] = 1
    token_mask[3] = 0  # an empty row
    out = nnx.jit(lambda m, i, a: m(i, a, output_hidden_states=True))(model, jnp.asarray(ids), jnp.asarray(mask))
    return out, token_mask


def _np_energy(h_in, h_out, token_mask, normalize=True):
    """Per-sequence masked mean of ``sum_d |h_in| - sum_d |h_out|`` (/ width); 0 for an empty row."""
    h_in, h_out = np.asarray(h_in, np.float64), np.asarray(h_out, np.float64)
    de = np.abs(h_in).sum(-1) - np.abs(h_out).sum(-1)
    if normalize:
        de /= h_in.shape[-1]
    counts = token_mask.sum(-1)
    return np.where(counts > 0, (de * token_mask).sum(-1) / np.maximum(counts, 1), 0.0)


@pytest.mark.parametrize("normalize", [True, False])
def test_layer_energy_matches_numpy_per_layer(forward, normalize):
    out, token_mask = forward
    got = np.asarray(jax.jit(layer_energy, static_argnums=(1, 3))(out.residual_l1, WIDTH, token_mask, normalize))
    assert got.shape == (token_mask.shape[0], LAYERS) and np.all(np.isfinite(got))
    for layer in range(LAYERS):
        expected = _np_energy(out.block_input(layer), out.block_output(layer), token_mask, normalize)
        np.testing.assert_allclose(got[:, layer], expected, rtol=1e-4, atol=1e-6)
    assert np.all(got[3] == 0)  # empty mask
    np.testing.assert_allclose(energy_from_output(out, token_mask, normalize=normalize), got[:, -1], rtol=1e-6)
    np.testing.assert_allclose(energy_from_output(out, token_mask, normalize=normalize, layer=0), got[:, 0], rtol=1e-6)


def test_final_layer_energy_is_measured_before_the_final_norm(forward):
    out, token_mask = forward
    last = LAYERS - 1
    pre_norm = _np_energy(out.block_input(last), out.final_block_output, token_mask)
    post_norm = _np_energy(out.block_input(last), out.hidden_states[-1], token_mask)
    got = np.asarray(energy_from_output(out, token_mask))
    np.testing.assert_allclose(got, pre_norm, rtol=1e-4, atol=1e-6)
    rows = token_mask.sum(-1) > 0
    # The final norm rescales the stream: measuring across it changes the energy by far more than its own size.
    assert np.all(np.abs(post_norm[rows] - pre_norm[rows]) > 0.1 + 10 * np.abs(pre_norm[rows]))
    assert not np.allclose(got[rows], post_norm[rows], rtol=0.5)


@pytest.mark.parametrize("normalize", [True, False])
def test_mlp_energy_matches_numpy(forward, normalize):
    out, token_mask = forward
    expected = _np_energy(out.final_mlp_input, out.final_mlp_output, token_mask, normalize)
    got = jax.jit(mlp_energy, static_argnums=3)(out.final_mlp_input, out.final_mlp_output, token_mask, normalize)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(energy_from_output(out, token_mask, "mlp", normalize), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="site"):
        energy_from_output(out, token_mask, "attention")
    with pytest.raises(ValueError, match="final block"):
        energy_from_output(out, token_mask, "mlp", layer=0)


def test_energy_penalty_matches_numpy():
    rng = np.random.default_rng(1002)
    r = rng.normal(size=64) * 8
    sft, pol = rng.normal(size=(2, 64))
    eta, clamp = rng.uniform(0.5, 3), rng.uniform(1, 5)
    raw = r - eta * np.abs(sft - pol)
    # float32 against float64: where r and the penalty nearly cancel only an absolute bound holds (terms reach ~30,
    # float32 rounds them to ~4e-6); a wrong formula misses by O(1).
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(energy_penalty)(r, sft, pol, eta, clamp), np.clip(raw, -clamp, clamp), **tol)
    np.testing.assert_allclose(energy_penalty(r, sft, pol, eta, None), raw, **tol)
    assert np.any(np.abs(raw) > clamp)  # the clamp was exercised
    np.testing.assert_allclose(energy_penalty(r, sft, sft, 2.0, None), r, rtol=1e-6)  # no drift, no penalty


def test_response_token_mask_excludes_prompt_pads_and_eos():
    pad, eos, p = 0, 2, 3
    # Left-padded prompts of length 3, then right-padded responses; row 2 kept writing after its EOS.
    ids = np.array(
        [
            [0, 5, 6, 7, 8, 2, 0, 0],
            [4, 5, 6, 7, 8, 9, 9, 2],
            [0, 0, 6, 7, 2, 9, 9, 9],
            [4, 5, 6, 2, 0, 0, 0, 0],
            [4, 5, 6, 7, 8, 9, 9, 9],
        ]
    )
    attn = (ids != pad).astype(np.int32)
    attn[1, 0] = 1
    expected = np.array(
        [
            [0, 0, 0, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 1, 1, 1, 0],
            [0, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 1, 1, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(jax.jit(response_token_mask)(ids, attn, p, eos), expected)
    np.testing.assert_array_equal(response_token_mask(ids, attn, np.full(5, p), [eos, 99]), expected)
    no_eos = response_token_mask(ids, attn, p)
    np.testing.assert_array_equal(no_eos, (np.arange(8) >= p) & (attn != 0))
    # Per-row starts: an EOS inside the prompt does not end the response.
    starts = np.array([1, 3, 5, 3, 6])
    got = np.asarray(response_token_mask(ids, attn, starts, eos))
    assert got[2].tolist() == [0, 0, 0, 0, 0, 1, 1, 1] and got[4].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert got[0].tolist() == [0, 1, 1, 1, 1, 0, 0, 0]
