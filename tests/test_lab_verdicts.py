"""Claims judged under the paired rule (inform_jax.lab.verdicts) on hand-made per-seed summaries, against SciPy."""

import numpy as np
import pytest
from scipy import stats

from inform_jax.eval.paired import holm
from inform_jax.lab.verdicts import Claim, claim_text, judge_claims


def summary(gold_at_1x: dict, final: dict, sft: float = 0.0) -> dict:
    """One seed's demo summary, reduced to what the measures read."""
    methods = {m: {"at": {"1": None if g is None else {"gold": g}}, "final": {"gold": final[m]}}
               for m, g in gold_at_1x.items()}  # fmt: skip
    return {"sft_heldout": {"gold": sft}, "matched_kl": {"methods": methods}}


@pytest.fixture
def per_seed():
    rng = np.random.default_rng(11)
    seeds = {}
    for seed in range(10):
        ppo = rng.normal(0.4, 0.05)
        seeds[seed] = summary(
            {"PPO": ppo, "good": ppo + 0.2 + rng.normal(0, 0.02), "same": ppo + rng.normal(0, 0.01),
             "unsure": ppo + rng.normal(0.05, 0.3), "short": None if seed < 5 else ppo + 0.3},
            {"PPO": ppo - 0.2, "good": ppo, "same": ppo - 0.2, "unsure": ppo, "short": ppo},
        )  # fmt: skip
    return seeds


def test_each_verdict_and_the_holm_corrected_interval(per_seed):
    claims = [Claim("good", "good", "PPO"), Claim("same", "same", "PPO"), Claim("unsure", "unsure", "PPO")]
    rows = judge_claims(per_seed, claims, min_effect=0.05)
    assert [r["verdict"] for r in rows] == ["reproduced", "refuted", "inconclusive"]
    ours = np.array([per_seed[s]["matched_kl"]["methods"]["good"]["at"]["1"]["gold"] for s in per_seed])
    theirs = np.array([per_seed[s]["matched_kl"]["methods"]["PPO"]["at"]["1"]["gold"] for s in per_seed])
    d = ours - theirs
    p = [stats.ttest_rel(*(np.array([per_seed[s]["matched_kl"]["methods"][m]["at"]["1"]["gold"] for s in per_seed])
                           for m in (c.method, "PPO"))).pvalue for c in claims]  # fmt: skip
    np.testing.assert_allclose([r["p_holm"] for r in rows], holm(p), rtol=1e-9)
    level = rows[0]["level"]
    assert level >= 0.95  # Holm's level for the smallest p-value is the strictest of the family
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert rows[0]["diff"] == pytest.approx(d.mean()) and rows[0]["half_width"] == pytest.approx(half)
    assert "half-width" in claim_text(rows[0])


def test_seeds_without_a_reading_are_left_out_and_named(per_seed):
    (row,) = judge_claims(per_seed, [Claim("short", "short", "PPO")])
    assert row["seeds"] == [5, 6, 7, 8, 9] and row["seeds_missing"] == [0, 1, 2, 3, 4]
    assert row["verdict"] == "reproduced" and "no reading on seeds [0, 1, 2, 3, 4]" in claim_text(row)


def test_direction_and_measures(per_seed):
    rows = judge_claims(per_seed, [Claim("PPO falls below SFT-free", "PPO", "good", "final gold", direction=-1),
                                   Claim("vs SFT", "good", "SFT", "final gold")])  # fmt: skip
    assert rows[0]["verdict"] == "reproduced"  # PPO's final gold is 0.2 below good's on every seed
    assert rows[1]["theirs"] == 0.0 and rows[1]["verdict"] == "reproduced"


def test_degenerate_rows_are_uninformative():
    seeds = {s: summary({"PPO": 1.0, "x": 1.0}, {"PPO": 1.0, "x": 1.0}) for s in range(4)}
    (row,) = judge_claims(seeds, [Claim("tie", "x", "PPO")])
    assert row["verdict"] == "uninformative"
    (row,) = judge_claims({0: seeds[0]}, [Claim("one seed", "x", "PPO")])
    assert row["verdict"] == "inconclusive" and "1 seed" in claim_text(row)
