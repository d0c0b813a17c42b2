"""EPPO's eta in the lab, set from the SFT-vs-SFT null instead of carried over from the paper's scale.

The penalty is eta * |dE_SFT - dE_policy| (final-layer energy). With the SFT model standing in for the policy
(iteration 0), the gap is not 0 under the sampled reference: the SFT model's samples differ from one another. Its
spread there is the noise EPPO adds before the policy has moved at all, so eta is set relative to it: the penalty's
std under the null equals ``ratio`` times the reward's std (1 with ``reward.normalize=sft``; the protocol's grid is
ratio 0.1, 0.3, 1 and 3). The teacher-forced reference has no null spread (the gap is exactly 0 at iteration 0), so
its eta is read from the sampled reference's null with the same ratio: both readings then share one eta.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil

from inform_jax.lab.config import SFT_FIELDS
from inform_jax.lab.keyed_cache import cached_result
from inform_jax.lab.runs import make_trainer, ppo_config
from inform_jax.lab.stages import Lab, eppo_overrides


def calibrate_eta(lab: Lab, sft, reward_model, work_dir: str, *, ratio: float, prompts: int = 128) -> dict:
    """eta such that ``eta * std(null gap) = ratio * reward std`` on the first ``prompts`` training prompts.

    Returns {"eta", "ratio", "reward_std", "null_gap_mean", "null_gap_std", "prompts"}; the reward's std is 1 when
    the lab normalizes rewards, else the reward model's std over the SFT samples the normalization would use. The
    null's statistics are kept in the lab cache (``eppo-null/``) under the inputs they depend on."""
    c = lab.config
    folder = os.path.join(work_dir, "eta-calibration")
    shutil.rmtree(folder, ignore_errors=True)
    overrides = eppo_overrides(dataclasses.replace(c, eppo_reference="sampled"), 1.0)
    config = ppo_config(c, folder, overrides)
    trainer = functools.cache(lambda: make_trainer(lab, sft, reward_model, config))  # built only when needed

    def null_stats() -> dict:
        null = trainer().reference.null_penalty(prompts)
        return {"gap_mean": null["gap_mean"], "gap_std": null["gap_std"], "prompts": len(null["gap"])}

    # The null depends on the SFT model and its prompts (the world's and the SFT's settings), the sampling, the
    # energy settings and the seed, not on the reward model or the method: every run of a seed shares it.
    energy = {k: v for k, v in dataclasses.asdict(config.energy).items() if k != "reference_cache"}
    key = {"sft": c.digest(*SFT_FIELDS), "prompt_length": c.prompt_length, "prompts": prompts, "seed": c.seed,
           "rollout": dataclasses.asdict(config.rollout), "policy": dataclasses.asdict(config.policy),
           "energy": energy}  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    null = cached_result(os.path.join(lab.cache_dir, "eppo-null", f"{digest}.json"), key, null_stats)
    reward_std = 1.0 if c.reward_normalize else float(trainer().reference.reward_normalization()[1].mean())
    shutil.rmtree(folder, ignore_errors=True)
    if null["gap_std"] <= 0:
        raise ValueError("EPPO calibration: the SFT-vs-SFT energy gap has no spread; set LabConfig.eta directly")
    eta = ratio * reward_std / null["gap_std"]
    return {"eta": eta, "ratio": ratio, "reward_std": reward_std, "null_gap_mean": null["gap_mean"],
            "null_gap_std": null["gap_std"], "prompts": null["prompts"]}  # fmt: skip
