"""Gold at matched KL: hand-computed curves, "not reached", zigzag KL, reference budgets, a brute-force loop."""

import numpy as np
import pytest

from inform_jax.eval.matched_kl import (
    gold_at_kl,
    matched_kl_table,
    monotone_envelope,
    reference_budgets,
    smooth,
)


def test_smooth_hand_computed():
    x = [1.0, 2.0, 6.0, 3.0, 8.0]
    np.testing.assert_allclose(smooth(x, 1), x)
    noisy = np.random.default_rng(1).exponential(size=50).cumsum()
    np.testing.assert_array_equal(smooth(noisy, 1), noisy)  # exactly: a crossing at a checkpoint must not move
    np.testing.assert_allclose(smooth(x, 3), [1.0, 3.0, 11 / 3, 17 / 3, 8.0])
    # window 5: the edge windows shrink symmetrically (1, 3, 5, 3, 1 points).
    np.testing.assert_allclose(smooth(x, 5), [1.0, 3.0, 4.0, 17 / 3, 8.0])
    np.testing.assert_allclose(smooth([2.0], 3), [2.0])
    for bad in (0, 2, -1):
        with pytest.raises(ValueError, match="odd"):
            smooth(x, bad)


def test_monotone_envelope():
    np.testing.assert_allclose(monotone_envelope([0.0, 2.0, 1.0, 3.0, 2.5], window=1), [0.0, 2.0, 2.0, 3.0, 3.0])
    rng = np.random.default_rng(0)
    kl = np.abs(rng.normal(size=20)).cumsum() + rng.normal(size=20)
    env = monotone_envelope(np.abs(kl), window=3)
    assert np.all(np.diff(env) >= 0)
    assert np.all(env >= smooth(np.abs(kl), 3))


def test_gold_at_kl_hand_computed():
    kl, gold = [0.0, 1.0, 2.0, 4.0], [0.0, 1.0, 3.0, 2.0]
    assert gold_at_kl(kl, gold, 3.0, window=1) == pytest.approx(2.5)  # halfway from KL 2 to 4: gold 3 -> 2
    assert gold_at_kl(kl, gold, 1.0, window=1) == pytest.approx(1.0)  # exactly at a checkpoint
    assert gold_at_kl(kl, gold, 1.5, window=1) == pytest.approx(2.0)
    assert gold_at_kl(kl, gold, 0.25, window=1) == pytest.approx(0.25)
    assert gold_at_kl(kl, gold, 4.0, window=1) == pytest.approx(2.0)  # the last checkpoint, reached exactly
    # window 3: smoothed KL [0, 1, 7/3, 4]; target 2 lies 3/4 of the way from 1 to 7/3: gold 1 + 0.75 * (3 - 1).
    assert gold_at_kl(kl, gold, 2.0, window=3) == pytest.approx(2.5)


def test_not_reached_is_none_never_extrapolated():
    kl, gold = [0.0, 1.0, 2.0, 4.0], [0.0, 1.0, 3.0, 2.0]
    assert gold_at_kl(kl, gold, 4.0 + 1e-9, window=1) is None
    assert gold_at_kl(kl, gold, 40.0, window=1) is None
    # Smoothed KL [0, 1, 13/3, 10] (the last checkpoint keeps its own value): 10.5 is beyond the curve.
    assert gold_at_kl([0.0, 1.0, 2.0, 10.0], [0, 1, 2, 3], 10.5, window=3) is None


def test_target_at_or_below_the_first_checkpoint():
    kl, gold = [0.5, 1.0, 2.0], [0.7, 1.0, 0.2]
    for target in (0.0, -1.0, 0.3, 0.5):
        assert gold_at_kl(kl, gold, target) == 0.7


def test_zigzag_kl_first_crossing():
    kl = [0.0, 2.0, 1.0, 3.0]
    gold = [0.0, 4.0, 10.0, 6.0]
    # The envelope is [0, 2, 2, 3]: target 1 crosses first between checkpoints 0 and 1 (gold 2), not at the dip
    # back to KL 1 at checkpoint 2 (gold 10).
    assert gold_at_kl(kl, gold, 1.0, window=1) == pytest.approx(2.0)
    # Target 2.5: between checkpoint 2 (envelope 2, not its raw 1) and checkpoint 3: halfway, gold (10 + 6) / 2.
    assert gold_at_kl(kl, gold, 2.5, window=1) == pytest.approx(8.0)
    # A dip at the very end does not undo a crossing already made.
    assert gold_at_kl([0.0, 3.0, 0.5], [0.0, 3.0, 9.0], 2.0, window=1) == pytest.approx(2.0)


def test_reference_budgets_at_a_known_peak():
    kl = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0]
    gold = [0.0, 1.0, 3.0, 5.0, 4.0, 2.0]
    rb = reference_budgets(kl, gold, window=1)
    assert (rb.peak_index, rb.peak_kl, rb.peak_gold) == (3, 2.0, 5.0)
    assert rb.budgets == {1: 2.0, 3: 6.0, 10: 20.0}
    # window 3: smoothed gold [0, 4/3, 3, 4, 11/3, 2] peaks at 3 too; smoothed KL there (1 + 2 + 3) / 3 = 2.
    rb3 = reference_budgets(kl, gold, multiples=(1, 2.5), window=3)
    assert rb3.peak_index == 3 and rb3.peak_gold == pytest.approx(4.0)
    assert rb3.budgets == pytest.approx({1: 2.0, 2.5: 5.0})
    # A single lucky checkpoint does not set the peak once smoothed.
    # Smoothed (window 3): [0, 3, 3, 3, 4/3, 8/3, 4, 8/3, 0].
    spiky = [0.0, 0.0, 9.0, 0.0, 0.0, 4.0, 4.0, 4.0, 0.0]
    assert reference_budgets(np.arange(9.0), spiky, window=1).peak_index == 2
    assert reference_budgets(np.arange(9.0), spiky, window=3).peak_index == 6


def test_matched_kl_table():
    ref = ([0.0, 0.5, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 3.0, 5.0, 4.0, 2.0])  # peak KL 2 -> budgets 2, 6, 20
    slow = ([0.0, 1.0, 2.0, 4.0, 6.0], [0.0, 2.0, 4.0, 6.0, 7.0])  # reaches 6, not 20
    table = matched_kl_table({"ppo": ref, "inform": slow}, reference="ppo", window=1)
    assert table.reference == "ppo" and table.budgets.peak_kl == 2.0
    assert table.rows["ppo"].gold == {1: 5.0, 3: None, 10: None}
    assert table.rows["ppo"].final_gold == 2.0
    assert table.rows["inform"].gold == {1: 4.0, 3: 7.0, 10: None}
    assert table.rows["inform"].final_gold == 7.0
    with pytest.raises(KeyError, match="reference"):
        matched_kl_table({"inform": slow}, reference="ppo")


def test_input_errors():
    with pytest.raises(ValueError, match="shapes"):
        gold_at_kl([0.0, 1.0], [0.0], 0.5)
    with pytest.raises(ValueError, match=r"index \[1\]"):
        gold_at_kl([0.0, np.nan, 1.0], [0.0, 1.0, 2.0], 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        gold_at_kl([0.0, -0.1], [0.0, 1.0], 0.5)
    with pytest.raises(ValueError, match="non-empty"):
        gold_at_kl([], [], 0.5)


# ---- against a brute-force loop ------------------------------------------------------------------------------------


def _brute_gold_at_kl(kl, gold, target, window):
    c, h = len(kl), window // 2
    smoothed = []
    for i in range(c):
        r = min(h, i, c - 1 - i)
        smoothed.append(sum(kl[i - r : i + r + 1]) / (2 * r + 1))
    envelope, best = [], -np.inf
    for s in smoothed:
        best = max(best, s)
        envelope.append(best)
    for i in range(c):
        if envelope[i] >= target:
            if i == 0:
                return gold[0]
            lo, hi = envelope[i - 1], envelope[i]
            return gold[i - 1] + (gold[i] - gold[i - 1]) * (target - lo) / (hi - lo)
    return None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("window", [1, 3, 5])
def test_against_brute_force_on_random_curves(seed, window):
    rng = np.random.default_rng(100 + seed)
    c = int(rng.integers(2, 25))
    monotone = np.cumsum(rng.exponential(size=c)) * rng.random()
    noisy = np.abs(monotone + rng.normal(size=c) * 0.3)  # zigzags too
    gold = rng.normal(size=c).cumsum()
    for kl in (monotone, noisy):
        top = monotone_envelope(kl, window)[-1]
        targets = list(rng.uniform(-0.1, top * 1.2, size=20)) + list(smooth(kl, window)[:3])
        for target in targets:
            got = gold_at_kl(kl, gold, target, window=window)
            want = _brute_gold_at_kl(list(kl), list(gold), target, window)
            if want is None:
                assert got is None
            else:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_crossing_weights_read_per_prompt_gold_consistently_with_the_mean():
    """Per-prompt gold [C, N] read with crossing()'s weights averages to gold_at_kl of the mean curve."""
    from inform_jax.eval.matched_kl import crossing

    rng = np.random.default_rng(7)
    kl = np.cumsum(rng.uniform(0.0, 1.0, 9))
    per_prompt = rng.normal(size=(9, 13))
    for target in (0.0, kl[0], 0.5 * (kl[3] + kl[4]), kl[-3], kl[-1] + 5.0):
        where = crossing(kl, target, window=3)
        expected = gold_at_kl(kl, per_prompt.mean(1), target, window=3)
        if where is None:
            assert expected is None
            continue
        i, frac = where
        reading = per_prompt[i] if i == 0 else (1 - frac) * per_prompt[i - 1] + frac * per_prompt[i]
        np.testing.assert_allclose(reading.mean(), expected, rtol=1e-12, atol=1e-12)
