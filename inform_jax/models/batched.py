"""A function over many rows in fixed-size batches split over a device mesh: how every scoring path (features for
detection, pair rewards, spliced decomposition scores, generation, the SFT reference) runs on one device, many
devices or many hosts alike.

    out = map_batches(fn, {"input_ids": ids, "attention_mask": mask}, batch_size=32, mesh=mesh)

Batches have one size, so one compiled program serves them all: N rows go in ceil(N / batch_size) batches of equal
size (rounded up to a multiple of the mesh's data parallelism); the last one is filled by wrapping around to the
first rows, and the extra rows are cut from the result. On many hosts every process calls this with the same rows;
each feeds only the rows its devices hold, and every process receives every output row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from inform_jax.models.sharding import data_parallelism, shard_rows, to_host


def batch_plan(n: int, batch_size: int, multiple: int = 1, *, exact: bool = False) -> tuple[int, int]:
    """(number of batches, rows per batch) for n rows: as many batches as ``batch_size`` needs, of equal size (320
    rows at 256: two batches of 160, not two of 256), the size a multiple of ``multiple``; ``exact``: batches of
    ``batch_size`` rows whatever n (to reuse a program compiled for that size)."""
    if n < 1:
        raise ValueError("no rows to run over")
    batches = -(-n // max(1, batch_size))
    size = batch_size if exact else -(-n // batches)
    return batches, -(-size // multiple) * multiple


def map_batches(
    fn: Callable[[dict], Any], rows: dict[str, np.ndarray], *, batch_size: int, mesh: Mesh, exact: bool = False
) -> Any:
    """``fn`` over the N rows of ``rows`` (arrays [N, ...], the same on every process) in equal batches on ``mesh``.

    fn(batch) gets the batch's arrays [b, ...] split over the mesh's data axes and runs under ``jax.set_mesh(mesh)``;
    it returns a pytree of arrays [b, ...]. Returns that pytree with NumPy arrays [N, ...] in row order. ``exact``:
    every batch has ``batch_size`` rows (see :func:`batch_plan`).
    """
    n = len(next(iter(rows.values())))
    batches, size = batch_plan(n, batch_size, data_parallelism(mesh), exact=exact)
    outputs = []
    for b in range(batches):
        index = np.arange(b * size, (b + 1) * size) % n
        with jax.set_mesh(mesh):
            out = fn(shard_rows({k: np.asarray(v)[index] for k, v in rows.items()}, mesh))
        outputs.append(jax.tree.map(to_host, out))  # rows from every host
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *outputs)
