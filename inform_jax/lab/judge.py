"""Win / tie / lose of one policy against another, judged pairwise in both presentation orders.

A judge sees (prompt, first, second) and returns how much it prefers ``first`` (a score difference; > 0 means
first is better). LLM judges favour a position, so each comparison is asked in both orders and only a verdict
both orders agree on counts:

    win   if judge(x, a, b) >  margin and judge(x, b, a) < -margin
    lose  if judge(x, a, b) < -margin and judge(x, b, a) >  margin
    tie   otherwise (the difference is within the margin, or the two orders disagree)

The lab's judge is the synthetic world's gold reward, ``judge(x, a, b) = gold(x, a) - gold(x, b)``; it has no
position bias, so both orders agree and the margin alone decides ties.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

VERDICTS = ("win", "tie", "lose")


def verdict(first_order: float, second_order: float, margin: float) -> str:
    """The verdict from judge(x, a, b) = ``first_order`` and judge(x, b, a) = ``second_order``."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if first_order > margin and second_order < -margin:
        return "win"
    if first_order < -margin and second_order > margin:
        return "lose"
    return "tie"


def compare(
    judge: Callable[[str, str, str], float],
    prompts: Sequence[str],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
    *,
    margin: float,
) -> dict[str, float]:
    """Win / tie / lose rates of policy A against policy B over paired responses to the same prompts, plus
    ``win_rate`` = win + tie / 2 (EPPO's measure) and the count ``n``."""
    if not (len(prompts) == len(responses_a) == len(responses_b)) or not prompts:
        raise ValueError(f"need equal, non-zero numbers of prompts and responses, got "
                         f"{len(prompts)}, {len(responses_a)}, {len(responses_b)}")  # fmt: skip
    counts = dict.fromkeys(VERDICTS, 0)
    for x, a, b in zip(prompts, responses_a, responses_b, strict=True):
        counts[verdict(judge(x, a, b), judge(x, b, a), margin)] += 1
    return rates(counts)


def compare_scores(gold_a, gold_b, *, margin: float) -> dict[str, float]:
    """:func:`compare` for a position-free judge given as scores: gold_a, gold_b [N] per prompt."""
    diff = np.asarray(gold_a, np.float64) - np.asarray(gold_b, np.float64)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError(f"gold_a and gold_b must be non-empty 1-D arrays of one shape, got {np.shape(diff)}")
    counts = dict.fromkeys(VERDICTS, 0)
    for d in diff:
        counts[verdict(d, -d, margin)] += 1
    return rates(counts)


def rates(counts: dict[str, int]) -> dict[str, float]:
    n = sum(counts.values())
    out = {k: counts[k] / n for k in VERDICTS}
    return {**out, "win_rate": out["win"] + 0.5 * out["tie"], "n": n}
