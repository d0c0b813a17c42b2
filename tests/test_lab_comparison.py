"""The lab's held-out comparison (inform_jax.lab.comparison) on hand-made readings, against eval.matched_kl and
NumPy."""

import numpy as np
import pytest
from scipy import stats

from inform_jax.eval.matched_kl import gold_at_kl, reference_budgets
from inform_jax.lab.comparison import matched_kl_comparison, overoptimization_heldout
from inform_jax.lab.report import csi_alarm


def readings(kl, per_prompt, checkpoints=None):
    checkpoints = checkpoints or [10 * i for i in range(len(kl))]
    return [
        {"checkpoint": c, "kl": float(k), "gold": float(np.mean(g)), "gold_per_prompt": list(map(float, g)),
         "hacked": 0.0}
        for c, k, g in zip(checkpoints, kl, per_prompt, strict=True)
    ]  # fmt: skip


@pytest.fixture
def runs():
    rng = np.random.default_rng(3)
    prompts = 20
    kl = np.array([0.0, 0.5, 1.2, 2.5, 4.0, 7.0, 11.0, 16.0, 25.0])
    mean = 0.1 + 0.4 * np.sin(np.linspace(0, np.pi, len(kl)))  # rises, peaks mid-run, falls
    ppo = mean[:, None] + rng.normal(0, 0.2, (len(kl), prompts))
    ppo[0] = rng.normal(0.1, 0.2, prompts)  # the SFT reading, shared by every method
    shifted = ppo + 0.1
    shifted[0] = ppo[0]
    slow = ppo.copy()
    return {
        "PPO": readings(kl, ppo),
        "better": readings(kl, shifted),  # the same KL curve, 0.1 more gold on every prompt after SFT
        "slow": readings(kl / 10, slow),  # never reaches the larger budgets
    }


def test_budgets_and_mean_readings_agree_with_matched_kl(runs):
    table = matched_kl_comparison(runs, reference="PPO", window=3)
    kl = [c["kl"] for c in runs["PPO"]]
    gold = [c["gold"] for c in runs["PPO"]]
    budgets = reference_budgets(kl, gold, window=3)
    assert table["budgets"] == {str(m): pytest.approx(v) for m, v in budgets.budgets.items()}
    for name, run in runs.items():
        run_kl, run_gold = [c["kl"] for c in run], [c["gold"] for c in run]
        for m, target in budgets.budgets.items():
            expected = gold_at_kl(run_kl, run_gold, target, window=3)
            at = table["methods"][name]["at"][str(m)]
            assert (at is None) == (expected is None)
            if at is not None:
                assert at["gold"] == pytest.approx(expected, abs=1e-12)


def test_a_shifted_copy_is_exactly_the_shift_with_a_zero_width_interval(runs):
    table = matched_kl_comparison(runs, reference="PPO", window=3)
    for at in table["methods"]["better"]["at"].values():
        if at is not None and "vs_reference" in at:
            it = at["vs_reference"]
            # the budgets fall after the first checkpoint, where every prompt gains exactly 0.1
            assert it["diff"] == pytest.approx(0.1, abs=1e-12) and it["half_width"] == pytest.approx(0, abs=1e-9)
    final = table["methods"]["better"]["final"]["vs_reference"]
    assert final["diff"] == pytest.approx(0.1, abs=1e-12)


def test_final_interval_against_sft_is_the_paired_t_interval(runs):
    table = matched_kl_comparison(runs, reference="PPO", window=3)
    per_prompt = np.array([c["gold_per_prompt"] for c in runs["PPO"]])
    d = per_prompt[-1] - per_prompt[0]
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    it = table["methods"]["PPO"]["final"]["vs_sft"]
    assert it["diff"] == pytest.approx(d.mean()) and it["half_width"] == pytest.approx(half)


def test_budgets_a_run_never_reaches_are_not_reached(runs):
    table = matched_kl_comparison(runs, reference="PPO", window=3)
    slow_kl_max = max(c["kl"] for c in runs["slow"])
    for m, target in table["budgets"].items():
        at = table["methods"]["slow"]["at"][m]
        if target > slow_kl_max:
            assert at is None


def test_unknown_reference_is_refused(runs):
    with pytest.raises(KeyError, match="reference run 'nope'"):
        matched_kl_comparison(runs, reference="nope")


def test_overoptimization_heldout_reads_the_smoothed_peak_and_the_proxy_there(runs):
    metrics = [{"iteration": i, "proxy_reward": 0.01 * i} for i in range(1, 81)]
    o = overoptimization_heldout(runs["PPO"], metrics, window=3)
    gold = np.array([c["gold"] for c in runs["PPO"]])
    smoothed = np.array([gold[max(0, i - 1) : i + 2].mean() for i in range(len(gold))])
    smoothed[0], smoothed[-1] = gold[0], gold[-1]  # the window shrinks evenly at the ends
    peak = int(np.argmax(smoothed))
    assert o["peak_checkpoint"] == peak and o["gold_peak"] == pytest.approx(gold[peak])
    assert o["rise"] == pytest.approx(smoothed[peak] - smoothed[0])
    assert o["fall"] == pytest.approx(smoothed[peak] - smoothed[-1])
    assert o["proxy_rose_after_gold_peak"]  # the proxy rises throughout


def test_csi_alarm_is_the_first_iteration_above_twice_the_first_value():
    detection = [{"iteration": 10, "csi": 1.0}, {"iteration": 20, "csi": 1.9}, {"iteration": 30, "csi": 2.1},
                 {"iteration": 40, "csi": 5.0}]  # fmt: skip
    assert csi_alarm(detection) == 30
    assert csi_alarm(detection[:2]) is None
    assert csi_alarm([]) is None
