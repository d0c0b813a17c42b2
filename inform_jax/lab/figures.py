"""The laboratory's figures (matplotlib PNGs): each takes the run results and writes one file."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from inform_jax.detect.plots import _pyplot, plot_latents, project_2d, save_figure
from inform_jax.lab.config import slug


def smooth(values, window: int) -> np.ndarray:
    """Centered moving average over ``window`` iterations (clipped at the ends), so curves and summary numbers
    show trends rather than rollout noise without lagging behind them."""
    values = np.asarray(values, np.float64)
    half = window // 2
    return np.array([values[max(0, i - half) : i + half + 1].mean() for i in range(len(values))])


def gold_and_proxy_vs_kl(path: str, results: dict[str, dict], oracle: str = "Oracle", window: int = 3) -> str:
    """One panel per method, shared y-axes: held-out gold (band: +-1.96 standard errors over held-out prompts) and
    the training rollouts' proxy reward (right axis) against the measured exact KL from SFT. Points are
    checkpoints ordered along the running maximum of the smoothed KL (the KL a run has reached), so a curve never
    runs back along the axis; the oracle arm's gold is drawn grey in every panel as the reachable gold."""
    from inform_jax.eval.matched_kl import monotone_envelope

    if not all(r.get("checkpoints") for r in results.values()):  # runs without held-out readings (no heldout=)
        return gold_and_proxy_vs_rollout_kl(path, results)
    plt = _pyplot()
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.2), squeeze=False, sharey=True)
    twins = []

    def along_kl(result):
        cps = result["checkpoints"]
        kl = monotone_envelope([c["kl"] for c in cps], window)
        gold = np.array([c["gold"] for c in cps])
        se = np.array([c["gold_se"] for c in cps])
        return kl, gold, se

    reference = along_kl(results[oracle]) if oracle in results else None
    for ax, name in zip(axes[0], names, strict=True):
        kl, gold, se = along_kl(results[name])
        if reference is not None and name != oracle:
            ax.plot(reference[0], reference[1], c="0.6", ls="--", lw=1, label=f"gold of {oracle}")
        ax.fill_between(kl, gold - 1.96 * se, gold + 1.96 * se, color="tab:green", alpha=0.2, lw=0)
        gold_line = ax.plot(kl, gold, c="tab:green", marker="o", ms=3, label="gold (held out)")[0]
        ax.set_xlabel("KL(policy || SFT), exact")
        ax.set_title(name, fontsize=10)
        twin = ax.twinx()
        twins.append(twin)
        by_iteration = {m["iteration"]: m["proxy_reward"] for m in results[name]["metrics"]}
        proxy_curve = smooth([m["proxy_reward"] for m in results[name]["metrics"]], 5)
        smoothed = dict(zip(by_iteration, proxy_curve, strict=True))
        iterations = [c["checkpoint"] for c in results[name]["checkpoints"]]
        proxy = [smoothed.get(it, proxy_curve[0]) for it in iterations]
        proxy_line = twin.plot(kl, proxy, c="tab:orange", ls="--", marker="s", ms=3, label="proxy (rollouts)")[0]
        if name != names[-1]:
            twin.tick_params(labelright=False)
    if len(twins) > 1:
        low = min(t.get_ylim()[0] for t in twins)
        high = max(t.get_ylim()[1] for t in twins)
        for t in twins:
            t.set_ylim(low, high)
    axes[0][0].set_ylabel("gold reward", color="tab:green")
    twins[-1].set_ylabel("proxy reward", color="tab:orange")
    handles = [gold_line, proxy_line] + ([axes[0][0].get_lines()[0]] if reference is not None and names[0] != oracle
                                         else [])  # fmt: skip
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def binned_by(x, ys: list, bins: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Means of x and of each series in ys over ``bins`` equal-count bins of x (KL is noisy per iteration and not
    monotone in it, so curves against KL are drawn through bin means)."""
    order = np.argsort(np.asarray(x), kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    centers = np.array([np.mean(np.asarray(x)[g]) for g in groups])
    return centers, [np.array([np.mean(np.asarray(y)[g]) for g in groups]) for y in ys]


def gold_and_proxy_vs_rollout_kl(path: str, results: dict[str, dict], bins: int = 8) -> str:
    """Runs without held-out readings (e.g. experiments/simulated): one panel per method, gold reward (left axis)
    and proxy reward (right axis) against the rollouts' KL(policy || SFT) estimate; points
    are iterations, lines the means over equal-count KL bins."""
    plt = _pyplot()
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        m = results[name]["metrics"]
        kl = np.array([r["kl"] for r in m])
        gold = np.array([r["gold_reward"] for r in m])
        proxy = np.array([r["proxy_reward"] for r in m])
        centers, (gold_bins, proxy_bins) = binned_by(kl, [gold, proxy], bins)
        ax.scatter(kl, gold, s=6, c="tab:green", alpha=0.25)
        gold_line = ax.plot(centers, gold_bins, c="tab:green", marker="o", ms=3, label="gold")[0]
        ax.set_xlabel("KL(policy || SFT)")
        ax.set_title(name, fontsize=10)
        twin = ax.twinx()
        twin.scatter(kl, proxy, s=6, c="tab:orange", alpha=0.25)
        proxy_line = twin.plot(centers, proxy_bins, c="tab:orange", ls="--", marker="s", ms=3, label="proxy")[0]
        if name == names[0]:
            ax.set_ylabel("gold reward", color="tab:green")
        if name == names[-1]:
            twin.set_ylabel("proxy reward", color="tab:orange")
    fig.legend(handles=[gold_line, proxy_line], loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def energy_over_steps(path: str, results: dict[str, dict], window: int, num_layers: int) -> str:
    """Final-layer energy loss of the policy's rollouts over RL iterations (the SFT model's on the same rollouts
    dashed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, result in results.items():
        m = result["metrics"]
        steps = [r["iteration"] for r in m]
        line = ax.plot(steps, smooth([r["final_layer_energy"] for r in m], window), label=name)[0]
        ref_key = f"energy_reference_layer{num_layers - 1}"
        if ref_key in m[0] and name in ("PPO", "EPPO"):
            ax.plot(steps, smooth([r[ref_key] for r in m], window), ls=":", c=line.get_color(), lw=1)
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("final-layer energy loss (mean |h|)")
    ax.set_title("Final-layer energy loss during RL (dotted: SFT model on the same rollouts)", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=110)


def energy_hacked_vs_normal(path: str, samples: list[dict], title: str) -> str:
    """Histogram of per-response final-layer energy loss, hacked vs normal responses."""
    plt = _pyplot()
    energy = np.concatenate([np.asarray(s["energy"]) for s in samples])
    hacked = np.concatenate([np.asarray(s["hacked"], bool) for s in samples])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    bins = np.linspace(energy.min(), energy.max() + 1e-9, 30)
    ax.hist(energy[~hacked], bins=bins, alpha=0.6, density=True, label=f"normal ({int((~hacked).sum())})")
    if hacked.any():
        ax.hist(energy[hacked], bins=bins, alpha=0.6, density=True, label=f"hacked ({int(hacked.sum())})")
    ax.set_xlabel("final-layer energy loss")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(plt, fig, path, dpi=110)


def latent_panels(out_dir: str, results: dict[str, dict], sft_latents, seed: int) -> dict[str, str]:
    """SFT vs final-policy outputs in InfoRM's latent space (t-SNE), one PNG per method, hacked marked."""
    paths = {}
    for name, result in results.items():
        final = result["final"]
        r2, s2 = project_2d(final["latents"], sft_latents, method="tsne", seed=seed)
        paths[name] = plot_latents(
            os.path.join(out_dir, f"latents-{slug(name)}.png"), r2, s2, hacked=final["hacked"],
            title=f"InfoRM latent space: SFT vs {name} policy", rlhf_name=name,
        )  # fmt: skip
    return paths


def csi_over_steps(path: str, results: dict[str, dict]) -> str:
    """CSI of each policy's outputs (in InfoRM's latent space, fixed evaluation prompts) over RL iterations."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, result in results.items():
        d = result["detection"]
        if d:
            ax.plot([r["iteration"] for r in d], [r["csi"] for r in d], marker="o", ms=3, label=name)
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("CSI")
    ax.set_title("Cluster Separation Index over RL (InfoRM latent space)", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=110)


def win_tie_lose(path: str, table: dict[str, dict[str, Any]], opponent: str) -> str:
    """Stacked bars of win / tie / lose of each method's final policy against ``opponent``."""
    plt = _pyplot()
    names = list(table)
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.45 * len(names)))
    left = np.zeros(len(names))
    for verdict, color in (("win", "tab:green"), ("tie", "lightgray"), ("lose", "tab:red")):
        values = np.array([table[n][verdict] for n in names])
        ax.barh(names, values, left=left, color=color, label=verdict)
        left += values
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of evaluation prompts (gold judge) vs {opponent}")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    return save_figure(plt, fig, path, dpi=110)
