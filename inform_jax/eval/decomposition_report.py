"""`inform-jax decompose` and `inform-jax evaluate-rm`: per-pair prompt-free / prompt-related gaps with the
quadrant plot, and accuracy per subset and category with the prompt diagnostics."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from inform_jax.detect.plots import _pyplot, save_figure
from inform_jax.eval.decomposition import PairTokens, decompose, prompt_diagnostics, summarize
from inform_jax.eval.rm_eval import pair_scores, rewardbench_report
from inform_jax.models.batched import DEFAULT_TOKEN_BUDGET
from inform_jax.train.config import DataSection


def plot_quadrants(path: str, dr1, dr2, red, *, red_label: str, other_label: str, title: str) -> str:
    """Scatter of (dr1, dr2) per pair, red where ``red`` [P] is True, with the axes through 0 (the paper's view)."""
    plt = _pyplot()
    dr1, dr2, red = np.asarray(dr1), np.asarray(dr2), np.asarray(red, bool)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(dr1[~red], dr2[~red], s=8, c="tab:blue", alpha=0.5, label=f"{other_label} ({int((~red).sum())})")
    ax.scatter(dr1[red], dr2[red], s=8, c="tab:red", alpha=0.5, label=f"{red_label} ({int(red.sum())})")
    ax.axhline(0, c="gray", lw=0.8)
    ax.axvline(0, c="gray", lw=0.8)
    ax.set_xlabel("prompt-related gap dr1")
    ax.set_ylabel("prompt-free gap dr2")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(plt, fig, path, dpi=120)


def _load(rm_dir: str, data: str, tokenizer: str | None, max_length: int, log):
    from inform_jax.data.tokenizer import load_tokenizer
    from inform_jax.models.reward_model import load_reward_model
    from inform_jax.train.rm.data import prepare_pairs

    tok = load_tokenizer(tokenizer or rm_dir)
    arrays, pairs = prepare_pairs(data, tok, DataSection(max_length=max_length), log=log, return_pairs=True)
    return load_reward_model(rm_dir), tok, pairs, arrays


def run_decompose(
    rm_dir: str, data: str, out_dir: str, *, tokenizer: str | None = None, color: str = "length",
    num_prompts: int = 8, estimator: str = "bisection", weights: str = "uniform", tau: float = 1.0,
    max_length: int = 512, seed: int = 0, token_budget: int | None = DEFAULT_TOKEN_BUDGET, log=print,
) -> dict[str, Any]:  # fmt: skip
    """Write ``pairs.jsonl`` (row, dr, dr1, dr2, red), ``quadrants.png`` and ``summary.json``; returns the summary.

    color: "length" (red where the chosen response has more tokens, the paper's length study) or the name of
    a boolean column of the data file (e.g. ``adversarial``).
    """
    model, tok, pairs, arrays = _load(rm_dir, data, tokenizer, max_length, log)
    tokens = PairTokens(arrays, tok.pad_token_id or 0)
    parts = decompose(model, tokens, num_prompts=num_prompts, estimator=estimator, weights=weights, tau=tau,
                      seed=seed, token_budget=token_budget)  # fmt: skip
    if color == "length":
        red = arrays["response_lengths"][:, 0] > arrays["response_lengths"][:, 1]
        labels = ("|y_w| > |y_l|", "|y_w| <= |y_l|")
    else:
        missing = [p.row for p in pairs if color not in p.extra]
        if missing:
            raise ValueError(f"{data}: row {missing[0]} has no column {color!r} for --color")
        red = np.asarray([bool(p.extra[color]) for p in pairs])
        labels = (color, f"not {color}")
    writer = jax.process_index() == 0  # every host computed the gaps; one writes them
    os.makedirs(out_dir, exist_ok=True)
    if writer:
        with open(os.path.join(out_dir, "pairs.jsonl"), "w") as f:
            for i, p in enumerate(pairs):
                row = {"row": p.row, "dr": float(parts["dr"][i]), "dr1": float(parts["dr1"][i]),
                       "dr2": float(parts["dr2"][i]), "red": bool(red[i])}  # fmt: skip
                f.write(json.dumps(row) + "\n")
    summary = {
        "data": data, "rm": rm_dir, "pairs": len(pairs), "estimator": estimator, "weights": weights,
        "num_prompts": num_prompts, **summarize(parts),
        **prompt_diagnostics(model, tokens, num_prompts=num_prompts, token_budget=token_budget),
    }  # fmt: skip
    summary["figure"] = plot_quadrants(
        os.path.join(out_dir, "quadrants.png"), parts["dr1"], parts["dr2"], red, red_label=labels[0],
        other_label=labels[1], title=f"{os.path.basename(data)}: prompt-related vs prompt-free gap",
    )  # fmt: skip
    if writer:
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    log(f"decomposition of {len(pairs)} pairs: {os.path.join(out_dir, 'summary.json')}")
    return summary


def run_evaluate(
    rm_dir: str, data: str, *, tokenizer: str | None = None, subset_column: str = "subset", max_length: int = 2048,
    diagnostics: bool = True, token_budget: int | None = DEFAULT_TOKEN_BUDGET, log=print,
) -> dict[str, Any]:  # fmt: skip
    """Accuracy per subset / category (RewardBench format: prompt, chosen, rejected, subset) and, optionally,
    the prompt diagnostics. A file without the subset column counts as one subset named after the file.
    ``max_length`` only truncates: batches are padded to their longest row's bucket, ``token_budget`` tokens each."""
    model, tok, pairs, arrays = _load(rm_dir, data, tokenizer, max_length, log)
    chosen, rejected = pair_scores(model, arrays, token_budget=token_budget)
    subsets = [str(p.extra.get(subset_column, os.path.basename(data))) for p in pairs]
    report = rewardbench_report(chosen, rejected, subsets)
    if diagnostics and len(pairs) >= 2:
        tokens = PairTokens(arrays, tok.pad_token_id or 0)
        report["prompt_diagnostics"] = prompt_diagnostics(model, tokens, token_budget=token_budget)
    return report
