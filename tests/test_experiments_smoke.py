"""Every real-scale experiment config runs end to end in its smoke mode (tiny random checkpoint of the same
architecture family, 5-row fixture in the dataset's real format)."""

import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(__file__))
_spec = importlib.util.spec_from_file_location("smoke", os.path.join(ROOT, "experiments", "smoke.py"))
smoke = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke)


@pytest.mark.parametrize("config", smoke.configs(), ids=lambda p: os.path.relpath(p, ROOT))
def test_experiment_smoke_mode(config, tmp_path):
    result = smoke.smoke(config, str(tmp_path))
    assert result["code"] == 0
    marker = "reward_config.json" if "/rm/" in config else "config.json"
    assert os.path.exists(os.path.join(result["final"], marker))


def test_every_experiment_family_has_a_smoke_mode():
    assert len(smoke.configs()) >= 6
    with pytest.raises(ValueError, match="no smoke mode"):
        smoke.smoke(os.path.join(ROOT, "experiments", "decomposition", "x.yaml"))


def _study(*parts):
    spec = importlib.util.spec_from_file_location(parts[-1][:-3], os.path.join(ROOT, "experiments", *parts))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simulated_rlhf_relabels_by_gold_with_the_stated_noise():
    from inform_jax.data.preference import PreferencePair

    study = _study("simulated", "run.py")
    rng = np.random.default_rng(0)
    pairs = [PreferencePair(f"p{i}", f"r{i}a", f"r{i}b") for i in range(400)]
    gold = {f"r{i}{s}": rng.normal() for i in range(400) for s in "ab"}
    scores = lambda prompts, responses: [gold[r] for r in responses]  # noqa: E731
    clean, report = study.relabel(scores, pairs, noise=0.0, seed=0)
    assert all(gold[r["chosen"]] >= gold[r["rejected"]] for r in clean) and report["flipped"] == 0
    agree = np.mean([gold[p.chosen] >= gold[p.rejected] for p in pairs])
    assert report["original_labels_agree_with_gold"] == pytest.approx(agree)
    noisy, report = study.relabel(scores, pairs, noise=0.25, seed=0)
    wrong = [gold[r["chosen"]] < gold[r["rejected"]] for r in noisy]
    assert wrong == [r["flipped"] for r in noisy] and sum(wrong) == report["flipped"]
    assert 0.18 < report["flipped"] / len(pairs) < 0.32  # Binomial(400, 0.25): 6 standard deviations
    with pytest.raises(ValueError, match="noise"):
        study.relabel(scores, pairs, noise=0.5, seed=0)


def test_simulated_rlhf_smoke_runs_every_step(tmp_path):
    summary = _study("simulated", "run.py").smoke(str(tmp_path))
    assert set(summary["runs"]) == {"Standard RM", "Standard RM w/ KL", "InfoRM"}
    assert summary["labels"]["pairs"] == 5 and summary["labels"]["eval"] == 1
    for name, run in summary["runs"].items():
        assert np.isfinite(run["gold_start"]) and np.isfinite(run["kl_final"]), name
    assert os.path.exists(summary["figure"])


def test_csi_detection_smoke_covers_the_four_datasets(tmp_path):
    summary = _study("detection", "csi_detection.py").smoke(str(tmp_path))
    assert set(summary["datasets"]) == {"alpacafarm", "falseqa", "flan", "helpsteer"}
    for name, entry in summary["datasets"].items():
        assert set(entry["models"]) == {"reward_model", "control"}
        assert entry["models"]["reward_model"]["feature"] == "latent"
        assert entry["models"]["control"]["feature"] == "hidden"
        for model in entry["models"].values():
            # step 0 is the SFT policy itself; step 1 a perturbed copy whose outputs move away from SFT's
            assert model["csi"][1] > model["csi"][0], (name, model)
    assert os.path.exists(tmp_path / "csi" / "helpsteer" / "sft.jsonl")
