"""Bucket lengths: a batch is padded to the longest row it holds, rounded up to one of a few lengths, not to
``max_length`` (which only truncates). A handful of lengths keeps the number of compiled programs small.

    buckets = bucket_lengths(2048)          # (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
    length = bucket_for(300, buckets)       # 384

The lengths are powers of two and the midpoints 1.5x above them (so a batch carries at most a third of padding
beyond its longest row), rounded up to ``multiple`` (8 suits GPUs; 128 suits TPU attention kernels), capped at
``max_length``, which is always the last.
"""

from __future__ import annotations

import bisect

import numpy as np

PAD_TO = ("bucket", "max_length")


def bucket_lengths(max_length: int, *, multiple: int = 8, smallest: int = 32) -> tuple[int, ...]:
    """The lengths a batch may be padded to, ascending, the last ``max_length``."""
    if max_length < 1 or multiple < 1:
        raise ValueError(f"max_length and multiple must be >= 1, got {max_length}, {multiple}")
    lengths = set()
    power = 1
    while power < max_length:
        for length in (power, power * 3 // 2):
            rounded = -(-length // multiple) * multiple
            if smallest <= rounded < max_length:
                lengths.add(rounded)
        power *= 2
    return (*sorted(lengths), max_length)


def bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket >= ``length`` (a length beyond the last bucket is an error: it was not truncated)."""
    i = bisect.bisect_left(buckets, length)
    if i == len(buckets):
        raise ValueError(f"a row of {length} tokens is longer than the longest bucket {buckets[-1]}")
    return buckets[i]


def padding_side(mask: np.ndarray) -> str | None:
    """ "right" when every row of a mask [..., T] is its real tokens then padding, "left" when padding then real
    tokens (a full row is both: "right" wins), None when some row has padding inside."""
    m = np.asarray(mask) != 0
    if np.all(m[..., :-1] >= m[..., 1:]):
        return "right"
    if np.all(m[..., :-1] <= m[..., 1:]):
        return "left"
    return None


def cut(x: np.ndarray, length: int, side: str) -> np.ndarray:
    """The ``length`` columns of x [..., T] that hold the real tokens of rows padded on ``side``."""
    return x[..., :length] if side == "right" else x[..., x.shape[-1] - length :]


def padded_length(masks, buckets: tuple[int, ...] | None) -> int:
    """The length a batch of padded rows is cut to: the bucket of its longest row (the real tokens of masks
    [..., T], one or several arrays), or T itself when ``buckets`` is None (padding to max_length)."""
    masks = [np.asarray(m) for m in (masks if isinstance(masks, (list, tuple)) else [masks])]
    if buckets is None:
        return masks[0].shape[-1]
    return bucket_for(max(int(m.sum(-1).max()) for m in masks), buckets)
