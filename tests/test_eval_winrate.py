"""The lab's pairwise judge: both presentation orders and the tie margin, on hand-made cases."""

import pytest

from inform_jax.eval.winrate import compare, compare_scores, verdict


def test_verdict_needs_both_orders_to_agree_beyond_the_margin():
    assert verdict(0.3, -0.3, margin=0.1) == "win"
    assert verdict(-0.3, 0.3, margin=0.1) == "lose"
    assert verdict(0.05, -0.05, margin=0.1) == "tie"  # within the margin
    assert verdict(0.1, -0.1, margin=0.1) == "tie"  # exactly at the margin is not beyond it
    assert verdict(0.3, 0.3, margin=0.1) == "tie"  # the orders disagree: a position-biased judge
    with pytest.raises(ValueError, match="margin"):
        verdict(1.0, -1.0, margin=-0.1)


def test_position_biased_judge_turns_disagreements_into_ties():
    gold = {"good": 1.0, "ok": 0.8, "bad": 0.0}

    def biased(prompt, first, second):  # prefers whatever is shown first by 0.5
        return gold[first] - gold[second] + 0.5

    result = compare(biased, ["x"] * 3, ["good", "ok", "bad"], ["bad", "good", "good"], margin=0.1)
    # good vs bad: 1.5 and -0.5 -> win; ok vs good: 0.3 and 0.7 -> tie; bad vs good: -0.5 and 1.5 -> lose.
    assert (result["win"], result["tie"], result["lose"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert result["win_rate"] == pytest.approx(0.5) and result["n"] == 3


def test_compare_scores_matches_the_gold_judge():
    a, b = [1.0, 0.5, 0.2, 0.0], [0.0, 0.45, 0.9, 0.0]
    scores = compare_scores(a, b, margin=0.1)
    gold = dict(zip("abcd", a, strict=True)) | dict(zip("efgh", b, strict=True))
    judged = compare(lambda x, p, q: gold[p] - gold[q], ["x"] * 4, list("abcd"), list("efgh"), margin=0.1)
    assert scores == judged
    assert (scores["win"], scores["tie"], scores["lose"]) == (0.25, 0.5, 0.25)
