"""Paired-seed verdict statistics: t-interval and p-value against SciPy, the bootstrap against the t-interval and by
simulated coverage, Holm against a hand-computed example and a brute-force implementation, every verdict branch."""

import numpy as np
import pytest
from scipy import stats

from inform_jax.eval.paired import (
    PairedInterval,
    holm,
    holm_levels,
    paired_interval,
    paired_p_value,
    uninformative,
    verdict,
)


def _pair(rng, n, effect=0.1, noise=0.2):
    b = rng.normal(size=n)
    return b + effect + noise * rng.normal(size=n), b


# ---- t-interval and p-value ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_t_interval_against_scipy(seed, level):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30))
    a, b = _pair(rng, n)
    iv = paired_interval(a, b, level=level)
    d = a - b
    se = stats.sem(d)  # std(ddof=1) / sqrt(n)
    low, high = stats.t.interval(level, n - 1, loc=d.mean(), scale=se)
    assert iv.n == n and iv.method == "t" and iv.level == level
    np.testing.assert_allclose([iv.mean, iv.low, iv.high], [d.mean(), low, high], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(iv.half_width, stats.t.ppf((1 + level) / 2, n - 1) * se, rtol=1e-12)
    # ttest_rel's own interval (SciPy >= 1.11) agrees too.
    ci = stats.ttest_rel(a, b).confidence_interval(confidence_level=level)
    np.testing.assert_allclose([iv.low, iv.high], [ci.low, ci.high], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_p_value_against_ttest_rel(seed):
    rng = np.random.default_rng(10 + seed)
    n = int(rng.integers(2, 40))
    a, b = _pair(rng, n, effect=rng.normal() * 0.1)
    np.testing.assert_allclose(paired_p_value(a, b), stats.ttest_rel(a, b).pvalue, rtol=1e-10, atol=1e-15)


def test_p_value_and_interval_agree():
    """The t-interval at level 1 - p has 0 on its edge."""
    rng = np.random.default_rng(20)
    a, b = _pair(rng, 12, effect=0.05)
    p = paired_p_value(a, b)
    iv = paired_interval(a, b, level=1 - p)
    assert min(abs(iv.low), abs(iv.high)) < 1e-10


def test_zero_variance_differences():
    a = np.array([1.0, 2.0, 3.0])
    assert paired_p_value(a, a) == 1.0
    assert paired_p_value(a + 0.5, a) == 0.0
    iv = paired_interval(a + 0.5, a)
    assert (iv.low, iv.high, iv.half_width) == (0.5, 0.5, 0.0)


# ---- bootstrap ---------------------------------------------------------------------------------------------------


def test_bootstrap_close_to_t_on_large_normal_sample():
    rng = np.random.default_rng(30)
    a, b = _pair(rng, 400)
    t_iv = paired_interval(a, b)
    for method in ("bootstrap", "expanded-bootstrap"):
        boot = paired_interval(a, b, method=method, n_boot=20_000)
        assert boot.method == method and boot.mean == t_iv.mean
        # Loose: the bootstrap's Monte Carlo error and its normal-vs-t quantile differ by a few percent of the width.
        np.testing.assert_allclose([boot.low, boot.high], [t_iv.low, t_iv.high], atol=0.05 * t_iv.half_width)


def test_bootstrap_is_reproducible_and_seeded():
    rng = np.random.default_rng(31)
    a, b = _pair(rng, 15)
    assert paired_interval(a, b, method="bootstrap", seed=3) == paired_interval(a, b, method="bootstrap", seed=3)
    assert paired_interval(a, b, method="bootstrap", seed=3) != paired_interval(a, b, method="bootstrap", seed=4)


def _coverage(method, n, experiments, rng, true_effect=0.3):
    hits = 0
    for i in range(experiments):
        a, b = _pair(rng, n, effect=true_effect, noise=1.0)
        iv = paired_interval(a, b, method=method, n_boot=2000, seed=i)
        hits += iv.low < true_effect < iv.high
    return hits / experiments


def _within_binomial_band(rate, expected, experiments, z=3.0):
    return abs(rate - expected) <= z * np.sqrt(expected * (1 - expected) / experiments)


def test_bootstrap_coverage_by_simulation():
    """400 simulated experiments each. The plain percentile bootstrap covers ~0.95 with many seeds but undercovers
    at 12 (its expected coverage there is P(|T_11| < 1.96 sqrt(11 / 12)) ~ 0.913, tested against that); the
    expanded percentiles restore ~0.95 at 12 seeds; the t-interval covers 0.95."""
    rng = np.random.default_rng(40)
    experiments = 400
    t_rate = _coverage("t", 12, experiments, rng)
    assert _within_binomial_band(t_rate, 0.95, experiments), t_rate
    expanded_rate = _coverage("expanded-bootstrap", 12, experiments, rng)
    assert _within_binomial_band(expanded_rate, 0.95, experiments), expanded_rate
    plain_40 = _coverage("bootstrap", 40, experiments, rng)
    assert _within_binomial_band(plain_40, 0.95, experiments), plain_40
    plain_12 = _coverage("bootstrap", 12, experiments, rng)
    expected_12 = 2 * stats.t.cdf(stats.norm.ppf(0.975) * np.sqrt(11 / 12), 11) - 1
    assert _within_binomial_band(plain_12, expected_12, experiments), plain_12


def test_bootstrap_needs_ten_seeds():
    rng = np.random.default_rng(41)
    a, b = _pair(rng, 9)
    with pytest.raises(ValueError, match="at least 10 seeds"):
        paired_interval(a, b, method="bootstrap")
    a, b = _pair(rng, 10)
    assert paired_interval(a, b, method="bootstrap").n == 10


# ---- input errors ------------------------------------------------------------------------------------------------


def test_nan_pairs_are_an_error_naming_the_index():
    a, b = np.arange(5.0), np.arange(5.0) + 0.1
    a[3] = np.nan
    b[1] = np.inf
    for fn in (paired_interval, paired_p_value, uninformative):
        with pytest.raises(ValueError, match=r"\[1, 3\]"):
            fn(a, b)


def test_too_few_seeds_and_bad_shapes():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_interval([1.0], [0.5])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_p_value([], [])
    with pytest.raises(ValueError, match="shapes"):
        paired_interval([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="method"):
        paired_interval([1.0, 2.0], [0.0, 1.0], method="z")
    with pytest.raises(ValueError, match="level"):
        paired_interval([1.0, 2.0], [0.0, 1.0], level=95)


# ---- Holm --------------------------------------------------------------------------------------------------------


def test_holm_hand_computed():
    # k = 4; sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.20 (x1 = 0.20); input order shuffled.
    p = [0.03, 0.20, 0.01, 0.02]
    np.testing.assert_allclose(holm(p), [0.06, 0.20, 0.04, 0.06])
    # Monotonicity via the running max: sorted 0.04 x 4 = 0.16, then 0.05 x 3 = 0.15 is raised to 0.16; caps at 1.
    np.testing.assert_allclose(holm([0.05, 0.04, 0.5, 0.9]), [0.16, 0.16, 1.0, 1.0])
    np.testing.assert_allclose(holm([0.04, 0.045]), [0.08, 0.08])


def _holm_brute_force(p):
    """Holm by its definition: the adjusted p-value of claim i is the smallest alpha at which the step-down procedure
    (reject the sorted p_(j) while p_(j) <= alpha / (k - j + 1), stop at the first failure) rejects it. The procedure
    rejects claim i at alpha iff every claim whose p-value is at most p_i (by sort position) passes its threshold,
    i.e. alpha >= max over those of (k - j + 1) p_(j); candidate alphas are those products."""
    k = len(p)
    order = sorted(range(k), key=lambda i: (p[i], i))
    candidates = sorted({min(1.0, (k - j) * p[order[j]]) for j in range(k)} | {1.0})
    adjusted = [None] * k
    for alpha in candidates:
        rejected = set()
        for j, i in enumerate(order):
            if p[i] <= alpha / (k - j) + 1e-15:
                rejected.add(i)
            else:
                break
        for i in rejected:
            if adjusted[i] is None:
                adjusted[i] = alpha
    return [1.0 if x is None else x for x in adjusted]


@pytest.mark.parametrize("seed", range(8))
def test_holm_against_brute_force(seed):
    rng = np.random.default_rng(50 + seed)
    k = int(rng.integers(1, 9))
    p = rng.random(k) ** 3  # skewed toward small p-values so some claims are rejected
    if seed % 2:
        p[rng.integers(0, k)] = p[0]  # a tie
    got = holm(p)
    np.testing.assert_allclose(got, _holm_brute_force(list(p)), rtol=1e-12)
    assert np.all(got >= p) and np.all(got <= 1.0)
    # Monotone in p: sorting by p sorts the adjusted values.
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(got[order]) >= 0)


def test_holm_rejects_bad_p_values():
    for bad in ([0.1, np.nan], [1.2], [-0.1], []):
        with pytest.raises(ValueError):
            holm(bad)


def test_holm_levels():
    p = [0.03, 0.20, 0.01, 0.02]
    # sorted ranks: 0.01 -> 1 - 0.05 / 4, 0.02 -> 1 - 0.05 / 3, 0.03 -> 1 - 0.05 / 2, 0.20 -> 1 - 0.05.
    np.testing.assert_allclose(holm_levels(p, 0.05), [1 - 0.05 / 2, 0.95, 1 - 0.05 / 4, 1 - 0.05 / 3])
    # A tie shares the stricter level of its first member.
    np.testing.assert_allclose(holm_levels([0.01, 0.02, 0.01], 0.1), [1 - 0.1 / 3, 1 - 0.1, 1 - 0.1 / 3])


@pytest.mark.parametrize("seed", range(4))
def test_holm_levels_consistent_with_holm(seed):
    """On random claims: the interval at a claim's Holm level excludes 0 iff its raw p is below its Holm threshold,
    and every claim Holm rejects has such an interval."""
    rng = np.random.default_rng(60 + seed)
    k, n, alpha = 5, 12, 0.05
    claims = [_pair(rng, n, effect=rng.choice([0.0, 0.1, 0.3]), noise=0.2) for _ in range(k)]
    p = np.array([paired_p_value(a, b) for a, b in claims])
    levels = holm_levels(p, alpha)
    rejected = holm(p) <= alpha
    for (a, b), level, pi, rej in zip(claims, levels, p, rejected, strict=True):
        iv = paired_interval(a, b, level=level)
        excludes_zero = iv.low > 0 or iv.high < 0
        assert excludes_zero == (pi < 1 - level)
        if rej:
            assert excludes_zero


# ---- verdicts ----------------------------------------------------------------------------------------------------


def _iv(low, high):
    return PairedInterval((low + high) / 2, low, high, (high - low) / 2, 10, "t", 0.95)


@pytest.mark.parametrize(
    "low, high, up, down",
    [
        (0.06, 0.20, "reproduced", "refuted"),  # beyond +m: reproduced upward, the opposite effect downward
        (-0.20, -0.06, "refuted", "reproduced"),  # beyond -m
        (-0.03, 0.04, "refuted", "refuted"),  # inside (-m, m): no effect worth the name either way
        (-0.30, 0.02, "refuted", "inconclusive"),  # short of +m, spanning -m
        (-0.02, 0.30, "inconclusive", "refuted"),  # spans +m
        (-0.30, 0.30, "inconclusive", "inconclusive"),  # spans both
        (0.05, 0.20, "inconclusive", "refuted"),  # touches m exactly: not beyond it
        (-0.10, 0.05, "inconclusive", "inconclusive"),  # touches +m from below: not short of it either
    ],
)
def test_verdict_every_branch_both_directions(low, high, up, down):
    assert verdict(_iv(low, high), min_effect=0.05) == up
    assert verdict(_iv(low, high), min_effect=0.05, direction=-1) == down


def test_verdict_direction_mirrors():
    """Negating the interval and the direction gives the same verdict, on random intervals."""
    rng = np.random.default_rng(70)
    for _ in range(200):
        low, high = np.sort(rng.normal(size=2) * 0.2)
        m = abs(rng.normal() * 0.05)
        assert verdict(_iv(low, high), min_effect=m) == verdict(_iv(-high, -low), min_effect=m, direction=-1)


def test_verdict_from_a_real_interval():
    rng = np.random.default_rng(71)
    a, b = _pair(rng, 12, effect=0.5, noise=0.05)
    assert verdict(paired_interval(a, b), min_effect=0.05) == "reproduced"
    assert verdict(paired_interval(b, a), min_effect=0.05) == "refuted"


def test_verdict_bad_arguments():
    with pytest.raises(ValueError, match="direction"):
        verdict(_iv(0.0, 1.0), min_effect=0.05, direction=0)
    with pytest.raises(ValueError, match="min_effect"):
        verdict(_iv(0.0, 1.0), min_effect=-0.05)


# ---- uninformative -----------------------------------------------------------------------------------------------


def test_uninformative():
    ones = np.ones(10)
    assert uninformative(ones, ones)
    assert uninformative(ones, ones + 1e-12)
    rng = np.random.default_rng(80)
    x = rng.random(10)
    assert uninformative(x, x.copy())  # ties on every seed, at any level
    y = x.copy()
    y[4] += 0.01
    assert not uninformative(x, y)  # one informative seed suffices
    # Both sides saturated: ceiling 1, values at or just below it only within atol.
    assert not uninformative(ones, np.full(10, 0.99))
    assert uninformative(np.full(10, 0.995), np.full(10, 0.99), ceiling=0.99)
    assert not uninformative(np.full(10, 0.995), np.full(10, 0.98), ceiling=0.99)
    # Mixed: some seeds tie below the ceiling, the others sit at it on both sides.
    mixed_a = np.where(np.arange(10) < 5, 0.5, 1.0)
    mixed_b = np.where(np.arange(10) < 5, 0.5, 0.999)
    assert uninformative(mixed_a, mixed_b, ceiling=0.999)
    assert not uninformative(mixed_a, mixed_b)


def test_interval_str():
    s = str(_iv(0.01, 0.09))
    assert "+0.050" in s and "0.040" in s and "n=10" in s
