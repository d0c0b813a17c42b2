"""Paired-seed verdict statistics for the lab (PROTOCOL.md section 3, "Verdicts"), in NumPy and SciPy.

Every comparison is paired by seed: seed ``i`` gives method ``a`` and its comparator ``b`` the same world, SFT policy,
prompts and sampling randomness, so the statistic is the per-seed difference ``d_i = a_i - b_i`` and its mean.

    iv = paired_interval(gold_method, gold_baseline)                 # [n], [n] -> mean difference and its interval
    verdict(iv, min_effect=0.05)                                     # "reproduced" | "refuted" | "inconclusive"
    holm([paired_p_value(a, b) for a, b in claims])                  # Holm-adjusted p-values over the primary claims
    levels = holm_levels(p_values, alpha=0.05)                       # per-claim interval levels consistent with Holm
    paired_interval(a, b, level=levels[i])                           # the interval to show for claim i

A claim is reproduced when the whole interval lies beyond the minimum effect in the claimed direction, refuted when
the whole interval lies short of it (an effect that large in the claimed direction is excluded), inconclusive
otherwise; rows where every seed ties (1.000 vs 1.000) or both sides sit at a ceiling are ``uninformative``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

METHODS = ("t", "bootstrap", "expanded-bootstrap")
VERDICTS = ("reproduced", "refuted", "inconclusive")
MIN_BOOTSTRAP_SEEDS = 10


@dataclass(frozen=True)
class PairedInterval:
    """A confidence interval for the mean paired difference ``mean(a - b)``.

    ``half_width`` is ``(high - low) / 2``: exact for the symmetric t-interval, the average of the two sides for a
    (possibly asymmetric) bootstrap interval.
    """

    mean: float
    low: float
    high: float
    half_width: float
    n: int
    method: str
    level: float

    def __str__(self) -> str:
        return (
            f"{self.mean:+.3f} ± {self.half_width:.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n}, {self.method})"
        )


def paired_differences(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    """``a - b`` per seed, float64 ``[n]``, after checking the pairs.

    Args:
      a: ``[n]`` the method's value per seed.
      b: ``[n]`` the comparator's value on the same seeds, in the same order.

    Raises:
      ValueError: shapes differ or are not 1-D, fewer than 2 seeds, or a pair holds NaN / inf (named by index:
        a missing seed must be fixed or excluded on purpose, not dropped silently here).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be 1-D with one value per seed, got shapes {a.shape} and {b.shape}")
    bad = np.flatnonzero(~(np.isfinite(a) & np.isfinite(b)))
    if bad.size:
        raise ValueError(f"non-finite value (NaN or inf) in the pair(s) at seed index {bad.tolist()}")
    if a.size < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds, got {a.size}")
    return a - b


def paired_interval(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
    method: str = "t",
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedInterval:
    """Confidence interval for the mean of the per-seed differences ``a - b``.

    Methods:
      ``"t"``: ``mean(d) ± t_{(1 + level) / 2, n - 1} * std(d, ddof=1) / sqrt(n)``, the paired t-interval.
      ``"bootstrap"``: the percentile bootstrap: resample the ``n`` differences with replacement ``n_boot`` times and
        take the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means. It needs at least 10
        seeds, and even then it is too narrow for small n: with normal differences it covers about 0.91 instead of
        0.95 at 12 seeds (it uses the plug-in std and a normal quantile), 0.94 at 30. Prefer ``"t"`` below ~30 seeds.
      ``"expanded-bootstrap"``: the percentile bootstrap at widened percentiles (Hesterberg 2015): the tail
        probability ``alpha' / 2 = Phi(-sqrt(n / (n - 1)) * t_{(1 + level) / 2, n - 1})``, which corrects the small
        sample narrowness while keeping the bootstrap's shape (skewness); about 0.93-0.94 at 12 seeds.

    Args:
      a: ``[n]`` the method's value per seed.
      b: ``[n]`` the comparator's value per seed (same seeds, same order).
      level: the confidence level, in (0, 1).
      method: one of :data:`METHODS`.
      n_boot: bootstrap resamples.
      seed: the bootstrap's random seed (the interval is reproducible).

    Returns:
      A :class:`PairedInterval`. With all differences equal the t-interval is the point ``[d, d]``.

    Raises:
      ValueError: see :func:`paired_differences`; a bootstrap with fewer than 10 seeds; a bad level or method.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    d = paired_differences(a, b)
    n, mean = d.size, float(d.mean())
    if method == "t":
        half = float(stats.t.ppf((1.0 + level) / 2.0, n - 1) * d.std(ddof=1) / np.sqrt(n))
        low, high = mean - half, mean + half
    else:
        if n < MIN_BOOTSTRAP_SEEDS:
            raise ValueError(
                f"a bootstrap interval needs at least {MIN_BOOTSTRAP_SEEDS} seeds (got {n}); use method='t'"
            )
        tail = (1.0 - level) / 2.0
        if method == "expanded-bootstrap":
            tail = float(stats.norm.cdf(-np.sqrt(n / (n - 1)) * stats.t.ppf(1.0 - tail, n - 1)))
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        low, high = (float(x) for x in np.quantile(means, [tail, 1.0 - tail]))
    return PairedInterval(mean, low, high, (high - low) / 2.0, n, method, float(level))


def paired_p_value(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired t-test p-value for ``mean(a - b) = 0`` (``scipy.stats.ttest_rel``'s).

    Args:
      a, b: ``[n]`` paired values per seed (checked as in :func:`paired_differences`).

    Returns:
      The p-value. When every difference is the same (zero variance) SciPy gives NaN; here the p-value is 1 if the
      differences are all 0 (no evidence of any effect) and 0 otherwise (every seed moved by the same nonzero amount).
    """
    d = paired_differences(a, b)
    n, sd = d.size, d.std(ddof=1)
    if sd == 0.0:
        return 1.0 if d[0] == 0.0 else 0.0
    t = d.mean() / (sd / np.sqrt(n))
    return float(2.0 * stats.t.sf(abs(t), n - 1))


def _check_p_values(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(p_values, np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p_values must be a non-empty 1-D sequence, got shape {p.shape}")
    if not np.all((p >= 0.0) & (p <= 1.0)):  # also catches NaN
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    return p


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input's order.

    With ``k`` p-values sorted ascending ``p_(1) <= ... <= p_(k)``, the adjusted value of the ``i``-th is
    ``max_{j <= i} min(1, (k - j + 1) p_(j))``: the running maximum makes it monotone in ``p``, so a claim is never
    rejected while a smaller p-value is not. Reject claim ``i`` at family level ``alpha`` when its adjusted
    p-value is ``<= alpha``; this controls the family-wise error rate over the ``k`` claims.

    Args:
      p_values: ``[k]`` raw p-values in [0, 1].

    Returns:
      ``[k]`` float64 adjusted p-values, each in [raw p, 1].
    """
    p = _check_p_values(p_values)
    k = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (k - np.arange(k)) * p[order])
    adjusted = np.empty(k)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def holm_levels(p_values: Sequence[float] | np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Per-claim confidence levels for intervals shown beside Holm decisions, in the input's order.

    The claim with the ``i``-th smallest p-value (``i = 1..k``) gets the level ``1 - alpha / (k - i + 1)``: the
    smallest p-value's interval is Bonferroni's ``1 - alpha / k``, the largest's is ``1 - alpha``. Tied p-values
    share the level of the first of their tie (the stricter one), because Holm decides a tie together at that
    threshold.

    The t-interval at this level excludes 0 exactly when the raw p-value is below its Holm threshold
    ``alpha / (k - i + 1)``. Holm's step-down additionally stops at the first claim that fails, so a later claim can
    have an interval excluding 0 yet not be rejected; the rejection itself is read from :func:`holm` (adjusted
    p-value ``<= alpha``).

    Args:
      p_values: ``[k]`` raw p-values in [0, 1] (e.g. :func:`paired_p_value` per primary claim).
      alpha: the family-wise error rate, in (0, 1).

    Returns:
      ``[k]`` float64 confidence levels, to pass as ``level`` to :func:`paired_interval`.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    p = _check_p_values(p_values)
    k = p.size
    order = np.argsort(p, kind="stable")
    sorted_p = p[order]
    # Rank (0-based) of the first member of each value's tie block.
    first = np.searchsorted(sorted_p, sorted_p, side="left")
    levels = np.empty(k)
    levels[order] = 1.0 - alpha / (k - first)
    return levels


def verdict(interval: PairedInterval, *, min_effect: float, direction: int = +1) -> str:
    """The protocol's verdict on a claim from its interval for ``mean(method - comparator)``.

    Rule (``lo, hi`` = the interval's ends multiplied by ``direction`` and sorted, i.e. the interval measured in
    the claimed direction; ``m = min_effect``):

      - ``"reproduced"`` when ``lo > m``: the whole interval lies beyond the minimum effect in the claimed direction
        (the method beats its comparator by more than ``m``, or for ``direction=-1`` is lower by more than ``m``).
      - ``"refuted"`` when ``hi < m``: the whole interval lies short of the minimum effect in the claimed direction,
        so an effect of size ``m`` the claimed way is excluded. This covers an interval inside ``(-m, m)`` (no
        effect worth the name), one entirely beyond ``m`` the other way (the opposite effect), and one spanning
        both.
      - ``"inconclusive"`` otherwise: the interval contains ``m`` in the claimed direction (an interval touching
        ``m`` exactly is inconclusive too).

    Args:
      interval: a :class:`PairedInterval` (anything with ``low`` and ``high``), the difference method minus
        comparator.
      min_effect: the minimum effect ``m >= 0`` (0.05 gold in the protocol).
      direction: ``+1`` when the claim is that the method is higher, ``-1`` when lower (e.g. KL, hacking rate).

    Returns:
      One of :data:`VERDICTS`.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if not min_effect >= 0.0:
        raise ValueError(f"min_effect must be >= 0, got {min_effect}")
    lo, hi = sorted((direction * interval.low, direction * interval.high))
    if lo > min_effect:
        return "reproduced"
    if hi < min_effect:
        return "refuted"
    return "inconclusive"


def uninformative(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    ceiling: float | None = None,
    atol: float = 1e-9,
) -> bool:
    """Whether a paired comparison can say nothing: every seed is a tie or sits at the ceiling on both sides.

    A pair is degenerate when ``|a_i - b_i| <= atol`` (1.000 vs 1.000), and at the ceiling when ``ceiling`` is given
    and both ``a_i`` and ``b_i`` are ``>= ceiling - atol`` (both saturate the measure, e.g. a win rate of 1 or a gold
    reward at its maximum, whatever small gap remains). The comparison is uninformative when every pair is one or
    the other: the interval then collapses or measures only the ceiling, and the row is marked instead of judged.

    Args:
      a, b: ``[n]`` paired values per seed (checked as in :func:`paired_differences`).
      ceiling: the measure's maximum, or a level above which values count as saturated; None checks ties only.
      atol: the absolute tolerance of both checks.

    Returns:
      True when every pair is degenerate or at the ceiling.
    """
    d = paired_differences(a, b)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    flat = np.abs(d) <= atol
    if ceiling is not None:
        flat |= (a >= ceiling - atol) & (b >= ceiling - atol)
    return bool(np.all(flat))
