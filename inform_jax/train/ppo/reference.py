"""The SFT side of a PPO run: the reference model's final-layer energies on its own responses (EPPO's dE^SFT) and
the reward model's features of its greedy responses (IBL's reference, detection's SFT side), each computed once
per prompt and cached in the run folder, keyed by the prompts, the SFT model and the settings that change them;
the proxy reward's mean and std over SFT samples (``reward.normalize=sft``), stored once per run folder; and the
SFT-vs-SFT null of EPPO's penalty (:meth:`SFTReference.null_penalty`).

EPPO's dE^SFT, ``energy.reference``: ``sampled`` (here) is the seed paper's definition, the SFT model's energy on
its own responses sampled like the policy's (``energy.sft_samples`` = k > 0 averages k of them per prompt; 0 reads
the greedy response); ``teacher_forced`` reads the SFT model's energy on the policy's own sequence, in the
trainer's scoring pass (the reference forward that gives the KL's log-probs), so it is exactly 0 while the policy
is the SFT model. The sampled reference is not 0 there: the SFT model's samples differ from one another, and
:meth:`SFTReference.null_penalty` measures by how much.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.losses import energy_from_output
from inform_jax.models.batched import map_batches
from inform_jax.models.sharding import shard_rows, to_host
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
            self._digest = _update_with_leaves(hashlib.sha256(), self.trainer.ref_params).hexdigest()
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

    def _cache_path(self, name: str, *settings, folder: str = "") -> str:
        """A file in ``folder`` (default the run folder) keyed by the prompts, the whole SFT model and ``settings``
        (so a changed input never reuses a stale cache)."""
        t = self.trainer
        digest = hashlib.sha256(t.prompts["input_ids"].tobytes())
        digest.update(self.model_digest().encode())
        policy = t.config.policy  # the same files loaded at another precision give other energies
        digest.update(repr((policy.dtype, policy.param_dtype, policy.attention_impl)).encode())
        digest.update(repr(settings).encode())
        return os.path.join(folder or t.config.train.output_dir, f"{name}-{digest.hexdigest()[:16]}.npy")

    def _over_prompts(self, count: int, fn) -> np.ndarray:
        """fn(prompt batch) -> [B, ...] over the first ``count`` prompts in rollout-sized batches (the last one
        wraps around, so the rollout's compiled programs serve every batch); returns the [count, ...] result."""
        t = self.trainer
        rows = {k: v[:count] for k, v in t.prompts.items()}
        return map_batches(lambda b, _: fn(b), rows, batch_size=t.config.rollout.batch_size, mesh=t.mesh, exact=True)

    def cached_energy(self) -> np.ndarray:
        """dE^SFT for every prompt, computed once and stored in ``energy.reference_cache`` (default the run folder),
        keyed by prompts, model, settings and, for sampled responses, the seed their keys come from."""
        t = self.trainer
        e = t.config.energy
        seed = t.config.train.seed if e.sft_samples > 0 else None  # greedy responses need no key
        path = self._cache_path("sft_energy", e.site, e.normalize, e.sft_samples, dataclasses.astuple(t.config.rollout),
                                seed, folder=e.reference_cache)  # fmt: skip
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

    # ------------------------------------------------------------------------------------ reward normalization

    def sft_samples(self):
        """Responses of the SFT model to the training prompts, sampled with the rollout settings: an iterator of the
        sampler's outputs, ``ceil(reward.normalize_samples / rollout.batch_size)`` rollout batches over the prompts
        in order (wrapping around). The keys are split off the run's seed, apart from the rollouts' keys
        (``fold_in(seed key, iteration)``), and fixed, so every call yields the same samples."""
        t = self.trainer
        c = t.config
        size = c.rollout.batch_size
        base = jax.random.split(jax.random.key(c.train.seed))[1]
        for i in range(-(-c.reward.normalize_samples // size)):
            prompts = shard_rows(t.prompt_batch(np.arange(i * size, (i + 1) * size) % t.num_prompts), t.mesh)
            yield t.generate_responses(
                t.ref_graph, t.ref_params, prompts["input_ids"], prompts["attention_mask"], jax.random.fold_in(base, i)
            )

    def sft_scores(self) -> np.ndarray:
        """Raw proxy scores [K, S] of each reward member (K = 1 but for a member-wise ensemble) on the S SFT
        samples of :meth:`sft_samples`, scored as the rollouts are (``reward.missing_eos=append_eos`` included)."""
        t = self.trainer
        scores = []
        for gen in self.sft_samples():
            with jax.set_mesh(t.mesh):
                scores.append(to_host(t.member_scores(t.reward_params, gen.sequences, gen.sequence_mask)))
        return np.concatenate(scores, axis=1)

    def reward_digest(self) -> str | None:
        """A sha256 of the reward model: its graph (modules, compute precision; memory addresses left out) and its
        parameters (gathered from every host); None for a score function without parameters or graph (the world's
        gold reward: nothing to key it by)."""
        t = self.trainer
        leaves, tree = jax.tree.flatten(t.reward_params)
        graph = getattr(t.score_fn, "graph", None)
        if not leaves or graph is None:
            return None
        digest = hashlib.sha256(re.sub(r" at 0x[0-9a-f]+", "", repr(graph)).encode())
        digest.update(str(tree).encode())
        return _update_with_leaves(digest, t.reward_params).hexdigest()

    def reward_normalization(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [K], std [K]) of the proxy reward's members over SFT samples (:meth:`sft_scores`; population std),
        computed once per run folder and stored there as reward_norm.npy, so a resumed run divides by the same.

        With ``reward.normalize_cache`` the statistics are also kept in that folder, keyed by everything the SFT
        samples and their scores depend on (prompts, SFT model and precision, sampling settings, seed, sample count,
        reward parameters, the truncated responses' reading): runs against one reward model compute them once."""
        t = self.trainer
        c = t.config

        def compute():
            scores = self.sft_scores()
            return np.stack([scores.mean(axis=1), scores.std(axis=1)])

        def shared_or_compute():
            # only when the run folder has none (a resumed run skips the digest's gather of every parameter)
            reward = self.reward_digest() if c.reward.normalize_cache else None
            if reward is None:
                return compute()
            settings = (reward, c.reward.normalize_samples, c.reward.missing_eos, dataclasses.astuple(c.rollout))
            shared = self._cache_path("reward_norm", *settings, c.train.seed, folder=c.reward.normalize_cache)
            return cached_array(shared, compute)

        stats = cached_array(os.path.join(c.train.output_dir, "reward_norm.npy"), shared_or_compute)
        return stats[0], stats[1]

    # ------------------------------------------------------------------------------------ EPPO's null

    def null_penalty(self, count: int | None = None, key=None) -> dict:
        """EPPO's penalty at iteration 0 with the SFT model standing in for the policy (the SFT-vs-SFT null).

        For each of the first ``count`` prompts (default all): a "policy" response sampled from the SFT model with
        the rollout settings, its energy under the SFT model, and dE^SFT as ``energy.reference`` defines it
        (sampled: :meth:`energy`, greedy or the mean over ``energy.sft_samples`` samples, with other keys;
        teacher_forced: the SFT model on that same response, so exactly 0). Returns gap [count] = |dE^SFT -
        dE^policy|, penalty = energy.eta * gap, and the mean and std (population) of both as floats: the
        penalty a method pays for the sampling noise alone, against which EPPO's penalty is read."""
        t = self.trainer
        e = t.config.energy
        count = t.num_prompts if count is None else min(count, t.num_prompts)
        key = jax.random.fold_in(jax.random.key(t.config.train.seed), 0) if key is None else key
        batch_number = itertools.count()  # map_batches runs the batches in order: each one gets its own keys

        def run(batch):
            i = next(batch_number)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            gen = t.generate_responses(t.ref_graph, t.ref_params, ids, mask, jax.random.fold_in(key, 2 * i))
            energy_mask = t.energy_mask(gen.sequences, gen.sequence_mask)
            ref_out = nnx.merge(t.ref_graph, t.ref_params)(gen.sequences, gen.sequence_mask)
            policy = energy_from_output(ref_out, energy_mask, site=e.site, normalize=e.normalize)
            if e.reference == "teacher_forced":
                sft = energy_from_output(ref_out, energy_mask, site=e.site, normalize=e.normalize)
            else:
                sft = self.energy(ids, mask, jax.random.fold_in(key, 2 * i + 1))
            return jnp.abs(sft - policy)

        gap = np.asarray(self._over_prompts(count, run), np.float64)
        penalty = e.eta * gap
        return {"gap": gap, "penalty": penalty, "gap_mean": float(gap.mean()), "gap_std": float(gap.std()),
                "penalty_mean": float(penalty.mean()), "penalty_std": float(penalty.std())}  # fmt: skip


def _update_with_leaves(digest, tree):
    """``digest`` (a hashlib object) updated with the bytes of every leaf of ``tree`` (gathered from every host)."""
    for leaf in jax.tree.leaves(tree):
        digest.update(to_host(leaf).tobytes())
    return digest
