"""Design choices the papers and the authors' releases leave open, under the paired rule (PROTOCOL.md section 10):
each variant changes one field of one method from the lab's defaults and runs on the evaluation seeds beside the
shared grid (experiments/lab/paired.py), so the default is the grid's own run of that method on the same seed.

    InfoRM's KL reduction   the paper's (KL summed over the latent dimensions) vs the release's (their mean: a
                            latent_dim-times weaker bottleneck at the same beta), with the rate in nats and the
                            active latent dimensions of each reward model
    EPPO's energy site      the paper's (the final layer's residual stream) vs the release's (the final MLP)

InfoRM's beta and EPPO's eta are not here: the tuning sweeps choose them (experiments/lab/sweeps.py). The scale
of the energy (mean |.| vs raw L1) is not either: eta is calibrated on the energy as measured (section 3), so the
two scales give the same penalty.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from experiments.lab.common import provenance, run_grid, spread, write_study
from experiments.lab.paired import MIN_EFFECT_GOLD, PAIRED_GRID, gold_table, judged, paired_grid, with_runs
from inform_jax.lab.verdicts import Claim

# variant -> (method, the LabConfig fields it changes); the claim is "the paper's choice (the default) beats it"
DESIGN_VARIANTS = {
    "InfoRM, release KL reduction": ("InfoRM", {"inform_kl_reduction": "release"}),
    "EPPO, MLP energy site": ("EPPO", {"energy_site": "mlp"}),
}
CLAIM_TEXT = {
    "InfoRM, release KL reduction": "InfoRM with the paper's KL (summed over the latent dimensions) beats the "
    "release's (their mean)",
    "EPPO, MLP energy site": "EPPO on the paper's energy site (the final residual stream) beats the release's "
    "(the final MLP)",
}
SMOKE_VARIANTS = ("EPPO, MLP energy site",)  # the cached reward models only: no further RM to train


def design(seeds, size: dict, work: str, cache: str | None, out: str, smoke: bool = False) -> dict[str, Any]:
    """Each design variant against the lab's default on the evaluation ``seeds``: held-out gold at 1x matched KL
    and at the end (Holm over the family, minimum effect 0.05 gold), and InfoRM's rate and active dimensions per
    KL reduction."""
    from experiments.lab.sweeps import inform_bottleneck
    from inform_jax.lab.config import LabConfig
    from inform_jax.lab.demo import default_cache

    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    root = os.path.dirname(os.path.abspath(work))
    variants = {k: v for k, v in DESIGN_VARIANTS.items() if not smoke or k in SMOKE_VARIANTS}
    grid = paired_grid(seeds, size, work, cache)
    settings = {name: {**PAIRED_GRID["paired grid"], **fields, "methods": (method,)}
                for name, (method, fields) in variants.items()}  # fmt: skip
    runs = run_grid(settings, seeds, (), size=size, work=os.path.join(root, "design-variants"), cache=cache)
    per_seed = {s: with_runs(grid[s], {name: (method, runs[name][s]) for name, (method, _) in variants.items()})
                for s in seeds}  # fmt: skip
    claims = [Claim(f"design: {CLAIM_TEXT[name]} in held-out gold ({what})", method, name, what)
              for name, (method, _) in variants.items() for what in ("gold at 1x KL", "final gold")]  # fmt: skip
    claim_rows, rows = judged(per_seed, claims, MIN_EFFECT_GOLD)
    bottleneck = {}
    if any(method == "InfoRM" for method, _ in variants.values()):
        for reduction in ("paper", "release"):
            stats = []
            for s in seeds:
                config = dataclasses.replace(LabConfig(**size), seed=s, inform_kl_reduction=reduction)
                folder = os.path.join(root, "design-variants", "bottleneck", reduction, f"seed{s}")
                stats.append(inform_bottleneck(config, cache or default_cache(), folder))
            bottleneck[f"InfoRM, {reduction} KL reduction"] = {k: spread([x[k] for x in stats])
                                                               for k in ("rate_nats", "active_dims")}  # fmt: skip
    methods = [m for pair in ((method, name) for name, (method, _) in variants.items()) for m in pair]
    payload = {"study": "design", "rule": "paired",
               "title": "Design choices the record leaves open (InfoRM's KL reduction, EPPO's energy site; held-out "
                        "gold at matched KL)",
               "seeds": list(seeds), "size": size,
               "variants": {name: {"method": m, **fields} for name, (m, fields) in variants.items()},
               "claims": claim_rows, "paired": rows, "table": gold_table(per_seed, methods, sft=False),
               "bottleneck": bottleneck, "figures": [],
               "provenance": provenance(time.perf_counter() - start)}  # fmt: skip
    write_study("design", payload, out)
    return payload
