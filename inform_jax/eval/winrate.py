"""Win / tie / lose of one policy against another, judged pairwise in both presentation orders.

A judge sees (prompt, first, second) and returns how much it prefers ``first`` (a score difference; > 0 means
first is better). LLM judges favour a position, so each comparison is asked in both orders and only a verdict
both orders agree on counts:

    win   if judge(x, a, b) >  margin and judge(x, b, a) < -margin
    lose  if judge(x, a, b) < -margin and judge(x, b, a) >  margin
    tie   otherwise (the difference is within the margin, or the two orders disagree)

The lab's judge is the synthetic world's gold reward, ``judge(x, a, b) = gold(x, a) - gold(x, b)``; it has no
position bias, so both orders agree and the margin alone decides ties. Judges with a batched
``preferences(prompts, firsts, seconds) -> [N]`` method (see :mod:`inform_jax.eval.judges`) are asked both
orders in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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


def _check_lengths(prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]) -> None:
    if not (len(prompts) == len(responses_a) == len(responses_b)) or not prompts:
        raise ValueError(f"need equal, non-zero numbers of prompts and responses, got "
                         f"{len(prompts)}, {len(responses_a)}, {len(responses_b)}")  # fmt: skip


def judge_both_orders(
    judge: Callable[[str, str, str], float],
    prompts: Sequence[str],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """``(judge(x, a, b) [N], judge(x, b, a) [N])`` over paired responses to the same prompts.

    A judge with a ``preferences(prompts, firsts, seconds)`` method is asked both orders in one batched call
    (A first for the first N rows, B first for the next N); any other callable is called once per order and item.
    """
    _check_lengths(prompts, responses_a, responses_b)
    n = len(prompts)
    batched = getattr(judge, "preferences", None)
    if callable(batched):
        prompts, a, b = list(prompts), list(responses_a), list(responses_b)
        both = np.asarray(batched(prompts + prompts, a + b, b + a), np.float64)
        if both.shape != (2 * n,):
            raise ValueError(f"{type(judge).__name__}.preferences returned shape {both.shape}, expected ({2 * n},)")
        return both[:n], both[n:]
    first = np.array([judge(x, a, b) for x, a, b in zip(prompts, responses_a, responses_b, strict=True)], np.float64)
    second = np.array([judge(x, b, a) for x, a, b in zip(prompts, responses_a, responses_b, strict=True)], np.float64)
    return first, second


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
    report = win_rate_report(judge, prompts, responses_a, responses_b, margin)
    return {k: report[k] for k in (*VERDICTS, "win_rate", "n")}


def win_rate_report(
    judge: Callable[[str, str, str], float],
    prompts: Sequence[str],
    responses_a: Sequence[str],
    responses_b: Sequence[str],
    margin: float,
) -> dict[str, Any]:
    """:func:`compare`'s rates (win, tie, lose, win_rate, n), the ``margin``, and ``items``: per prompt its
    responses, ``a_first`` = judge(x, a, b), ``b_first`` = judge(x, b, a) and the verdict of A against B."""
    first, second = judge_both_orders(judge, prompts, responses_a, responses_b)
    items, counts = [], dict.fromkeys(VERDICTS, 0)
    for i, (x, a, b) in enumerate(zip(prompts, responses_a, responses_b, strict=True)):
        v = verdict(first[i], second[i], margin)
        counts[v] += 1
        items.append({"index": i, "prompt": x, "response_a": a, "response_b": b, "a_first": float(first[i]),
                      "b_first": float(second[i]), "verdict": v})  # fmt: skip
    return {**rates(counts), "margin": margin, "items": items}


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


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def match_by_prompt(rows_a: Sequence[Any], rows_b: Sequence[Any], *, path_a: str = "A", path_b: str = "B"):
    """Pair two lists of ``ResponseRow``-like rows (``.prompt``, ``.response``, ``.row``) by prompt text.

    Returns ``(prompts, responses_a, responses_b, unmatched_b)`` in A's order; ``unmatched_b`` counts B's rows
    whose prompt is not in A (they are left out). Raises :class:`~inform_jax.data.preference.PreferenceDataError`
    naming the file and the prompt when a prompt of A is repeated in A or B, or missing from B.
    """
    from inform_jax.data.preference import PreferenceDataError

    def index(rows, path):
        out: dict[str, Any] = {}
        for r in rows:
            if r.prompt in out:
                raise PreferenceDataError(
                    f"{path}: rows {out[r.prompt].row} and {r.row} answer the same prompt {_short(r.prompt)}; "
                    f"each prompt must appear once to pair the files", path=path, row=r.row,
                )  # fmt: skip
            out[r.prompt] = r
        return out

    by_a = index(rows_a, path_a)
    by_b = {}
    for r in rows_b:  # only prompts that A needs must be unique in B
        if r.prompt in by_a and r.prompt in by_b:
            raise PreferenceDataError(
                f"{path_b}: rows {by_b[r.prompt].row} and {r.row} answer the same prompt {_short(r.prompt)}; "
                f"each prompt must appear once to pair the files", path=path_b, row=r.row,
            )  # fmt: skip
        by_b[r.prompt] = r
    prompts, a, b = [], [], []
    for prompt, row in by_a.items():
        if prompt not in by_b:
            raise PreferenceDataError(
                f"{path_b}: no response to the prompt {_short(prompt)} of {path_a} (row {row.row}); both files "
                f"must answer the same prompts", path=path_b,
            )  # fmt: skip
        prompts.append(prompt)
        a.append(row.response)
        b.append(by_b[prompt].response)
    return prompts, a, b, sum(1 for r in rows_b if r.prompt not in by_a)
