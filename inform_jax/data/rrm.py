"""The RRM baseline's data augmentation (Liu et al. 2024, "RRM: Robust Reward Model Training Mitigates Reward
Hacking"): pairs whose rejected response answers another prompt, so that a reward model cannot score a response
without reading its prompt.

Our reading (the part of RRM's augmentation that needs no extra labels): for each augmented pair, draw an
original pair (x, y_w, y_l) and a different pair j; the new pair is (x, y, y'_j) where y is y_w or y_l (equal
odds: any on-topic response beats an off-topic one) and y'_j is pair j's chosen or rejected response. RRM's
tie pairs between two off-topic responses are not generated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from inform_jax.data.preference import PreferencePair


def rrm_augment(pairs: Sequence[PreferencePair], *, factor: float = 1.0, seed: int = 0) -> list[PreferencePair]:
    """The original pairs followed by round(factor * N) augmented ones (marked ``extra["rrm"] = True``).

    A draw whose two responses are the same text is redrawn up to 8 times, then skipped, so a few augmented
    pairs may be missing from highly repetitive data (the train-rm log line reports the final count).
    """
    if factor < 0:
        raise ValueError(f"rrm factor must be >= 0, got {factor}")
    n = len(pairs)
    if n < 2:
        raise ValueError(f"RRM augmentation needs at least 2 pairs, got {n}")
    rng = np.random.default_rng(seed)
    out = list(pairs)
    for _ in range(round(factor * n)):
        for _attempt in range(8):
            i, j = rng.choice(n, size=2, replace=False)
            base, other = pairs[i], pairs[j]
            on_topic = base.chosen if rng.random() < 0.5 else base.rejected
            off_topic = other.chosen if rng.random() < 0.5 else other.rejected
            if on_topic.strip() != off_topic.strip():
                break
        else:
            continue
        out.append(dataclasses.replace(base, chosen=on_topic, rejected=off_topic, extra={**base.extra, "rrm": True}))
    return out
