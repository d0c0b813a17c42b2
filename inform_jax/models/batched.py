"""A function over many rows in batches split over a device mesh: how every scoring path (features for detection,
pair rewards, spliced decomposition scores, generation, the SFT reference) runs on one device, many devices or many
hosts alike.

    out = map_batches(fn, {"input_ids": ids, "attention_mask": mask}, batch_size=32, mesh=mesh)
    out = map_batches(fn, rows, batch_size=32, mesh=mesh, lengths=mask.sum(1), token_budget=16384,
                      sequence_keys=("input_ids", "attention_mask"))

Without ``lengths``, N rows go in ceil(N / batch_size) batches of one size (one compiled program serves them all;
the last batch is filled by wrapping around to the first rows, and the copies are cut from the result). With
``lengths`` (real tokens per row), rows are taken longest first and each batch is cut to the bucket length of its
longest row (:mod:`inform_jax.data.buckets`), holding as many rows as ``token_budget`` allows at that length (at most
``batch_size``): memory follows the data, not the longest allowed row, and there is one program per bucket.

Batch sizes are multiples of the mesh's data parallelism. On many hosts every process calls this with the same
rows; each feeds only the rows its devices hold, and every process receives every output row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from inform_jax.data.buckets import bucket_for, bucket_lengths, cut, padding_side
from inform_jax.models.attention_backends import kernel_bucket_multiple
from inform_jax.models.sharding import data_parallelism, shard_rows, to_host

# Padded tokens per batch of the scoring commands (rows x bucket length, every sequence of a row counted): an 8B
# model's forward over 32k tokens fits one accelerator beside its weights; 400 short pairs then take a few MB.
DEFAULT_TOKEN_BUDGET = 32768


def batch_plan(n: int, batch_size: int, multiple: int = 1, *, exact: bool = False) -> tuple[int, int]:
    """(number of batches, rows per batch) for n rows: as many batches as ``batch_size`` needs, of equal size (320
    rows at 256: two batches of 160, not two of 256), the size a multiple of ``multiple``; ``exact``: batches of
    ``batch_size`` rows whatever n (to reuse a program compiled for that size)."""
    if n < 1:
        raise ValueError("no rows to run over")
    batches = -(-n // max(1, batch_size))
    size = batch_size if exact else -(-n // batches)
    return batches, -(-size // multiple) * multiple


def length_plan(
    lengths: np.ndarray, buckets: Sequence[int], *, batch_size: int, token_budget: int | None, multiple: int = 1
) -> list[tuple[np.ndarray, int, int]]:
    """Batches of rows by length: a list of (row indices [b], real rows, bucket length). Rows go longest first;
    each batch holds ``min(batch_size, token_budget // length)`` rows (a multiple of ``multiple``, at least one
    multiple), padded to that count by repeating its own rows when fewer remain (the first ``real`` are new)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    plan, start = [], 0
    while start < order.size:
        length = bucket_for(int(lengths[order[start]]), tuple(buckets))
        rows = batch_size if token_budget is None else min(batch_size, token_budget // length)
        rows = max(multiple, rows // multiple * multiple)
        taken = order[start : start + rows]
        plan.append((np.resize(taken, rows), taken.size, length))
        start += taken.size
    return plan


def by_length(rows: dict[str, np.ndarray]) -> dict[str, Any]:
    """The keyword arguments of :func:`map_batches` that batch ``rows`` by length: the real tokens of each row (the
    longest of its ``*attention_mask`` arrays) and its sequence arrays (``*input_ids`` and ``*attention_mask``),
    with their padding side. Rows with padding inside them (no single side) are batched as they come ({})."""
    masks = [k for k in rows if k.endswith("attention_mask")]
    sides = {padding_side(rows[k]) for k in masks}
    if not masks or None in sides or len(sides) > 1:
        return {}
    lengths = np.max([np.asarray(rows[k]).sum(-1) for k in masks], axis=0)
    keys = tuple(k for k in rows if k.endswith(("input_ids", "attention_mask")))
    return {"lengths": lengths, "sequence_keys": keys, "side": sides.pop()}


def map_batches(
    fn: Callable[[dict, int], Any],
    rows: dict[str, np.ndarray],
    *,
    batch_size: int,
    mesh: Mesh,
    exact: bool = False,
    lengths: np.ndarray | None = None,
    token_budget: int | None = None,
    sequence_keys: Sequence[str] = (),
    side: str = "right",
    bucket_multiple: int = 8,
    max_length: int | None = None,
) -> Any:
    """``fn`` over the N rows of ``rows`` (arrays [N, ...], the same on every process) in batches on ``mesh``.

    fn(batch, length) gets the batch's arrays [b, ...] split over the mesh's data axes, under ``jax.set_mesh(mesh)``,
    and the batch's padded length (the bucket; without ``lengths``, the full width of the sequence arrays, or 0);
    it returns a pytree of arrays [b, ...]. Returns that pytree with NumPy arrays [N, ...] in row order.

    exact: every batch has ``batch_size`` rows (see :func:`batch_plan`). lengths: real tokens per row [N]: batch
    by length (see the module doc); the ``sequence_keys`` arrays [N, T], padded on ``side``, are cut to each
    batch's bucket length; buckets are multiples of ``bucket_multiple`` (of 128 on a TPU) up to ``max_length``
    (default T).
    """
    n = len(next(iter(rows.values())))
    multiple = data_parallelism(mesh)
    width = rows[sequence_keys[0]].shape[-1] if sequence_keys else 0
    if lengths is None:
        batches, size = batch_plan(n, batch_size, multiple, exact=exact)
        plan = [(np.arange(b * size, (b + 1) * size) % n, min(size, n - b * size), width) for b in range(batches)]
    else:
        platform = mesh.devices.flat[0].platform  # 128-aligned buckets on a TPU, for splash attention
        buckets = bucket_lengths(max_length or width, multiple=kernel_bucket_multiple(bucket_multiple, platform))
        plan = length_plan(lengths, buckets, batch_size=batch_size, token_budget=token_budget, multiple=multiple)
    out = None
    for index, real, length in plan:
        batch = {k: np.asarray(v)[index] for k, v in rows.items()}
        for key in sequence_keys:
            batch[key] = cut(batch[key], length, side)
        with jax.set_mesh(mesh):
            result = jax.tree.map(to_host, fn(shard_rows(batch, mesh), length))  # rows from every host
        if out is None:
            out = jax.tree.map(lambda x: np.empty((n, *x.shape[1:]), x.dtype), result)
        for o, x in zip(jax.tree.leaves(out), jax.tree.leaves(result), strict=True):
            o[index[:real]] = x[:real]
    return out
