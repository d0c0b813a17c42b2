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
import os
import shutil

from inform_jax.lab.runs import make_trainer, ppo_config
from inform_jax.lab.stages import Lab, eppo_overrides


def calibrate_eta(lab: Lab, sft, reward_model, work_dir: str, *, ratio: float, prompts: int = 128) -> dict:
    """eta such that ``eta * std(null gap) = ratio * reward std`` on the first ``prompts`` training prompts.

    Returns {"eta", "ratio", "reward_std", "null_gap_mean", "null_gap_std", "prompts"}; the reward's std is 1 when
    the lab normalizes rewards, else the reward model's std over the SFT samples the normalization would use."""
    c = lab.config
    folder = os.path.join(work_dir, "eta-calibration")
    shutil.rmtree(folder, ignore_errors=True)
    overrides = eppo_overrides(dataclasses.replace(c, eppo_reference="sampled"), 1.0)
    trainer = make_trainer(lab, sft, reward_model, ppo_config(c, folder, overrides))
    null = trainer.reference.null_penalty(prompts)
    reward_std = 1.0 if c.reward_normalize else float(trainer.reference.reward_normalization()[1].mean())
    shutil.rmtree(folder, ignore_errors=True)
    if null["gap_std"] <= 0:
        raise ValueError("EPPO calibration: the SFT-vs-SFT energy gap has no spread; set LabConfig.eta directly")
    eta = ratio * reward_std / null["gap_std"]
    return {"eta": eta, "ratio": ratio, "reward_std": reward_std, "null_gap_mean": null["gap_mean"],
            "null_gap_std": null["gap_std"], "prompts": len(null["gap"])}  # fmt: skip
