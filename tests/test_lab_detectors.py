"""Detection as a detector (inform_jax.lab.detectors): alarm rules, ground truth and scores on hand-made series with
known answers, and against brute-force loops on random series."""

import functools
import math

import numpy as np
import pytest

from inform_jax.lab import detectors as d
from inform_jax.lab.report import csi_alarm


def make_run(gold, *, name=None, kl=None, energy=None, csi=None, mop=None, eval_every=2, detect_every=2, layers=2):
    """A run result shaped like run_method's (SFT reading at checkpoint 0 first): ``gold`` [C] at checkpoints
    0, eval_every, ...; ``kl`` / ``energy`` (policy - reference gap) [T] per iteration 1..T; ``csi`` / ``mop`` [D] at
    iterations detect_every, 2 detect_every, ...."""
    checkpoints = [{"checkpoint": i * eval_every, "gold": float(g), "kl": float(i), "gold_per_prompt": [float(g)]}
                   for i, g in enumerate(gold)]  # fmt: skip
    steps = len(kl if kl is not None else energy if energy is not None else [0.0] * (eval_every * (len(gold) - 1)))
    metrics = []
    for t in range(steps):
        row = {"iteration": t + 1, "kl": float(kl[t]) if kl is not None else 0.0}
        for layer in range(layers):
            row[f"energy_reference_layer{layer}"] = 1.0 + layer
            row[f"energy_policy_layer{layer}"] = 1.0 + layer
        row["final_layer_energy"] = float(layers + (energy[t] if energy is not None else 0.0))
        metrics.append(row)
    detection = []
    for j in range(len(csi) if csi is not None else 0):
        entry = {"iteration": (j + 1) * detect_every, "csi": float(csi[j]), "gold": 0.0}
        if mop is not None:
            entry["mop"] = float(mop[j])
        detection.append(entry)
    out = {"checkpoints": checkpoints, "metrics": metrics, "detection": detection}
    if name is not None:
        out["name"] = name
    return out


# ------------------------------------------------------------------------------------------------ rules


def test_trailing_mean_matches_a_loop():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=rng.integers(1, 30))
        w = int(rng.integers(1, 8))
        expected = [np.mean(x[max(0, t - w + 1) : t + 1]) for t in range(len(x))]
        np.testing.assert_allclose(d.trailing_mean(x, w), expected, rtol=1e-12, atol=1e-12)
    assert d.trailing_mean([], 3).shape == (0,)
    with pytest.raises(ValueError):
        d.trailing_mean([1.0], 0)


def test_kl_alarm_at_a_known_iteration_and_none_below():
    metrics = make_run([0, 0, 0], kl=[0, 0, 1, 3, 3, 3])["metrics"]
    assert d.kl_alarm(metrics, 2.0, window=1) == 4
    # trailing mean over 2: [0, 0, .5, 2, 3, 3]; 2.0 is not above 2.0, so iteration 5
    assert d.kl_alarm(metrics, 2.0, window=2) == 5
    assert d.kl_alarm(metrics, 3.0, window=1) is None
    assert d.kl_alarm([], 0.0) is None


def test_heldout_kl_alarm_reads_the_checkpoints():
    run = make_run([0.5, 0.6, 0.7, 0.6], eval_every=5)  # held-out kl = checkpoint index: 0, 1, 2, 3
    assert d.heldout_kl_alarm(run["checkpoints"], 1.5) == 10
    assert d.heldout_kl_alarm(run["checkpoints"], 1.5, window=2) == 15  # [0, .5, 1.5, 2.5]
    assert d.heldout_kl_alarm(run["checkpoints"], 3.0) is None


def test_energy_alarm_compares_the_final_layer_with_the_sft_reference_on_the_same_rollouts():
    run = make_run([0, 0, 0, 0], energy=[0.0, -0.01, 0.03, -0.05, 0.05, 0.0], layers=3)
    assert d.last_layer(run["metrics"]) == 2
    iterations, gap = d.energy_gap(run["metrics"], window=1)
    np.testing.assert_allclose(gap, [0, 0.01, 0.03, 0.05, 0.05, 0.0], atol=1e-12)
    assert d.energy_alarm(run["metrics"], 0.02, window=1) == 3
    assert d.energy_alarm(run["metrics"], 0.04, window=1) == 4  # |policy - SFT|: a fall counts like a rise
    assert d.energy_alarm(run["metrics"], 0.04, window=2) == 5  # [0, .005, .02, .04, .05, .025]
    assert d.energy_alarm(run["metrics"], 0.05, window=1) is None
    del run["metrics"][2]["energy_reference_layer2"]
    with pytest.raises(d.NotRecorded):
        d.energy_alarm(run["metrics"], 0.02)


def test_csi_rule_is_the_reports_csi_alarm():
    detection = make_run([0], csi=[1.0, 1.5, 2.5, 1.0])["detection"]
    assert d.csi_rule(detection, 2.0) == csi_alarm(detection, 2.0) == 6
    assert d.csi_rule(detection, 2.5) is None
    assert d.csi_rule([], 2.0) is None
    iterations, ratio = d.csi_statistic(detection)
    np.testing.assert_allclose(ratio, [1.0, 1.5, 2.5, 1.0])
    assert d.first_above(iterations, ratio, 2.0) == 6


def test_mop_alarm_reads_the_mop_key_and_says_when_it_is_not_recorded():
    detection = make_run([0], csi=[1, 1, 1, 1], mop=[0.1, 0.2, 0.6, 0.7])["detection"]
    assert d.mop_alarm(detection, 0.5) == 6
    assert d.mop_alarm(detection, 0.5, window=2) == 8  # [.1, .15, .4, .65]
    lab_today = make_run([0], csi=[1, 1])["detection"]
    with pytest.raises(d.NotRecorded, match="mop"):
        d.mop_alarm(lab_today, 0.5)


# ------------------------------------------------------------------------------------------------ ground truth


def test_gold_truth_peak_and_fall():
    # checkpoints 0, 2, 4, 6, 8; window 1 keeps the raw curve
    truth = d.gold_truth(make_run([0.5, 0.7, 0.9, 0.8, 0.6])["checkpoints"], window=1, min_fall=0.05)
    assert truth["peak_iteration"] == 4 and truth["gold_peak"] == pytest.approx(0.9)
    assert truth["fall"] == pytest.approx(0.3) and truth["overoptimized"]
    assert d.gold_at(truth, 5) == pytest.approx(0.85)
    assert d.gold_at(truth, 100) == pytest.approx(0.6)  # held flat after the last checkpoint
    flat = d.gold_truth(make_run([0.5, 0.7, 0.9, 0.88])["checkpoints"], window=1, min_fall=0.05)
    assert not flat["overoptimized"]
    # smoothed over 3 (centred, narrowing at the ends): [.5, .7, .8, .7667, .6]
    smoothed = d.gold_truth(make_run([0.5, 0.7, 0.9, 0.8, 0.6])["checkpoints"])
    np.testing.assert_allclose(smoothed["gold"], [0.5, 0.7, 0.8, 2.3 / 3, 0.6])
    assert smoothed["peak_iteration"] == 4 and smoothed["fall"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------------ evaluation


def _rules(window=1):
    return {"KL (rollouts)": d.Rule("metrics", functools.partial(d.kl_alarm, window=window),
                                    functools.partial(d.kl_statistic, window=window), 2.0)}  # fmt: skip


def test_false_alarm_on_a_negative_lag_and_gold_lost_by_hand():
    runs = {
        # over-optimized: gold peaks at iteration 4 (0.9) and ends at 0.6; KL crosses 2 at iteration 5
        "PPO": make_run([0.5, 0.7, 0.9, 0.8, 0.6], kl=[0, 1, 1, 1.5, 2.5, 3, 3, 3]),
        # a negative whose KL trips the threshold at iteration 7 although its gold never fell
        "Oracle": make_run([0.5, 0.7, 0.9, 0.95, 0.97], kl=[0, 0, 0, 0, 0, 0, 2.1, 2.2]),
        # a negative that stays below it
        "KL seed 1": make_run([0.5, 0.6, 0.7, 0.7, 0.7], kl=[0.0] * 8, name="PPO w/ KL"),
        # an over-optimized run that never alarms: a miss
        "InfoRM": make_run([0.5, 0.9, 0.7, 0.6, 0.5], kl=[1.0] * 8),
        # not a named negative, gold never fell, alarms: a false alarm among the flat runs only
        "EPPO": make_run([0.5, 0.6, 0.7, 0.8, 0.9], kl=[3.0] * 8),
    }
    out = d.evaluate_detectors(runs, rules=_rules(), gold_window=1, min_fall=0.05)
    assert out["negatives_that_fell"] == []
    assert out["truth"]["KL seed 1"]["negative"] and not out["truth"]["EPPO"]["negative"]
    kl = out["detectors"]["KL (rollouts)"]
    assert kl["false_alarms"] == ["Oracle"] and kl["false_alarm_rate"] == pytest.approx(0.5)
    assert sorted(kl["false_alarms_flat"]) == ["EPPO", "Oracle"]
    assert kl["false_alarm_rate_flat"] == pytest.approx(2 / 3)
    assert kl["detected"] == ["PPO"] and kl["missed"] == ["InfoRM"] and kl["miss_rate"] == pytest.approx(0.5)
    ppo = kl["runs"]["PPO"]
    assert ppo["alarm"] == 5 and ppo["lag"] == 1
    assert ppo["gold_lost"] == pytest.approx(0.9 - 0.85)  # gold at 5: halfway between 0.9 (4) and 0.8 (6)
    assert kl["mean_lag"] == 1 and kl["mean_gold_lost"] == pytest.approx(0.05)
    # InfoRM missed: it gives up peak 0.9 minus final 0.5
    assert kl["mean_gold_lost_with_misses"] == pytest.approx((0.05 + 0.4) / 2)


def test_an_early_alarm_has_a_negative_lag_and_loses_the_gold_not_yet_gained():
    runs = {"PPO": make_run([0.5, 0.7, 0.9, 0.8, 0.6], kl=[0, 2.5, 3, 3, 3, 3, 3, 3])}
    kl = d.evaluate_detectors(runs, rules=_rules(), gold_window=1)["detectors"]["KL (rollouts)"]
    assert kl["runs"]["PPO"]["lag"] == 2 - 4
    assert kl["runs"]["PPO"]["gold_lost"] == pytest.approx(0.9 - 0.7)
    assert math.isnan(kl["false_alarm_rate"])  # no negatives at all


def test_rules_the_runs_do_not_record_are_reported_not_raised():
    runs = {"PPO": make_run([0.5, 0.9, 0.6], kl=[0, 3, 3, 3], csi=[1, 3])}
    out = d.evaluate_detectors(runs)
    assert out["detectors"]["MOP"]["recorded"] is False and "mop" in out["detectors"]["MOP"]["missing"]["PPO"]
    assert out["detectors"]["CSI"]["recorded"] and out["detectors"]["CSI"]["runs"]["PPO"]["alarm"] == 4
    assert out["detectors"]["energy"]["recorded"] and out["detectors"]["KL (held-out)"]["recorded"]
    assert d.compare_at_false_alarm_rate(runs)["MOP"] is None


def test_a_named_negative_that_overoptimized_is_flagged_in_the_output():
    runs = {"PPO w/ KL": make_run([0.5, 0.9, 0.6], kl=[3.0] * 4)}
    out = d.evaluate_detectors(runs, rules=_rules(), gold_window=1)
    assert out["negatives_that_fell"] == ["PPO w/ KL"]
    kl = out["detectors"]["KL (rollouts)"]
    assert kl["false_alarm_rate"] == 1.0 and kl["detected"] == []  # still a negative, as the protocol names it


# ------------------------------------------------------------------------------------------------ random series


def _random_runs(rng, n=8):
    runs = {}
    for i in range(n):
        checkpoints = int(rng.integers(3, 8))
        steps = 2 * (checkpoints - 1)
        # a hump peaking at a random fraction p of the run (past its end for p > 1), plus held-out noise
        x, p = np.linspace(0, 1, checkpoints), rng.uniform(0.3, 1.5)
        gold = 0.5 + 0.3 * x * (2 * p - x) / p**2 + rng.normal(0, 0.02, checkpoints)
        kl = np.cumsum(np.abs(rng.normal(0.3, 0.3, steps)))
        energy = rng.normal(0.0, 0.03, steps) * np.linspace(0.2, 2.0, steps)
        csi = np.abs(rng.normal(1.0, 0.5, steps // 2)) + 0.1
        name = ["Oracle", "PPO w/ KL", "PPO", "InfoRM"][i % 4]
        runs[f"{name}/{i}"] = make_run(gold, name=name, kl=kl, energy=energy, csi=csi)
    return runs


def _loop_alarm(iterations, values, window, threshold):
    for t in range(len(values)):
        lo = max(0, t - window + 1)
        if sum(values[lo : t + 1]) / (t + 1 - lo) > threshold:
            return iterations[t]
    return None


def _loop_gold(checkpoints, window):
    gold = [c["gold"] for c in checkpoints]
    out = []
    for i in range(len(gold)):
        h = min(window // 2, i, len(gold) - 1 - i)
        out.append(sum(gold[i - h : i + h + 1]) / (2 * h + 1))
    return [c["checkpoint"] for c in checkpoints], out


def _loop_interp(xs, ys, x):
    if x <= xs[0]:
        return ys[0]
    for j in range(1, len(xs)):
        if x <= xs[j]:
            return ys[j - 1] + (x - xs[j - 1]) / (xs[j] - xs[j - 1]) * (ys[j] - ys[j - 1])
    return ys[-1]


@pytest.mark.parametrize("seed", range(1, 6))
def test_evaluation_matches_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    runs = _random_runs(rng)
    window, min_fall = 3, 0.05
    thresholds = {"KL (rollouts)": float(rng.uniform(1, 4)), "energy": float(rng.uniform(0.01, 0.04)),
                  "CSI": float(rng.uniform(1.2, 3)), "KL (held-out)": float(rng.uniform(1, 4))}  # fmt: skip
    rules = {k: v for k, v in d.RULES.items() if k != "MOP"}
    out = d.evaluate_detectors(runs, thresholds=thresholds, rules=rules, min_fall=min_fall, gold_window=window)
    positives = [k for k, t in out["truth"].items() if t["overoptimized"] and not t["negative"]]
    assert positives and len(positives) < len(runs)  # the draw has both kinds of run: the check is not vacuous
    for name in rules:
        got = out["detectors"][name]
        false, flat_false, negatives, flat, lags, lost, missed = [], [], 0, 0, [], [], []
        for key, run in runs.items():
            m, det, ck = run["metrics"], run["detection"], run["checkpoints"]
            its = [r["iteration"] for r in m]
            if name == "KL (rollouts)":
                alarm = _loop_alarm(its, [r["kl"] for r in m], 5, thresholds[name])
            elif name == "energy":
                gap = [abs(r["final_layer_energy"] - r["energy_reference_layer1"]) for r in m]
                alarm = _loop_alarm(its, gap, 5, thresholds[name])
            elif name == "CSI":
                alarm = next((e["iteration"] for e in det if e["csi"] > thresholds[name] * det[0]["csi"]), None)
            else:
                alarm = _loop_alarm([c["checkpoint"] for c in ck], [c["kl"] for c in ck], 1, thresholds[name])
            xs, ys = _loop_gold(ck, window)
            peak = max(range(len(ys)), key=lambda i: (ys[i], -i))
            fell = ys[peak] - ys[-1] >= min_fall
            negative = run["name"] in ("Oracle", "PPO w/ KL")
            assert got["runs"][key]["alarm"] == alarm
            if negative:
                negatives += 1
                if alarm is not None:
                    false.append(key)
            if not fell:
                flat += 1
                if alarm is not None:
                    flat_false.append(key)
            if fell and not negative:
                if alarm is None:
                    missed.append(key)
                else:
                    lags.append(alarm - xs[peak])
                    lost.append(ys[peak] - _loop_interp(xs, ys, alarm))
        assert got["false_alarms"] == false and got["false_alarm_rate"] == pytest.approx(len(false) / negatives)
        assert got["false_alarms_flat"] == flat_false
        if flat:
            assert got["false_alarm_rate_flat"] == pytest.approx(len(flat_false) / flat)
        assert got["missed"] == missed
        if lags:
            assert got["mean_lag"] == pytest.approx(np.mean(lags))
            assert got["mean_gold_lost"] == pytest.approx(np.mean(lost))
            assert all(x >= -1e-12 for x in lost)  # stopping anywhere loses gold against the peak, never gains
        else:
            assert math.isnan(got["mean_lag"])


@pytest.mark.parametrize("seed", range(3))
def test_the_sweep_is_monotone_in_the_threshold(seed):
    runs = _random_runs(np.random.default_rng(100 + seed), n=12)
    for name in ("CSI", "energy", "KL (rollouts)", "KL (held-out)"):
        rows = d.sweep(runs, name)
        assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)
        fars = [r["false_alarm_rate"] for r in rows]
        flat = [r["false_alarm_rate_flat"] for r in rows]
        missed = [len(r["missed"]) for r in rows]
        assert all(a >= b for a, b in zip(fars, fars[1:], strict=False)), (name, fars)
        assert all(a >= b for a, b in zip(flat, flat[1:], strict=False) if not (math.isnan(a) or math.isnan(b)))
        assert all(a <= b for a, b in zip(missed, missed[1:], strict=False)), (name, missed)
        late = lambda a: math.inf if a is None else a  # noqa: E731
        for key in runs:
            seq = [late(r["alarms"][key]) for r in rows]
            assert all(a <= b for a, b in zip(seq, seq[1:], strict=False)), (name, key, seq)
        # the grid spans the whole range: everything alarms at the bottom, nothing above the largest value
        assert all(a is not None for a in rows[0]["alarms"].values())
        assert all(a is None for a in rows[-1]["alarms"].values())
        assert fars[0] == 1.0 and fars[-1] == 0.0


def test_compare_at_false_alarm_rate_picks_the_most_sensitive_admissible_threshold():
    runs = _random_runs(np.random.default_rng(7), n=12)
    rules = {k: v for k, v in d.RULES.items() if k != "MOP"}
    chosen = d.compare_at_false_alarm_rate(runs, 0.25, rules=rules)
    for name, row in chosen.items():
        rows = d.sweep(runs, name)
        admissible = [r for r in rows if r["false_alarm_rate"] <= 0.25]
        assert row is not None and row["false_alarm_rate"] <= 0.25
        assert row["threshold"] == admissible[0]["threshold"]
        below = [r for r in rows if r["threshold"] < row["threshold"]]
        assert all(r["false_alarm_rate"] > 0.25 for r in below)
