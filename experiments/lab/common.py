"""What every lab study shares: running the laboratory over a grid of settings and seeds, mean and spread over
seeds, the verdict rule, provenance, and writing results.

A study runs :func:`inform_jax.lab.demo.run_demo` once per (setting, seed). Runs of one study share the cached
world / SFT policy / reward models where their settings agree and, through JAX's persistent compilation cache,
every compiled program: seeds and methods of one size compile once.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "experiments", "lab", "results")
# the per-iteration series a study keeps (the full logs stay in the work folder)
SERIES = ("iteration", "kl", "gold_reward", "proxy_reward", "final_layer_energy", "hacked_fraction", "energy_penalty",
          "response_length")  # fmt: skip
SMOKE = dict(ppo_iterations=2, detect_every=1, eval_every=1)  # with --quick sizes: the test suite's size


def provenance(seconds: float | None = None) -> dict[str, Any]:
    """Date, machine and the exact command of a study run."""
    import jax

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
        "jax": f"{jax.__version__} on {jax.default_backend()} ({jax.device_count()} devices)",
        "command": "python -m experiments.lab " + " ".join(sys.argv[1:]),
        **({"seconds": round(seconds, 1)} if seconds is not None else {}),
    }


# (i, n) in a job process of ``python -m experiments.lab --jobs n``: run_grid runs only the seeds with seed % n == i
# (the evaluation seeds and any fixed ones, such as the tuning seeds), so that no two jobs run the same run.
JOB_SHARE: tuple[int, int] | None = None
# In a job, what run_grid does about a run of another job's seed (a tuning seed) that is not finished yet: raise
# NotReady (the job's first pass: it goes on with its other studies and comes back), or wait for it (JOB_WAIT, the
# job's second pass). JOBS_DIR holds a marker per job that has exited: a run of that job's that is still missing
# will not come, and the study is left to the final pass.
JOB_WAIT = False
JOBS_DIR: str | None = None
JOB_POLL_SECONDS = 5.0


class NotReady(RuntimeError):
    """A study in a job needs a run of another job's seed that has not finished yet."""


class LeftToFinalPass(RuntimeError):
    """A study in a job needs a run that its job will not make (that job stopped): the final pass makes it."""


# ``--tuned-from``: an inform_table1 study.json whose recorded tuning sweep (choices and bottleneck table) Table 1
# reads instead of running the sweep on the tuning seeds again (``python -m experiments.lab core``: the committed one).
TUNED_FROM: str | None = None

# In a job of ``--jobs``: every seed the lab was given (the job's --seeds are only its share of them), so that a
# study on a fixed subset of them (``first_seeds``) picks the same subset in every job and in the final pass.
LAB_SEEDS: list[int] | None = None


def first_seeds(seeds: Sequence[int], count: int) -> list[int]:
    """The first ``count`` of the seeds the lab was given (``seeds``, or in a job ``LAB_SEEDS``): the seeds of a
    study that runs on a few of them (the arms' controls, the toy decomposition studies)."""
    return list(LAB_SEEDS if LAB_SEEDS is not None else seeds)[:count]


def job_seeds(seeds: Sequence[int]) -> list[int]:
    """``seeds``, or in a job process of ``--jobs`` (``JOB_SHARE``) the job's share of them: every per-seed
    computation of a study over seeds it was not given (the tuning seeds) goes through this."""
    return list(seeds) if JOB_SHARE is None else [seed for seed in seeds if seed % JOB_SHARE[1] == JOB_SHARE[0]]


def run_grid(
    settings: dict[str, dict[str, Any]],
    seeds: Sequence[int],
    methods: Sequence[str],
    *,
    size: dict[str, Any],
    work: str,
    cache: str | None,
    log: Callable = print,
) -> dict[str, dict[int, dict]]:
    """The laboratory for every (setting, seed): {setting: {seed: summary}}; ``size`` are LabConfig fields
    (the study's scale), ``settings`` the fields that vary (a setting's own "methods" replaces ``methods``).
    Per-iteration metrics are cut to SERIES.

    A killed study resumes: a (setting, seed) whose report folder under ``work`` holds a finished run with exactly
    this configuration (its config.json) is read back instead of run again. Between runs JAX's in-memory caches
    are cleared once the process nears the kernel's limit on memory mappings (a long study otherwise keeps every
    compiled program mapped, and a 10-seed study ended with "LLVM compilation error: Cannot allocate memory"); below
    it, runs with the same shapes share their traced programs (see
    :func:`inform_jax.compile_cache.release_programs_near_map_limit`)."""
    import dataclasses
    import gc

    from inform_jax.compile_cache import release_programs_near_map_limit
    from inform_jax.lab.config import LabConfig, slug
    from inform_jax.lab.demo import run_demo

    share = job_seeds(seeds)
    out: dict[str, dict[int, dict]] = {}
    others = []  # (setting, seed, folder, config) of the other jobs' seeds, read once this job's runs are done
    for name, overrides in settings.items():
        out[name] = {}
        overrides = dict(overrides)
        setting_methods = tuple(overrides.pop("methods", methods))
        for seed in seeds:
            # no best-of-n pool inside a study's runs: the studies read best-of-n from their own 256-sample pools
            # (paired.bon_seed), and the demo's 64-sample pool cost each run ~14 s of 2-core time
            config = LabConfig(**{**size, "bon_samples": 0, **overrides, "seed": seed, "methods": setting_methods})
            folder = os.path.join(work, slug(name), f"seed{seed}")
            if seed not in share:
                others.append((name, seed, folder, dataclasses.asdict(config)))
                continue
            log(f"== {name}, seed {seed}")
            summary = finished_run(folder, dataclasses.asdict(config))
            if summary is not None:
                log(f"   (read back from {folder}: a finished run with the same configuration)")
            else:
                # the per-seed report's figures are not the study's (it draws its own over the seeds): left out
                summary = run_demo(config, folder, cache_dir=cache, log=log, with_figures=False)["summary"]
                gc.collect()
                release_programs_near_map_limit()
            out[name][seed] = _series_only(summary)
    for name, seed, folder, config in others:
        out[name][seed] = _series_only(other_jobs_run(folder, config, seed))
    return {name: {seed: runs[seed] for seed in seeds} for name, runs in out.items()}  # in the seeds' order


def _series_only(summary: dict) -> dict:
    """``summary`` with its per-iteration metrics cut to SERIES (and the per-layer energies)."""
    summary["metrics"] = {m: [{k: r[k] for k in SERIES if k in r} | _layers(r) for r in rows]
                          for m, rows in summary["metrics"].items()}  # fmt: skip
    return summary


def other_jobs_run(folder: str, config: dict, seed: int) -> dict:
    """In a job of ``--jobs``: the finished run in ``folder`` that another job makes (``seed`` is of its share).
    Not finished yet: NotReady in the job's first pass, else wait for it (JOB_WAIT) until it is there or that job
    has exited without it (LeftToFinalPass)."""
    import time

    marker = None if JOBS_DIR is None or JOB_SHARE is None else os.path.join(JOBS_DIR, f"job{seed % JOB_SHARE[1]}")
    while True:
        stopped = marker is not None and os.path.exists(marker)  # read before the run, so a run written since counts
        summary = finished_run(folder, config)
        if summary is not None:
            return summary
        if not JOB_WAIT:
            raise NotReady(f"{folder} is another job's run, not finished yet")
        if stopped:
            raise LeftToFinalPass(f"{folder}: its job has stopped without it")
        time.sleep(JOB_POLL_SECONDS)


def finished_run(folder: str, config: dict) -> dict | None:
    """The summary (metrics.json) of a finished lab run in ``folder`` whose config.json equals ``config``, else
    None; a LabConfig field added since the run was saved counts as equal only at its default. config.json is
    written with metrics.json when the report is written, so both exist only for a run that finished."""
    paths = [os.path.join(folder, name) for name in ("config.json", "metrics.json")]
    if not all(os.path.exists(p) for p in paths):
        return None
    with open(paths[0]) as f:
        saved = json.load(f)
    from inform_jax.lab.config import same_config

    # a LabConfig field added after the run, at its default (e.g. the demo's best-of-n pool), changes no PPO run:
    # the run still answers for this configuration
    if not same_config(saved, config):
        return None
    with open(paths[1]) as f:
        return json.load(f)


def _layers(record: dict) -> dict:
    return {k: v for k, v in record.items() if k.startswith("energy_policy_layer") or k.startswith("energy_ref")}


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the per-seed values."""
    x = np.asarray(values, np.float64)
    return {"mean": float(np.mean(x)), "std": float(np.std(x, ddof=1)) if x.size > 1 else 0.0,
            "values": [float(v) for v in x]}  # fmt: skip


def over_seeds(per_seed: dict[int, dict], pick: Callable[[dict], float]) -> dict[str, Any]:
    """spread() of ``pick(summary)`` over the seeds of one setting."""
    return spread([pick(summary) for summary in per_seed.values()])


def compare_verdict(ours: Sequence[float], theirs: Sequence[float], *, higher: bool = True) -> str:
    """The verdict on a claim "ours > theirs" (or < with ``higher=False``) from paired per-seed values:
    "reproduced" when the mean difference has the claimed sign and so does every seed; "not reproduced" when the
    mean difference has the opposite sign (or is zero); "mixed" otherwise (seeds disagree)."""
    diff = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
    diff = diff if higher else -diff
    if np.mean(diff) > 0 and np.all(diff > 0):
        return "reproduced"
    if np.mean(diff) <= 0:
        return "not reproduced"
    return "mixed"


def fraction_verdict(flags: Sequence[bool]) -> str:
    """All seeds show it: reproduced; none: not reproduced; some: mixed."""
    flags = [bool(f) for f in flags]
    return "reproduced" if all(flags) else "not reproduced" if not any(flags) else "mixed"


def write_study(name: str, payload: dict[str, Any], out: str | None = None) -> str:
    """Write results/<name>/study.json (payload + provenance); returns the path."""
    folder = out or os.path.join(RESULTS, name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "study.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path


def binned_mean_curve(runs: Sequence[list[dict]], x: str, y: str, bins: int = 8) -> tuple[np.ndarray, ...]:
    """Equal-count bins of ``x`` over the pooled iterations of several seeds' runs: (bin centers, mean over seeds
    of the per-seed bin means, their standard deviation) [bins] each."""
    xs = np.concatenate([[r[x] for r in rows] for rows in runs])
    edges = np.quantile(xs, np.linspace(0, 1, bins + 1))
    which = lambda v: np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1)  # noqa: E731
    pooled = which(xs)
    centers = np.array([np.mean(xs[pooled == b]) if np.any(pooled == b) else np.nan for b in range(bins)])
    per_seed = []
    for rows in runs:
        xv, yv = np.array([r[x] for r in rows]), np.array([r[y] for r in rows])
        index = which(xv)
        per_seed.append([np.mean(yv[index == b]) if np.any(index == b) else np.nan for b in range(bins)])
    with warnings.catch_warnings():  # a bin no seed reached is NaN, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        return centers, np.nanmean(per_seed, 0), np.nanstd(per_seed, 0)
