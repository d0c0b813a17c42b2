"""The paired grid the PPO studies share, and the best-of-n study that reads every reward-model claim first.

PROTOCOL.md section 8 fixes both before they run. The grid is one lab run per evaluation seed of every method the
PPO studies compare (fig4, eppo_tables, energy and detection read their claims from it), so every comparison is
paired on the same world, SFT policy, prompts and sampling keys. Best-of-n needs no PPO at all: one pool of SFT
samples per seed, ranked by each reward model.

Claims are judged by :func:`inform_jax.lab.verdicts.judge_claims` (per-seed paired differences, Holm-corrected
t-intervals, a minimum effect); the non-gold measures the studies need are registered here beside the library's.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from experiments.lab.common import provenance, run_grid, spread, write_study
from inform_jax.lab.config import config_key, same_lab_key
from inform_jax.lab.keyed_cache import cached_result
from inform_jax.lab.verdicts import Claim, claim_text, judge_claims, measure

PAIRED_GRID_METHODS = ("PPO", "PPO w/ KL", "InfoRM", "Ensemble RM", "EPPO", "WARM", "PPO w/ LP", "Oracle")
PAIRED_GRID = {"paired grid": {"control_probe": True}}  # the standard RM's hidden space: detection's control
ZERO = "zero"  # the comparator of a one-sample claim ("the measure is above 0"): reads 0 on every seed
MIN_EFFECT_GOLD = 0.05


def paired_grid(seeds, size: dict, work: str, cache: str | None) -> dict[int, dict]:
    """{seed: the lab's summary} of the shared grid. ``work`` is a study's own work folder: the grid lives beside
    it (``<work>/../paired-grid``), so the studies that read it run it once and read it back after."""
    shared = os.path.join(os.path.dirname(os.path.abspath(work)), "paired-grid")
    per_seed = run_grid(PAIRED_GRID, seeds, PAIRED_GRID_METHODS, size=size, work=shared, cache=cache)["paired grid"]
    for seed, summary in per_seed.items():
        summary["seed"] = seed  # the measures that draw k-means keys read it
    return per_seed


GRID_REFERENCE = "PPO (lab defaults)"  # the paired grid's PPO under its own name once other runs join a seed


def with_runs(grid: dict, runs: dict[str, tuple[str, dict]]) -> dict:
    """One seed's grid summary with further runs of the same seed joined to it: ``runs`` maps a name to (the
    method's name in its own run, that run's summary). Each is added (or replaces the grid's run of that name) in
    heldout, overoptimization and final_gold_per_prompt, and matched KL is read again for every run against the
    grid's PPO (as :data:`GRID_REFERENCE`), so the budgets stay the grid's whatever joins. The grid is not
    changed."""
    from inform_jax.lab.comparison import matched_kl_comparison

    keys = ("heldout", "overoptimization", "final_gold_per_prompt")
    out = {**grid, **{k: dict(grid[k]) for k in keys}}
    for name, (method, run) in runs.items():
        for key in keys:
            out[key][name] = run[key][method]
    out["matched_kl"] = matched_kl_comparison({**out["heldout"], GRID_REFERENCE: grid["heldout"]["PPO"]},
                                              reference=GRID_REFERENCE)  # fmt: skip
    return out


TEACHER_FORCED_GRID = {"teacher-forced EPPO": {"eppo_reference": "teacher_forced"}}
TEACHER_FORCED = "EPPO (teacher-forced)"


def teacher_forced_grid(seeds, size: dict, work: str, cache: str | None, per_seed: dict) -> dict[str, Any]:
    """EPPO with the teacher-forced reference (SFT energy on the policy's own sequence; same eta as the sampled
    reference's calibration) beside the paired grid: PPO and EPPO again with only ``eppo_reference`` changed, in
    ``<work>/../paired-grid-tf``. The run's EPPO is merged into ``per_seed`` (the paired grid's summaries) as
    :data:`TEACHER_FORCED`; its PPO is the grid's PPO run again (same seed, same settings), and the largest gap
    between the two PPO runs' held-out gold is returned as a check that they are the same run."""
    shared = os.path.join(os.path.dirname(os.path.abspath(work)), "paired-grid-tf")
    tf = run_grid(TEACHER_FORCED_GRID, seeds, ("PPO", "EPPO"), size=size, work=shared, cache=cache)
    tf = tf["teacher-forced EPPO"]
    gap = 0.0
    for seed, summary in per_seed.items():
        other = tf[seed]
        for key in ("matched_kl", "overoptimization", "heldout"):
            if summary.get(key) is not None and key in other:
                target = summary[key]["methods"] if key == "matched_kl" else summary[key]
                source = other[key]["methods"] if key == "matched_kl" else other[key]
                target[TEACHER_FORCED] = source["EPPO"]
        ours = [c["gold"] for c in summary["heldout"]["PPO"]]
        theirs = [c["gold"] for c in other["heldout"]["PPO"]]
        gap = max(gap, float(np.max(np.abs(np.subtract(ours, theirs)))))
    return {"ppo_gold_max_gap": gap,
            "eta": {str(s): (v.get("eppo_calibration") or {}).get("eta") for s, v in tf.items()}}  # fmt: skip


def gold_claims(source: str, method: str, rivals, label=lambda m: m) -> list[Claim]:
    """``method`` beats each rival in held-out gold at 1x matched KL and at the end (direction +1)."""
    return [
        Claim(f"{source}: {label(method)} beats {label(rival)} in held-out gold ({what})", method, rival, what)
        for rival in rivals
        for what in ("gold at 1x KL", "final gold")
    ]


def judged(per_seed: dict, claims: list[Claim], min_effect: float) -> tuple[list[dict], list[dict]]:
    """(the study's claim rows for RESULTS.md, judge_claims' full rows)."""
    rows = judge_claims(per_seed, claims, min_effect=min_effect)
    return [{"claim": r["claim"], "measured": claim_text(r), "verdict": r["verdict"]} for r in rows], rows


def baseline_rows(per_seed: dict) -> dict[str, Any]:
    """The protocol's baseline criteria per seed (section 1): PPO's rise and fall, the oracle's rise."""
    rows = {}
    for seed, s in per_seed.items():
        o = s["overoptimization"]
        ppo = o["PPO"]
        met = (ppo["rise"] >= 0.10 and ppo["fall"] >= 0.10 and ppo["peak_checkpoint"] > 0
               and ppo["proxy_final"] >= ppo["proxy_at_gold_peak"])  # fmt: skip
        rows[str(seed)] = {"sft_gold": s["sft_heldout"]["gold"], "ppo_rise": ppo["rise"], "ppo_fall": ppo["fall"],
                           "ppo_criteria_met": bool(met),
                           "oracle_rise": o["Oracle"]["rise"] if "Oracle" in o else None}  # fmt: skip
    return rows


GOLD_READINGS = ("peak gold", "gold at 1x KL", "gold at 3x KL", "final gold")


def gold_table(per_seed: dict, methods, readings=GOLD_READINGS, sft: bool = True) -> dict[str, dict[str, dict]]:
    """Per method over seeds: each of ``readings`` (MEASURES names; a mean over the seeds that have it, e.g. that
    reach the KL budget); with ``sft`` an "SFT" row of its held-out gold last."""
    from inform_jax.lab.verdicts import MEASURES

    table = {}
    for method in (*methods, *(("SFT",) if sft else ())):
        cells = {}
        for what in readings:
            if method == "SFT" and what != "final gold":
                continue
            values = [MEASURES[what](s, method) for s in per_seed.values()]
            values = [v for v in values if v is not None]
            if values:
                cells[what] = spread(values)
        table[method] = cells
    return {"held-out gold over seeds (mean +- sd)": table}


# ---------------------------------------------------------------------------------------- non-gold measures


def _one_sample(fn):
    """A measure whose comparator is :data:`ZERO`."""

    def read(summary: dict, method: str):
        return 0.0 if method == ZERO else fn(summary, method)

    read.__doc__ = fn.__doc__
    return read


def layer_shift(summary: dict, method: str, layer: int) -> float:
    """Growth of |policy - SFT| energy loss at ``layer`` on the training rollouts: last quarter minus first."""
    rows = summary["metrics"][method]
    q = max(len(rows) // 4, 1)
    gap = [abs(r[f"energy_policy_layer{layer}"] - r[f"energy_reference_layer{layer}"]) for r in rows]
    return float(np.mean(gap[-q:]) - np.mean(gap[:q]))


def final_layer(summary: dict, method: str) -> int:
    return max(int(k.removeprefix("energy_policy_layer")) for k in summary["metrics"][method][0]
               if k.startswith("energy_policy_layer"))  # fmt: skip


@measure("final-layer energy drift")
@_one_sample
def final_layer_drift(summary: dict, method: str) -> float:
    """layer_shift at the final layer."""
    return layer_shift(summary, method, final_layer(summary, method))


@measure("hacked minus normal energy")
@_one_sample
def hacked_minus_normal(summary: dict, method: str) -> float | None:
    """Final-layer energy loss of hacked minus normal rollouts, last quarter of RL (None: one kind absent)."""
    e = summary["energy_by_label"][method]
    gap = e["hacked_mean"] - e["normal_mean"]
    return float(gap) if np.isfinite(gap) else None


def final_csi(summary: dict, method: str, space: str = "latents") -> float:
    """CSI of the method's final outputs against SFT's in ``space`` ("latents": InfoRM's latent space; "control":
    the standard RM's hidden space), k 4, the k-means key drawn from the summary's seed."""
    import jax

    from inform_jax.detect.csi import csi

    f = summary["features"]
    key = jax.random.key(int(summary.get("seed", 0)))
    return float(csi(np.asarray(f[method][space]), np.asarray(f["SFT"][space]), k=4, key=key).csi)


@measure("CSI in InfoRM's latent space")
def latent_csi(summary: dict, method: str) -> float:
    """:func:`final_csi` in InfoRM's latent space."""
    return final_csi(summary, method)


def heldout_selection(summary: dict, method: str, factor: float = 2.0) -> dict[str, float]:
    """CSI-guided checkpoint selection read on held-out gold: stop at the checkpoint before CSI first exceeds
    ``factor`` x its first value (the last if never); regrets against the held-out gold-best checkpoint."""
    from inform_jax.lab.report import csi_alarm

    detection = summary["detection"][method]
    iterations = [d["iteration"] for d in detection]
    alarm = csi_alarm(detection, factor)
    chosen = iterations[-1] if alarm is None else iterations[max(iterations.index(alarm) - 1, 0)]
    gold = {c["checkpoint"]: c["gold"] for c in summary["heldout"][method]}
    at = lambda it: gold[min(gold, key=lambda c: abs(c - it))]  # noqa: E731  (the nearest held-out checkpoint)
    best = max(gold.values())
    return {"selected_iteration": int(chosen), "regret_selected": best - at(chosen),
            "regret_final": best - gold[max(gold)]}  # fmt: skip


@measure("gold regret, CSI-selected checkpoint")
def regret_selected(summary: dict, method: str) -> float:
    return float(heldout_selection(summary, method.removesuffix(" (final)"))[
        "regret_final" if method.endswith(" (final)") else "regret_selected"])  # fmt: skip


# ---------------------------------------------------------------------------------------- best-of-n

BON_REWARD_MODELS = {"Standard RM": "standard", "InfoRM": "inform", "Ensemble RM": "ensemble", "WARM": "warm",
                     "Planted good RM": "planted-good", "Planted RM seed": "standard-seed2",
                     "Prioritized RM": "dir"}  # fmt: skip
# the best_of_n study's reward models (PROTOCOL.md section 8); the prioritized RM is read by decomposition_paired
BON_STUDY_REWARD_MODELS = tuple(name for name in BON_REWARD_MODELS if name != "Prioritized RM")
BON_SMOKE_REWARD_MODELS = ("Standard RM", "InfoRM")  # the smoke size: the demo's cached models only
BON_SAMPLES = 256  # per held-out prompt (PROTOCOL.md section 8)
BON_READ_AT = (16, 256)


def _bon_measure(n: int):
    def read(summary: dict, method: str) -> float | None:
        curve = summary["best_of_n"][method]
        return float(curve["gold"][curve["n"].index(n)]) if n in curve["n"] else None

    read.__doc__ = f"Mean held-out gold of the best of {n} SFT samples by the reward model (unbiased estimator)."
    return read


for _n in BON_READ_AT:
    measure(f"best-of-{_n} gold")(_bon_measure(_n))


def bon_seed(config, cache: str, samples: int, folder: str, log=print, names=BON_STUDY_REWARD_MODELS) -> dict[str, Any]:
    """One seed's best-of-n curves for the ``names`` of :data:`BON_REWARD_MODELS` and the gold judge as its own
    proxy ("Gold"), on one shared pool of ``samples`` SFT samples per held-out prompt; read back from
    ``folder``/best_of_n.json when a finished run with the same configuration is there."""

    from inform_jax.eval.best_of_n import powers_of_two
    from inform_jax.lab.best_of_n import best_of_n_curves, sample_pool
    from inform_jax.lab.stages import Lab

    kinds = {name: BON_REWARD_MODELS[name] for name in names}

    def compute() -> dict[str, Any]:
        lab = Lab(config, cache, log=log)
        sft = lab.sft_policy()
        models = {name: lab.reward_model(kind, sft) for name, kind in kinds.items()}
        start = time.perf_counter()
        pool = sample_pool(lab, sft, reward_models=models, samples_per_prompt=samples, seed=config.seed)
        pool.proxy["Gold"] = pool.gold  # the judge as its own proxy: what best-of-n can reach
        curves = best_of_n_curves(pool, powers_of_two(samples))
        keep = ("n", "kl", "gold", "proxy", "hacked", "gold_alpha", "gold_beta", "proxy_alpha", "proxy_beta")
        result = {name: {k: np.asarray(c[k]).tolist() for k in keep if k in c} for name, c in curves.items()}
        seconds = round(time.perf_counter() - start, 1)
        log(f"   best-of-n pool of {samples} x {pool.gold.shape[0]} in {seconds} s")
        return {"best_of_n": result, "pool_gold": float(pool.gold.mean()), "pool_hacked": float(pool.hacked.mean()),
                "prompts": int(pool.gold.shape[0]), "samples": samples, "seconds": seconds}  # fmt: skip

    key = {"config": config_key(config), "samples": samples, "reward_models": kinds}
    return cached_result(os.path.join(folder, "best_of_n.json"), key, compute, same_lab_key)


def bon_gold_table(per_seed: dict, names) -> dict[str, dict[str, dict]]:
    """{name: {"best-of-n gold": spread over seeds}} at n = 1 and BON_READ_AT (those the pools reach), from each
    seed's ``best_of_n`` curves (:func:`bon_seed`)."""
    first = next(iter(per_seed.values()))["best_of_n"]
    return {name: {f"best-of-{n} gold": spread([s["best_of_n"][name]["gold"][s["best_of_n"][name]["n"].index(n)]
                                                for s in per_seed.values()])
                   for n in (1, *BON_READ_AT) if n in first[name]["n"]} for name in names}  # fmt: skip


def _peak_and_fall(curve: dict) -> tuple[float, float]:
    gold = np.asarray(curve["gold"])
    return float(gold.max()), float(gold.max() - gold[-1])


def best_of_n(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """Best-of-n before PPO (Gao et al. 2022): every reward model ranks the same SFT samples, so its claims are
    read here first, paired per seed with no PPO confound (PROTOCOL.md section 8)."""
    from inform_jax.lab.config import LabConfig
    from inform_jax.lab.demo import default_cache

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    samples = 16 if smoke else BON_SAMPLES
    names = BON_SMOKE_REWARD_MODELS if smoke else BON_STUDY_REWARD_MODELS
    per_seed = {}
    for seed in seeds:
        print(f"== best-of-n, seed {seed}")
        config = LabConfig(**{**size, "seed": seed})
        per_seed[seed] = bon_seed(config, cache or default_cache(), samples, os.path.join(work, f"seed{seed}"),
                                  names=names)  # fmt: skip
    rivals = [m for m in names if m != "Standard RM"]
    claims = [Claim(f"best-of-{n}: {m} picks samples with higher gold than the standard RM"
                    + {"Planted good RM": " (planted good: expected reproduced)",
                       "Planted RM seed": " (a null: expected not reproduced)"}.get(m, ""),
                    m, "Standard RM", f"best-of-{n} gold") for n in BON_READ_AT for m in rivals]  # fmt: skip
    claim_rows, rows = judged(per_seed, claims, MIN_EFFECT_GOLD)
    shape = {}
    for name in ("Standard RM", "Gold"):
        falls = [_peak_and_fall(s["best_of_n"][name])[1] for s in per_seed.values()]
        shape[name] = {"fall_from_peak": spread(falls), "fell_0.05": sum(f > 0.05 for f in falls)}
    claim_rows.append({
        "claim": "baseline: the standard RM's best-of-n gold peaks and falls over n (Gao et al.'s shape) while the "
                 "gold judge's rises monotonically",
        "measured": f"standard RM fell > 0.05 from its peak by n = {samples} in {shape['Standard RM']['fell_0.05']} "
                    f"of {len(seeds)} seeds (fall {shape['Standard RM']['fall_from_peak']['mean']:.3f} +- "
                    f"{shape['Standard RM']['fall_from_peak']['std']:.3f}); the gold judge fell in "
                    f"{shape['Gold']['fell_0.05']}",
        "verdict": "reproduced" if shape["Standard RM"]["fell_0.05"] > len(seeds) / 2 and not shape["Gold"]["fell_0.05"]
        else "refuted",
    })  # fmt: skip
    names = list(next(iter(per_seed.values()))["best_of_n"])
    table = bon_gold_table(per_seed, names)
    figure = _bon_figure(os.path.join(out, "best-of-n.png"), per_seed, names)
    payload = {"study": "best_of_n", "rule": "paired",
               "title": f"Best-of-n on one shared pool of {samples} SFT samples per held-out prompt (Gao et al. "
                        "2022; every reward-model claim read here first)",
               "seeds": list(seeds), "size": size, "claims": claim_rows, "paired": rows, "shape": shape,
               "table": {"best-of-n gold over seeds (mean +- sd)": table}, "figures": [os.path.basename(figure)],
               "per_seed": {str(s): v for s, v in per_seed.items()},
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("best_of_n", payload, out)
    return payload


def _bon_figure(path: str, per_seed: dict, names) -> str:
    """Gold and proxy of the kept sample against sqrt(KL), mean over seeds with +- 1 sd bands, and Gao's fitted
    gold curve (mean of the per-seed fits) dashed."""
    from inform_jax.detect.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for name, color in zip(names, colors * 2, strict=False):
        curves = [s["best_of_n"][name] for s in per_seed.values()]
        d = np.sqrt(np.asarray(curves[0]["kl"]))
        for ax, key in zip(axes, ("gold", "proxy"), strict=True):
            if key == "proxy" and name == "Gold":
                continue
            ys = np.array([c[key] for c in curves])
            ax.plot(d, ys.mean(0), "-o", ms=3, color=color, label=name)
            ax.fill_between(d, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), color=color, alpha=0.12)
        alpha = np.nanmean([c["gold_alpha"] for c in curves])
        beta = np.nanmean([c["gold_beta"] for c in curves])
        if np.isfinite(alpha):
            base = np.mean([c["gold"][0] for c in curves])
            grid = np.linspace(0, d.max(), 50)
            axes[0].plot(grid, base + grid * (alpha - beta * grid), "--", color=color, lw=0.8)
    axes[0].set_ylabel("gold reward of the kept sample")
    axes[1].set_ylabel("proxy of the kept sample (own scale)")
    for ax in axes:
        ax.set_xlabel("sqrt(KL) = sqrt(log n - (n - 1) / n)")
    axes[0].legend(fontsize=7)
    return save_figure(plt, fig, path, dpi=110)
