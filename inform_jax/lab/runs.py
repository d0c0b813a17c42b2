"""One RL run of the laboratory: PPO (or EPPO, or PPO w/ KL) against a proxy reward model, with the gold reward,
per-sample energies and hacking labels, and CSI in InfoRM's latent space recorded along the way."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.detect.csi import csi
from inform_jax.detect.latents import features_of
from inform_jax.detect.outliers import mop
from inform_jax.lab.stages import Lab
from inform_jax.models import CausalLM
from inform_jax.train.config import load_config
from inform_jax.train.ppo.config import PPOConfig
from inform_jax.train.ppo.trainer import PPOTrainer, callable_score_fn, reward_model_score_fn


@functools.partial(jax.jit, static_argnames=("graphdef", "feature"))
def _features(graphdef, params, prompt_ids, prompt_mask, tokens, mask, feature="latent"):
    ids, attention = jnp.concatenate([prompt_ids, tokens], 1), jnp.concatenate([prompt_mask, mask], 1)
    return features_of(nnx.merge(graphdef, params), ids, attention, feature)


class LatentProbe:
    """InfoRM's latent means of greedy responses to the lab's evaluation prompts (the detection space) and, with
    ``control_rm``, the same responses in a standard reward model's final hidden space (the paper's control)."""

    def __init__(self, lab: Lab, inform_rm, control_rm=None):
        self.lab = lab
        self.graphdef, self.params = nnx.split(inform_rm)
        self.control = None if control_rm is None else nnx.split(control_rm)

    def __call__(self, policy: CausalLM) -> dict[str, np.ndarray]:
        prompts = self.lab.eval_prompts
        out = self.lab.greedy(policy, prompts)
        inputs = (jnp.asarray(prompts["input_ids"]), jnp.asarray(prompts["attention_mask"]), out.tokens, out.mask)
        latents = _features(self.graphdef, self.params, *inputs)
        scores = self.lab.judge_scores(prompts, out.tokens, out.mask)
        result = {"latents": np.asarray(latents), "tokens": np.asarray(out.tokens), "mask": np.asarray(out.mask),
                  **scores}  # fmt: skip
        if self.control is not None:
            result["control"] = np.asarray(_features(*self.control, *inputs, feature="hidden"))
        return result


LAB_RUN_MARKER = ".inform-jax-lab-run"


def ppo_config(c, out_dir: str, overrides: dict, reference_cache: str = "", normalize_cache: str = "") -> PPOConfig:
    """The PPO config of one lab method's run (LabConfig `c`, the method's `overrides`) in `out_dir`;
    ``reference_cache``: where EPPO's sampled dE_SFT is kept (``energy.reference_cache``; the lab shares one per
    cache, since the per-prompt energies depend only on the SFT model, prompts, seed and settings they are keyed by);
    ``normalize_cache``: where the reward normalization's mean / std are kept (``reward.normalize_cache``: every run
    of a seed against one reward model shares them)."""
    settings = {
        "train.output_dir": out_dir, "train.progress": str(sys.stderr.isatty()).lower(), "train.seed": c.seed,
        "train.save_every": 10**9,
        "train.iterations": c.ppo_iterations, "rollout.batch_size": c.ppo_batch,
        "rollout.max_new_tokens": c.new_tokens, "ppo.actor_lr": c.actor_lr, "ppo.critic_lr": c.actor_lr,
        "ppo.epochs": 2, "ppo.minibatches": 2, "mesh.fsdp": 1, "policy.dtype": "float32",
        "train.report_to": list(c.report_to),
        **({"energy.reference_cache": reference_cache} if reference_cache else {}),
        **({"reward.normalize_cache": normalize_cache} if normalize_cache else {}), **overrides,
    }  # fmt: skip
    return load_config(None, [f"{k}={v}" for k, v in settings.items()], cls=PPOConfig)


def make_trainer(lab: Lab, policy: CausalLM, reward_model, config: PPOConfig, callbacks=()) -> PPOTrainer:
    """A PPO trainer of the lab: ``policy`` (the SFT model) against ``reward_model`` (None: the oracle arm, the
    world's gold reward itself), the gold judge logged beside it."""
    if reward_model is None:
        score_fn, params = callable_score_fn(lab.gold), None
    else:
        graphdef, params = nnx.split(reward_model)
        score_fn = reward_model_score_fn(graphdef)
    return PPOTrainer(
        config, lab.prompts, policy, score_fn=score_fn, reward_params=params,
        gold_fn=lab.gold, hacked_fn=lab.hacked, eos_id=lab.tokenizer.eos_token_id,
        pad_id=lab.tokenizer.pad_token_id, mesh=lab.mesh, callbacks=list(callbacks),
    )  # fmt: skip


def run_method(
    lab: Lab,
    name: str,
    policy: CausalLM,
    reward_model,
    overrides: dict,
    probe: LatentProbe,
    sft_probe: dict,
    out_dir: str,
    heldout=None,
) -> dict[str, Any]:
    """Train one policy; returns metrics per iteration, the detection series (CSI against ``sft_probe``, the SFT
    policy's probe outputs; in the control space too when the probe has one), per-sample energies with hacking
    labels (first and last quarter of the run), the final policy's probe outputs and, with ``heldout`` (a
    :class:`~inform_jax.lab.heldout.HeldOutEvaluator`), its reading every ``eval_every`` iterations.

    ``reward_model`` None is the oracle arm: PPO on the world's gold reward itself."""
    c = lab.config
    # A run is minutes long and its per-sample records live in memory: start it afresh rather than resume it. Only
    # a folder the lab made (it holds the marker) is replaced; anything else at that path is the user's.
    marker = os.path.join(out_dir, LAB_RUN_MARKER)
    if os.path.exists(out_dir) and os.listdir(out_dir) and not os.path.exists(marker):
        raise FileExistsError(f"{out_dir} exists and was not made by the lab; choose another --out or move it away")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    open(marker, "w").close()
    config = ppo_config(c, out_dir, overrides, reference_cache=lab.reference_cache, normalize_cache=lab.normalize_cache)
    checkpoints: list[dict] = []
    samples: list[dict] = []
    detection: list[dict] = []
    quarter = max(c.ppo_iterations // 4, 1)

    def record_samples(trainer, iteration, rollout, metrics):
        if iteration <= quarter or iteration > c.ppo_iterations - quarter:
            prompts = {k: v[rollout["prompt_index"]] for k, v in trainer.prompts.items()}
            scores = lab.judge_scores(prompts, rollout["tokens"], rollout["mask"])
            samples.append({"iteration": iteration, "energy": np.asarray(rollout["energy"]).tolist(),
                            "hacked": scores["hacked"].tolist(), "gold": scores["gold"].tolist()})  # fmt: skip

    def detect(trainer, iteration, rollout, metrics):
        probe_out = probe(trainer.policy())
        result = csi(probe_out["latents"], sft_probe["latents"], k=4, key=jax.random.key(iteration))
        outliers = mop(probe_out["latents"], sft_probe["latents"]).proportion  # MOP: the detectors' second signal
        entry = {"iteration": iteration, "csi": result.csi, "csi_per_sample": result.csi_per_sample, "mop": outliers,
                 "hacked_fraction": float(probe_out["hacked"].mean()), "gold": float(probe_out["gold"].mean()),
                 "gold_per_prompt": probe_out["gold"].tolist()}  # fmt: skip
        if "control" in probe_out:
            control = csi(probe_out["control"], sft_probe["control"], k=4, key=jax.random.key(iteration))
            entry["csi_control"] = control.csi
        detection.append(entry)

    def evaluate(trainer, iteration, rollout, metrics):
        checkpoints.append(heldout(trainer.policy(), iteration))

    callbacks = [(1, record_samples), (c.detect_every, detect)] + ([(c.eval_every, evaluate)] if heldout else [])
    trainer = make_trainer(lab, policy, reward_model, config, callbacks)
    final = trainer.fit()
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    return {"name": name, "metrics": metrics, "detection": detection, "samples": samples, "final": probe(final),
            "policy": final, "checkpoints": checkpoints}  # fmt: skip
