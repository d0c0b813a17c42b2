"""The lab's studies: each reproduces one figure or table of the seed papers on the synthetic world over seeds
and returns a payload with the measurements, the papers' claims and a verdict per claim.

Every study takes (seeds, size, work, cache, out) and writes results/<name>/study.json plus its figures.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from experiments.lab.arms_study import arms, no_exploit, shortcut_a, shortcut_b, shortcut_b_methods
from experiments.lab.common import (
    compare_verdict,
    first_seeds,
    job_seeds,
    provenance,
    run_grid,
    spread,
    write_study,
)
from experiments.lab.decomposition_study import decomposition_paired
from experiments.lab.design_study import design
from experiments.lab.grid_studies import detection, energy, eppo_tables, fig4
from experiments.lab.paired import best_of_n, gold_table
from experiments.lab.sweeps import inform_table1


def _pm(values) -> str:
    s = spread(values)
    return f"{s['mean']:.3f} +- {s['std']:.3f}"


DECOMPOSITION_BIAS = 0.95  # the share of training pairs a response-only rule fits (0.85 leaves BT near ceiling)
# At 1 and 2 epochs the seeds disagree on the adversarial set's accuracy and on the prompt-free shares; these many
# more seeds of plain BT and prioritized training at those budgets (~8 min) say which way the differences go.
DECOMPOSITION_EXTRA_SEEDS = 7
DECOMPOSITION_SHORT_BUDGETS = (32, 64)
# The toy studies (old rule, their own sets and models) run on the first this-many seeds the lab is given, so that
# the whole lab over 10 evaluation seeds runs them at the size their results were recorded at (3 seeds, and the
# extra ones at the short budgets): 10 seeds at every budget would triple their time for no claim of the protocol.
TOY_SEEDS = 3


def _toy_run(toy_studies, seeds, args: list[str]) -> None:
    """Run ``toy_studies`` on this process's share of ``seeds`` (all of them, or in a job of ``--jobs`` its share:
    ``common.job_seeds``); every finished run is kept in the work folder, so the final pass over all the seeds reads
    the jobs' runs back."""
    share = job_seeds(seeds)
    if share:
        toy_studies(["--seeds", *map(str, share), *args])


def paired_difference(ours, theirs, *, resamples: int = 10000) -> dict[str, Any]:
    """Per-seed ours - theirs: its mean, a 95% bootstrap interval of the mean (fixed resampling seed, so the page
    is reproducible), and how many seeds are higher, lower and equal."""
    d = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
    means = d[np.random.default_rng(0).integers(0, d.size, (resamples, d.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(d.mean()), "ci95": [float(low), float(high)], "higher": int((d > 0).sum()),
            "lower": int((d < 0).sum()), "equal": int((d == 0).sum())}  # fmt: skip


def _paired_text(diff: dict[str, Any], what: str) -> str:
    low, high = diff["ci95"]
    return (f"{what} per seed: mean {diff['mean']:+.3f} (95% bootstrap interval {low:+.3f} to {high:+.3f}), above 0 "
            f"in {diff['higher']}, below in {diff['lower']}, 0 in {diff['equal']} seeds")  # fmt: skip


def _toy_budget(result: dict, steps: int) -> str:
    epochs = steps * result["batch_size"] / result["n_train"]
    return f"{steps} steps ({epochs:g} epoch{'' if epochs == 1 else 's'})"


def _toy_runs(*results: dict) -> list[dict]:
    """toy_studies' runs of one or more results.json, flat: each run's accuracies and (dr1, dr2) summary."""
    return [{**r, **r["train_decomposition"]} for result in results for r in result["runs"]]


def _toy_per_seed(runs: list[dict], seeds, kind: str, steps: int, method: str, field: str) -> list[float]:
    """``field`` of the ``method`` run on the ``kind`` set at ``steps``, one value per seed of ``seeds``."""
    rows = {r["seed"]: r[field] for r in runs if (r["set"], r["steps"], r["method"]) == (kind, steps, method)}
    return [rows[s] for s in seeds]


def _toy_table_and_claims(result: dict) -> tuple[dict, list[dict]]:
    """From toy_studies' results.json: per set and budget the methods' accuracies and prompt-free shares over the
    seeds, and the claims that prioritized training ("dir") lowers the share below plain BT's and is more
    accurate than plain BT and RRM (each judged per seed)."""
    runs = _toy_runs(result)

    def per_seed(kind: str, steps: int, method: str, field: str) -> list[float]:
        return _toy_per_seed(runs, result["seeds"], kind, steps, method, field)

    def budget(steps: int) -> str:
        return _toy_budget(result, steps)

    sets = sorted({r["set"] for r in result["runs"]})
    methods = list(dict.fromkeys(r["method"] for r in result["runs"]))
    accuracies = ("debiased_accuracy", "adversarial_accuracy")
    fields = (*accuracies, "prompt_free_share")
    table = {
        f"{kind} set, {budget(steps)}": {m: {f: spread(per_seed(kind, steps, m, f)) for f in fields} for m in methods}
        for kind in sets
        for steps in result["steps"]
    }  # fmt: skip
    claims = []
    for kind in sets:
        for steps in result["steps"]:
            ours, theirs = (
                per_seed(kind, steps, "dir", "prompt_free_share"),
                per_seed(kind, steps, "standard", "prompt_free_share"),
            )
            claims.append({
                "claim": f"{kind} set, {budget(steps)}: prioritized training lowers the prompt-free share of the "
                         "training pairs' reward gap, mean abs(dr2) / (mean abs(dr1) + mean abs(dr2)), below plain "
                         "Bradley-Terry's (the shift toward the dr1 axis of the paper's Figs. 3-4)",
                "measured": f"{_pm(ours)} vs {_pm(theirs)}",
                "verdict": compare_verdict(ours, theirs, higher=False),
            })  # fmt: skip
            for rival, name in (("standard", "plain Bradley-Terry"), ("rrm", "RRM")):
                for field, what in zip(
                    accuracies, ("debiased held-out pairs", "adversarial held-out pairs"), strict=True
                ):
                    ours, theirs = per_seed(kind, steps, "dir", field), per_seed(kind, steps, rival, field)
                    claims.append({
                        "claim": f"{kind} set, {budget(steps)}: prioritized training is more accurate than {name} "
                                 f"on {what}",
                        "measured": f"{_pm(ours)} vs {_pm(theirs)}",
                        "verdict": compare_verdict(ours, theirs),
                    })  # fmt: skip
    return table, claims


def decomposition(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """Reward decomposition (Mao et al. 2025): plain Bradley-Terry, RRM and prioritized training (small
    prompt-free gap first) on the length-biased and the adversarial-prompt sets, each method at 1, 2 and 19
    epochs; debiased held-out accuracy (all pairs and the adversarial ones), the prompt-free share of the
    training pairs' gap, and the (dr1, dr2) quadrant plots before / after prioritized training. At 1 and 2 epochs,
    where the seeds disagree, plain BT and prioritized training also run on DECOMPOSITION_EXTRA_SEEDS more seeds
    of both sets, and the adversarial set's accuracy claim and both sets' prompt-free share claims are judged on
    every seed, with the paired difference.
    Runs ``experiments/decomposition/toy_studies.py`` (tiny reward models from scratch; ``size`` is not used) on the
    first ``TOY_SEEDS`` of ``seeds``."""
    from experiments.decomposition.toy_studies import main as toy_studies

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    seeds = first_seeds(seeds, TOY_SEEDS)
    smoke_flag = ["--smoke"] if smoke else []
    _toy_run(toy_studies, seeds, ["--bias", str(DECOMPOSITION_BIAS), "--out", out, "--work", work, *smoke_flag])
    # the smoke size runs one extra seed: the code path is the same, and each seed is a dozen tiny trainings
    extra_seeds = list(range(max(seeds) + 1, max(seeds) + 1 + (1 if smoke else DECOMPOSITION_EXTRA_SEEDS)))
    extra_out = os.path.join(work, "extra-seeds")  # its quadrant plots are of seed 3, not for the page
    _toy_run(toy_studies, extra_seeds, ["--bias", str(DECOMPOSITION_BIAS), "--out", extra_out, "--work", extra_out,
                                        "--methods", "standard", "dir",
                                        "--steps", *map(str, DECOMPOSITION_SHORT_BUDGETS), *smoke_flag])  # fmt: skip
    with open(os.path.join(out, "results.json")) as f:
        result = json.load(f)
    ran = result["seeds"]
    with open(os.path.join(extra_out, "results.json")) as f:
        extra = json.load(f)

    table, claims = _toy_table_and_claims(result)
    sets = sorted({r["set"] for r in result["runs"]})

    # The short budgets over the main seeds and the extra ones, plain BT vs prioritized: the adversarial set's
    # accuracy (the length set's stays at 0.5 there for both) and both sets' prompt-free shares.
    every_seed = list(ran) + list(extra["seeds"])
    pooled = _toy_runs(result, extra)

    def pooled_values(kind: str, steps: int, method: str, field: str) -> list[float]:
        return _toy_per_seed(pooled, every_seed, kind, steps, method, field)

    checks = [("adversarial", "debiased_accuracy", True, "is more accurate than plain Bradley-Terry on debiased "
               "held-out pairs")] + [(kind, "prompt_free_share", False, "lowers the prompt-free share of the training "
                                     "pairs' reward gap below plain Bradley-Terry's") for kind in sets]  # fmt: skip
    for kind, field, higher, what in checks:
        for steps in extra["steps"]:
            ours, theirs = pooled_values(kind, steps, "dir", field), pooled_values(kind, steps, "standard", field)
            diff = paired_difference(ours, theirs) if higher else paired_difference(theirs, ours)
            claims.append({
                "claim": f"{kind} set, {_toy_budget(result, steps)}, {len(every_seed)} seeds: prioritized training "
                         f"{what}",
                "measured": f"{_pm(ours)} vs {_pm(theirs)}; "
                            + _paired_text(diff, "prioritized minus BT" if higher else "BT minus prioritized"),
                "verdict": compare_verdict(ours, theirs, higher=higher),
                "paired_difference": diff,
            })  # fmt: skip
    payload = {"study": "decomposition", "title": "Reward decomposition: plain BT, RRM and prioritized training "
               f"(training bias {DECOMPOSITION_BIAS})", "seeds": list(ran), "extra_seeds": list(extra["seeds"]),
               "size": {"steps": result["steps"]},
               "table": table, "claims": claims, "quadrants": result["quadrants"],
               "figures": [q["figure"] for q in result["quadrants"].values()],
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("decomposition", payload, out)
    return payload


SLOW_RULE_BUDGETS = (150, 300, 600)  # 4.7, 9.4 and 18.75 epochs: plain BT reached 0.86, 0.98 and 0.98


def decomposition_slow_rule(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False):
    """Reward decomposition on the shifted-count set, whose prompt rule a 2-layer reward model learns slowly
    (the adversarial-prompt set's is learned within 2 epochs): plain BT, RRM and prioritized training at 4.7, 9.4
    and 18.75 epochs, where plain BT still has headroom; the same claims, table and quadrant plots as the
    decomposition study. Runs ``experiments/decomposition/toy_studies.py --sets shifted_count`` on the first
    ``TOY_SEEDS`` of ``seeds``."""
    from experiments.decomposition.toy_studies import main as toy_studies

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    args = ["--bias", str(DECOMPOSITION_BIAS), "--out", out, "--work", work, "--sets", "shifted_count",
            "--methods", "standard", "rrm", "dir", "--steps", *map(str, SLOW_RULE_BUDGETS)]  # fmt: skip
    _toy_run(toy_studies, first_seeds(seeds, TOY_SEEDS), args + (["--smoke"] if smoke else []))
    with open(os.path.join(out, "results.json")) as f:
        result = json.load(f)
    table, claims = _toy_table_and_claims(result)
    payload = {"study": "decomposition_slow_rule", "title": "Reward decomposition on a slowly learned prompt rule: "
               f"the shifted-count set (training bias {DECOMPOSITION_BIAS})", "seeds": list(result["seeds"]),
               "size": {"steps": result["steps"]}, "table": table, "claims": claims, "quadrants": result["quadrants"],
               "figures": [q["figure"] for q in result["quadrants"].values()],
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("decomposition_slow_rule", payload, out)
    return payload


PLANTED_CLAIMS = (
    ("the planted good reward model (noise-free, correlation-free labels) beats standard-RM PPO at PPO's peak KL "
     "(expected: reproduced)", "Planted good RM", "gold at 1x KL", +1),
    ("the planted good reward model ends above standard-RM PPO (expected: reproduced)", "Planted good RM",
     "final gold", +1),
    ("the standard RM with another training seed beats standard-RM PPO at PPO's peak KL (a null: expected not "
     "reproduced)", "Planted RM seed", "gold at 1x KL", +1),
    ("EPPO with its penalty's sign flipped beats standard-RM PPO at PPO's peak KL (broken: expected not reproduced)",
     "Planted flipped EPPO", "gold at 1x KL", +1),
)  # fmt: skip


def planted_table(per_seed: dict) -> dict[str, dict[str, dict]]:
    """Per method, over seeds: held-out gold at its peak, at 1x PPO's peak KL (seeds that reach it) and at the end
    (``paired.gold_table`` over the methods each seed's matched-KL reading holds)."""
    methods = next(iter(per_seed.values()))["matched_kl"]["methods"]
    return gold_table(per_seed, methods, ("peak gold", "gold at 1x KL", "final gold"), sft=False)


def planted(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """The lab validated on planted methods (PROTOCOL.md section 4), under the paired rule: per seed the same world,
    SFT policy, prompts and sampling keys for every method; each claim's per-seed difference against standard-RM
    PPO with a Holm-corrected paired t-interval against a minimum effect of 0.05 gold."""
    from inform_jax.lab.config import PLANTED_METHODS
    from inform_jax.lab.verdicts import Claim, claim_text, judge_claims

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    grid = run_grid({"planted": {}}, seeds, ("PPO", *PLANTED_METHODS), size=size, work=work, cache=cache)
    per_seed = grid["planted"]
    claims = [Claim(text, method, "PPO", measure, direction) for text, method, measure, direction in PLANTED_CLAIMS]
    rows = judge_claims(per_seed, claims, min_effect=0.05)
    payload = {
        "study": "planted", "rule": "paired",
        "title": "The lab validated on planted methods (paired seeds, Holm-corrected t-intervals, minimum effect 0.05)",
        "seeds": list(seeds), "provenance": provenance(time.perf_counter() - start),
        "claims": [{"claim": r["claim"], "measured": claim_text(r), "verdict": r["verdict"]} for r in rows],
        "paired": rows, "figures": [], "table": planted_table(per_seed),
        "per_seed": {str(s): {"matched_kl": v["matched_kl"], "overoptimization": v["overoptimization"],
                              "eppo_calibration": v.get("eppo_calibration")} for s, v in per_seed.items()},
    }  # fmt: skip
    write_study("planted", payload, out)
    return payload


STUDIES = {
    "planted": planted,
    "best_of_n": best_of_n,
    "arms": arms,
    "shortcut_b": shortcut_b,
    "shortcut_b_methods": shortcut_b_methods,
    "shortcut_a": shortcut_a,
    "no_exploit": no_exploit,
    "fig4": fig4,
    "inform_table1": inform_table1,
    "energy": energy,
    "eppo_tables": eppo_tables,
    "design": design,
    "detection": detection,
    "decomposition_paired": decomposition_paired,
    "decomposition": decomposition,
    "decomposition_slow_rule": decomposition_slow_rule,
}
