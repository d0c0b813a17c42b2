"""`inform-jax demo --quick` end to end, and the laboratory's summary numbers on hand-made curves."""

import json
import os
import re

import numpy as np
import pytest

from inform_jax.cli import main
from inform_jax.lab.figures import binned_by
from inform_jax.lab.report import overoptimization

METHODS = ("PPO", "PPO w/ KL", "InfoRM", "Ensemble RM", "EPPO", "Oracle")


def test_demo_quick_writes_every_artifact(tmp_path, lab_cache, capsys):
    out = tmp_path / "lab"
    assert main(["demo", "--quick", "--out", str(out), "--cache", str(lab_cache)]) == 0
    assert "report:" in capsys.readouterr().out
    for name in ("report.md", "report.html", "metrics.json", "config.json", "gold-proxy-vs-kl.png",
                 "energy-over-steps.png", "energy-hacked-vs-normal.png", "csi-over-steps.png", "wins-sft.png",
                 "wins-ppo.png", "latents-ppo.png", "latents-inform.png", "latents-eppo.png"):  # fmt: skip
        assert (out / name).stat().st_size > 200, name
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["overoptimization"]) == set(METHODS)
    assert set(summary["win_tie_lose"]["vs SFT"]) == set(METHODS)
    assert set(summary["win_tie_lose"]["vs PPO"]) == set(METHODS) - {"PPO"}
    for row in summary["win_tie_lose"]["vs SFT"].values():
        assert row["win"] + row["tie"] + row["lose"] == pytest.approx(1.0) and row["n"] == 24
    assert all(len(summary["detection"][m]) == 2 for m in METHODS)  # iterations 6 and 12
    # held-out readings: SFT, then iterations 3, 6, 9, 12; 4 samples on each of the 24 prompts
    sft = summary["sft_heldout"]
    assert sft["samples"] == 96 and sft["kl"] == 0.0
    for m in METHODS:
        readings = summary["heldout"][m]
        assert [r["checkpoint"] for r in readings] == [0, 3, 6, 9, 12]
        assert readings[0]["gold_per_prompt"] == sft["gold_per_prompt"]  # one SFT reading shared by all
        assert all(r["kl"] >= 0 and len(r["gold_per_prompt"]) == 24 for r in readings)
        assert readings[-1]["kl"] > 0
    assert set(summary["matched_kl"]["methods"]) == set(METHODS)
    assert "## Gold at matched KL" in (out / "report.md").read_text()
    # best-of-n on one SFT pool (16 per prompt at --quick): every RM keeps a random sample at n = 1, so all agree
    # there; ranking by the judge itself can only gain with n
    bon = summary["best_of_n"]["curves"]
    assert set(bon) == {"Standard RM", "InfoRM", "Ensemble RM", "Gold"} and bon["Gold"]["n"] == [1, 2, 4, 8, 16]
    assert len({round(c["gold"][0], 9) for c in bon.values()}) == 1
    assert np.all(np.diff(bon["Gold"]["gold"]) >= -1e-9)
    assert "## Best-of-n before PPO" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 10 and all(os.path.exists(out / img) for img in images)
    assert json.loads((out / "config.json").read_text())["ppo_iterations"] == 12
    # EPPO's SFT-vs-SFT null and its sampled dE_SFT are kept in the lab cache for the next run of this seed
    nulls = [json.loads(p.read_text())["result"] for p in (lab_cache / "eppo-null").glob("*.json")]
    assert summary["eppo_calibration"]["null_gap_std"] in [n["gap_std"] for n in nulls]
    assert list((lab_cache / "eppo-reference").glob("sft_energy-*.npy"))


def test_overoptimization_finds_the_gold_peak_and_the_turn():
    kl = np.linspace(0, 10, 40)
    gold = 0.5 + 0.3 * np.sin(kl / 10 * np.pi)  # rises to a peak at KL 5, falls back
    metrics = [{"iteration": i + 1, "kl": k, "gold_reward": g, "proxy_reward": k / 10, "hacked_fraction": 0.0}
               for i, (k, g) in enumerate(zip(kl, gold, strict=True))]  # fmt: skip
    o = overoptimization(metrics, window=1)
    assert o["gold_peak"] == pytest.approx(gold.max()) and o["kl_at_gold_peak"] == pytest.approx(kl[gold.argmax()])
    assert o["gold_turned_down"] and o["proxy_rose_after_gold_peak"]
    rising = [dict(m, gold_reward=m["kl"]) for m in metrics]
    assert not overoptimization(rising, window=1)["gold_turned_down"]


def test_binned_by_equal_count_bins():
    centers, (means,) = binned_by([3.0, 1.0, 2.0, 4.0], [[30.0, 10.0, 20.0, 40.0]], bins=2)
    np.testing.assert_allclose(centers, [1.5, 3.5])
    np.testing.assert_allclose(means, [15.0, 35.0])
