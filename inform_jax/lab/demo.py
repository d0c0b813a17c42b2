"""`inform-jax demo`: the reward-hacking laboratory on the synthetic world, end to end on a laptop.

SFT policy -> proxy reward models (standard, InfoRM, ensemble) trained on noisy preferences -> PPO against each,
PPO with a KL penalty, and EPPO -> figures, win / tie / lose by the gold judge, report.md and report.html.
The SFT policy and the reward models are cached (``--cache``), so a second run only repeats the RL.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from inform_jax.compile_cache import use_compile_cache
from inform_jax.lab.comparison import matched_kl_comparison, overoptimization_heldout
from inform_jax.lab.config import QUICK, LabConfig, slug
from inform_jax.lab.detectors import evaluate_detectors
from inform_jax.lab.figures import (
    csi_over_steps,
    energy_hacked_vs_normal,
    energy_over_steps,
    gold_and_proxy_vs_kl,
    latent_panels,
    win_tie_lose,
)
from inform_jax.lab.heldout import HeldOutEvaluator
from inform_jax.lab.report import energy_by_label, win_tables, write_report
from inform_jax.lab.runs import LatentProbe, run_method
from inform_jax.lab.stages import Lab, method_runs
from inform_jax.train.tracking import report_figures


def default_cache() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "inform-jax", "lab")


def run_demo(
    config: LabConfig, out_dir: str, *, cache_dir: str | None = None, log=print, with_figures: bool = True
) -> dict[str, Any]:
    """Run the laboratory and write the report folder; returns {"report": html path, "summary": numbers}.
    ``with_figures=False`` writes the report's numbers without its figures (the lab's studies draw their own)."""
    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    cache_dir = cache_dir or default_cache()
    use_compile_cache(os.path.join(cache_dir, "xla"))  # methods share programs; a second run skips compiling
    lab = Lab(config, cache_dir, log=log)
    sft = lab.sft_policy()
    runs = method_runs(config)
    # InfoRM embeds outputs for detection; the standard RM's hidden space is the control (config.control_probe)
    kinds = sorted({kind for _, kind, _ in runs} | {"inform"} | ({"standard"} if config.control_probe else set()))
    # the oracle arm ("gold") optimizes the world's gold reward itself: no reward model to train
    reward_models = {kind: lab.reward_model(kind, sft) for kind in kinds if kind != "gold"} | {"gold": None}
    probe = LatentProbe(lab, reward_models["inform"], reward_models["standard"] if config.control_probe else None)
    sft_final = probe(sft)
    calibration = None
    if config.eppo_penalty_ratio is not None and any("energy.eta" in o for _, _, o in runs):
        from inform_jax.lab.calibration import calibrate_eta

        eta_kind = next(kind for _, kind, o in runs if "energy.eta" in o)  # the null does not depend on the RM
        calibration = calibrate_eta(lab, sft, reward_models[eta_kind], out_dir, ratio=config.eppo_penalty_ratio,
                                    prompts=config.eppo_calibration_prompts)  # fmt: skip
        log(f"EPPO: eta {calibration['eta']:.3g} (the SFT-vs-SFT energy gap's std {calibration['null_gap_std']:.3g} "
            f"x eta = {calibration['ratio']:g} x the reward's std)")  # fmt: skip
        runs = method_runs(config, eta=calibration["eta"])
    best_of_n = None
    if config.bon_samples:  # every reward model ranks one pool of SFT samples: read before any PPO runs
        from inform_jax.lab.best_of_n import bon_summary

        best_of_n = bon_summary(lab, sft, {kind: rm for kind, rm in reward_models.items() if rm is not None},
                                samples=config.bon_samples, seed=config.seed)  # fmt: skip
        log(
            "best-of-n on the SFT pool: "
            + ", ".join(f"{name} {c['gold'][-1]:.3f}" for name, c in best_of_n["curves"].items())
            + f" at n = {config.bon_samples}"
        )
    # every checkpoint of every method is read on the same held-out samples' keys: the SFT reading is shared
    heldout = HeldOutEvaluator(lab, sft, samples_per_prompt=config.eval_samples_per_prompt, seed=config.seed)
    sft_reading = heldout(sft, 0)
    log(f"SFT policy: held-out gold {sft_reading['gold']:.3f} (+-{1.96 * sft_reading['gold_se']:.3f}) over "
        f"{sft_reading['samples']} samples")  # fmt: skip
    results = {}
    for i, (name, kind, overrides) in enumerate(runs):
        log(f"[{i + 1}/{len(runs)}] RL: {name} against the {kind} reward model"
            + (f" ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else ""))  # fmt: skip
        run_start = time.perf_counter()
        results[name] = run_method(lab, name, sft, reward_models[kind], overrides, probe, sft_final,
                                   os.path.join(out_dir, "runs", slug(name)), heldout=heldout)  # fmt: skip
        results[name]["checkpoints"] = [sft_reading, *results[name]["checkpoints"]]
        o = overoptimization_heldout(results[name]["checkpoints"], results[name]["metrics"])
        log(
            f"  held-out gold {o['gold_start']:.3f} -> peak {o['gold_peak']:.3f} at KL {o['kl_at_gold_peak']:.2f} -> "
            f"{o['gold_final']:.3f} at KL {o['kl_final']:.2f}; proxy at the peak {o['proxy_at_gold_peak']:.3f}, "
            f"at the end {o['proxy_final']:.3f} ({time.perf_counter() - run_start:.1f} s)"
        )
    window = _window(config)
    summary = {
        "window": window,
        "sft_heldout": sft_reading,
        "best_of_n": best_of_n,
        "eppo_calibration": calibration,
        "overoptimization": {n: overoptimization_heldout(r["checkpoints"], r["metrics"]) for n, r in results.items()},
        "matched_kl": matched_kl_comparison({n: r["checkpoints"] for n, r in results.items()}, reference="PPO")
        if "PPO" in results
        else None,
        "heldout": {n: r["checkpoints"] for n, r in results.items()},
        # each alarm rule (CSI, MOP, energy, KL) scored against the held-out gold curve; the oracle and PPO w/ KL
        # are the runs an alarm should stay quiet on
        "detectors": _jsonable(evaluate_detectors(results)),
        "win_tie_lose": win_tables(results, sft_final, config.tie_margin),
        "final_gold": {n: float(np.mean(r["final"]["gold"])) for n, r in results.items()}
        | {"SFT": float(np.mean(sft_final["gold"]))},
        "sft_gold_per_prompt": np.asarray(sft_final["gold"]).tolist(),
        "final_gold_per_prompt": {n: np.asarray(r["final"]["gold"]).tolist() for n, r in results.items()},
        "final_hacked_fraction": {n: float(np.mean(r["final"]["hacked"])) for n, r in results.items()}
        | {"SFT": float(np.mean(sft_final["hacked"]))},
        "detection": {n: r["detection"] for n, r in results.items()},
        "energy_by_label": {
            n: energy_by_label(r["samples"], max(config.ppo_iterations // 4, 1)) for n, r in results.items()
        },  # fmt: skip
        "metrics": {n: r["metrics"] for n, r in results.items()},
    }
    if config.control_probe:  # the detection study's 2x2: final outputs in both spaces, with hacking labels
        keep = lambda p: {k: np.asarray(p[k]).tolist() for k in ("latents", "control", "hacked")}  # noqa: E731
        summary["features"] = {n: keep(r["final"]) for n, r in results.items()} | {"SFT": keep(sft_final)}
    figures = draw_figures(out_dir, config, results, summary, sft_final) if with_figures else {}
    seconds = time.perf_counter() - start
    summary["seconds"] = seconds
    report = write_report(out_dir, summary, figures, dataclasses.asdict(config), seconds)
    if set(config.report_to) - {"jsonl"}:  # each method's run logged its own metrics; the report's figures here
        sent = report_figures(out_dir, config.report_to, figures, step=config.ppo_iterations,
                              config=dataclasses.asdict(config), name="lab report",
                              values={f"final_gold/{n}": v for n, v in summary["final_gold"].items()})  # fmt: skip
        log(f"sent {sent} figures to {', '.join(r for r in config.report_to if r != 'jsonl')}")
    log(f"done in {seconds / 60:.1f} min; report: {report}")
    return {"report": report, "summary": summary}


def draw_figures(out_dir: str, config: LabConfig, results: dict, summary: dict, sft_final: dict) -> dict[str, Any]:
    """The report's figures under ``out_dir``: {name: path, or {panel: path} for the latent and win panels}."""
    return {
        "gold_proxy": gold_and_proxy_vs_kl(os.path.join(out_dir, "gold-proxy-vs-kl.png"), results),
        "energy": energy_over_steps(
            os.path.join(out_dir, "energy-over-steps.png"), results, summary["window"], config.num_layers
        ),  # fmt: skip
        "energy_hist": energy_hacked_vs_normal(
            os.path.join(out_dir, "energy-hacked-vs-normal.png"),
            results[next(iter(results))]["samples"],
            f"{next(iter(results))}: final-layer energy loss, last quarter of RL",
        ),
        "latents": latent_panels(out_dir, results, sft_final["latents"], config.seed),
        "csi": csi_over_steps(os.path.join(out_dir, "csi-over-steps.png"), results),
        "wins": {
            opponent: win_tie_lose(
                os.path.join(out_dir, f"wins-{opponent.split()[-1].lower()}.png"), table, opponent.split()[-1]
            )
            for opponent, table in summary["win_tie_lose"].items()
        },  # fmt: skip
    }


def _jsonable(value):
    """NumPy scalars and arrays inside nested dicts / lists as plain Python (metrics.json)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _window(config: LabConfig) -> int:
    """Iterations averaged in the summary numbers: rollout batches are small, single iterations noisy."""
    return max(config.ppo_iterations // 8, 3)


def demo_config(quick: bool, **overrides) -> LabConfig:
    """The default laboratory, or the ``--quick`` one, with any field overridden."""
    values = {**(QUICK if quick else {}), **{k: v for k, v in overrides.items() if v is not None}}
    return LabConfig(**values)
