"""Overoptimization detection during PPO: CSI and MOP of the policy's outputs against the SFT model's, in the
reward model's latent space, every ``detect.every`` iterations on a fixed prompt set (docs/reference.md section 2).

The SFT side (greedy SFT responses to the first ``detect.num_prompts`` prompts) is embedded once and cached;
each check embeds the current policy's greedy responses to the same prompts. The latents (and hacked labels,
when the trainer has a judge) are saved as ``detect/step_<iteration>.npz`` for the latent-space figures.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from inform_jax.detect.csi import csi
from inform_jax.detect.distances import nearest_distances
from inform_jax.detect.outliers import mop
from inform_jax.detect.selection import auroc


class TrainingDetector:
    def __init__(self, trainer):
        self.trainer = trainer
        self.count = min(trainer.config.detect.num_prompts, trainer.num_prompts)
        self.folder = os.path.join(trainer.config.train.output_dir, "detect")
        self._sft: np.ndarray | None = None

    def sft_latents(self) -> np.ndarray:
        if self._sft is None:
            self._sft = self.trainer.reference.features(self.count)
            if jax.process_index() == 0:  # every host computed them; one writes
                os.makedirs(self.folder, exist_ok=True)
                np.save(os.path.join(self.folder, "sft_latents.npy"), self._sft)
        return self._sft

    def __call__(self, iteration: int) -> dict[str, float]:
        """Metrics: csi, csi_per_sample, mop, and with a judge detect_hacked_fraction and detect_auroc (distance
        to the nearest SFT output ranking the hacked responses first)."""
        t, d = self.trainer, self.trainer.config.detect
        sft = self.sft_latents()
        policy, hacked = t.reference.greedy_features(t.actor_graph, t.actor_params, self.count)
        result = csi(policy, sft, key=jax.random.key(iteration), k=d.k, k_rule=d.k_rule)
        outliers = mop(policy, sft, alpha=d.alpha)
        metrics = {"csi": result.csi, "csi_per_sample": result.csi_per_sample, "mop": outliers.proportion}
        arrays = {"latents": policy, "labels": result.labels}
        if hacked is not None:
            arrays["hacked"] = hacked
            metrics["detect_hacked_fraction"] = float(hacked.mean())
            if 0 < hacked.sum() < hacked.size:
                metrics["detect_auroc"] = auroc(nearest_distances(policy, sft)[0], hacked)
        if jax.process_index() == 0:
            os.makedirs(self.folder, exist_ok=True)
            np.savez(os.path.join(self.folder, f"step_{iteration}.npz"), **arrays)
        return metrics
