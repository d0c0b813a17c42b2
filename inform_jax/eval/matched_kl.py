"""Reading a method's gold reward at matched KL (PROTOCOL.md section 3, "Matched KL"), in NumPy.

A run is a sequence of C checkpoints in training order, each with its measured exact KL from the SFT policy
(``kl`` [C], non-negative, e.g. :func:`inform_jax.losses.exact_kl` averaged over held-out samples) and its held-out
gold reward (``gold`` [C]). Methods are compared at the same KL budget, not the same step: the budgets are 1x, 3x and
10x the KL at which the reference run (standard-RM PPO) peaks in gold.

    budgets = reference_budgets(kl_ref, gold_ref)                  # peak index, peak KL, {1: kl, 3: 3 kl, 10: 10 kl}
    gold_at_kl(kl, gold, budgets.budgets[3])                      # gold at the first crossing, or None
    table = matched_kl_table({"ppo": (kl_ref, gold_ref), "inform": (kl, gold)}, reference="ppo")

How a curve is read: the KL is smoothed by a centred moving average (:func:`smooth`), then made monotone by its
running maximum (:func:`monotone_envelope`); the gold at a budget is read at the first checkpoint whose envelope
reaches the budget, linearly interpolated from the previous checkpoint, and "not reached" (None) when the envelope
never gets there: a curve is never extrapolated. The gold itself is read raw (not smoothed): noise in gold is averaged
over seeds by the paired statistics (:mod:`inform_jax.eval.paired`); smoothing it here would bias a peak downward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_MULTIPLES = (1, 3, 10)


def _curve(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (one value per checkpoint), got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{name} is not finite at checkpoint index {bad.tolist()}")
    return x


def _run(kl: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kl, gold = _curve(kl, "kl"), _curve(gold, "gold")
    if kl.shape != gold.shape:
        raise ValueError(f"kl and gold need one value per checkpoint each, got shapes {kl.shape} and {gold.shape}")
    if np.any(kl < 0):
        raise ValueError(f"kl must be non-negative (an exact KL), negative at index {np.flatnonzero(kl < 0).tolist()}")
    return kl, gold


def smooth(values: Sequence[float] | np.ndarray, window: int = 3) -> np.ndarray:
    """Centred moving average over checkpoints, its window shrunk symmetrically at the edges.

    Checkpoint ``i`` averages ``values[i - h : i + h + 1]`` with ``h = min(window // 2, i, C - 1 - i)``: the window
    stays centred on ``i`` (so a rising curve is not pulled up or down at its ends) and narrows near the edges; the
    first and last checkpoints keep their own value. ``window=1`` is the identity.

    Args:
      values: ``[C]`` finite values in checkpoint order.
      window: odd positive width.

    Returns:
      ``[C]`` float64.
    """
    x = _curve(values, "values")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive integer, got {window}")
    c = x.size
    # A plain loop, not a cumulative-sum difference: C is a few hundred checkpoints at most, and the difference of
    # cumulative sums would round (window 1 would not return the values exactly, moving a crossing at a checkpoint).
    out = np.empty(c)
    for i in range(c):
        h = min(window // 2, i, c - 1 - i)
        out[i] = x[i - h : i + h + 1].sum() / (2 * h + 1)
    return out


def monotone_envelope(kl: Sequence[float] | np.ndarray, window: int = 3) -> np.ndarray:
    """Running maximum of the smoothed KL: ``[C] -> [C]``, non-decreasing.

    Why: the measured KL can dip while training advances (sampling noise on finite held-out prompts, or the policy
    moving back toward SFT for a while). A budget must be read once, where the run first gets that far from SFT;
    ordering the curve by its running maximum makes "the first checkpoint at KL >= target" well defined and keeps a
    later dip from being read as an earlier, lower-KL point.

    Args:
      kl: ``[C]`` measured KL per checkpoint, in training order.
      window: the smoothing window (:func:`smooth`).
    """
    return np.maximum.accumulate(smooth(kl, window))


def gold_at_kl(
    kl: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray, target: float, *, window: int = 3
) -> float | None:
    """The gold reward where a run's smoothed KL first reaches ``target``; None when it never does.

    With ``e = monotone_envelope(kl, window)`` and ``i`` the first checkpoint with ``e[i] >= target``:

      - ``i == 0`` (``target <= e[0]``, including a target of 0 or below the first checkpoint's KL): ``gold[0]``,
        the first checkpoint's gold (the run starts at or beyond the budget; nothing earlier to read).
      - otherwise ``gold[i-1] + (target - e[i-1]) / (e[i] - e[i-1]) * (gold[i] - gold[i-1])``: linear in the
        envelope between the previous checkpoint and the crossing one (``e[i-1] < target <= e[i]``, so the
        denominator is positive); exact at ``target == e[i]``.
      - no such ``i``: None ("not reached"); the curve is never extrapolated beyond its last checkpoint.

    Args:
      kl: ``[C]`` measured exact KL from SFT per checkpoint (non-negative), in training order.
      gold: ``[C]`` held-out gold reward per checkpoint (read raw, not smoothed).
      target: the KL budget.
      window: the KL smoothing window (:func:`smooth`).

    Returns:
      The interpolated gold (float) or None.
    """
    kl, gold = _run(kl, gold)
    where = crossing(kl, target, window=window)
    if where is None:
        return None
    i, frac = where
    return float(gold[i]) if frac == 0.0 else float(gold[i - 1] + frac * (gold[i] - gold[i - 1]))


def crossing(kl: Sequence[float] | np.ndarray, target: float, *, window: int = 3) -> tuple[int, float] | None:
    """Where a run's smoothed KL first reaches ``target``, as ``(i, frac)``: the reading is
    ``(1 - frac) * x[i - 1] + frac * x[i]`` for any per-checkpoint quantity ``x`` (``frac`` 0 with ``i`` 0 when the
    run starts at or beyond the budget); None when it never does. :func:`gold_at_kl` reads the mean gold this way;
    the lab reads per-prompt gold [C, N] with the same weights, so paired differences at a budget are exact.

    Args:
      kl: ``[C]`` measured KL per checkpoint (non-negative), in training order.
      target: the KL budget.
      window: the KL smoothing window (:func:`smooth`).
    """
    envelope = monotone_envelope(_curve(kl, "kl"), window)
    reached = np.flatnonzero(envelope >= target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return 0, 0.0
    return i, float((target - envelope[i - 1]) / (envelope[i] - envelope[i - 1]))


@dataclass(frozen=True)
class ReferenceBudgets:
    """The KL budgets from a reference run: its smoothed-gold peak and the KL there times each multiple.

    ``peak_kl`` is the monotone envelope's KL at the peak checkpoint (the KL axis every reading uses); ``budgets``
    maps each multiple to ``multiple * peak_kl``.
    """

    peak_index: int
    peak_kl: float
    peak_gold: float
    budgets: dict[float, float]


def reference_budgets(
    kl: Sequence[float] | np.ndarray,
    gold: Sequence[float] | np.ndarray,
    multiples: Sequence[float] = DEFAULT_MULTIPLES,
    window: int = 3,
) -> ReferenceBudgets:
    """The reference run's (standard-RM PPO's) KL at its gold peak, times each multiple.

    The peak is the first checkpoint maximizing the smoothed gold (``smooth(gold, window)``; smoothing here keeps a
    single lucky checkpoint from setting every budget); its KL is ``monotone_envelope(kl, window)`` at that
    checkpoint. A reference peaking at a checkpoint with KL 0 gives budgets of 0, at which every method reads its
    first checkpoint's gold.

    Args:
      kl: ``[C]`` the reference run's measured KL per checkpoint.
      gold: ``[C]`` the reference run's gold per checkpoint.
      multiples: the budget multiples (1x, 3x, 10x in the protocol).
      window: the smoothing window of both curves.

    Returns:
      A :class:`ReferenceBudgets`; ``peak_gold`` is the smoothed gold at the peak.
    """
    kl, gold = _run(kl, gold)
    smoothed_gold = smooth(gold, window)
    peak = int(np.argmax(smoothed_gold))
    peak_kl = float(monotone_envelope(kl, window)[peak])
    return ReferenceBudgets(peak, peak_kl, float(smoothed_gold[peak]), {m: m * peak_kl for m in multiples})


@dataclass(frozen=True)
class MatchedKLRow:
    """One method's reading: ``gold[multiple]`` (None = not reached) and the gold at its last checkpoint."""

    gold: dict[float, float | None]
    final_gold: float


@dataclass(frozen=True)
class MatchedKLTable:
    """Gold at matched KL for every run, against the reference's budgets."""

    reference: str
    budgets: ReferenceBudgets
    rows: dict[str, MatchedKLRow]


def matched_kl_table(
    runs: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    reference: str,
    multiples: Sequence[float] = DEFAULT_MULTIPLES,
    window: int = 3,
) -> MatchedKLTable:
    """Each run's gold at 1x / 3x / 10x the reference's peak KL (or None), beside its final gold.

    For paired verdicts, build one table per seed (the reference's budgets are then that seed's) and pair the
    methods' readings seed by seed; a reading that is None on some seed is "not reached" there, reported, not
    imputed.

    Args:
      runs: method name -> ``(kl [C], gold [C])`` per checkpoint in training order (C may differ between runs);
        must include ``reference``.
      reference: the name of the reference run (standard-RM PPO).
      multiples: the budget multiples.
      window: the smoothing window (:func:`smooth`).

    Returns:
      A :class:`MatchedKLTable` with a row per run, the reference's included.
    """
    if reference not in runs:
        raise KeyError(f"reference run {reference!r} not among {sorted(runs)}")
    budgets = reference_budgets(*runs[reference], multiples=multiples, window=window)
    rows = {}
    for name, (kl, gold) in runs.items():
        kl, gold = _run(kl, gold)
        readings = {m: gold_at_kl(kl, gold, target, window=window) for m, target in budgets.budgets.items()}
        rows[name] = MatchedKLRow(readings, float(gold[-1]))
    return MatchedKLTable(reference, budgets, rows)
