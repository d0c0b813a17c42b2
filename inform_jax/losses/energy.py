"""EPPO: energy loss of decoder layers and the energy-penalized reward (Miao et al., ICML 2025).

The energy loss of layer ``l`` on a token is ``dE_l = ||h_l_in||_1 - ||h_l_out||_1``, the L1 norm its
residual stream loses across the layer. EPPO penalizes the RL policy when its final-layer energy loss drifts
from the SFT model's: ``r_hat = r - eta * |dE_final^SFT - dE_final^RLHF|``.

Two measurement sites:

* ``"residual"`` (the paper's, the default): the last block's residual-stream input vs output, the output
  taken *before* the final norm (a norm rescales the stream, so an energy across it measures the norm).
* ``"mlp"`` (the authors' code): the last block's MLP input (after its pre-MLP norm) vs the MLP output.

With ``normalize=True`` (default) the L1 norms are divided by the width (mean absolute value): the scale
the authors' ``eta = 2.0`` was set for. Per-token energies are averaged over the response tokens (pads and
EOS excluded, :func:`response_token_mask`), so each sequence gets one length-normalized energy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from inform_jax.losses._utils import as_float, masked_mean

ENERGY_SITES = ("residual", "mlp")


def layer_energy(residual_l1: jax.Array, width: int, token_mask: jax.Array, normalize: bool = True) -> jax.Array:
    """Energy loss of every layer, averaged over each sequence's masked tokens.

    Args:
      residual_l1: ``[L + 1, B, T]`` L1 norms over the width of the residual stream at the block boundaries:
        entry 0 the embedding output, entry ``l + 1`` block ``l``'s output before any final norm
        (``DecoderOutput.residual_l1``).
      width: the residual width ``D``.
      token_mask: ``[B, T]`` 0/1, the tokens to average over.
      normalize: divide by ``width`` (mean absolute value, default) or keep the raw L1 norms.

    Returns:
      ``[B, L]`` at least float32: ``mean_t (residual_l1[l] - residual_l1[l + 1])`` (/ width); 0 for a row
      with an empty mask.
    """
    l1 = as_float(residual_l1)
    de = l1[:-1] - l1[1:]  # [L, B, T]
    if normalize:
        de = de / width
    return masked_mean(de, jnp.asarray(token_mask)[None], axis=-1).T


def mlp_energy(mlp_input: jax.Array, mlp_output: jax.Array, token_mask: jax.Array, normalize: bool = True) -> jax.Array:
    """Energy loss of an MLP (the EPPO authors' site), averaged over each sequence's masked tokens.

    Args:
      mlp_input: ``[B, T, D]`` the MLP's input (``DecoderOutput.final_mlp_input``).
      mlp_output: ``[B, T, D]`` the MLP's output before the residual add (``DecoderOutput.final_mlp_output``).
      token_mask: ``[B, T]`` 0/1, the tokens to average over.
      normalize: per token ``mean_d |in| - mean_d |out|`` (default) or the sums ``sum_d``.

    Returns:
      ``[B]`` at least float32; 0 for a row with an empty mask.
    """
    reduce = jnp.mean if normalize else jnp.sum
    de = reduce(jnp.abs(as_float(mlp_input)), axis=-1) - reduce(jnp.abs(as_float(mlp_output)), axis=-1)
    return masked_mean(de, token_mask, axis=-1)


def energy_from_output(
    out: Any, token_mask: jax.Array, site: str = "residual", normalize: bool = True, layer: int = -1
) -> jax.Array:
    """Per-sequence energy loss of one layer from a model's forward pass.

    Args:
      out: a ``DecoderOutput`` or anything with ``residual_l1`` ``[L + 1, B, T]``, ``final_mlp_input`` and
        ``final_mlp_output`` ``[B, T, D]`` (the width ``D`` is read from ``final_mlp_input``).
      token_mask: ``[B, T]`` 0/1 response tokens (:func:`response_token_mask`).
      site: ``"residual"`` (default, the paper's) or ``"mlp"`` (the authors' code), see the module doc.
      normalize: divide the L1 norms by the width (default) or not.
      layer: the block, for ``site="residual"``; default -1, the final block (the one EPPO uses). The
        ``"mlp"`` site exists for the final block only.

    Returns:
      ``[B]`` at least float32.
    """
    if site == "residual":
        l1 = out.residual_l1
        num_layers = l1.shape[0] - 1
        if not -num_layers <= layer < num_layers:
            raise ValueError(f"layer {layer} out of range for {num_layers} layers")
        layer %= num_layers
        return layer_energy(l1[layer : layer + 2], out.final_mlp_input.shape[-1], token_mask, normalize)[:, 0]
    if site == "mlp":
        num_layers = out.residual_l1.shape[0] - 1
        if layer not in (-1, num_layers - 1):
            raise ValueError(f"site 'mlp' is only recorded for the final block, got layer={layer}")
        return mlp_energy(out.final_mlp_input, out.final_mlp_output, token_mask, normalize)
    raise ValueError(f"site must be one of {ENERGY_SITES}, got {site!r}")


def energy_penalty(
    rewards: jax.Array,
    sft_energy: jax.Array,
    policy_energy: jax.Array,
    eta: float = 2.0,
    clamp: float | None = 5.0,
) -> jax.Array:
    """EPPO's penalized reward ``r_hat = clip(r - eta * |dE_final^SFT - dE_final^RLHF|, -clamp, clamp)``.

    Args:
      rewards: ``[B]`` float reward-model scores ``r(y|x)``.
      sft_energy: ``[B]`` final-layer energy of the SFT (reference) model on its own response to each prompt.
      policy_energy: ``[B]`` final-layer energy of the policy on its rollout.
      eta: penalty weight (authors: 2.0, with width-normalized energies).
      clamp: the total reward is clipped to ``[-clamp, clamp]`` (authors: 5.0); None for no clip.

    Returns:
      ``[B]`` at least float32.
    """
    r = as_float(rewards) - eta * jnp.abs(as_float(sft_energy) - as_float(policy_energy))
    return r if clamp is None else jnp.clip(r, -clamp, clamp)


def response_token_mask(
    input_ids: jax.Array,
    attention_mask: jax.Array,
    response_start: int | jax.Array,
    eos_id: int | Sequence[int] | None = None,
) -> jax.Array:
    """Mask of response tokens, pads and EOS excluded.

    Layout: each row of ``[B, T]`` is a prompt followed by its response; with a left-padded prompt of static
    length ``P`` the response occupies positions ``>= P`` (right-padded), so ``response_start = P``. A
    response token is a position ``>= response_start`` with ``attention_mask`` 1 that comes before the
    response's first EOS: the EOS itself and anything after it (if the sampler kept writing) are excluded.

    Args:
      input_ids: ``[B, T]`` int token ids.
      attention_mask: ``[B, T]`` 0/1 (0 = pad).
      response_start: int ``P``, or ``[B]`` int per-row start positions.
      eos_id: the EOS token id (or several ids); None excludes nothing more than pads.

    Returns:
      ``[B, T]`` bool.
    """
    input_ids = jnp.asarray(input_ids)
    positions = jnp.arange(input_ids.shape[-1])
    start = jnp.reshape(jnp.asarray(response_start), (-1, 1))
    mask = (positions >= start) & (jnp.asarray(attention_mask) != 0)
    if eos_id is not None:
        is_eos = jnp.isin(input_ids, jnp.atleast_1d(jnp.asarray(eos_id))) & (positions >= start)
        mask = mask & (jnp.cumsum(is_eos, axis=-1) == 0)
    return mask
