"""Reward-model evaluation on preference files: per-pair scores, RewardBench-style accuracy per subset and
category, and the prompt diagnostics of the reward-decomposition paper."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from inform_jax.models.batched import by_length, map_batches
from inform_jax.models.sharding import model_mesh
from inform_jax.train.rm.objective import evaluate_pairs

# RewardBench (Lambert et al. 2024) subsets by section. A subset not listed falls in "other".
REWARDBENCH_CATEGORIES: dict[str, tuple[str, ...]] = {
    "chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "chat-hard": ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"),
    "safety": ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"),
    "reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}  # fmt: skip
_CATEGORY_OF = {subset: cat for cat, subsets in REWARDBENCH_CATEGORIES.items() for subset in subsets}


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _scores(graphdef, params, batch):
    out = evaluate_pairs(nnx.merge(graphdef, params), batch)
    return out["reward_chosen"], out["reward_rejected"]


def pair_scores(
    model, arrays: dict[str, np.ndarray], *, batch_size: int = 64, token_budget: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rewards (chosen [N], rejected [N]) of tokenized pairs (``prepare_pairs`` output), jitted in batches by
    length (at most ``batch_size`` pairs and ``token_budget`` padded tokens, both sequences counted) over the
    model's mesh (:func:`inform_jax.models.batched.map_batches`)."""
    keys = ("chosen_input_ids", "chosen_attention_mask", "rejected_input_ids", "rejected_attention_mask")
    mesh = model_mesh(model)  # first: it may place the model over every device
    graphdef, params = nnx.split(model)
    fn = lambda batch, _: _scores(graphdef, params, batch)  # noqa: E731
    rows = {k: arrays[k] for k in keys}
    budget = None if token_budget is None else token_budget // 2  # two sequences per pair
    return map_batches(fn, rows, batch_size=batch_size, mesh=mesh, token_budget=budget, **by_length(rows))


def rewardbench_report(chosen, rejected, subsets: Sequence[str]) -> dict[str, Any]:
    """Accuracy (chosen scored strictly above rejected, as RewardBench counts) per subset, per category (all
    examples of the category's subsets pooled) and overall. chosen, rejected: [N]; subsets: N names."""
    chosen, rejected = np.asarray(chosen), np.asarray(rejected)
    if not (chosen.shape == rejected.shape == (len(subsets),)):
        raise ValueError(f"chosen {chosen.shape}, rejected {rejected.shape} and {len(subsets)} subsets disagree")
    correct = chosen > rejected
    by_subset, by_category = defaultdict(list), defaultdict(list)
    for ok, subset in zip(correct, subsets, strict=True):
        by_subset[subset].append(ok)
        by_category[_CATEGORY_OF.get(subset, "other")].append(ok)

    def summary(groups):
        return {name: {"accuracy": float(np.mean(v)), "n": len(v)} for name, v in sorted(groups.items())}

    return {"overall": float(correct.mean()), "n": int(correct.size), "subsets": summary(by_subset),
            "categories": summary(by_category)}  # fmt: skip
