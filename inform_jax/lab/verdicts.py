"""The lab's verdicts under the paired rule (experiments/lab/PROTOCOL.md section 3, "Verdicts").

A claim compares a method with a comparator (PPO, SFT or another method) on one measure, seed by seed: the same
world, SFT policy, prompts and sampling keys per seed, so each seed gives one paired difference. The family of
claims of a study is Holm-corrected: each claim's interval is a t-interval at its Holm level, and the verdict reads
the interval against a minimum effect stated in gold units: *reproduced* (the interval lies beyond the minimum
effect in the claimed direction), *refuted* (it excludes an effect that large), *inconclusive* (otherwise), and
*uninformative* where every seed ties or sits at a ceiling. A seed on which either side has no reading (a KL budget
"not reached") is left out of that claim, and the count of seeds used is reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from inform_jax.eval.paired import holm, holm_levels, paired_interval, paired_p_value, uninformative, verdict

# measure name -> how to read it from one seed's demo summary for a method (None: no reading on that seed)
MEASURES: dict[str, Callable[[dict, str], float | None]] = {}


def measure(name: str):
    def register(fn):
        MEASURES[name] = fn
        return fn

    return register


def _at(summary: dict, method: str, multiple: str) -> float | None:
    if method == "SFT":
        return float(summary["sft_heldout"]["gold"])
    reading = summary["matched_kl"]["methods"][method]["at"][multiple]
    return None if reading is None else float(reading["gold"])


@measure("gold at 1x KL")
def gold_at_1x(summary: dict, method: str) -> float | None:
    """Held-out gold where the method's smoothed KL first reaches the KL of PPO's gold peak."""
    return _at(summary, method, "1")


@measure("gold at 3x KL")
def gold_at_3x(summary: dict, method: str) -> float | None:
    return _at(summary, method, "3")


@measure("final gold")
def final_gold(summary: dict, method: str) -> float | None:
    """Held-out gold at the method's last checkpoint."""
    if method == "SFT":
        return float(summary["sft_heldout"]["gold"])
    return float(summary["matched_kl"]["methods"][method]["final"]["gold"])


@measure("peak gold")
def peak_gold(summary: dict, method: str) -> float | None:
    """The highest held-out gold along the run (the smoothed curve's peak checkpoint)."""
    return float(summary["overoptimization"][method]["gold_peak"])


@dataclass(frozen=True)
class Claim:
    """``method`` beats ``comparator`` on ``measure`` by at least the minimum effect (``direction`` +1), or falls
    below it (-1)."""

    text: str
    method: str
    comparator: str
    measure: str = "gold at 1x KL"
    direction: int = +1


def paired_values(per_seed: Mapping[int, dict], claim: Claim) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(seeds with both readings, method values [S], comparator values [S])."""
    read = MEASURES[claim.measure]
    seeds, ours, theirs = [], [], []
    for seed, summary in per_seed.items():
        a, b = read(summary, claim.method), read(summary, claim.comparator)
        if a is not None and b is not None:
            seeds.append(seed)
            ours.append(a)
            theirs.append(b)
    return seeds, np.asarray(ours, np.float64), np.asarray(theirs, np.float64)


def judge_claims(
    per_seed: Mapping[int, dict], claims: Sequence[Claim], *, min_effect: float = 0.05, family_alpha: float = 0.05
) -> list[dict]:
    """Every claim's paired difference over seeds, Holm-corrected over the family, with its verdict.

    Returns one dict per claim: text, method, comparator, measure, seeds (used) and seeds_missing, mean of each
    side, the difference's mean / low / high / half_width at the claim's Holm level, the level, the Holm-adjusted
    p-value (two-sided paired t), and the verdict."""
    rows, p_values, values = [], [], []
    for claim in claims:
        seeds, ours, theirs = paired_values(per_seed, claim)
        values.append((ours, theirs))
        row = {"claim": claim.text, "method": claim.method, "comparator": claim.comparator, "measure": claim.measure,
               "direction": claim.direction, "seeds": seeds,
               "seeds_missing": [s for s in per_seed if s not in seeds]}  # fmt: skip
        if len(seeds) < 2:
            row.update(verdict="inconclusive", note=f"{len(seeds)} seed(s) with both readings")
            p_values.append(1.0)
        elif uninformative(ours, theirs):
            row.update(verdict="uninformative", ours=float(ours.mean()), theirs=float(theirs.mean()))
            p_values.append(1.0)
        else:
            row.update(ours=float(ours.mean()), theirs=float(theirs.mean()), differences=(ours - theirs).tolist())
            p_values.append(paired_p_value(ours, theirs))
        rows.append(row)
    adjusted = holm(p_values)
    levels = holm_levels(p_values, family_alpha)
    for row, claim, (ours, theirs), p_adj, level in zip(rows, claims, values, adjusted, levels, strict=True):
        row["p_holm"] = float(p_adj)
        if "differences" not in row:
            continue
        interval = paired_interval(ours, theirs, level=float(level), method="t")
        row.update(level=float(level), diff=interval.mean, low=interval.low, high=interval.high,
                   half_width=interval.half_width,
                   verdict=verdict(interval, min_effect=min_effect, direction=claim.direction))  # fmt: skip
    return rows


def claim_text(row: dict) -> str:
    """A claim's measured cell: the sides' means, the difference with its interval and half-width, the seeds."""
    if "diff" not in row:
        return row.get("note", "every seed ties or sits at a ceiling")
    return (f"{row['ours']:.3f} vs {row['theirs']:.3f}: difference {row['diff']:+.3f} "
            f"[{row['low']:+.3f}, {row['high']:+.3f}] (half-width {row['half_width']:.3f}, {row['level']:.1%} level, "
            f"Holm p {row['p_holm']:.3g}) over {len(row['seeds'])} seeds"
            + (f"; no reading on seeds {row['seeds_missing']}" if row["seeds_missing"] else ""))  # fmt: skip
