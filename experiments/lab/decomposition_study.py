"""Reward decomposition's prioritized training under the paired rule (PROTOCOL.md section 12): the standard RM
trained on the pairs with the smallest prompt-free gap ("Prioritized RM", the library's ``dir`` method at its
defaults), read first by best-of-n and then by PPO, on the lab's world and on shortcut (b), paired per seed with
the standard RM.

    best-of-n     the same pool of SFT samples per held-out prompt as the best_of_n study (same seed, same size),
                  ranked by the standard and the prioritized RM
    PPO           a run of the prioritized RM per evaluation seed joined to the shared grid (experiments/lab/paired.py):
                  its PPO is the standard RM's run on the same world, SFT policy, prompts and sampling keys
    shortcut (b)  the same on the arm whose marker predicts the labels beyond gold, joined to the arms study's runs

The lab's spurious features (length, filler words, repetition) and shortcut (b)'s marker are all read from the
response alone: prompt-free, the part of a reward the priority is meant to train away. The toy studies
(``decomposition``) measure the mechanism itself on sets built for it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from experiments.lab.arms_study import (
    RUN_METHODS,
    SMOKE_ARMS,
    SMOKE_METHODS,
    SMOKE_SIZE,
    _ppo_hacks,
    _run_table,
    arm_settings,
)
from experiments.lab.arms_study import arm_runs as arms_study_runs
from experiments.lab.common import provenance, run_grid, spread, write_study
from experiments.lab.paired import (
    BON_READ_AT,
    BON_SAMPLES,
    MIN_EFFECT_GOLD,
    PAIRED_GRID,
    bon_gold_table,
    bon_seed,
    gold_table,
    judged,
    paired_grid,
    with_runs,
)
from inform_jax.lab.verdicts import Claim

PRIORITIZED = "Prioritized RM"
ARM = "shortcut_b"


def _claims(arm: str) -> tuple[list[Claim], list[Claim]]:
    """(the lab world's family, the arm's family), each Holm-corrected on its own (section 12)."""
    world = [Claim(f"best-of-{n}: the prioritized RM picks samples with higher gold than the standard RM",
                   PRIORITIZED, "Standard RM", f"best-of-{n} gold") for n in BON_READ_AT]  # fmt: skip
    world += [Claim(f"PPO on the prioritized RM beats PPO on the standard RM in held-out gold ({what})", PRIORITIZED,
                    "PPO", what) for what in ("gold at 1x KL", "final gold")]  # fmt: skip
    on_arm = [Claim(f"{arm}: PPO on the prioritized RM beats PPO on the standard RM in held-out gold ({what})",
                    PRIORITIZED, "PPO", what) for what in ("gold at 1x KL", "final gold")]  # fmt: skip
    on_arm.append(Claim(f"{arm}: the prioritized RM's policy carries the marker less often than PPO's at the end",
                        PRIORITIZED, "PPO", "final hacked fraction", -1))  # fmt: skip
    return world, on_arm


def priority_record(config, cache: str) -> dict[str, Any]:
    """What the priority did on ``config``'s world (description, added after section 12's freeze): per refresh
    step, the share of label-flipped pairs (the world's 25% noise) among the pairs it kept and among those it
    dropped, and the held-out (noise-free) accuracy of the prioritized and of the standard RM. Read from the
    prioritized RM's run record (``train/decomposition/step_<s>.npz``) and the world's pair file."""
    import glob

    from inform_jax.lab.stages import Lab

    lab = Lab(config, cache, log=lambda *_: None)
    with open(lab.files["prefs_train.jsonl"]) as f:
        flipped = np.array([json.loads(line)["flipped"] for line in f])
    refreshes = {}
    paths = glob.glob(os.path.join(lab.rm_folder("dir"), "train", "decomposition", "step_*.npz"))
    steps = {int(os.path.basename(p)[len("step_") : -len(".npz")]): p for p in paths}
    for step, path in sorted(steps.items()):
        kept = np.load(path)["weights"] > 0
        if kept.shape != flipped.shape:
            raise ValueError(
                f"{path}: {kept.size} pair weights for {flipped.size} pairs in {lab.files['prefs_train.jsonl']}"
            )
        refreshes[str(step)] = {
            "flipped_kept": float(flipped[kept].mean()),
            "flipped_dropped": float(flipped[~kept].mean()),
        }
    accuracy = {}
    for kind in ("standard", "dir"):
        with open(os.path.join(lab.rm_folder(kind), "train", "eval.json")) as f:
            accuracy[kind] = json.load(f)["accuracy"]
    return {"flipped": float(flipped.mean()), "refreshes": refreshes, "accuracy": accuracy}


def _priority_table(records: dict[int, dict]) -> dict[str, dict]:
    """Over seeds: the RMs' held-out accuracy and, per refresh, the flipped share among kept and dropped pairs."""
    first = next(iter(records.values()))
    table = {"held-out accuracy": {k: spread([r["accuracy"][k] for r in records.values()]) for k in first["accuracy"]}}
    for step in first["refreshes"]:
        table[f"refresh at step {step}: flipped pairs"] = {
            k: spread([r["refreshes"][step][k] for r in records.values() if step in r["refreshes"]])
            for k in ("flipped_kept", "flipped_dropped")
        }
    return table


def decomposition_paired(
    seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False
) -> dict[str, Any]:
    """Section 12's two families over the evaluation ``seeds``. Work folders beside ``work``: the shared grid
    (``paired-grid``), the arms study's runs (``arms``) and this study's own (``decomposition``). Smoke: a 16-sample
    pool and the smoke arm with the arms study's smoke methods."""
    from inform_jax.lab.config import LabConfig
    from inform_jax.lab.demo import default_cache

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    root = os.path.dirname(os.path.abspath(work))
    own = os.path.join(root, "decomposition")
    cache = cache or default_cache()
    # the lab world: best-of-n on the best_of_n study's pool, then PPO joined to the shared grid
    bon = {s: bon_seed(LabConfig(**{**size, "seed": s}), cache, 16 if smoke else BON_SAMPLES,
                       os.path.join(own, "best_of_n", f"seed{s}"), names=("Standard RM", PRIORITIZED))
           for s in seeds}  # fmt: skip
    grid = paired_grid(seeds, size, work, cache)
    setting = {"prioritized": {**PAIRED_GRID["paired grid"], "methods": (PRIORITIZED,)}}
    runs = run_grid(setting, seeds, (), size=size, work=os.path.join(own, "runs"), cache=cache)["prioritized"]
    world = {s: {**with_runs(grid[s], {PRIORITIZED: (PRIORITIZED, runs[s])}), "best_of_n": bon[s]["best_of_n"]}
             for s in seeds}  # fmt: skip
    # shortcut (b): the arms study's PPO and this study's prioritized RM on the arm's world
    arm = SMOKE_ARMS[0] if smoke else ARM
    arm_size = {**size, **SMOKE_SIZE} if smoke else size
    arm_grid = arms_study_runs((arm,), seeds, arm_size, os.path.join(root, "arms"), cache,
                               SMOKE_METHODS if smoke else RUN_METHODS)[arm]  # fmt: skip
    arm_setting = {f"arm {arm} prioritized": {**arm_settings(arm), "methods": (PRIORITIZED,)}}
    arm_own = run_grid(arm_setting, seeds, (), size=arm_size, work=os.path.join(own, "runs"), cache=cache)
    arm_own = arm_own[f"arm {arm} prioritized"]
    on_arm = {s: with_runs(arm_grid[s], {PRIORITIZED: (PRIORITIZED, arm_own[s])}) for s in seeds}
    world_claims, arm_claims = _claims(arm)
    world_rows, world_paired = judged(world, world_claims, MIN_EFFECT_GOLD)
    arm_rows, arm_paired = judged(on_arm, arm_claims, MIN_EFFECT_GOLD)
    control = _ppo_hacks(f"{arm}: PPO on the standard RM hacks (held-out hacked fraction", on_arm)
    # what the priority kept, per world (description, not a claim: added after the freeze, see section 12)
    priority = {
        "lab world": {s: priority_record(LabConfig(**{**size, "seed": s}), cache) for s in seeds},
        f"arm {arm}": {
            s: priority_record(LabConfig(**{**arm_size, **arm_settings(arm), "seed": s}), cache) for s in seeds
        },
    }
    payload = {"study": "decomposition_paired", "rule": "paired",
               "title": "Reward decomposition's prioritized RM against the standard RM: best-of-n, PPO at matched KL "
                        "and on shortcut (b) (PROTOCOL.md section 12)",
               "seeds": list(seeds), "size": size,
               "claims": [*world_rows, control, *arm_rows], "paired": world_paired + arm_paired,
               "table": {"best-of-n gold over seeds (mean +- sd)": bon_gold_table(bon, ("Standard RM", PRIORITIZED)),
                         **gold_table(world, ("PPO", PRIORITIZED)),
                         f"arm {arm} over seeds (mean +- sd)": _run_table(on_arm, ("PPO", PRIORITIZED)),
                         **{f"the priority on the {w} over seeds (mean +- sd)": _priority_table(r)
                            for w, r in priority.items()}},
               "priority": {w: {str(s): r for s, r in v.items()} for w, v in priority.items()},
               "figures": [], "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("decomposition_paired", payload, out)
    return payload
