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
    tables, claims = _win_tie_lose(pairs, table, label, lambda ours: f"EPPO Table {2 if ours != 'EPPO' else 1}")

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


def _win_tie_lose(pairs, versus, label, source) -> tuple[dict[str, dict], list[dict]]:
    """For each (ours, rival) pair (rival None: SFT), ``versus(ours, rival)``'s per-seed win / tie / lose /
    win-rate rows as spreads, and the claim "more wins than losses" (``source(ours)`` names the paper's table)."""
    tables, claims = {}, []
    for ours, rival in pairs:
        rows = versus(ours, rival)
        name = f"{label(ours)} vs {'SFT' if rival is None else label(rival)}"
        tables[name] = t = {k: spread([r[k] for r in rows]) for k in ("win", "tie", "lose", "win_rate")}
        claims.append({
            "claim": f"{name}: more wins than losses ({source(ours)})",
            "measured": f"win {t['win']['mean']:.2f} / tie {t['tie']['mean']:.2f} / lose {t['lose']['mean']:.2f}",
            "verdict": compare_verdict(t["win"]["values"], t["lose"]["values"]),
        })  # fmt: skip
    return tables, claims


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


# setting -> LabConfig overrides (+ the methods it runs); the defaults are the lab's (InfoRM: paper reduction,
# beta 0.01; EPPO: residual stream, mean |.|, eta 2.0)
DESIGN_SETTINGS = {
    "defaults": {"methods": ("InfoRM", "EPPO")},
    "InfoRM, release KL reduction": {"methods": ("InfoRM",), "inform_kl_reduction": "release"},
    "InfoRM, beta 0.001": {"methods": ("InfoRM",), "inform_beta": 0.001},
    "InfoRM, beta 0.1": {"methods": ("InfoRM",), "inform_beta": 0.1},
    "EPPO, eta 0.5": {"methods": ("EPPO",), "eta": 0.5},
    "EPPO, eta 8": {"methods": ("EPPO",), "eta": 8.0},
    "EPPO, MLP site": {"methods": ("EPPO",), "energy_site": "mlp"},
    "EPPO, raw L1": {"methods": ("EPPO",), "energy_normalize": False},
}
DESIGN_SMOKE = ("defaults", "EPPO, eta 8")  # the cached reward models only: no further RM to train


def design(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """The design choices the papers and releases leave open, measured: InfoRM's KL reduction (the paper's sum over
    latent dimensions vs the release's mean) and beta; EPPO's eta, energy site (residual stream vs the final
    MLP) and scale (mean |.| vs raw L1). Each variant changes one field from the lab's defaults, at 25% noise."""
    from inform_jax.lab.config import LabConfig

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    settings = {k: v for k, v in DESIGN_SETTINGS.items() if not smoke or k in DESIGN_SMOKE}
    grid = run_grid(settings, seeds, (), size=size, work=work, cache=cache)
    width = LabConfig(**size).hidden_size
    layers = size.get("num_layers", LabConfig.num_layers)

    def final_shift(summary: dict, method: str, raw: bool) -> float:
        """|policy - SFT| final-layer residual energy over the last quarter of RL, in mean-|.| units."""
        rows = summary["metrics"][method]
        q = max(len(rows) // 4, 1)
        gap = [abs(r[f"energy_policy_layer{layers - 1}"] - r[f"energy_reference_layer{layers - 1}"]) for r in rows]
        return float(np.mean(gap[-q:])) / (width if raw else 1)

    def variant(setting: str, method: str) -> dict[str, list[float]]:
        per_seed = grid[setting].values()
        o = [s["overoptimization"][method] for s in per_seed]
        raw = settings[setting].get("energy_normalize") is False
        return {"gold_final": [x["gold_final"] for x in o], "gold_peak": [x["gold_peak"] for x in o],
                "kl_final": [x["kl_final"] for x in o], "hacked_final": [x["hacked_fraction_final"] for x in o],
                "energy_shift_final": [final_shift(s, method, raw) for s in per_seed]}  # fmt: skip

    table = {setting: {m: {k: spread(v) for k, v in variant(setting, m).items()} for m in overrides["methods"]}
             for setting, overrides in settings.items()}  # fmt: skip
    claims = []

    def claim(text: str, ours: tuple[str, str], theirs: tuple[str, str], field: str, higher: bool = True):
        if ours[0] not in settings or theirs[0] not in settings:
            return
        a, b = variant(*ours)[field], variant(*theirs)[field]
        claims.append({"claim": text, "measured": f"{field} {_pm(a)} ({ours[0]}) vs {_pm(b)} ({theirs[0]})",
                       "verdict": compare_verdict(a, b, higher=higher)})  # fmt: skip

    claim("InfoRM with the paper's KL (summed over latent dims) ends with a higher gold reward than with the "
          "release's reduction (a ~latent_dim x weaker bottleneck at the same beta)",
          ("defaults", "InfoRM"), ("InfoRM, release KL reduction", "InfoRM"), "gold_final")  # fmt: skip
    claim("A stronger bottleneck hacks less: InfoRM's final hacked fraction is lower at beta 0.1 than at 0.001",
          ("InfoRM, beta 0.1", "InfoRM"), ("InfoRM, beta 0.001", "InfoRM"), "hacked_final", higher=False)  # fmt: skip
    claim("InfoRM at the lab's beta (0.01) ends with a higher gold reward than at beta 0.001",
          ("defaults", "InfoRM"), ("InfoRM, beta 0.001", "InfoRM"), "gold_final")  # fmt: skip
    claim("A larger eta keeps the final-layer energy closer to the SFT model's (eta 8 vs 0.5)",
          ("EPPO, eta 8", "EPPO"), ("EPPO, eta 0.5", "EPPO"), "energy_shift_final", higher=False)  # fmt: skip
    claim("A larger eta hacks less: EPPO's final hacked fraction is lower at eta 8 than at eta 2",
          ("EPPO, eta 8", "EPPO"), ("defaults", "EPPO"), "hacked_final", higher=False)  # fmt: skip
    claim("EPPO at the paper's eta (2.0) ends with a higher gold reward than at eta 0.5",
          ("defaults", "EPPO"), ("EPPO, eta 0.5", "EPPO"), "gold_final")  # fmt: skip
    claim("The paper's energy site (residual stream) ends with a higher gold reward than the release's (final MLP)",
          ("defaults", "EPPO"), ("EPPO, MLP site", "EPPO"), "gold_final")  # fmt: skip
    claim("Mean |.| (the scale eta = 2.0 was set for) ends with a higher gold reward than raw L1 at the same eta",
          ("defaults", "EPPO"), ("EPPO, raw L1", "EPPO"), "gold_final")  # fmt: skip
    figure = _design_figure(os.path.join(out, "design-choices.png"), table)
    payload = {"study": "design", "title": "Design choices the record leaves open (InfoRM KL and beta; EPPO eta, "
               "energy site and scale)", "seeds": list(seeds), "size": size,
               "settings": {k: {f: list(v) if isinstance(v, tuple) else v for f, v in o.items()}
                            for k, o in settings.items()},
               "table": table, "claims": claims, "figures": [os.path.basename(figure)],
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("design", payload, out)
    return payload


def _design_figure(path: str, table: dict) -> str:
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    rows = [(f"{setting}" if setting != "defaults" else f"{m} (defaults)", cell)
            for setting, methods in table.items() for m, cell in methods.items()]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.35 * len(rows) + 1.4), sharey=True)
    y = np.arange(len(rows))
    for ax, field, title in zip(axes, ("gold_final", "hacked_final", "energy_shift_final"),
                                ("final gold reward", "final hacked fraction", "final-layer |policy - SFT| energy"),
                                strict=True):  # fmt: skip
        means = [cell[field]["mean"] for _, cell in rows]
        stds = [cell[field]["std"] for _, cell in rows]
        ax.barh(y, means, xerr=stds, color=["tab:purple" if "InfoRM" in n else "tab:blue" for n, _ in rows])
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(y, [n for n, _ in rows], fontsize=7)
    axes[0].invert_yaxis()
    return save_figure(plt, fig, path, dpi=110)


DETECTION_POLICIES = {"PPO": "Standard RM", "InfoRM": "InfoRM"}  # method -> the paper's name of the policy
DETECTION_SPACES = {"latents": "InfoRM latent space", "control": "standard RM hidden space (control)"}


def csi_selection(detection: list[dict], factor: float = 2.0) -> dict[str, Any]:
    """CSI-guided checkpoint selection, blind to the gold reward: keep training while the CSI stays below
    ``factor`` x its value at the first checkpoint, and pick the checkpoint before the first one above it (the
    last checkpoint if none is). Returns the selected iteration, its gold, the gold-best checkpoint's and the
    final one's, and the regrets (best gold minus selected / final gold)."""
    csis = [d["csi"] for d in detection]
    above = [i for i, c in enumerate(csis) if c > factor * csis[0]]
    chosen = max(above[0] - 1, 0) if above else len(detection) - 1
    gold = [d["gold"] for d in detection]
    best = int(np.argmax(gold))
    return {"selected_iteration": detection[chosen]["iteration"], "selected_gold": gold[chosen],
            "best_iteration": detection[best]["iteration"], "best_gold": gold[best], "final_gold": gold[-1],
            "regret_selected": gold[best] - gold[chosen], "regret_final": gold[best] - gold[-1]}  # fmt: skip


def detection(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """InfoRM's detection figure: SFT vs final RLHF outputs for policies trained against the standard RM and
    against InfoRM, in InfoRM's latent space and (the control) in a standard RM's final hidden space; CSI of each
    cell; CSI over RL against the hacked fraction; CSI-guided checkpoint selection against the gold-best one."""
    from inform_jax.detect.csi import csi

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    methods = tuple(DETECTION_POLICIES)
    grid = run_grid({"25% label noise": {"label_noise": 0.25, "control_probe": True}}, seeds, methods, size=size,
                    work=work, cache=cache)  # fmt: skip
    per_seed = grid["25% label noise"]

    def cell_csi(summary: dict, method: str, space: str, seed: int) -> float:
        f = summary["features"]
        return csi(np.asarray(f[method][space]), np.asarray(f["SFT"][space]), k=4, key=_key(seed)).csi

    cells = {
        f"{DETECTION_POLICIES[m]} policy / {DETECTION_SPACES[sp]}": spread(
            [cell_csi(per_seed[s], m, sp, s) for s in seeds]
        )
        for m in methods
        for sp in DETECTION_SPACES
    }
    claims = []
    ppo_latent = [cell_csi(per_seed[s], "PPO", "latents", s) for s in seeds]
    info_latent = [cell_csi(per_seed[s], "InfoRM", "latents", s) for s in seeds]
    claims.append({
        "claim": "In InfoRM's latent space the standard-RM policy's outputs sit farther from SFT's (higher CSI) than "
                 "the InfoRM policy's (InfoRM Fig. 6)",
        "measured": f"CSI {_pm(ppo_latent)} vs {_pm(info_latent)}",
        "verdict": compare_verdict(ppo_latent, info_latent),
    })  # fmt: skip
    ratio = {sp: [cell_csi(per_seed[s], "PPO", sp, s) / max(cell_csi(per_seed[s], "InfoRM", sp, s), 1e-12)
                  for s in seeds] for sp in DETECTION_SPACES}  # fmt: skip
    claims.append({
        "claim": "The separation shows in InfoRM's latent space more than in a standard RM's hidden space (control): "
                 "the CSI ratio standard-RM policy / InfoRM policy is larger in the latent space",
        "measured": f"ratio {_pm(ratio['latents'])} (latent) vs {_pm(ratio['control'])} (control)",
        "verdict": compare_verdict(ratio["latents"], ratio["control"]),
    })  # fmt: skip
    tracking = {}
    for space, key in (("latents", "csi"), ("control", "csi_control")):
        tracking[space] = [_correlation([d[key] for d in per_seed[s]["detection"]["PPO"]],
                                        [d["hacked_fraction"] for d in per_seed[s]["detection"]["PPO"]])
                           for s in seeds]  # fmt: skip
    claims.append({
        "claim": "CSI in InfoRM's latent space rises with the hacked fraction over RL (standard-RM policy)",
        "measured": "Pearson r of CSI and hacked fraction over checkpoints, per seed: "
                    + ", ".join(f"{r:+.2f}" for r in tracking["latents"])
                    + " (control space: " + ", ".join(f"{r:+.2f}" for r in tracking["control"]) + ")",
        "verdict": fraction_verdict([r > 0 for r in tracking["latents"]])
        if all(np.isfinite(tracking["latents"])) else "not measurable",
    })  # fmt: skip
    selection = {m: [csi_selection(per_seed[s]["detection"][m]) for s in seeds] for m in methods}
    sel = selection["PPO"]
    # The rule's factor is fixed in advance (2x); the other factors show how much the verdict hangs on it.
    sensitivity = {f: [csi_selection(per_seed[s]["detection"]["PPO"], f) for s in seeds] for f in (1.25, 1.5)}
    claims.append({
        "claim": "CSI-guided checkpoint selection (stop once CSI doubles) lands closer to the gold-best checkpoint "
                 "than training to the end (standard-RM policy)",
        "measured": "gold regret selected " + _pm([x["regret_selected"] for x in sel]) + " vs final "
                    + _pm([x["regret_final"] for x in sel]) + "; other stopping factors, reported but not used for "
                    "the verdict: " + ", ".join(f"{f}x {_pm([x['regret_selected'] for x in rows])}"
                                                for f, rows in sensitivity.items()),
        "verdict": compare_verdict([x["regret_selected"] for x in sel], [x["regret_final"] for x in sel],
                                   higher=False),
    })  # fmt: skip
    figures = [
        os.path.basename(_detection_2x2(os.path.join(out, "latent-2x2.png"), per_seed[seeds[0]], seeds[0])),
        os.path.basename(_csi_figure(os.path.join(out, "csi-over-steps.png"), per_seed, methods)),
    ]
    payload = {"study": "detection", "title": "InfoRM overoptimization detection (latent 2x2, control, CSI, "
               "checkpoint selection)", "seeds": list(seeds), "size": size, "csi_cells": cells,
               "csi_tracks_hacking": tracking, "selection": selection,
               "selection_other_factors_ppo": {str(f): rows for f, rows in sensitivity.items()},
               "claims": claims, "figures": figures,
               "series": {s: per_seed[s]["detection"] for s in seeds},
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("detection", payload, out)
    return payload


def _key(seed: int):
    import jax

    return jax.random.key(seed)


def _correlation(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


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


TABLE1_RIVALS = ("PPO", "PPO w/ KL", "Ensemble RM", "WARM")
TABLE1_PAIRS = (("InfoRM + Ensemble", "Ensemble RM"), ("InfoRM + WARM", "WARM"))
# The actor learning rates swept for every method but "Standard RM w/ KL", which sweeps its own rates (a KL
# penalty tolerates larger steps) times its KL coefficients. A first sweep of (5e-5, 1e-4, 2e-4) x (0.05, 0.2)
# put every best setting on an edge of the grid, so both grids reach one step further.
TABLE1_LRS = (2.5e-5, 5e-5, 1e-4, 2e-4)
TABLE1_KL_LRS = (5e-5, 1e-4, 2e-4, 4e-4)
TABLE1_KLS = (0.05, 0.2, 0.5)
SWEEP_SEED = 100  # the sweep runs on its own seed, so that the selection does not favour the reported seeds


def inform_table1(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """InfoRM paper Table 1: win / tie / lose (gold judge, the lab's tie margin) of InfoRM's final policy against
    SFT, Standard RM, Standard RM w/ KL, Ensemble RM and WARM, and of InfoRM + Ensemble vs Ensemble RM and
    InfoRM + WARM vs WARM. Each method runs at its best actor learning rate (and KL coefficient) from a sweep on
    a separate seed, best by the final gold reward; then on the reported seeds. 25% label noise throughout."""
    from inform_jax.eval.winrate import compare_scores
    from inform_jax.lab.config import LabConfig

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    methods = ("InfoRM", *TABLE1_RIVALS, *(a for a, _ in TABLE1_PAIRS))
    lrs, kl_lrs, kls = TABLE1_LRS, TABLE1_KL_LRS, TABLE1_KLS
    if smoke:
        methods, lrs, kl_lrs, kls = ("InfoRM", "PPO", "PPO w/ KL"), (1e-4,), (1e-4,), (0.05,)
    noise = {"label_noise": 0.25}
    sweep_settings = {f"lr {lr:g}": {**noise, "actor_lr": lr, "methods": tuple(m for m in methods if m != "PPO w/ KL")}
                      for lr in lrs}  # fmt: skip
    sweep_settings |= {f"lr {lr:g}, kl {kl:g}": {**noise, "actor_lr": lr, "kl": kl, "methods": ("PPO w/ KL",)}
                       for lr in kl_lrs for kl in kls}  # fmt: skip
    sweep_seed = seeds[0] if smoke else SWEEP_SEED  # smoke: the cached world of the first seed
    sweep = run_grid(sweep_settings, [sweep_seed], (), size=size, work=os.path.join(work, "sweep"), cache=cache)
    final_gold = {(name, m): sweep[name][sweep_seed]["overoptimization"][m]["gold_final"]
                  for name, o in sweep_settings.items() for m in o["methods"]}  # fmt: skip
    best = {}
    for m in methods:
        name = max((n for n, mm in final_gold if mm == m), key=lambda n, m=m: final_gold[(n, m)])
        best[m] = {k: v for k, v in sweep_settings[name].items() if k != "methods"}
    final = run_grid({f"{m} at its best": {**best[m], "methods": (m,)} for m in methods}, seeds, (), size=size,
                     work=os.path.join(work, "final"), cache=cache)  # fmt: skip
    per_seed = {m: final[f"{m} at its best"] for m in methods}
    margin = LabConfig(**size).tie_margin

    def versus(ours: str, rival: str | None) -> list[dict]:  # per seed: ours vs rival (None: SFT)
        return [compare_scores(per_seed[ours][s]["final_gold_per_prompt"][ours],
                               per_seed[ours][s]["sft_gold_per_prompt"] if rival is None
                               else per_seed[rival][s]["final_gold_per_prompt"][rival], margin=margin)
                for s in seeds]  # fmt: skip

    pairs = [("InfoRM", None)] + [("InfoRM", r) for r in TABLE1_RIVALS if r in methods]
    pairs += [(a, b) for a, b in TABLE1_PAIRS if a in methods and b in methods]
    tables, claims = _win_tie_lose(pairs, versus, _label, lambda _: "InfoRM Table 1")
    gold = {m: spread([per_seed[m][s]["overoptimization"][m]["gold_final"] for s in seeds]) for m in methods}
    figure = _table1_figure(os.path.join(out, "win-tie-lose.png"), tables)
    payload = {"study": "inform_table1", "title": "InfoRM Table 1 (win / tie / lose by the gold judge, each method "
               "at its best swept learning rate and KL coefficient)", "seeds": list(seeds), "size": size,
               "tie_margin": margin, "sweep_seed": sweep_seed,
               "sweep": [{"method": m, **{k: v for k, v in sweep_settings[n].items() if k != "methods"},
                          "gold_final": g} for (n, m), g in final_gold.items()],
               "best_settings": best, "gold_final": gold, "win_tie_lose": tables, "claims": claims,
               "figures": [os.path.basename(figure)],
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("inform_table1", payload, out)
    return payload


def _table1_figure(path: str, tables: dict) -> str:
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    names = list(tables)
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(names) + 1.2))
    left = np.zeros(len(names))
    for part, color in (("win", "tab:green"), ("tie", "tab:gray"), ("lose", "tab:red")):
        values = np.array([tables[n][part]["mean"] for n in names])
        ax.barh(names, values, left=left, color=color, label=part)
        left += values
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of evaluation prompts (mean over seeds)")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    return save_figure(plt, fig, path, dpi=110)


DECOMPOSITION_BIAS = 0.95  # the share of training pairs a response-only rule fits (0.85 leaves BT near ceiling)
# At 1 and 2 epochs the seeds disagree on the adversarial set's accuracy and on the prompt-free shares; these many
# more seeds of plain BT and prioritized training at those budgets (~8 min) say which way the differences go.
DECOMPOSITION_EXTRA_SEEDS = 7
DECOMPOSITION_SHORT_BUDGETS = (32, 64)


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
    Runs ``experiments/decomposition/toy_studies.py`` (tiny reward models from scratch; ``size`` is not used)."""
    from experiments.decomposition.toy_studies import main as toy_studies

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    args = ["--seeds", *map(str, seeds), "--bias", str(DECOMPOSITION_BIAS), "--out", out, "--work", work]
    toy_studies(args + (["--smoke"] if smoke else []))
    with open(os.path.join(out, "results.json")) as f:
        result = json.load(f)
    ran = result["seeds"]

    extra_seeds = list(range(max(seeds) + 1, max(seeds) + 1 + DECOMPOSITION_EXTRA_SEEDS))
    extra_out = os.path.join(work, "extra-seeds")  # its quadrant plots are of seed 3, not for the page
    toy_studies(["--seeds", *map(str, extra_seeds), "--bias", str(DECOMPOSITION_BIAS), "--out", extra_out, "--work",
                 extra_out, "--methods", "standard", "dir",
                 "--steps", *map(str, DECOMPOSITION_SHORT_BUDGETS)] + (["--smoke"] if smoke else []))  # fmt: skip
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
    decomposition study. Runs ``experiments/decomposition/toy_studies.py --sets shifted_count``."""
    from experiments.decomposition.toy_studies import main as toy_studies

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    toy_studies(["--seeds", *map(str, seeds), "--bias", str(DECOMPOSITION_BIAS), "--out", out, "--work", work,
                 "--sets", "shifted_count", "--methods", "standard", "rrm", "dir",
                 "--steps", *map(str, SLOW_RULE_BUDGETS)] + (["--smoke"] if smoke else []))  # fmt: skip
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
    """Per method, over seeds: held-out gold at SFT, at its peak, at 1x PPO's peak KL (seeds that reach it) and at
    the end; from each seed's summary ("matched_kl", "overoptimization")."""
    from inform_jax.lab.verdicts import MEASURES

    first = next(iter(per_seed.values()))
    table = {}
    for method in first["matched_kl"]["methods"]:
        cells = {}
        for label, measure in (("peak gold", "peak gold"), ("gold at 1x KL", "gold at 1x KL"),
                               ("final gold", "final gold")):  # fmt: skip
            values = [MEASURES[measure](s, method) for s in per_seed.values()]
            values = [v for v in values if v is not None]
            if values:
                cells[label] = spread(values)
        table[method] = cells
    return {"held-out gold over seeds (mean +- sd)": table}


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
    "fig4": fig4,
    "inform_table1": inform_table1,
    "energy": energy,
    "eppo_tables": eppo_tables,
    "design": design,
    "detection": detection,
    "decomposition": decomposition,
    "decomposition_slow_rule": decomposition_slow_rule,
}
