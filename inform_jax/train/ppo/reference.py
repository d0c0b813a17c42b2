"""The SFT side of a PPO run: the reference model's final-layer energies on its own responses (EPPO's dE^SFT) and
the reward model's features of its greedy responses (IBL's reference, detection's SFT side), each computed once
per prompt and cached in the run folder, keyed by the prompts, the SFT model and the settings that change them."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.losses import energy_from_output
from inform_jax.models.batched import map_batches
from inform_jax.models.sharding import to_host
from inform_jax.train.run_folder import cached_array


class SFTReference:
    """The SFT-side quantities of ``trainer`` (a PPOTrainer: its config, prompts, frozen reference model, reward
    model, sampler and mesh)."""

    def __init__(self, trainer, digest: str | None = None):
        self.trainer = trainer
        self._digest = digest

    def model_digest(self) -> str:
        """The SFT model's digest: the one given (of its checkpoint files), else a sha256 of every parameter
        (gathered from every host)."""
        if self._digest is None:
            digest = hashlib.sha256()
            for leaf in jax.tree.leaves(self.trainer.ref_params):
                digest.update(to_host(leaf).tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    def energy(self, prompt_ids, prompt_mask, key=None) -> jax.Array:
        """dE^SFT for each prompt: the reference model's final-layer energy on its own response. [B].

        Greedy by default (then it depends on the prompt alone); with `energy.sft_samples` = k > 0, the mean
        over k responses sampled with the rollout settings.
        """
        t = self.trainer
        e = t.config.energy
        samples = max(e.sft_samples, 1)
        key = jax.random.key(t.config.train.seed) if key is None else key
        total = 0.0
        for i in range(samples):
            out = t.generate_responses(
                t.ref_graph, t.ref_params, prompt_ids, prompt_mask, jax.random.fold_in(key, i),
                greedy=e.sft_samples == 0,
            )  # fmt: skip
            mask = t.energy_mask(out.sequences, out.sequence_mask)
            ref_out = nnx.merge(t.ref_graph, t.ref_params)(out.sequences, out.sequence_mask)
            total = total + energy_from_output(ref_out, mask, site=e.site, normalize=e.normalize)
        return total / samples

    def _cache_path(self, name: str, *settings) -> str:
        """A file in the run folder keyed by the prompts, the whole SFT model and ``settings`` (so a changed input
        never reuses a stale cache)."""
        t = self.trainer
        digest = hashlib.sha256(t.prompts["input_ids"].tobytes())
        digest.update(self.model_digest().encode())
        policy = t.config.policy  # the same files loaded at another precision give other energies
        digest.update(repr((policy.dtype, policy.param_dtype, policy.attention_impl)).encode())
        digest.update(repr(settings).encode())
        return os.path.join(t.config.train.output_dir, f"{name}-{digest.hexdigest()[:16]}.npy")

    def _over_prompts(self, count: int, fn) -> np.ndarray:
        """fn(prompt batch) -> [B, ...] over the first ``count`` prompts in rollout-sized batches (the last one
        wraps around, so the rollout's compiled programs serve every batch); returns the [count, ...] result."""
        t = self.trainer
        rows = {k: v[:count] for k, v in t.prompts.items()}
        return map_batches(lambda b, _: fn(b), rows, batch_size=t.config.rollout.batch_size, mesh=t.mesh, exact=True)

    def cached_energy(self) -> np.ndarray:
        """dE^SFT for every prompt, computed once and stored in the run folder (keyed by prompts and model)."""
        t = self.trainer
        e = t.config.energy
        path = self._cache_path("sft_energy", e.site, e.normalize, e.sft_samples, dataclasses.astuple(t.config.rollout))
        return cached_array(
            path, lambda: self._over_prompts(t.num_prompts, lambda b: self.energy(b["input_ids"], b["attention_mask"]))
        )

    def greedy_features(self, graphdef, params, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Reward-model features [count, F] of greedy responses (of the model ``graphdef``/``params``) to the
        first ``count`` prompts, and the hacked labels [count] when a hacked_fn is given (else None)."""
        t = self.trainer

        def run(batch):
            gen = t.generate_responses(
                graphdef, params, batch["input_ids"], batch["attention_mask"], jax.random.key(0), greedy=True
            )
            with jax.set_mesh(t.mesh):
                features = t.reward_features(
                    t.reward_params, batch["input_ids"], batch["attention_mask"], gen.tokens, gen.mask
                )
            if features is None:
                raise ValueError(
                    "ibl and detect need reward-model features: a single reward model (not an ensemble or a "
                    "callable score) whose score function returns (rewards, features)"
                )
            hacked = (
                jnp.zeros(features.shape[:1], bool) if t.hacked_fn is None
                else t.hacked_fn(batch["input_ids"], batch["attention_mask"], gen.tokens, gen.mask)
            )  # fmt: skip
            return jnp.concatenate([features, hacked[:, None].astype(features.dtype)], axis=1)

        both = self._over_prompts(count, run)
        return both[:, :-1], (both[:, -1] > 0.5 if t.hacked_fn is not None else None)

    def features(self, count: int) -> np.ndarray:
        """Features [count, F] of the SFT model's greedy responses to the first ``count`` prompts, cached."""
        t = self.trainer
        path = self._cache_path("sft_features", count, dataclasses.astuple(t.config.rollout))
        return cached_array(path, lambda: self.greedy_features(t.ref_graph, t.ref_params, count)[0])
