"""Reward decomposition in practice: score each pair's responses under other prompts in one jitted pass, estimate
the prompt-free gap dr2 and the prompt-related gap dr1, reweight training pairs by dr2, and the prompt
diagnostics (docs/reference.md section 4; the math is in :mod:`inform_jax.losses.decomposition`).

Sequences are spliced on the device from already tokenized pairs (right-padded ``[prompt | response | pad]``
rows with their prompt lengths): prompt j's tokens followed by response i's tokens, the prompt's start cut
when the two do not fit (the response, where the reward is read, is never cut).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.losses.decomposition import (
    importance_weights,
    prompt_free_gap,
    prompt_free_gap_logit,
)
from inform_jax.models.batched import map_batches
from inform_jax.models.sharding import model_mesh, replicated

ESTIMATORS = ("bisection", "logit")


class PairTokens:
    """Token sources for splicing, from tokenized pairs (``prepare_pairs`` output, M pairs, length T).

    prompts: the chosen rows with their prompt lengths; responses: chosen rows (index i) and rejected rows
    (index M + i) with each response's start and length.
    """

    def __init__(self, arrays: dict[str, np.ndarray], pad_id: int = 0):
        if "prompt_lengths" not in arrays:
            raise ValueError("decomposition needs the pairs' prompt_lengths (prepare_pairs output)")
        plen = np.asarray(arrays["prompt_lengths"])
        chosen_len = np.asarray(arrays["chosen_attention_mask"]).sum(1)
        rejected_len = np.asarray(arrays["rejected_attention_mask"]).sum(1)
        self.num_pairs = plen.shape[0]
        self.length = np.asarray(arrays["chosen_input_ids"]).shape[1]
        self.pad_id = pad_id
        self.prompt_ids = np.asarray(arrays["chosen_input_ids"], np.int32)
        self.prompt_len = np.asarray(plen[:, 0], np.int32)
        self.response_ids = np.concatenate([arrays["chosen_input_ids"], arrays["rejected_input_ids"]]).astype(np.int32)
        self.response_start = np.concatenate([plen[:, 0], plen[:, 1]]).astype(np.int32)
        self.response_len = np.concatenate([chosen_len - plen[:, 0], rejected_len - plen[:, 1]]).astype(np.int32)

    def sources(self) -> tuple[np.ndarray, ...]:
        """(prompt_ids [M, T], prompt_len [M], response_ids [2M, T], response_start [2M], response_len [2M])."""
        return self.prompt_ids, self.prompt_len, self.response_ids, self.response_start, self.response_len

    def on_mesh(self, mesh) -> tuple[jax.Array, ...]:
        """:meth:`sources` replicated over ``mesh``, placed once per mesh: the prompt-free priority scores the same
        pairs at every refresh, and the diagnostics score them twice."""
        if getattr(self, "_placed_mesh", None) != mesh:
            self._placed = jax.tree.map(lambda x: replicated(x, mesh), self.sources())
            self._placed_mesh = mesh
        return self._placed


def splice(prompt_ids, prompt_len, response_ids, response_start, response_len, pad_id: int, out_length=None):
    """One sequence: a prompt's tokens then a response's, right-padded. ids rows [T]; returns (ids [S], mask [S]),
    S = ``out_length`` (default T; at least the spliced length, :func:`spliced_lengths`)."""
    length = prompt_ids.shape[0]
    kept = jnp.minimum(prompt_len, length - response_len)
    t = jnp.arange(length if out_length is None else out_length)
    in_prompt = t < kept
    in_response = (t >= kept) & (t < kept + response_len)
    prompt_tok = prompt_ids[jnp.clip(prompt_len - kept + t, 0, length - 1)]
    response_tok = response_ids[jnp.clip(response_start + t - kept, 0, length - 1)]
    ids = jnp.where(in_prompt, prompt_tok, jnp.where(in_response, response_tok, pad_id))
    return ids, (in_prompt | in_response).astype(jnp.int32)


def spliced_lengths(tokens: PairTokens, prompt_idx: np.ndarray, response_idx: np.ndarray) -> np.ndarray:
    """Real tokens [L] of each spliced (prompt, response) sequence: the prompt tokens kept plus the response's."""
    response_len = tokens.response_len[response_idx]
    return np.minimum(tokens.prompt_len[prompt_idx], tokens.length - response_len) + response_len


@functools.partial(jax.jit, static_argnames=("graphdef", "pad_id", "out_length"))
def _score_spliced(graphdef, params, sources, prompt_idx, response_idx, pad_id, out_length):
    prompt_ids, prompt_len, response_ids, response_start, response_len = sources
    ids, mask = jax.vmap(lambda p, r: splice(
        prompt_ids[p], prompt_len[p], response_ids[r], response_start[r], response_len[r], pad_id, out_length
    ))(prompt_idx, response_idx)  # fmt: skip
    return nnx.merge(graphdef, params)(ids, mask).reward.astype(jnp.float32)


def score_spliced(
    model, tokens: PairTokens, prompt_idx, response_idx, *, batch_size: int = 256, token_budget: int | None = None
) -> np.ndarray:
    """Rewards [L] of (prompt prompt_idx[l], response response_idx[l]) for L index pairs, in jitted batches by
    spliced length (at most ``batch_size`` rows and ``token_budget`` padded tokens, each batch cut to its longest
    sequence's bucket) over the model's mesh (:func:`inform_jax.models.batched.map_batches`). Response indices:
    i = pair i's chosen, M + i = pair i's rejected."""
    mesh = model_mesh(model)  # first: it may place the model over every device
    graphdef, params = nnx.split(model)
    sources = tokens.on_mesh(mesh)
    rows = {"prompt": np.asarray(prompt_idx, np.int32).reshape(-1),
            "response": np.asarray(response_idx, np.int32).reshape(-1)}  # fmt: skip

    def fn(batch, length):
        return _score_spliced(graphdef, params, sources, batch["prompt"], batch["response"], tokens.pad_id, length)

    lengths = spliced_lengths(tokens, rows["prompt"], rows["response"])
    return map_batches(fn, rows, batch_size=batch_size, mesh=mesh, lengths=lengths, token_budget=token_budget,
                       max_length=tokens.length)  # fmt: skip


def other_prompts(num_pairs: int, num_prompts: int, seed: int) -> np.ndarray:
    """[M, N] indices of N prompts per pair drawn uniformly from the other pairs' prompts (P(X) over pairs)."""
    if num_pairs < 2:
        raise ValueError(f"decomposition needs at least 2 pairs to swap prompts, got {num_pairs}")
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, num_pairs - 1, size=(num_pairs, num_prompts))
    return draw + (draw >= np.arange(num_pairs)[:, None])  # skip the pair's own index


@functools.partial(jax.jit, static_argnames=("estimator", "weights", "tau"))
def _prompt_free_gaps(r_w, r_l, estimator: str, weights: str, tau: float):
    """dr2 [P] and the importance weights [P, N] from rewards [P, N] of y_w and y_l under the N other prompts;
    jitted so that the bisection loop compiles once per shape instead of once per call."""
    w = importance_weights(r_w, r_l, kind=weights, tau=tau)
    gap = prompt_free_gap if estimator == "bisection" else prompt_free_gap_logit
    return gap(r_w - r_l, w), w


def decompose(
    model,
    tokens: PairTokens,
    *,
    num_prompts: int = 8,
    estimator: str = "bisection",
    weights: str = "uniform",
    tau: float = 1.0,
    seed: int = 0,
    pairs: np.ndarray | None = None,
    batch_size: int = 256,
    token_budget: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-pair gaps of ``model``: dr (true prompt) [P], dr2 (prompt-free) [P], dr1 = dr - dr2 [P], the gaps
    under the N other prompts ``dr_other`` [P, N] with their weights [P, N], and ``r_chosen`` [P], the chosen
    response's reward under its own prompt.

    One batched pass scores y_w and y_l under the true prompt and N prompts drawn from the other pairs.
    ``estimator``: "bisection" (root of sum_i w_i sigmoid(dr_i - c) = 1/2) or "logit" (logit of the weighted
    mean sigmoid); ``weights``: "uniform" or "reward" (see :func:`inform_jax.losses.decomposition.importance_weights`).
    ``batch_size`` / ``token_budget``: rows and padded tokens per scoring batch (see :func:`score_spliced`).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    m = tokens.num_pairs
    pairs = np.arange(m) if pairs is None else np.asarray(pairs)
    prompts = np.concatenate([pairs[:, None], other_prompts(m, num_prompts, seed)[pairs]], axis=1)  # [P, 1 + N]
    chosen = np.broadcast_to(pairs[:, None], prompts.shape)
    both = score_spliced(model, tokens, np.stack([prompts, prompts]), np.stack([chosen, chosen + m]),
                         batch_size=batch_size, token_budget=token_budget).reshape(2, *prompts.shape)  # fmt: skip
    r_w, r_l = both[0], both[1]
    dr = r_w - r_l
    dr2, w = _prompt_free_gaps(jnp.asarray(r_w[:, 1:]), jnp.asarray(r_l[:, 1:]), estimator, weights, tau)
    dr2 = np.asarray(dr2)
    return {"dr": dr[:, 0], "dr2": dr2, "dr1": dr[:, 0] - dr2, "dr_other": dr[:, 1:], "weights": np.asarray(w),
            "r_chosen": r_w[:, 0]}  # fmt: skip


def prompt_diagnostics(
    model, tokens: PairTokens, *, num_prompts: int = 8, seed: int = 0, token_budget: int | None = None
) -> dict[str, float]:
    """The paper's diagnostics of how much a reward model uses the prompt.

    - gap_true_mean / gap_true_std: r(x, y_w) - r(x, y_l) with each pair's own prompt x;
    - gap_other_mean / gap_other_std: the same gap with N random other prompts (a model that ignores the
      prompt keeps it unchanged); gap_change: the mean |gap_true - gap_other|;
    - swapped_accuracy: how often r(x_i, y_w^i) > r(x_i, y_w^j) for a random other pair j, i.e. the pair's
      own chosen response beats another prompt's chosen response under x_i (0.5 for a prompt-blind model).
    """
    parts = decompose(model, tokens, num_prompts=num_prompts, seed=seed, token_budget=token_budget)
    m = tokens.num_pairs
    own = np.arange(m)
    other = other_prompts(m, 1, seed + 1)[:, 0]
    r_own = parts["r_chosen"]  # r(x_i, y_w^i), already scored by decompose
    r_swapped = score_spliced(model, tokens, own, other, token_budget=token_budget)
    return {
        "gap_true_mean": float(parts["dr"].mean()),
        "gap_true_std": float(parts["dr"].std()),
        "gap_other_mean": float(parts["dr_other"].mean()),
        "gap_other_std": float(parts["dr_other"].std()),
        "gap_change": float(np.abs(parts["dr"][:, None] - parts["dr_other"]).mean()),
        "swapped_accuracy": float(np.mean(r_own > r_swapped)),
    }


def summarize(parts: dict[str, Any]) -> dict[str, float]:
    """Quadrant counts of (dr1, dr2) and their means, for logs and reports."""
    dr1, dr2 = np.asarray(parts["dr1"]), np.asarray(parts["dr2"])
    return {
        "dr1_mean": float(dr1.mean()),
        "dr2_mean": float(dr2.mean()),
        "quadrant_++": float(np.mean((dr1 > 0) & (dr2 > 0))),
        "quadrant_+-": float(np.mean((dr1 > 0) & (dr2 <= 0))),
        "quadrant_-+": float(np.mean((dr1 <= 0) & (dr2 > 0))),
        "quadrant_--": float(np.mean((dr1 <= 0) & (dr2 <= 0))),
    }
