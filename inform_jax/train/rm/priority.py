"""Reward decomposition's prioritized training: a trainer callback that reweights pairs by their prompt-free gap."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from inform_jax.eval.decomposition import PairTokens, decompose
from inform_jax.losses.decomposition import priority_weights


class PromptFreePriority:
    """A reward-model trainer callback: at every step that is a multiple of ``refresh_every`` and at least
    ``warmup_steps`` (plain BT before), estimate dr2 for every training pair with the current model (other prompts
    drawn with seed ``seed + step``) and set ``trainer.pair_weights``, used from the next step on, to
    :func:`inform_jax.losses.decomposition.priority_weights` of it. The weights are checkpointed with the model,
    so a resumed run continues with the weights of its last refresh; each refresh is saved to
    ``output_dir/decomposition/step_<s>.npz``."""

    def __init__(self, section, tokens: PairTokens, output_dir: str, seed: int = 0):
        self.section = section
        self.tokens = tokens
        self.folder = os.path.join(output_dir, "decomposition")
        self.seed = seed

    @property
    def every(self) -> int:
        return self.section.refresh_every

    def __call__(self, trainer, step: int) -> None:
        s = self.section
        if step < s.warmup_steps:
            return
        parts = decompose(
            trainer.current_model(), self.tokens, num_prompts=s.num_prompts, estimator=s.estimator,
            weights=s.weights, tau=s.tau, seed=self.seed + step,
        )  # fmt: skip
        weights = np.asarray(
            priority_weights(jnp.asarray(parts["dr2"]), scheme=s.priority, keep_fraction=s.keep_fraction,
                             tau=s.priority_tau)
        )  # fmt: skip
        trainer.pair_weights = weights.astype(np.float32)
        if jax.process_index() != 0:  # every host computed the weights; one writes the record
            return
        os.makedirs(self.folder, exist_ok=True)
        np.savez(os.path.join(self.folder, f"step_{step}.npz"), dr=parts["dr"], dr2=parts["dr2"], weights=weights)
