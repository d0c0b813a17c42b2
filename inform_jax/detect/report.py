"""The detection report: CSI, MOP and (with labels) AUROC of SFT vs RLHF outputs under a reward model, for one
RLHF file or a series of checkpoints' files, with figures. Backs ``inform-jax detect``."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from inform_jax.detect.csi import csi
from inform_jax.detect.distances import nearest_distances
from inform_jax.detect.outliers import mop
from inform_jax.detect.plots import plot_csi_curve, plot_latents, project_2d
from inform_jax.detect.selection import auroc, select_checkpoint


@dataclasses.dataclass
class DetectOptions:
    """Clustering and test choices (see ``detect.csi.csi`` and ``detect.outliers.mop``)."""

    clustering: str = "kmeans"
    k: int | None = None
    k_rule: str = "silhouette"
    k_range: tuple[int, int] = (2, 10)
    eps: float | None = None
    min_samples: int = 5
    projection: str | None = None  # cluster in t-SNE 2-D ("tsne") or in the latent space (None)
    alpha: float = 0.1  # MOP's chi-square test level
    plot_projection: str = "tsne"  # 2-D view for the figures: "tsne" | "pca"
    rise: float = 0.5  # checkpoint selection: CSI threshold (1 + rise) * CSI(first checkpoint)
    threshold: float | None = None  # ... or an absolute threshold
    seed: int = 0


def analyze(rlhf, sft, *, hacked=None, options: DetectOptions = DetectOptions()) -> dict[str, Any]:
    """CSI, MOP and detection scores of RLHF latents [N, F] against SFT latents [M, F]; hacked [N] optional.

    Returns a JSON-ready dict. With labels: AUROC of the distance to the nearest SFT output and of the squared
    Mahalanobis distance at ranking hacked samples first, and MOP among hacked and among normal samples.
    """
    o = options
    result = csi(
        rlhf, sft, key=jax.random.key(o.seed), clustering=o.clustering, k=o.k, k_rule=o.k_rule, k_range=o.k_range,
        eps=o.eps, min_samples=o.min_samples, projection=o.projection,
    )  # fmt: skip
    outliers = mop(rlhf, sft, alpha=o.alpha)
    nearest, _ = nearest_distances(rlhf, sft)
    report: dict[str, Any] = {
        "num_rlhf": int(np.shape(rlhf)[0]),
        "num_sft": int(np.shape(sft)[0]),
        "csi": result.csi,
        "csi_per_sample": result.csi_per_sample,
        "num_clusters": len(result.clusters.size),
        "clustering": result.params,
        "clusters": result.clusters.rows(),
        "mop": float(outliers.proportion),
        "mop_threshold": float(outliers.threshold),
        "mop_alpha": o.alpha,
        "mean_distance_to_sft": float(nearest.mean()),
    }
    if hacked is not None:
        hacked = np.asarray(hacked, dtype=bool)
        report["num_hacked"] = int(hacked.sum())
        if 0 < hacked.sum() < hacked.size:
            report["auroc_distance_to_sft"] = auroc(nearest, hacked)
            report["auroc_mahalanobis"] = auroc(outliers.squared_distances, hacked)
            report["mop_hacked"] = float(outliers.outlier[hacked].mean())
            report["mop_normal"] = float(outliers.outlier[~hacked].mean())
    return report


def _labels(rows) -> np.ndarray | None:
    labels = [r.label for r in rows]
    return None if any(v is None for v in labels) else np.asarray(labels, dtype=bool)


def run_detect(
    rm_dir: str,
    sft_path: str,
    rlhf_paths: Sequence[str],
    out_dir: str,
    *,
    steps: Sequence[int] | None = None,
    control_rm: str | None = None,
    feature: str = "auto",
    tokenizer: str | None = None,
    max_length: int | str = "auto",
    batch_size: int = 32,
    token_budget: int | None = None,
    options: DetectOptions = DetectOptions(),
    log=print,
) -> dict[str, Any]:
    """Embed the SFT file and each RLHF file with the reward model at ``rm_dir``, analyze, plot, write
    ``report.json``; returns the report. ``steps`` [len(rlhf_paths)] names the checkpoints (default 0, 1, ...);
    with two or more files the report adds CSI-guided checkpoint selection. ``control_rm``: a second reward model
    (a standard RM) analyzed the same way, the paper's control; ``tokenizer``: default, each model's folder."""
    from inform_jax.data.preference import load_responses
    from inform_jax.data.tokenizer import load_tokenizer
    from inform_jax.detect.latents import embed_responses, resolve_feature
    from inform_jax.models.reward_model import load_reward_model

    if not rlhf_paths:
        raise ValueError("give at least one RLHF response file")
    steps = list(range(len(rlhf_paths))) if steps is None else [int(s) for s in steps]
    if len(steps) != len(rlhf_paths):
        raise ValueError(f"{len(steps)} steps for {len(rlhf_paths)} RLHF files")
    os.makedirs(out_dir, exist_ok=True)
    sft_rows, sft_report = load_responses(sft_path)
    log(str(sft_report))
    rlhf_rows = []
    for path in rlhf_paths:
        rows, load_report = load_responses(path)
        log(str(load_report))
        rlhf_rows.append(rows)

    report: dict[str, Any] = {"sft": sft_path, "options": dataclasses.asdict(options), "models": {}}
    models = {"reward_model": rm_dir} | ({"control": control_rm} if control_rm else {})
    for name, path in models.items():
        model = load_reward_model(path)
        tok = load_tokenizer(tokenizer or path)
        used = resolve_feature(model, feature if name == "reward_model" else "auto")
        embed = lambda rows, m=model, t=tok, u=used: embed_responses(  # noqa: E731
            m, rows, t, feature=u, max_length=max_length, batch_size=batch_size, token_budget=token_budget, log=log
        )
        sft = embed(sft_rows)
        entries = []
        for step, path_i, rows in zip(steps, rlhf_paths, rlhf_rows, strict=True):
            rlhf, hacked = embed(rows), _labels(rows)
            entry = {"step": step, "file": path_i, **analyze(rlhf, sft, hacked=hacked, options=options)}
            rlhf_2d, sft_2d = project_2d(rlhf, sft, method=options.plot_projection, seed=options.seed)
            entry["figure"] = plot_latents(
                os.path.join(out_dir, f"latents-{name}-step{step}.png"), rlhf_2d, sft_2d, hacked=hacked,
                title=f"{name} ({used}) at step {step}: CSI {entry['csi']:.1f}, MOP {entry['mop']:.2f}",
            )  # fmt: skip
            entries.append(entry)
            log(f"[{name}] step {step}: CSI {entry['csi']:.3f} (per sample {entry['csi_per_sample']:.4f}), "
                f"MOP {entry['mop']:.3f}" + (f", AUROC {entry['auroc_distance_to_sft']:.3f}"
                                             if "auroc_distance_to_sft" in entry else ""))  # fmt: skip
        section: dict[str, Any] = {"path": path, "feature": used, "checkpoints": entries}
        if len(entries) > 1:
            chosen = select_checkpoint(
                steps, [e["csi"] for e in entries], threshold=options.threshold, rise=options.rise
            )
            section["selection"] = chosen
            section["csi_figure"] = plot_csi_curve(
                os.path.join(out_dir, f"csi-{name}.png"), steps, [e["csi"] for e in entries],
                threshold=chosen["threshold"], selected_step=chosen["selected_step"],
            )  # fmt: skip
        report["models"][name] = section
    if jax.process_index() == 0:  # every host computed the report; one writes it
        with open(os.path.join(out_dir, "report.json"), "w") as f:
            json.dump(report, f, indent=2)
    log(f"detection report: {os.path.join(out_dir, 'report.json')}")
    return report
