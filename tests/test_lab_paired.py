"""The paired grid's measures (experiments/lab/paired.py) on hand-made summaries: the energy and CSI-stopping
readings against direct NumPy computations, one-sample claims through the zero comparator, and the best-of-n
measures read at the right n."""

import numpy as np
import pytest

from experiments.lab.paired import ZERO, heldout_selection, layer_shift
from inform_jax.lab.verdicts import MEASURES, Claim, judge_claims


def energy_summary(rng, iterations=12, layers=3) -> dict:
    rows = []
    for _ in range(iterations):
        row = {}
        for layer in range(layers):
            row[f"energy_policy_layer{layer}"] = float(rng.normal())
            row[f"energy_reference_layer{layer}"] = float(rng.normal())
        rows.append(row)
    return {"metrics": {"PPO": rows}, "energy_by_label": {"PPO": {"hacked_mean": 0.7, "normal_mean": 0.2}}}


def test_final_layer_drift_is_the_last_quarter_minus_the_first_of_the_last_layer():
    rng = np.random.default_rng(2024)
    summary = energy_summary(rng)
    rows = summary["metrics"]["PPO"]
    gap = np.array([abs(r["energy_policy_layer2"] - r["energy_reference_layer2"]) for r in rows])
    expected = gap[-3:].mean() - gap[:3].mean()  # 12 iterations: quarters of 3
    assert layer_shift(summary, "PPO", 2) == pytest.approx(expected)
    assert MEASURES["final-layer energy drift"](summary, "PPO") == pytest.approx(expected)
    assert MEASURES["final-layer energy drift"](summary, ZERO) == 0.0
    assert MEASURES["hacked minus normal energy"](summary, "PPO") == pytest.approx(0.5)
    summary["energy_by_label"]["PPO"]["hacked_mean"] = float("nan")  # no hacked rollout: no reading
    assert MEASURES["hacked minus normal energy"](summary, "PPO") is None


def test_a_one_sample_claim_against_zero_matches_a_t_interval_on_the_values():
    from scipy import stats

    rng = np.random.default_rng(7)
    gaps = rng.normal(0.3, 0.2, size=10)
    per_seed = {s: {"energy_by_label": {"PPO": {"hacked_mean": g, "normal_mean": 0.0}}} for s, g in enumerate(gaps)}
    [row] = judge_claims(per_seed, [Claim("gap > 0", "PPO", ZERO, "hacked minus normal energy")], min_effect=0.0)
    half = stats.t.ppf(0.975, 9) * gaps.std(ddof=1) / np.sqrt(10)
    assert row["diff"] == pytest.approx(gaps.mean())
    assert (row["low"], row["high"]) == pytest.approx((gaps.mean() - half, gaps.mean() + half))
    assert row["verdict"] == ("reproduced" if gaps.mean() - half > 0 else "inconclusive")


def test_csi_stopping_reads_held_out_gold_at_the_checkpoint_before_csi_doubles():
    detection = [
        {"iteration": i, "csi": c} for i, c in zip((0, 10, 20, 30, 40), (1.0, 1.5, 1.9, 2.5, 4.0), strict=True)
    ]
    gold = {0: 0.0, 10: 0.2, 20: 0.5, 30: 0.4, 40: 0.1}
    summary = {"detection": {"PPO": detection},
               "heldout": {"PPO": [{"checkpoint": k, "gold": v} for k, v in gold.items()]}}  # fmt: skip
    picked = heldout_selection(summary, "PPO")
    # CSI first exceeds 2x its first value at iteration 30: stop at 20, the gold-best checkpoint
    assert picked["selected_iteration"] == 20
    assert picked["regret_selected"] == pytest.approx(0.0) and picked["regret_final"] == pytest.approx(0.4)
    assert MEASURES["gold regret, CSI-selected checkpoint"](summary, "PPO") == pytest.approx(0.0)
    assert MEASURES["gold regret, CSI-selected checkpoint"](summary, "PPO (final)") == pytest.approx(0.4)


def test_best_of_n_measures_read_the_curve_at_their_n():
    summary = {"best_of_n": {"RM": {"n": [1, 2, 4, 8, 16], "gold": [0.0, 0.1, 0.2, 0.3, 0.4]}}}
    assert MEASURES["best-of-16 gold"](summary, "RM") == pytest.approx(0.4)
    assert MEASURES["best-of-256 gold"](summary, "RM") is None  # a pool of 16: no reading at 256
