"""Equal tuning budgets (PROTOCOL.md sections 3 and 9): each method sweeps its own knobs on tuning seeds that are
never evaluated, is chosen by a criterion fixed in advance, and only then runs on the evaluation seeds.

    sweep(...)      the grids of SWEEP_GRIDS on the tuning seeds, extended where a choice lies on an edge
    inform_table1   InfoRM paper Table 1 under the paired rule: every swept method at its chosen setting on the
                    evaluation seeds, paired with the shared grid (experiments/lab/paired.py)

The criterion is held-out gold at 1x matched KL: the KL of the gold peak of standard-RM PPO at the lab's defaults
on the same seed; a run that never reaches that budget stays inside it and is read at its last checkpoint.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import numpy as np

from experiments.lab import common
from experiments.lab.common import ROOT, job_seeds, provenance, run_grid, spread, write_study
from experiments.lab.grid_studies import FIG4_LABELS
from experiments.lab.paired import MIN_EFFECT_GOLD, ZERO, gold_claims, gold_table, judged, paired_grid, with_runs

TUNING_SEEDS = (100, 101, 102)
PPO_LR_GRID = (5e-5, 1e-4, 2e-4, 4e-4)  # PPO's learning rates; the ensemble and WARM sweep the same (section 18)
# method -> {LabConfig field: values}; every grid has 4 settings (the product of its axes)
SWEEP_GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "PPO": {"actor_lr": PPO_LR_GRID},
    "PPO w/ KL": {"actor_lr": (1e-4, 2e-4), "kl": (0.1, 0.3)},
    "EPPO": {"actor_lr": (1e-4, 2e-4), "eppo_penalty_ratio": (0.1, 0.3)},
    "InfoRM": {"actor_lr": (1e-4, 2e-4), "inform_beta": (0.01, 0.1)},
    # no knob of their own in the lab's PPO (3 members, mean; WARM averages their weights): PPO's grid (section 18)
    "Ensemble RM": {"actor_lr": PPO_LR_GRID},
    "WARM": {"actor_lr": PPO_LR_GRID},
}
SMOKE_GRIDS = {"PPO": {"actor_lr": (1e-4, 2e-4)}, "InfoRM": {"actor_lr": (1e-4,), "inform_beta": (0.01,)}}
EXTENSION_ROUNDS = 2
REFERENCE = ("PPO", {"actor_lr": 1e-4})  # standard-RM PPO at the lab's defaults: the KL budgets' reference


def _ladder(field: str) -> np.ndarray:
    """The values an axis may be extended to: learning rates by factors of 2 around 1e-4, KL coefficients and
    penalty ratios on the half-decade ladder (..., 0.03, 0.1, 0.3, 1, ...), beta by factors of 10."""
    if field == "actor_lr":
        return 1e-4 * 2.0 ** np.arange(-8, 9)
    if field == "inform_beta":
        return 10.0 ** np.arange(-6, 2)
    return np.array([m * 10.0**e for e in range(-5, 2) for m in (1, 3)])


def extend(field: str, value: float, up: bool) -> float:
    """The next value beyond ``value`` on ``field``'s ladder (up or down), rounded to 3 significant digits."""
    ladder = _ladder(field)
    beyond = ladder[ladder > value * (1 + 1e-9)] if up else ladder[ladder < value * (1 - 1e-9)]
    if beyond.size == 0:
        raise ValueError(f"no value on {field}'s ladder beyond {value} ({'up' if up else 'down'})")
    return float(f"{(beyond.min() if up else beyond.max()):.3g}")


def setting_name(method: str, point: dict[str, float]) -> str:
    return f"{method}: " + ", ".join(f"{k} {v:g}" for k, v in sorted(point.items()))


def grid_points(grid: dict[str, tuple[float, ...]]) -> list[dict[str, float]]:
    """Every setting of a grid, in the order its axes list them."""
    fields = list(grid)
    return [dict(zip(fields, values, strict=True)) for values in itertools.product(*grid.values())]


def criterion(reference: list[dict], checkpoints: list[dict]) -> float:
    """Held-out gold at 1x the reference's gold-peak KL (``reference``, ``checkpoints``: held-out readings in
    training order, SFT first, each with "kl" and "gold"); the last checkpoint's gold when never reached."""
    from inform_jax.eval.matched_kl import gold_at_kl, reference_budgets

    budget = reference_budgets([c["kl"] for c in reference], [c["gold"] for c in reference]).budgets[1.0]
    gold = gold_at_kl([c["kl"] for c in checkpoints], [c["gold"] for c in checkpoints], budget)
    return float(checkpoints[-1]["gold"]) if gold is None else gold


def on_edges(point: dict[str, float], tried: list[dict[str, float]]) -> list[tuple[str, bool]]:
    """(axis, up) for each axis on whose end ``point`` lies among all the values ``tried`` on that axis (up: it is
    the largest; an axis holding one value counts as its largest)."""
    edges = []
    for field, value in point.items():
        values = [p[field] for p in tried]
        if value == max(values):
            edges.append((field, True))
        elif value == min(values):
            edges.append((field, False))
    return edges


def sweep(
    methods, seeds, size: dict, work: str, cache: str | None, *, grids=SWEEP_GRIDS, rounds: int = EXTENSION_ROUNDS
) -> dict[str, Any]:
    """Every method's grid on the tuning ``seeds``, chosen by :func:`criterion` (mean over seeds), each choice on
    an edge extended by one ladder step per round for ``rounds`` rounds. Runs live in ``work`` and resume.

    Returns {method: {"points": [{"point", "criterion": {seed: value}, "mean"}], "chosen": point, "edge": [axes
    still on an edge], "rounds": extension rounds run}}."""
    from inform_jax.lab.config import LabConfig

    run_fields = {"bon_samples": 0, "detect_every": LabConfig(**size).ppo_iterations}  # what the criterion skips

    def settings(method: str, points: list[dict]) -> dict[str, dict]:
        return {setting_name(method, p): {**run_fields, **p, "methods": (method,)} for p in points}

    def runs(method: str, points: list[dict]) -> dict[str, dict[int, dict]]:
        return run_grid(settings(method, points), seeds, (), size=size, work=work, cache=cache)

    reference_method, reference_point = REFERENCE
    # The reference and every method's first grid at once: in a job of --jobs, its share of all of them runs before
    # it needs another job's runs (the rounds below read them back, and extend from the choices over every seed).
    first = settings(reference_method, [reference_point])
    for method in methods:
        first |= settings(method, grid_points(grids[method]))
    run_grid(first, seeds, (), size=size, work=work, cache=cache)
    reference = runs(reference_method, [reference_point])[setting_name(reference_method, reference_point)]
    out = {}
    for method in methods:
        tried = grid_points(grids[method])
        for round_ in range(rounds + 1):
            results = runs(method, tried)
            scores = []
            for p in tried:
                per = {s: criterion(reference[s]["heldout"][reference_method],
                                    results[setting_name(method, p)][s]["heldout"][method])
                       for s in seeds}  # fmt: skip
                scores.append({"point": p, "criterion": {str(s): v for s, v in per.items()},
                               "mean": float(np.mean(list(per.values())))})  # fmt: skip
            best = max(range(len(scores)), key=lambda i: (scores[i]["mean"], -i))  # ties: the first listed
            chosen = tried[best]
            # an axis with one value is held fixed, not swept: only swept axes extend
            edges = [(f, up) for f, up in on_edges(chosen, tried) if len(grids[method][f]) > 1]
            if round_ == rounds or not edges:
                break
            tried = tried + [{**chosen, f: extend(f, chosen[f], up)} for f, up in edges]
        out[method] = {"points": scores, "chosen": chosen, "edge": [f for f, _ in edges], "rounds": round_}
    return out


def inform_bottleneck(config, cache: str, folder: str, log=print) -> dict[str, float]:
    """InfoRM's reward model of ``config`` (its beta) on held-out SFT samples (4 per prompt, temperature 1): the
    rate in nats and the active latent dimensions (:func:`inform_jax.lab.arms.bottleneck_stats`); read back from
    ``folder``/bottleneck.json when computed for this configuration."""
    from inform_jax.lab.config import config_key, same_lab_key
    from inform_jax.lab.keyed_cache import cached_result

    def compute() -> dict[str, float]:
        from inform_jax.lab.arms import bottleneck_stats, score_rows, sft_samples
        from inform_jax.lab.stages import Lab

        lab = Lab(config, cache, log=log)
        sft = lab.sft_policy()
        rows = sft_samples(lab, sft, samples_per_prompt=4, seed=config.seed)
        scored = score_rows(lab, lab.reward_model("inform", sft), rows["prompt_ids"], rows["prompt_mask"],
                            rows["tokens"], rows["mask"])  # fmt: skip
        return bottleneck_stats(scored["latent"], scored["logvar"])

    key = {"config": config_key(config)}
    return cached_result(os.path.join(folder, "bottleneck.json"), key, compute, same_lab_key)


# ---------------------------------------------------------------------------------------- InfoRM Table 1

TABLE1_RIVALS = ("PPO", "PPO w/ KL", "Ensemble RM", "WARM")
# The InfoRM paper's Table 1, InfoRM's (win, lose) in percent against each opponent on Anthropic-Helpful,
# Anthropic-Harmless, AlpacaFarm and TL;DR: half its mean win-minus-lose margin is each claim's minimum effect
PAPER_TABLE1 = {
    "SFT": ((57.0, 16.0), (57.1, 16.6), (48.9, 20.2), (73.1, 9.5)),
    "PPO": ((54.5, 12.0), (54.2, 13.3), (45.1, 23.5), (70.4, 11.6)),
    "PPO w/ KL": ((49.0, 19.5), (44.3, 11.4), (38.5, 26.3), (68.6, 9.8)),
    "Ensemble RM": ((43.1, 23.8), (49.3, 15.9), (37.3, 24.9), (61.4, 10.5)),
    "WARM": ((41.1, 25.5), (49.3, 12.2), (30.3, 29.2), (63.1, 18.3)),
}


def half_paper_margin(opponent: str) -> float:
    """Half the paper's mean (over its four datasets) win-minus-lose of InfoRM against ``opponent``, as a share."""
    return float(np.mean([w - lose for w, lose in PAPER_TABLE1[opponent]]) / 100 / 2)


def _register_margin_measure() -> None:
    from inform_jax.lab.verdicts import measure

    @measure("win minus lose beyond half the paper's margin")
    def beyond_margin(summary: dict, key: str) -> float:
        """InfoRM's win minus lose share against an opponent on the held-out prompts, minus half the paper's
        margin (0 for the comparator ZERO): above 0 is the paper's direction at half its size."""
        return 0.0 if key == ZERO else float(summary["win_minus_lose"][key] - half_paper_margin(key))


_register_margin_measure()


def tuned_summary(grid: dict, tuned_runs: dict[str, dict], margin: float) -> dict:
    """One evaluation seed's summary with each swept method's grid run replaced by its run at the chosen setting
    (``tuned_runs``: method -> that run's summary; :func:`experiments.lab.paired.with_runs`, so the KL budgets
    stay the grid's PPO's), and InfoRM's win / tie / lose and win minus lose against SFT and each rival."""
    from inform_jax.eval.winrate import compare_scores

    out = with_runs(grid, {method: (method, run) for method, run in tuned_runs.items()})
    finals = out["final_gold_per_prompt"]
    wtl = {rival: compare_scores(finals["InfoRM"], grid["sft_gold_per_prompt"] if rival == "SFT" else finals[rival],
                                 margin=margin) for rival in PAPER_TABLE1}  # fmt: skip
    out["win_tie_lose_table1"] = wtl
    out["win_minus_lose"] = {rival: v["win"] - v["lose"] for rival, v in wtl.items()}
    return out


def inform_table1(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """InfoRM paper Table 1 under the paired rule (PROTOCOL.md sections 9 and 18): PPO, PPO w/ KL, EPPO, InfoRM,
    Ensemble RM and WARM swept on the tuning seeds (equal grids, :func:`sweep`), each run at its choice on the
    evaluation ``seeds`` paired with the shared grid; InfoRM against each rival in held-out gold at 1x matched KL
    and at the end, and its win minus lose by the gold judge against half the paper's margin. Smoke: a 2-setting
    PPO grid and one InfoRM setting, tuned on the first seed, one extension round."""
    from inform_jax.lab.config import LabConfig

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    root = os.path.dirname(os.path.abspath(work))
    grids, tuning, rounds = (SMOKE_GRIDS, tuple(seeds[:1]), 1) if smoke else (SWEEP_GRIDS, TUNING_SEEDS, None)
    if common.TUNED_FROM:
        swept, bottleneck, tuned_from = recorded_sweep(common.TUNED_FROM, size, tuning, grids)
    else:
        swept = sweep(tuple(grids), tuning, size, os.path.join(root, "tuning-sweep"), cache, grids=grids,
                      rounds=EXTENSION_ROUNDS if rounds is None else rounds)  # fmt: skip
        bottleneck = _bottleneck_per_beta(swept["InfoRM"], tuning, size, cache, os.path.join(root, "tuning-sweep"))
        tuned_from = None
    grid = paired_grid(seeds, size, work, cache)
    defaults = LabConfig(**size)
    tuned = {m: r["chosen"] for m, r in swept.items()
             if any(getattr(defaults, f) != v for f, v in r["chosen"].items())}  # fmt: skip
    from experiments.lab.paired import PAIRED_GRID

    settings = {setting_name(m, p): {**PAIRED_GRID["paired grid"], **p, "methods": (m,)} for m, p in tuned.items()}
    runs = run_grid(settings, seeds, (), size=size, work=os.path.join(root, "tuned"), cache=cache) if tuned else {}
    per_seed = {s: tuned_summary(grid[s], {m: runs[setting_name(m, p)][s] for m, p in tuned.items()},
                                 defaults.tie_margin) for s in seeds}  # fmt: skip
    label = lambda m: FIG4_LABELS.get(m, m) + (" (tuned)" if m in swept else "")  # noqa: E731
    claim_rows, rows = judged(per_seed, gold_claims("InfoRM Table 1", "InfoRM", TABLE1_RIVALS, label),
                              MIN_EFFECT_GOLD)  # fmt: skip
    from inform_jax.lab.verdicts import Claim

    margin_claims = [Claim(f"InfoRM Table 1: {label('InfoRM')} wins more than it loses against "
                           f"{'SFT' if r == 'SFT' else label(r)} by at least half the paper's margin "
                           f"({half_paper_margin(r):.3f}; the measure: win minus lose less that)", r, ZERO,
                           "win minus lose beyond half the paper's margin") for r in PAPER_TABLE1]  # fmt: skip
    margin_rows, margin_full = judged(per_seed, margin_claims, 0.0)
    wtl = {f"{label('InfoRM')} vs {'SFT' if r == 'SFT' else label(r)}":
           {k: spread([s["win_tie_lose_table1"][r][k] for s in per_seed.values()]) for k in ("win", "tie", "lose")}
           | {"win minus lose": spread([s["win_minus_lose"][r] for s in per_seed.values()]),
              "half the paper's margin": half_paper_margin(r)} for r in PAPER_TABLE1}  # fmt: skip
    methods = ("InfoRM", *TABLE1_RIVALS, *(m for m in swept if m not in ("InfoRM", *TABLE1_RIVALS)))
    payload = {"study": "inform_table1", "rule": "paired",
               "title": "InfoRM Table 1 (every swept method at its choice on the tuning seeds; held-out gold at "
                        "matched KL; win / tie / lose by the gold judge against half the paper's margin)",
               "seeds": list(seeds), "size": size, "tuning_seeds": list(tuning), "tie_margin": defaults.tie_margin,
               "claims": claim_rows + margin_rows, "paired": rows + margin_full,
               "tuning": {m: {k: v for k, v in r.items()} for m, r in swept.items()},
               "chosen": {m: r["chosen"] for m, r in swept.items()}, "bottleneck": bottleneck, "tuned_from": tuned_from,
               "table": gold_table(per_seed, methods), "win_tie_lose": wtl, "figures": [],
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("inform_table1", payload, out)
    return payload


def recorded_sweep(path: str, size: dict, tuning: tuple[int, ...], grids: dict) -> tuple[dict, dict, dict]:
    """The tuning sweep recorded in an inform_table1 ``study.json`` (``--tuned-from``): (its ``tuning`` as
    :func:`sweep` returns it, its bottleneck table, where it was swept: {"path", "provenance"} of the run that ran
    the sweep, carried over when ``path`` itself read it from another). Refused, naming the file, unless it was
    swept at the same size, on the same tuning seeds and over the same methods."""
    try:
        with open(path) as f:
            study = json.load(f)
    except (OSError, ValueError) as error:
        raise SystemExit(f"--tuned-from {path}: cannot read an inform_table1 study.json ({error})") from None
    missing = [k for k in ("study", "size", "tuning_seeds", "tuning", "bottleneck", "provenance") if k not in study]
    if missing or study["study"] != "inform_table1":
        raise SystemExit(f"--tuned-from {path}: not an inform_table1 study.json (missing {missing})")
    for what, recorded, here in (("size", study["size"], size), ("tuning seeds", study["tuning_seeds"], list(tuning)),
                                 ("swept methods", sorted(study["tuning"]), sorted(grids))):  # fmt: skip
        if recorded != here:
            raise SystemExit(f"--tuned-from {path}: its sweep has {what} {recorded}, this run {here}")
    where = os.path.abspath(path)
    where = os.path.relpath(where, ROOT) if where.startswith(ROOT + os.sep) else where
    origin = study.get("tuned_from") or {"path": where, "provenance": study["provenance"]}
    return study["tuning"], study["bottleneck"], origin


def _bottleneck_per_beta(inform: dict, seeds, size: dict, cache: str | None, work: str) -> dict[str, dict]:
    """{"beta B": rate_nats / active_dims spreads over the tuning seeds} for every beta the InfoRM sweep tried."""
    from inform_jax.lab.config import LabConfig
    from inform_jax.lab.demo import default_cache

    betas = sorted({p["point"]["inform_beta"] for p in inform["points"]})
    table = {}
    for beta in betas:
        folder = lambda s, beta=beta: os.path.join(work, "bottleneck", f"beta{beta:g}", f"seed{s}")  # noqa: E731
        stats = [inform_bottleneck(LabConfig(**{**size, "seed": s, "inform_beta": beta}), cache or default_cache(),
                                   folder(s)) for s in job_seeds(seeds)]  # fmt: skip
        table[f"beta {beta:g}"] = {k: spread([x[k] for x in stats]) for k in ("rate_nats", "active_dims")}
    return table
