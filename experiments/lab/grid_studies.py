"""The seed papers' PPO claims, each read from the one paired grid (experiments/lab/paired.py; PROTOCOL.md section 8).

    fig4         InfoRM paper Fig. 4: InfoRM against the standard RM, its KL-penalized PPO, the ensemble and WARM
    eppo_tables  EPPO paper Tables 1-2, Fig. 5: EPPO against PPO, PPO w/ KL, PPO w/ LP, the ensemble and WARM
    energy       EPPO paper Figs. 1-2: the final layer's energy loss under PPO and EPPO
    detection    InfoRM's detection: CSI in the latent space, CSI-guided stopping, every alarm as a detector

Each gold claim is a per-seed paired difference judged with a Holm-corrected t-interval against 0.05 gold; the
energy and CSI claims form their own families with a minimum effect of 0 in their units.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from experiments.lab.common import binned_mean_curve, over_seeds, provenance, spread, write_study
from experiments.lab.paired import (
    MIN_EFFECT_GOLD,
    TEACHER_FORCED,
    ZERO,
    baseline_rows,
    final_csi,
    gold_claims,
    gold_table,
    heldout_selection,
    judged,
    layer_shift,
    paired_grid,
    teacher_forced_grid,
)
from inform_jax.lab.verdicts import Claim

FIG4_RIVALS = ("PPO", "PPO w/ KL", "Ensemble RM", "WARM")
FIG4_LABELS = {"PPO": "Standard RM", "PPO w/ KL": "Standard RM w/ KL"}  # the InfoRM paper's names
EPPO_RIVALS = ("PPO", "PPO w/ KL", "PPO w/ LP", "Ensemble RM", "WARM")
EPPO_LABELS = {"Ensemble RM": "ERM-Mean"}  # the EPPO paper's names
DETECTION_POLICIES = {"PPO": "Standard RM", "InfoRM": "InfoRM"}  # method -> the paper's name of the policy
DETECTION_SPACES = {"latents": "InfoRM latent space", "control": "standard RM hidden space (control)"}


def _payload(name: str, title: str, seeds, size: dict, claim_rows, rows, start: float, **extra) -> dict[str, Any]:
    return {"study": name, "rule": "paired", "title": title, "seeds": list(seeds), "size": size,
            "claims": claim_rows, "paired": rows, **extra,
            "provenance": provenance(time.perf_counter() - start)}  # fmt: skip


def fig4(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """InfoRM paper Fig. 4 at 25% label noise: held-out gold and proxy against the exact KL from SFT, and InfoRM
    against each rival at 1x matched KL and at the end."""
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    per_seed = paired_grid(seeds, size, work, cache)
    label = lambda m: FIG4_LABELS.get(m, m)  # noqa: E731
    claim_rows, rows = judged(per_seed, gold_claims("InfoRM Fig. 4", "InfoRM", FIG4_RIVALS, label), MIN_EFFECT_GOLD)
    methods = ("Oracle", *FIG4_RIVALS, "InfoRM")
    figure = _heldout_figure(os.path.join(out, "gold-proxy-vs-kl.png"), per_seed, methods, label)
    payload = _payload("fig4", "InfoRM simulated RLHF (paper Fig. 4; 25% label noise, held-out gold at matched KL)",
                       seeds, size, claim_rows, rows, start, table=gold_table(per_seed, methods),
                       baseline=baseline_rows(per_seed), figures=[os.path.basename(figure)])  # fmt: skip
    write_study("fig4", payload, out)
    return payload


def _heldout_figure(path: str, per_seed: dict, methods, label) -> str:
    """Per method: held-out gold (top) and the rollouts' proxy (bottom, by iteration) against the exact KL from
    SFT, binned over seeds (mean +- sd); panels share their y-axes."""
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(2.6 * len(methods), 3.2), squeeze=False, sharey=True)
    for col, m in enumerate(methods):
        ax = axes[0][col]
        runs = [s["heldout"][m] for s in per_seed.values()]
        x, mean, std = binned_mean_curve(runs, "kl", "gold", bins=6)
        ax.plot(x, mean, "-o", ms=3, color="tab:green")
        ax.fill_between(x, mean - std, mean + std, color="tab:green", alpha=0.15)
        ax.axhline(np.mean([s["sft_heldout"]["gold"] for s in per_seed.values()]), color="grey", lw=0.8, ls=":")
        ax.set_title(label(m), fontsize=9)
        ax.set_xlabel("exact KL from SFT (held out)")
    axes[0][0].set_ylabel("held-out gold (SFT dotted)")
    return save_figure(plt, fig, path, dpi=110)


def eppo_tables(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """EPPO Tables 1-2 and Fig. 5: EPPO against each baseline in held-out gold at 1x matched KL and at the end
    (the verdicts), and the win / tie / lose tables by the gold judge (description)."""
    from inform_jax.eval.winrate import compare_scores
    from inform_jax.lab.config import LabConfig

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    per_seed = paired_grid(seeds, size, work, cache)
    label = lambda m: EPPO_LABELS.get(m, m)  # noqa: E731
    claim_rows, rows = judged(per_seed, gold_claims("EPPO Table 1", "EPPO", EPPO_RIVALS, label), MIN_EFFECT_GOLD)
    # the teacher-forced reference beside the sampled one (a family of its own: not a claim of the paper)
    check = teacher_forced_grid(seeds, size, work, cache, per_seed)
    tf_claims = gold_claims("EPPO reference", TEACHER_FORCED, ("PPO", "EPPO"))
    tf_rows, tf_full = judged(per_seed, tf_claims, MIN_EFFECT_GOLD)
    claim_rows, rows = claim_rows + tf_rows, rows + tf_full
    margin = LabConfig(**size).tie_margin
    tables = {}
    for rival in (None, *EPPO_RIVALS):
        versus = [compare_scores(s["final_gold_per_prompt"]["EPPO"],
                                 s["sft_gold_per_prompt"] if rival is None else s["final_gold_per_prompt"][rival],
                                 margin=margin) for s in per_seed.values()]  # fmt: skip
        name = f"EPPO vs {'SFT' if rival is None else label(rival)}"
        tables[name] = {k: spread([v[k] for v in versus]) for k in ("win", "tie", "lose", "win_rate")}
    curves = {m: [[(e["iteration"], compare_scores(e["gold_per_prompt"], s["sft_gold_per_prompt"],
                                                   margin=margin)["win_rate"]) for e in s["detection"][m]]
                  for s in per_seed.values()] for m in ("EPPO", *EPPO_RIVALS)}  # fmt: skip
    figure = _win_rate_figure(os.path.join(out, "win-rate-over-steps.png"), curves, label)
    payload = _payload("eppo_tables", "EPPO Tables 1-2 and Fig. 5 (held-out gold at matched KL; win / tie / lose by "
                       "the gold judge)", seeds, size, claim_rows, rows, start, tie_margin=margin,
                       win_tie_lose=tables, table=gold_table(per_seed, ("EPPO", TEACHER_FORCED, *EPPO_RIVALS)),
                       teacher_forced_check=check,
                       eppo_calibration={str(s): v.get("eppo_calibration") for s, v in per_seed.items()},
                       figures=[os.path.basename(figure)])  # fmt: skip
    write_study("eppo_tables", payload, out)
    return payload


ENERGY_CLAIMS = (
    ("EPPO Fig. 2: under PPO, hacked responses have a larger final-layer energy loss than normal ones",
     "PPO", ZERO, "hacked minus normal energy", +1),
    ("EPPO Fig. 1: under PPO the final layer's energy loss moves away from the SFT model's as RL goes on",
     "PPO", ZERO, "final-layer energy drift", +1),
    ("EPPO keeps the final layer's energy loss closer to the SFT model's than PPO does", "EPPO", "PPO",
     "final-layer energy drift", -1),
)  # fmt: skip


def energy(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """EPPO Figs. 1-2: the final-layer energy loss over RL for PPO and EPPO, hacked vs normal responses, and
    which layers' energy moves away from the SFT model's (a family of its own, minimum effect 0)."""
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    per_seed = paired_grid(seeds, size, work, cache)
    claims = [Claim(text, m, c, what, d) for text, m, c, what, d in ENERGY_CLAIMS]
    claim_rows, rows = judged(per_seed, claims, 0.0)
    from inform_jax.lab.config import LabConfig

    layers = LabConfig(**size).num_layers
    shifts = {m: {f"layer {layer}": over_seeds(per_seed, lambda s, m=m, layer=layer: layer_shift(s, m, layer))
                  for layer in range(layers)} for m in ("PPO", "EPPO")}  # fmt: skip
    most = [max(range(layers), key=lambda layer: abs(layer_shift(s, "PPO", layer))) == layers - 1
            for s in per_seed.values()]  # fmt: skip
    claim_rows.append({"claim": "The final layer is where PPO's energy loss changes most (description)",
                       "measured": f"the final layer has the largest |shift| in {sum(most)} of {len(most)} seeds",
                       "verdict": "reproduced" if sum(most) > len(most) / 2 else "refuted"})  # fmt: skip
    figure = _energy_figure(os.path.join(out, "energy-over-steps.png"), per_seed, ("PPO", "EPPO"), layers)
    payload = _payload("energy", "Energy loss phenomenon (EPPO Figs. 1-2)", seeds, size, claim_rows, rows, start,
                       layer_shift=shifts, figures=[os.path.basename(figure)])  # fmt: skip
    write_study("energy", payload, out)
    return payload


DETECTION_CLAIMS = (
    ("InfoRM Fig. 6: in InfoRM's latent space the standard-RM policy's outputs sit farther from SFT's (higher CSI) "
     "than the InfoRM policy's", "PPO", "InfoRM", "CSI in InfoRM's latent space", +1),
)  # fmt: skip


def detection(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """InfoRM's detection: CSI of final outputs in the latent space (standard-RM vs InfoRM policy), CSI-guided
    stopping against training to the end on held-out gold, and every alarm rule (CSI, MOP, energy, KL) as a
    detector over all seeds' runs, compared at equal false-alarm rates on the runs that should stay quiet."""
    from inform_jax.lab.detectors import compare_at_false_alarm_rate, evaluate_detectors

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    per_seed = paired_grid(seeds, size, work, cache)
    claims = [Claim(*c) for c in DETECTION_CLAIMS]
    claim_rows, rows = judged(per_seed, claims, 0.0)
    stop = [
        Claim(
            "CSI-guided stopping (stop once CSI doubles) loses less held-out gold than training to the end "
            "(standard-RM policy)",
            "PPO",
            "PPO (final)",
            "gold regret, CSI-selected checkpoint",
            -1,
        )
    ]
    stop_rows, stop_full = judged(per_seed, stop, MIN_EFFECT_GOLD)
    runs = {f"{m} / seed {seed}": {"name": m, "checkpoints": s["heldout"][m], "detection": s["detection"][m],
                                   "metrics": s["metrics"][m]}
            for seed, s in per_seed.items() for m in s["heldout"]}  # fmt: skip
    defaults = evaluate_detectors(runs)
    equal = {str(rate): compare_at_false_alarm_rate(runs, rate) for rate in (0.0, 0.1)}
    table = {}
    for rule, scores in defaults["detectors"].items():
        if not scores.get("recorded"):
            continue
        row = {"default threshold": scores["threshold"], "false alarms": f"{len(scores['false_alarms'])} of "
               f"{sum(t['negative'] for t in defaults['truth'].values())}", "detected": f"{len(scores['detected'])} "
               f"of {len(scores['detected']) + len(scores['missed'])}", "mean lag": scores["mean_lag"],
               "gold lost (misses stop at the end)": scores["mean_gold_lost_with_misses"]}  # fmt: skip
        for rate, best in equal.items():
            hit = best.get(rule)
            row[f"at false-alarm rate <= {rate}: detected / lag / gold lost"] = (
                "no threshold" if hit is None else f"{len(hit['detected'])} / {hit['mean_lag']:.1f} / "
                f"{hit['mean_gold_lost_with_misses']:.3f}"
            )  # fmt: skip
        table[rule] = row
    selection = {str(seed): heldout_selection(s, "PPO") for seed, s in per_seed.items()}
    first = next(iter(per_seed))
    figures = [_detection_2x2(os.path.join(out, "latent-2x2.png"), per_seed[first], first),
               _csi_figure(os.path.join(out, "csi-over-steps.png"), per_seed, tuple(DETECTION_POLICIES))]  # fmt: skip
    payload = _payload("detection", "InfoRM overoptimization detection (CSI, CSI-guided stopping, alarms as "
                       "detectors)", seeds, size, claim_rows + stop_rows, rows + stop_full, start,
                       detectors=table, negatives_that_fell=defaults["negatives_that_fell"], selection=selection,
                       csi=spread_csi(per_seed), figures=[os.path.basename(f) for f in figures])  # fmt: skip
    write_study("detection", payload, out)
    return payload


def spread_csi(per_seed: dict) -> dict[str, dict]:
    """CSI of each policy's final outputs against SFT's in both spaces, over seeds."""
    return {f"{DETECTION_POLICIES[m]} policy / {DETECTION_SPACES[sp]}": spread([final_csi(s, m, sp)
                                                                                for s in per_seed.values()])
            for m in DETECTION_POLICIES for sp in DETECTION_SPACES}  # fmt: skip


def _energy_figure(path: str, per_seed: dict, methods, layers: int) -> str:
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m, color in zip(methods, ("tab:red", "tab:blue"), strict=False):
        curves = np.array([[r["final_layer_energy"] for r in s["metrics"][m]] for s in per_seed.values()])
        refs = np.array([[r[f"energy_reference_layer{layers - 1}"] for r in s["metrics"][m]]
                         for s in per_seed.values()])  # fmt: skip
        steps = np.arange(1, curves.shape[1] + 1)
        ax.plot(steps, curves.mean(0), color=color, label=f"{m} policy")
        ax.fill_between(steps, curves.mean(0) - curves.std(0), curves.mean(0) + curves.std(0), color=color, alpha=0.15)
        ax.plot(steps, refs.mean(0), ":", color=color, label=f"SFT model on {m}'s rollouts")
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("final-layer energy loss")
    ax.legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=110)


def _win_rate_figure(path: str, curves: dict, label) -> str:
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for m, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        steps = [s for s, _ in runs[0]]
        rates = np.array([[w for _, w in r] for r in runs])
        ax.plot(steps, rates.mean(0), marker="o", ms=3, lw=2.2 if m.startswith("EPPO") else 1.0, label=label(m))
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("win rate vs SFT (win + tie / 2)")
    ax.legend(fontsize=6, ncol=2)
    return save_figure(plt, fig, path, dpi=110)


def _detection_2x2(path: str, summary: dict, seed: int) -> str:
    from inform_jax.detect.plots import _pyplot, project_2d, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(7.6, 7.0))
    f = summary["features"]
    for row, (space, space_name) in enumerate(DETECTION_SPACES.items()):
        for col, (m, policy_name) in enumerate(DETECTION_POLICIES.items()):
            rlhf2, sft2 = project_2d(np.asarray(f[m][space]), np.asarray(f["SFT"][space]), seed=seed)
            hacked = np.asarray(f[m]["hacked"], bool)
            ax = axes[row][col]
            ax.scatter(sft2[:, 0], sft2[:, 1], s=10, c="tab:blue", alpha=0.6, label="SFT")
            ax.scatter(rlhf2[~hacked, 0], rlhf2[~hacked, 1], s=10, c="tab:red", alpha=0.6, label="RLHF")
            ax.scatter(rlhf2[hacked, 0], rlhf2[hacked, 1], s=22, marker="x", c="black", label="RLHF, hacked")
            ax.set_title(f"{policy_name} policy\n{space_name}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=110)


def _csi_figure(path: str, per_seed: dict, methods) -> str:
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for m in methods:
        runs = [s["detection"][m] for s in per_seed.values()]
        steps = [d["iteration"] for d in runs[0]]
        for ax, key in zip(axes, ("csi", "hacked_fraction"), strict=True):
            values = np.array([[d[key] for d in r] for r in runs])
            ax.plot(steps, values.mean(0), marker="o", ms=3, label=DETECTION_POLICIES[m])
            ax.fill_between(steps, values.mean(0) - values.std(0), values.mean(0) + values.std(0), alpha=0.15)
    axes[0].set_ylabel("CSI (InfoRM latent space)")
    axes[1].set_ylabel("hacked fraction (evaluation prompts)")
    for ax in axes:
        ax.set_xlabel("RL iteration")
    axes[0].legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=110)
