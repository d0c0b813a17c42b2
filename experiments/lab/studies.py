"""The lab's studies: each reproduces one figure or table of the seed papers on the synthetic world over seeds
and returns a payload with the measurements, the papers' claims and a verdict per claim.

Every study takes (seeds, size, work, cache, out) and writes results/<name>/study.json plus its figures.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from experiments.lab.common import (
    binned_mean_curve,
    compare_verdict,
    fraction_verdict,
    over_seeds,
    provenance,
    run_grid,
    spread,
    write_study,
)

FIG4_METHODS = ("PPO", "PPO w/ KL", "Ensemble RM", "WARM", "InfoRM")
FIG4_LABELS = {"PPO": "Standard RM", "PPO w/ KL": "Standard RM w/ KL"}  # the InfoRM paper's names


def _pm(values) -> str:
    s = spread(values)
    return f"{s['mean']:.3f} +- {s['std']:.3f}"


def _label(method: str) -> str:
    return FIG4_LABELS.get(method, method)


def _overopt_table(grid: dict[str, dict[int, dict]], methods) -> dict[str, dict[str, dict]]:
    fields = ("gold_start", "gold_peak", "kl_at_gold_peak", "gold_final", "kl_final", "proxy_start", "proxy_final",
              "hacked_fraction_final")  # fmt: skip
    return {
        setting: {
            _label(m): {f: over_seeds(per_seed, lambda s, m=m, f=f: s["overoptimization"][m][f]) for f in fields}
            for m in methods
        }
        for setting, per_seed in grid.items()
    }


def fig4(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """InfoRM paper Fig. 4: gold and proxy reward against KL(policy || SFT) for Standard RM, Standard RM w/ KL,
    Ensemble RM, WARM and InfoRM, at 0% and 25% label noise (``smoke``: 25% only, the demo's cached models)."""
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    settings = {"0% label noise": {"label_noise": 0.0}, "25% label noise": {"label_noise": 0.25}}
    settings = {"25% label noise": settings["25% label noise"]} if smoke else settings
    grid = run_grid(settings, seeds, FIG4_METHODS, size=size, work=work, cache=cache)
    table = _overopt_table(grid, FIG4_METHODS)
    final = lambda setting, m: [grid[setting][s]["overoptimization"][m]["gold_final"] for s in seeds]  # noqa: E731
    claims = []
    for setting in settings:
        ppo = [grid[setting][s]["overoptimization"]["PPO"] for s in seeds]
        turned = [o["gold_turned_down"] and o["proxy_rose_after_gold_peak"] for o in ppo]
        claims.append({
            "claim": f"{setting}: the standard RM overoptimizes (gold peaks and falls, the proxy keeps rising)",
            "measured": f"gold turned down with the proxy still rising in {sum(turned)} of {len(seeds)} seeds",
            "verdict": fraction_verdict(turned),
        })  # fmt: skip
        for rival in ("PPO", "PPO w/ KL", "Ensemble RM", "WARM"):
            ours, theirs = final(setting, "InfoRM"), final(setting, rival)
            claims.append({
                "claim": f"{setting}: InfoRM ends with a higher gold reward than {_label(rival)}",
                "measured": f"final gold {_pm(ours)} vs {_pm(theirs)}",
                "verdict": compare_verdict(ours, theirs),
            })  # fmt: skip
    figure = _gold_proxy_figure(os.path.join(out, "gold-proxy-vs-kl.png"), grid, FIG4_METHODS)
    payload = {"study": "fig4", "title": "InfoRM simulated RLHF (paper Fig. 4)", "seeds": list(seeds), "size": size,
               "table": table, "claims": claims, "figures": [os.path.basename(figure)],
               "series": {st: {s: grid[st][s]["metrics"] for s in seeds} for st in settings},
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("fig4", payload, out)
    return payload


def _gold_proxy_figure(path: str, grid: dict, methods) -> str:
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    settings = list(grid)
    fig, axes = plt.subplots(2, len(methods), figsize=(3.0 * len(methods), 5.2), squeeze=False, sharex="col")
    for col, m in enumerate(methods):
        for setting, style in zip(settings, ("-", "--"), strict=False):
            runs = [summary["metrics"][m] for summary in grid[setting].values()]
            for row, (key, color) in enumerate((("gold_reward", "tab:green"), ("proxy_reward", "tab:orange"))):
                x, mean, std = binned_mean_curve(runs, "kl", key)
                ax = axes[row][col]
                ax.plot(x, mean, style, color=color, marker="o", ms=3, label=setting)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
        axes[0][col].set_title(_label(m), fontsize=9)
        axes[1][col].set_xlabel("KL(policy || SFT)")
    axes[0][0].set_ylabel("gold reward")
    axes[1][0].set_ylabel("proxy reward")
    axes[0][0].legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=110)


def energy(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """EPPO Figs. 1-2: the final-layer energy loss over RL for PPO and EPPO, hacked vs normal responses, and
    which layers' energy moves away from the SFT model's."""
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    methods = ("PPO", "EPPO")
    grid = run_grid({"25% label noise": {"label_noise": 0.25}}, seeds, methods, size=size, work=work, cache=cache)
    per_seed = grid["25% label noise"]
    layers = size.get("num_layers", 2)

    def layer_shift(summary, m, layer):  # |policy - SFT| energy on the rollouts, last quarter minus first quarter
        rows = summary["metrics"][m]
        q = max(len(rows) // 4, 1)
        gap = [abs(r[f"energy_policy_layer{layer}"] - r[f"energy_reference_layer{layer}"]) for r in rows]
        return float(np.mean(gap[-q:]) - np.mean(gap[:q]))

    shifts = {m: {f"layer {layer}": over_seeds(per_seed, lambda s, m=m, layer=layer: layer_shift(s, m, layer))
                  for layer in range(layers)} for m in methods}  # fmt: skip
    hacked = {m: {k: over_seeds(per_seed, lambda s, m=m, k=k: s["energy_by_label"][m][k])
                  for k in ("hacked_mean", "normal_mean", "n_hacked", "n_normal")} for m in methods}  # fmt: skip
    claims = []
    ppo_gap = [hacked_gap(s, "PPO") for s in per_seed.values()]
    claims.append({
        "claim": "Hacked responses have a larger final-layer energy loss than normal ones (EPPO Fig. 2)",
        "measured": "PPO, last quarter, hacked minus normal mean energy per seed: "
                    + ", ".join(f"{g:+.4f}" for g in ppo_gap),
        "verdict": fraction_verdict([g > 0 for g in ppo_gap]) if all(np.isfinite(ppo_gap)) else "not measurable",
    })  # fmt: skip
    final_shift = [layer_shift(s, "PPO", layers - 1) for s in per_seed.values()]
    claims.append({
        "claim": "Under PPO the final layer's energy loss moves away from the SFT model's as RL goes on (Fig. 1)",
        "measured": "growth of |policy - SFT| final-layer energy, last vs first quarter, per seed: "
                    + ", ".join(f"{v:+.4f}" for v in final_shift),
        "verdict": fraction_verdict([v > 0 for v in final_shift]),
    })  # fmt: skip
    most = [max(range(layers), key=lambda layer: abs(layer_shift(s, "PPO", layer))) == layers - 1
            for s in per_seed.values()]  # fmt: skip
    claims.append({
        "claim": "The final layer is where the energy loss changes most",
        "measured": f"final layer has the largest |shift| in {sum(most)} of {len(seeds)} seeds",
        "verdict": fraction_verdict(most),
    })  # fmt: skip
    eppo = [layer_shift(s, "EPPO", layers - 1) for s in per_seed.values()]
    claims.append({
        "claim": "EPPO keeps the final-layer energy closer to the SFT model's than PPO",
        "measured": f"shift EPPO {np.mean(eppo):+.4f} vs PPO {np.mean(final_shift):+.4f} (mean over seeds)",
        "verdict": compare_verdict(eppo, final_shift, higher=False),
    })  # fmt: skip
    figure = _energy_figure(os.path.join(out, "energy-over-steps.png"), per_seed, methods, layers)
    payload = {"study": "energy", "title": "Energy loss phenomenon (EPPO Figs. 1-2)", "seeds": list(seeds),
               "size": size, "layer_shift": shifts, "hacked_vs_normal": hacked, "claims": claims,
               "figures": [os.path.basename(figure)], "series": {s: per_seed[s]["metrics"] for s in seeds},
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("energy", payload, out)
    return payload


def hacked_gap(summary: dict, method: str) -> float:
    e = summary["energy_by_label"][method]
    return e["hacked_mean"] - e["normal_mean"]


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


EPPO_RIVALS = ("PPO", "PPO w/ KL", "PPO w/ LP", "Ensemble RM", "ERM-WCO", "ERM-UWO", "WARM", "ODIN")
EPPO_PAIRS = (("EPPO + ODIN", "ODIN"), ("EPPO + InfoRM", "InfoRM"))
EPPO_LABELS = {"Ensemble RM": "ERM-Mean"}  # the EPPO paper's names


def eppo_tables(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """EPPO Tables 1-2 and Fig. 5: win / tie / lose (gold judge, both orders, the lab's tie margin) of EPPO's final
    policy against SFT and each baseline, EPPO + ODIN vs ODIN, EPPO + InfoRM vs InfoRM, and every method's win
    rate (win + tie / 2) against SFT over RL iterations."""
    from inform_jax.eval.winrate import compare_scores
    from inform_jax.lab.config import LabConfig

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    methods = ("EPPO", *EPPO_RIVALS, "InfoRM", *(a for a, _ in EPPO_PAIRS))
    methods = tuple(dict.fromkeys(methods))
    if smoke:
        methods = ("EPPO", "PPO", "ERM-WCO", "WARM")
    grid = run_grid({"25% label noise": {"label_noise": 0.25}}, seeds, methods, size=size, work=work, cache=cache)
    per_seed = grid["25% label noise"]
    margin = LabConfig(**size).tie_margin
    label = lambda m: EPPO_LABELS.get(m, m)  # noqa: E731

    def table(ours: str, rival: str | None) -> list[dict]:  # per seed: ours vs rival (None: SFT)
        return [compare_scores(s["final_gold_per_prompt"][ours],
                               s["sft_gold_per_prompt"] if rival is None else s["final_gold_per_prompt"][rival],
                               margin=margin) for s in per_seed.values()]  # fmt: skip

    pairs = [("EPPO", None)] + [("EPPO", r) for r in EPPO_RIVALS if r in methods]
    pairs += [(a, b) for a, b in EPPO_PAIRS if a in methods and b in methods]
    tables, claims = {}, []
    for ours, rival in pairs:
        rows = table(ours, rival)
        name = f"{label(ours)} vs {'SFT' if rival is None else label(rival)}"
        tables[name] = {k: spread([r[k] for r in rows]) for k in ("win", "tie", "lose", "win_rate")}
        t = tables[name]
        claims.append({
            "claim": f"{name}: more wins than losses (EPPO Table {2 if ours != 'EPPO' else 1})",
            "measured": f"win {t['win']['mean']:.2f} / tie {t['tie']['mean']:.2f} / lose {t['lose']['mean']:.2f}",
            "verdict": compare_verdict(t["win"]["values"], t["lose"]["values"]),
        })  # fmt: skip

    def win_rate_over_steps(summary: dict, m: str) -> list[tuple[int, float]]:
        sft = summary["sft_gold_per_prompt"]
        return [(e["iteration"], compare_scores(e["gold_per_prompt"], sft, margin=margin)["win_rate"])
                for e in summary["detection"][m]]  # fmt: skip

    curves = {m: [win_rate_over_steps(s, m) for s in per_seed.values()] for m in methods}
    late = {m: [c[-1][1] for c in curves[m] if c] for m in methods}
    if late["EPPO"] and late["PPO"]:
        claims.append({
            "claim": "EPPO's win rate against SFT at the end of RL is above PPO's (EPPO Fig. 5)",
            "measured": f"last-checkpoint win rate EPPO {_pm(late['EPPO'])} vs PPO {_pm(late['PPO'])}",
            "verdict": compare_verdict(late["EPPO"], late["PPO"]),
        })  # fmt: skip
    figure = _win_rate_figure(os.path.join(out, "win-rate-over-steps.png"), curves, label)
    payload = {"study": "eppo_tables", "title": "EPPO Tables 1-2 and Fig. 5 (win rates by the gold judge)",
               "seeds": list(seeds), "size": size, "tie_margin": margin, "win_tie_lose": tables, "claims": claims,
               "win_rate_over_steps": curves, "figures": [os.path.basename(figure)],
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("eppo_tables", payload, out)
    return payload


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


STUDIES = {"fig4": fig4, "energy": energy, "eppo_tables": eppo_tables}
