"""Detection figures (matplotlib, PNG): SFT vs RLHF outputs in a 2-D view of the latent space, and CSI over
training, as in the InfoRM talk's detection figures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inform_jax.detect.csi import tsne_project
from inform_jax.detect.distances import check_points


def project_2d(rlhf, sft, *, method: str = "tsne", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Joint 2-D view of RLHF [N, D] and SFT [M, D] points, row order kept: "tsne" (the authors' view,
    min-max normalized) or "pca" (the top two principal axes of both sets together). D = 2 passes through."""
    rlhf = check_points("rlhf_latents", rlhf)
    sft = check_points("sft_latents", sft, dim=rlhf.shape[1])
    if rlhf.shape[1] == 2:
        return rlhf, sft
    if method == "tsne":
        return tsne_project(rlhf, sft, seed=seed)
    if method != "pca":
        raise ValueError(f"projection method must be 'tsne' or 'pca', got {method!r}")
    both = np.concatenate([rlhf, sft]).astype(np.float64)
    centered = both - both.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    emb = (centered @ vt[:2].T).astype(np.float32)
    return emb[: rlhf.shape[0]], emb[rlhf.shape[0] :]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, path: str, *, dpi: int) -> str:
    """Lay out, write and close a figure; returns ``path``. On many hosts process 0 writes it."""
    import jax

    fig.tight_layout()
    if jax.process_index() == 0:
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_latents(
    path: str,
    rlhf_2d: np.ndarray,
    sft_2d: np.ndarray,
    *,
    hacked: np.ndarray | None = None,
    title: str = "SFT vs RLHF outputs in the latent space",
    rlhf_name: str = "RLHF",
) -> str:
    """Scatter SFT points [M, 2] and RLHF points [N, 2]; RLHF samples with ``hacked`` [N] True are marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(sft_2d[:, 0], sft_2d[:, 1], s=10, c="tab:blue", alpha=0.6, label="SFT outputs")
    rlhf_2d = np.asarray(rlhf_2d)
    if hacked is None:
        ax.scatter(rlhf_2d[:, 0], rlhf_2d[:, 1], s=10, c="tab:red", alpha=0.6, label=f"{rlhf_name} outputs")
    else:
        hacked = np.asarray(hacked, dtype=bool)
        normal = rlhf_2d[~hacked]
        ax.scatter(normal[:, 0], normal[:, 1], s=10, c="tab:red", alpha=0.6, label=f"{rlhf_name} outputs")
        ax.scatter(rlhf_2d[hacked, 0], rlhf_2d[hacked, 1], s=28, marker="x", c="black", linewidths=1.0,
                   label=f"{rlhf_name}, overoptimized ({int(hacked.sum())})")  # fmt: skip
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(plt, fig, path, dpi=120)


def plot_csi_curve(
    path: str,
    steps: Sequence[int],
    values: Sequence[float],
    *,
    threshold: float | None = None,
    selected_step: int | None = None,
    ylabel: str = "CSI",
    title: str = "Cluster Separation Index over RL training",
) -> str:
    """CSI (or any per-checkpoint metric) against step, with the selection threshold and chosen checkpoint."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(list(steps), list(values), marker="o", c="tab:purple", label=ylabel)
    if threshold is not None:
        ax.axhline(threshold, ls="--", c="gray", lw=1, label="threshold")
    if selected_step is not None:
        ax.axvline(selected_step, ls=":", c="tab:green", lw=1.5, label=f"selected: step {selected_step}")
    ax.set_xlabel("RL step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(plt, fig, path, dpi=120)
