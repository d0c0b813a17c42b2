"""Deterministic batches over a stream of epoch permutations, so a resumed run sees the same data.

Batch s holds items [s * B, (s + 1) * B) of the concatenation of per-epoch permutations (seeded by
seed and epoch). No pair is dropped or padded: a batch may straddle an epoch boundary.
"""

from __future__ import annotations

import numpy as np


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices [batch_size] of the pairs in optimizer step `step` (0-based)."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start, n)
        take = min(batch_size - len(out), n - offset)
        out.extend(epoch_permutation(n, seed, epoch)[offset : offset + take])
        start += take
    return np.asarray(out)


def take(arrays: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[indices] for k, v in arrays.items()}
