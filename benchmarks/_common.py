"""Shared by the benchmark scripts: median timing and writing results (JSON + markdown) with machine and date."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time

import jax
import numpy as np

# the runner (python -m benchmarks) points this at its --out folder
RESULTS = os.environ.get("INFORM_JAX_BENCH_RESULTS", os.path.join(os.path.dirname(__file__), "results"))


def median_seconds(fn, repeats: int, timings: dict | None = None) -> float:
    """Median seconds of `fn()` over `repeats` runs after one warm-up (compilation) run; `timings`, when given,
    gets the warm-up run's seconds as "first_s" and every timed run's as "times_s"."""
    start = time.perf_counter()
    fn()
    if timings is not None:
        timings["first_s"] = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    if timings is not None:
        timings["times_s"] = times
    return float(np.median(times))


def paired_median_seconds(ours, peer, repeats: int) -> tuple[float, float]:
    """Median seconds of `ours()` and of `peer()`, run alternately after one warm-up each.

    Alternating keeps a noisy machine (a shared VM's neighbours come and go) from favouring whichever side
    happened to run in the quiet minute; the ratio of the two medians is what the benchmarks report.
    """
    ours()
    peer()
    times = {"ours": [], "peer": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("peer", peer)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return float(np.median(times["ours"])), float(np.median(times["peer"]))


def left_padded_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random prompt ids [B, P] in [3, vocab) and their mask (1 = token), with the first quarter of the slots padded
    (id 0, mask 0) on every other row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, (batch, length))
    mask = np.ones_like(ids)
    mask[::2, : length // 4] = 0
    return np.where(mask > 0, ids, 0), mask


def stamp(result: dict) -> dict:
    """Add the machine and date to a result."""
    result["machine"] = f"{platform.node()} ({os.cpu_count()} CPUs)"
    result["date"] = datetime.date.today().isoformat()
    return result


def save_results(name: str, result: dict, markdown: str) -> str:
    """Print the result and write benchmarks/results/<name>-<platform>-<date>.{json,md}; returns the stem."""
    stamp(result)
    print(json.dumps(result, indent=2))
    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, f"{name}-{jax.devices()[0].platform}-{result['date']}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(markdown)
    return stem
