"""The lab's comparison of methods on held-out checkpoints: gold at matched KL with paired intervals.

Each method's run is a list of held-out readings (:class:`~inform_jax.lab.heldout.HeldOutEvaluator`), the SFT
policy's first: per checkpoint the mean exact KL from SFT and the gold per held-out prompt. Methods are compared
with the reference run (standard-RM PPO) at the KL budgets its gold peak sets (1x, 3x, 10x its KL there), read
at the first crossing of each method's smoothed KL (:mod:`inform_jax.eval.matched_kl`), and at their final
checkpoints. Within one seed the pairing unit is the held-out prompt: both methods' gold on the same prompt (same
sampling keys) at the same budget, so the interval is over prompts; across seeds the studies pair seeds instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inform_jax.eval.matched_kl import DEFAULT_MULTIPLES, crossing, reference_budgets, smooth
from inform_jax.eval.paired import paired_interval


def curve(checkpoints: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kl [C], mean gold [C], per-prompt gold [C, N]) of a run's held-out readings."""
    kl = np.array([c["kl"] for c in checkpoints], np.float64)
    per_prompt = np.array([c["gold_per_prompt"] for c in checkpoints], np.float64)
    return kl, per_prompt.mean(1), per_prompt


def reading_at(kl: np.ndarray, per_prompt: np.ndarray, target: float, window: int) -> np.ndarray | None:
    """Per-prompt gold [N] at the first crossing of ``target`` (None: not reached; never extrapolated)."""
    where = crossing(kl, target, window=window)
    if where is None:
        return None
    i, frac = where
    return per_prompt[i] if i == 0 else (1 - frac) * per_prompt[i - 1] + frac * per_prompt[i]


def _interval(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    it = paired_interval(a, b, method="t")
    return {"diff": it.mean, "low": it.low, "high": it.high, "half_width": it.half_width}


def overoptimization_heldout(
    checkpoints: list[dict], metrics: list[dict], window: int = 3, drop: float = 0.05
) -> dict[str, Any]:
    """A run's held-out gold: start (SFT), peak of the curve smoothed over ``window`` checkpoints and where
    (checkpoint, iteration, KL), final, rise and fall; and the proxy reward of the training rollouts (smoothed over a
    tenth of the run) at the gold peak's iteration and at the end: hacking shows as gold falling while the proxy
    stays up. ``gold_turned_down``: the smoothed final gold more than ``drop`` below the smoothed peak."""
    kl, gold, _ = curve(checkpoints)
    smoothed = smooth(gold, window)
    peak = int(np.argmax(smoothed))
    iterations = [c["checkpoint"] for c in checkpoints]
    proxy = smooth([m["proxy_reward"] for m in metrics], (len(metrics) // 10) | 1)  # an odd window
    by_iteration = {m["iteration"]: p for m, p in zip(metrics, proxy, strict=True)}
    proxy_at = lambda it: float(by_iteration.get(it, proxy[0] if it == 0 else np.nan))  # noqa: E731
    return {
        "gold_start": float(gold[0]), "gold_peak": float(gold[peak]), "gold_peak_smoothed": float(smoothed[peak]),
        "peak_checkpoint": peak, "iteration_at_gold_peak": int(iterations[peak]), "kl_at_gold_peak": float(kl[peak]),
        "gold_final": float(gold[-1]), "kl_final": float(kl[-1]),
        "rise": float(smoothed[peak] - smoothed[0]), "fall": float(smoothed[peak] - smoothed[-1]),
        "proxy_at_gold_peak": proxy_at(iterations[peak]), "proxy_final": float(proxy[-1]),
        "proxy_start": float(proxy[0]), "hacked_fraction_final": float(checkpoints[-1]["hacked"]),
        "gold_turned_down": bool(smoothed[-1] < smoothed[peak] - drop),
        "proxy_rose_after_gold_peak": bool(float(proxy[-1]) > proxy_at(iterations[peak])),
    }  # fmt: skip


def matched_kl_comparison(
    runs: dict[str, list[dict]],
    reference: str = "PPO",
    multiples=DEFAULT_MULTIPLES,
    window: int = 3,
) -> dict[str, Any]:
    """Every method against ``reference`` at 1x / 3x / 10x the reference's KL at its gold peak and at the end.

    Args:
      runs: method -> held-out readings in training order (the SFT reading first), each with ``kl`` and
        ``gold_per_prompt`` over the same prompts.
      reference: the run whose gold peak sets the budgets (standard-RM PPO).

    Returns:
      {"budgets": {multiple: KL}, "reference_peak": {...}, "methods": {name: {"at": {multiple: None | {"gold",
      "vs_reference": interval}}, "final": {"gold", "vs_reference", "vs_sft"}}}}; intervals are paired t-intervals
      over prompts (95%) of method minus reference (or minus SFT).
    """
    if reference not in runs:
        raise KeyError(f"the reference run {reference!r} is not among {sorted(runs)}")
    ref_kl, ref_gold, ref_prompts = curve(runs[reference])
    budgets = reference_budgets(ref_kl, ref_gold, multiples=multiples, window=window)
    out = {
        "reference": reference,
        "budgets": {str(m): float(v) for m, v in budgets.budgets.items()},
        "reference_peak": {"checkpoint": budgets.peak_index, "kl": budgets.peak_kl, "gold": budgets.peak_gold},
        "methods": {},
    }
    for name, checkpoints in runs.items():
        kl, _, per_prompt = curve(checkpoints)
        at = {}
        for m, target in budgets.budgets.items():
            mine, theirs = reading_at(kl, per_prompt, target, window), reading_at(ref_kl, ref_prompts, target, window)
            if mine is None:
                at[str(m)] = None
                continue
            at[str(m)] = {"gold": float(mine.mean())}
            if theirs is not None and name != reference:
                at[str(m)]["vs_reference"] = _interval(mine, theirs)
        final = {"gold": float(per_prompt[-1].mean()), "vs_sft": _interval(per_prompt[-1], per_prompt[0])}
        if name != reference:
            final["vs_reference"] = _interval(per_prompt[-1], ref_prompts[-1])
        out["methods"][name] = {"at": at, "final": final}
    return out
