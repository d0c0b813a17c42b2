"""Detection scores for individual samples and CSI-guided checkpoint selection.

The InfoRM paper uses CSI to choose RL parameters and to stop early: CSI stays flat while the policy improves
and rises when overoptimized outputs appear. :func:`select_checkpoint` turns a CSI series into that choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def auroc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` [N] ranking the positives of ``labels`` [N] (bool / 0-1) first.

    The Mann-Whitney form with mid-ranks for ties (equals scikit-learn's ``roc_auc_score``). Needs at least one
    positive and one negative label.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one shape, got {scores.shape} and {labels.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    if not np.isin(labels, (0, 1, True, False)).all():
        raise ValueError("labels must be boolean or 0/1")
    positive = labels.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes; got {n_pos} positive and {n_neg} negative labels")
    from scipy.stats import rankdata  # here, not at import: scipy.stats adds ~1 s to every PPO command's start

    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def select_checkpoint(
    steps: Sequence[int], csi_values: Sequence[float], *, threshold: float | None = None, rise: float = 0.5
) -> dict[str, Any]:
    """The last checkpoint before CSI rises past a threshold.

    Args:
      steps: [C] checkpoint steps, increasing.
      csi_values: [C] CSI of each checkpoint on one fixed prompt set (so the sample count is the same).
      threshold: an absolute CSI threshold; default: the relative rule ``(1 + rise) * CSI(first checkpoint)``.
      rise: the relative rise the default rule allows (0.5 = 50% above the first checkpoint's CSI).

    Returns:
      dict with ``selected_step`` (the last step before the first crossing; the last step if CSI never crosses;
      the first step if the first checkpoint already exceeds an absolute threshold), ``crossing_step``
      (None if none), ``threshold`` and ``rule``.
    """
    steps = [int(s) for s in steps]
    values = np.asarray(csi_values, dtype=np.float64)
    if len(steps) == 0 or len(steps) != len(values):
        raise ValueError(f"steps and csi_values must be non-empty and of one length, got {len(steps)}, {len(values)}")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"steps must increase, got {steps}")
    if not np.all(np.isfinite(values)):
        raise ValueError("csi_values contain NaN or inf")
    if threshold is None:
        if rise < 0:
            raise ValueError(f"rise must be >= 0, got {rise}")
        threshold, rule = (1.0 + rise) * values[0], f"(1 + {rise}) * CSI(step {steps[0]})"
    else:
        rule = "absolute"
    above = np.nonzero(values > threshold)[0]
    if above.size == 0:
        selected, crossing = steps[-1], None
    else:
        first = int(above[0])
        selected, crossing = steps[max(first - 1, 0)], steps[first]
    return {"selected_step": selected, "crossing_step": crossing, "threshold": float(threshold), "rule": rule}
