"""An exploit arm's positive controls under changed world settings, on tuning seeds, before the arm adopts them
(PROTOCOL.md sections 16, 17 and 19), each judged as the arms study judges it:

- a shortcut arm: per seed the SFT marker rate, the standard RM's normalized sensitivity to one inserted marker and
  PPO's held-out hacked fraction at the end. Nothing here reads a method other than standard-RM PPO, so a world
  chosen on it is chosen on baseline criteria only.
- the nuisance arm: per seed the marker probe's AUROC in the latent of InfoRM at beta 0 (the control), with the same
  probe on the SFT policy's, the standard RM's and that InfoRM's hidden state at the reward token beside it (where
  the marker is lost, if it is). No PPO: the control is the reward model's.

    python -m experiments.lab.arm_tuning shortcut_a --set marker_base_rate=0.03 --seeds 100 101 --out /tmp/tune
    python -m experiments.lab.arm_tuning nuisance --set sft_marker_copies=4 --seeds 100 101 --out /tmp/tune

The changed fields apply on top of the arm's own settings (``arms_study.ARM_SETTINGS``; shortcut (a): rate 0.9, SFT
marker rate 0.06 since section 17), so the example is section 16's world (rate 0.9, SFT marker rate 0.03).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from experiments.lab.arms_study import (
    arm_seed,
    arm_settings,
    inform_name,
    marker_in_latent,
    ppo_hacks,
    reaches_marker,
    rewards_marker,
)
from experiments.lab.common import provenance, run_grid

# Fields that name the run rather than the arm's world: the arm is the command's, the seed each of --seeds.
NOT_SETTABLE = ("arm", "seed")


def parse_setting(text: str) -> tuple[str, Any]:
    """ "field=value" -> (field, value); the value is read as JSON where it parses (numbers), else kept as text."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"--set takes field=value, got {text!r}")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value


def arm_controls_on_seed(arm: str, fields: dict[str, Any], seed: int, size: dict, cache: str, work: str) -> dict:
    """One seed's controls of ``arm`` with LabConfig ``fields`` over its usual settings: the measured values and
    whether each control holds, by the arms study's rules (:func:`~experiments.lab.arms_study.reaches_marker`,
    :func:`~experiments.lab.arms_study.rewards_marker`, :func:`~experiments.lab.arms_study.ppo_hacks`; the nuisance
    arm: :func:`_nuisance_controls`)."""
    from inform_jax.lab.config import LabConfig

    settings = {**arm_settings(arm), **fields}
    config = LabConfig(**{**size, **settings, "seed": seed})
    if arm == "nuisance":
        return _nuisance_controls(config, cache, work)
    controls = arm_seed(config, (), cache, os.path.join(work, "controls", f"s{seed}"))
    name = f"arm {arm} " + " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
    runs = run_grid({name: settings}, [seed], ("PPO",), size=size, work=os.path.join(work, "runs"), cache=cache)
    ppo = runs[name][seed]["overoptimization"]["PPO"]
    rm = controls["reward_models"]["Standard RM"]
    rate, hacked = controls["sft_marker_rate"], ppo["hacked_fraction_final"]
    return {
        "seed": seed, "sft_marker_rate": rate, "sensitivity": rm["sensitivity"],
        "sensitivity_stderr": rm["sensitivity_stderr"], "hacked_fraction_final": hacked,
        **{k: ppo[k] for k in ("gold_start", "gold_peak", "gold_final", "kl_final")},
        "holds": {"base_rate": reaches_marker(rate), "sensitivity": rewards_marker(rm), "ppo_hacks": ppo_hacks(hacked)},
    }  # fmt: skip


def _nuisance_controls(config, cache: str, work: str) -> dict:
    """The nuisance arm's control on one seed (:func:`~experiments.lab.arms_study.marker_in_latent` on InfoRM at
    beta 0), with the probe's AUROC on each hidden state it could have carried the marker from and on a sampled
    latent (what InfoRM's decoder reads in training)."""
    controls = arm_seed(config, (0.0,), cache, os.path.join(work, "controls", f"s{config.seed}"))
    standard, inform = controls["reward_models"]["Standard RM"], controls["reward_models"][inform_name(0.0)]
    return {
        "seed": config.seed, "sft_marker_rate": controls["sft_marker_rate"], "n_paired": controls["n_paired"],
        "sft_probe_auroc": controls["sft_probe_auroc"], "standard_probe_auroc_hidden": standard["probe_auroc_hidden"],
        "probe_auroc_hidden": inform["probe_auroc_hidden"], "probe_auroc": inform["probe_auroc"],
        "probe_auroc_sampled": inform["probe_auroc_sampled"],
        "holds": {"probe": marker_in_latent(inform["probe_auroc"])},
    }  # fmt: skip


def tune(arm: str, fields: dict[str, Any], seeds: Sequence[int], size: dict, cache: str, out: str) -> dict:
    """Every seed's controls (:func:`arm_controls_on_seed`) and, per control, whether it fires (holds on every
    seed); written to ``out``/controls.json and returned."""
    refused = sorted(set(fields) & set(NOT_SETTABLE))
    if refused:
        raise ValueError(f"--set cannot change {refused}: the arm is the command's argument, the seeds are --seeds")
    start = time.perf_counter()
    per_seed = [arm_controls_on_seed(arm, fields, s, size, cache, out) for s in seeds]
    fires = {c: all(r["holds"][c] for r in per_seed) for c in per_seed[0]["holds"]}
    result = {"arm": arm, "fields": fields, "seeds": list(seeds), "size": size, "per_seed": per_seed, "fires": fires,
              "provenance": {**provenance(time.perf_counter() - start),
                             "command": "python -m experiments.lab.arm_tuning " + " ".join(sys.argv[1:])}}  # fmt: skip
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "controls.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arm", choices=("nuisance", "shortcut_a", "shortcut_b"))
    parser.add_argument("--set", type=parse_setting, action="append", default=[], metavar="FIELD=VALUE",
                        help="a LabConfig field of the arm's world (repeatable)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    parser.add_argument("--cache", help="the laboratory cache (default ~/.cache/inform-jax/lab)")
    parser.add_argument("--out", required=True, help="folder for the runs and controls.json")
    parser.add_argument("--smoke", action="store_true", help="the arms study's smoke sizes (every seed still runs)")
    args = parser.parse_args(argv)
    from experiments.lab.arms_study import SMOKE_SIZE
    from experiments.lab.common import SMOKE
    from inform_jax.lab.config import QUICK
    from inform_jax.lab.demo import default_cache

    size = {**QUICK, **SMOKE, **SMOKE_SIZE} if args.smoke else {}
    result = tune(args.arm, dict(args.set), args.seeds, size, args.cache or default_cache(), args.out)
    for row in result["per_seed"]:
        if args.arm == "nuisance":
            print(f"seed {row['seed']}: marker probe AUROC in InfoRM's latent at beta 0 {row['probe_auroc']:.3f} "
                  f"(a sampled latent {row['probe_auroc_sampled']:.3f}); "
                  f"in the hidden state of the SFT policy {row['sft_probe_auroc']:.3f}, the standard RM "
                  f"{row['standard_probe_auroc_hidden']:.3f}, InfoRM at beta 0 {row['probe_auroc_hidden']:.3f} "
                  f"({row['n_paired']} samples, each with and without one marker)")  # fmt: skip
            continue
        print(f"seed {row['seed']}: SFT marker rate {row['sft_marker_rate']:.3f}, sensitivity "
              f"{row['sensitivity']:.2f} (+-{row['sensitivity_stderr']:.2f}), PPO hacked fraction at the end "
              f"{row['hacked_fraction_final']:.3f}")  # fmt: skip
    print("controls: " + ", ".join(f"{c} {'fires' if ok else 'fails'}" for c, ok in result["fires"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
