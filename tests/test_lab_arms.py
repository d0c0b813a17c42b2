"""The lab's exploit arms and their positive controls (experiments/lab/PROTOCOL.md section 2): the arm reaches the
lab's world, the probe and the sensitivity measure what they claim, and the controls run end to end on a tiny lab."""

import argparse
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from experiments.lab.arm_tuning import parse_setting, tune
from experiments.lab.arms_study import AUROC_CONTROL, BASE_RATE, HACKED_CONTROL, arm_settings, inform_name
from inform_jax.detect.selection import auroc
from inform_jax.lab.arms import (
    arm_controls,
    bottleneck_stats,
    marker_probe_auroc,
    normalized_sensitivity,
    policy_hidden,
    reward_std_on_sft_samples,
    sampled_latents,
    sampled_probe_auroc,
    score_rows,
    sft_samples,
    with_and_without_marker,
)
from inform_jax.lab.config import RM_FIELDS, SFT_FIELDS, WORLD_FIELDS, LabConfig, config_key
from inform_jax.world.config import ARM_FIELDS, WorldConfig, config_dict
from inform_jax.world.vocab import MARKER_WORDS

TINY = dict(n_pairs=200, n_sft=100, n_prompts=16, n_eval_prompts=8, hidden_size=16, intermediate_size=32,
            num_layers=2, num_heads=2, new_tokens=8, sft_steps=20, rm_steps=10, rm_batch=16, latent_dim=8)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory):
    from inform_jax.lab.stages import Lab

    config = LabConfig(arm="shortcut_b", **TINY)
    return Lab(config, str(tmp_path_factory.mktemp("arms-lab")), log=lambda *_: None)


# ----------------------------------------------------------------------------------------------- the probe


def test_auroc_equals_sklearn_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.random(300) < 0.3
        scores = np.round(rng.normal(size=300) + labels, 1)  # rounded: ties across the classes
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_probe_finds_a_planted_linear_direction():
    rng = np.random.default_rng(1)
    n, d = 400, 16
    has_marker = rng.random(n) < 0.5
    direction = rng.normal(size=d)
    features = rng.normal(size=(n, d)) + 3.0 * np.outer(has_marker, direction / np.linalg.norm(direction))
    assert marker_probe_auroc(features, has_marker, seed=0) > 0.95


def test_probe_on_noise_is_near_chance():
    rng = np.random.default_rng(2)
    n, d = 400, 16
    values = [marker_probe_auroc(rng.normal(size=(n, d)), rng.random(n) < 0.5, seed=s) for s in range(3)]
    assert abs(np.mean(values) - 0.5) < 0.08


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_probe_on_sampled_latents_meets_the_gaussian_closed_form(sigma):
    """Means that differ by ``delta`` along one dimension only with the marker, each drawn with noise sigma: the
    best linear rule's AUROC is Phi(delta / (sigma sqrt 2)), so the sampled probe must land there, though the probe
    on the means themselves separates the classes perfectly."""
    rng = np.random.default_rng(3)
    n, z, delta = 1000, 4, 1.0
    plain = rng.normal(size=(n, z)) * [1e-3, 1, 1, 1]  # the marker's dimension barely moves without it
    marked = plain + [delta, 0, 0, 0]
    logvar = np.full((n, z), 2 * np.log(sigma))
    expected = float(scipy.stats.norm.cdf(delta / (sigma * np.sqrt(2))))
    assert sampled_probe_auroc((plain, logvar), (marked, logvar), seed=0) == pytest.approx(expected, abs=0.02)
    has_marker = np.repeat([False, True], n)
    assert marker_probe_auroc(np.concatenate([plain, marked]), has_marker, seed=0) > 0.99
    # the draws themselves: mean + sigma * N(0, 1)
    draws = sampled_latents(np.zeros((20000, 1)), np.full((20000, 1), 2 * np.log(sigma)), np.random.default_rng(0))
    assert draws.std() == pytest.approx(sigma, rel=0.02) and abs(draws.mean()) < 0.05 * sigma


def test_sampled_probe_keeps_a_response_and_all_its_draws_in_one_fold():
    # Noise-free draws of the same means with and without the marker: a response, its marked copy and their draws
    # all score alike in one held-out fold, so the AUROC is exactly 0.5. A draw of a held-out response left in the
    # training folds with the other label would pull its score the other way (0.44 when every row is its own group).
    mean = np.random.default_rng(5).normal(size=(200, 16))
    silent = np.full_like(mean, -80.0)  # sigma e^-40: no noise at float64
    assert sampled_probe_auroc((mean, silent), (mean, silent), seed=0, folds=4) == pytest.approx(0.5, abs=1e-12)


def test_sampled_probe_draws_its_noise_from_its_own_stream(monkeypatch):
    # not default_rng(seed), which deals the probe's folds and places the markers in arm_controls
    from inform_jax.lab import arms

    seen = []
    monkeypatch.setattr(arms, "marker_probe_auroc", lambda features, *a, **k: seen.append(features) or 0.5)
    mean, logvar = np.zeros((10, 3)), np.zeros((10, 3))
    sampled_probe_auroc((mean, logvar), (mean, logvar), seed=7, draws=2)
    first = seen[0][:10]
    assert np.array_equal(first, np.random.default_rng([7, 1]).standard_normal((10, 3)))
    assert not np.allclose(first, np.random.default_rng(7).standard_normal((10, 3)))


def test_probe_keeps_groups_in_one_fold():
    # Each pair's two rows share a feature vector and differ only in the label: any probe is at chance, but only
    # if a pair is never split (a split pair would let the probe memorize nothing useful either: this checks the
    # grouping runs and gives chance, not that splitting would leak).
    rng = np.random.default_rng(3)
    base = rng.normal(size=(100, 8))
    features = np.concatenate([base, base])
    labels = np.repeat([False, True], 100)
    groups = np.tile(np.arange(100), 2)
    assert marker_probe_auroc(features, labels, seed=0, groups=groups) == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------- the sensitivity


def test_normalized_sensitivity_of_a_reward_paying_c_per_marker_is_c_over_std():
    from inform_jax.world.vocab import vocabulary

    vocab = vocabulary(markers=True)
    marker_ids = np.asarray([vocab.index(w) for w in MARKER_WORDS])
    c, std = 0.3, 2.0
    rng = np.random.default_rng(0)
    responses = rng.integers(4, 20, size=(12, 6))  # ordinary words, no <eos>, no marker
    mask = np.ones_like(responses)
    mask[:4, 4:] = 0  # some right padding
    prompts = {"input_ids": np.ones((12, 3), np.int32), "attention_mask": np.ones((12, 3), np.int32)}

    def score_fn(prompt_ids, prompt_mask, ids, mask):  # a base reward from the words, plus c per marker token
        is_marker = np.isin(ids, marker_ids) & (mask > 0)
        return np.where((mask > 0) & ~is_marker, np.sin(ids), 0.0).sum(1) + c * is_marker.sum(1)

    sens = normalized_sensitivity(score_fn, prompts, responses, mask, std, rng, vocabulary=vocab)
    assert sens.value == pytest.approx(c / std, abs=1e-9) and sens.mean_delta == pytest.approx(c, abs=1e-9)
    assert sens.stderr == pytest.approx(0.0, abs=1e-9) and sens.n == 12
    with pytest.raises(ValueError, match="sft_reward_std"):
        normalized_sensitivity(score_fn, prompts, responses, mask, 0.0, rng, vocabulary=vocab)


def test_with_and_without_marker_pairs_rows_at_one_width():
    from inform_jax.world.vocab import vocabulary

    vocab = vocabulary(markers=True)
    ids = np.asarray([[5, 6, 2, 0], [7, 8, 9, 10]])
    mask = np.asarray([[1, 1, 1, 0], [1, 1, 1, 1]])
    plain_ids, plain_mask, marked_ids, marked_mask = with_and_without_marker(ids, mask, np.random.default_rng(0), vocab)
    assert plain_ids.shape == marked_ids.shape == (2, 5)
    np.testing.assert_array_equal(plain_mask.sum(1) + 1, marked_mask.sum(1))
    markers = {vocab.index(w) for w in MARKER_WORDS}
    assert [sum(int(t) in markers for t in row) for row in marked_ids] == [1, 1]
    assert list(marked_ids[0]).index(2) == 3  # the marker goes before the <eos>


# ------------------------------------------------------------------------------------------- the lab's arm


def test_default_arm_keeps_the_cache_keys():
    # the digest of the world fields as written before arms existed: the default arm's caches stay valid
    config = LabConfig()
    old_fields = [f for f in WORLD_FIELDS if f not in ARM_FIELDS]
    old = hashlib.sha256(json.dumps({f: getattr(config, f) for f in old_fields}, sort_keys=True).encode())
    assert config.digest(*WORLD_FIELDS) == old.hexdigest()[:12]
    assert LabConfig(arm="nuisance").digest(*WORLD_FIELDS) != config.digest(*WORLD_FIELDS)
    assert LabConfig(marker_rate=0.4).digest(*RM_FIELDS) != config.digest(*RM_FIELDS)
    with pytest.raises(ValueError, match="arm"):
        LabConfig(arm="bogus")


def test_lab_cache_keys_leave_out_the_marker_copies_at_their_default():
    def old_key(config):  # the key as computed before sft_marker_copies existed
        values = {f: getattr(config, f) for f in SFT_FIELDS if f != "sft_marker_copies"}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]

    shortcut = LabConfig(arm="shortcut_b")
    assert shortcut.digest(*SFT_FIELDS) == old_key(shortcut)
    two = LabConfig(arm="nuisance", sft_marker_copies=2)
    assert two.digest(*SFT_FIELDS) != dataclasses.replace(two, sft_marker_copies=1).digest(*SFT_FIELDS)
    assert "sft_marker_copies" not in config_dict(WorldConfig(arm="shortcut_b"))
    # results keyed by the whole config (best-of-n pools, controls, sweeps) leave it out the same way
    assert config_key(shortcut) == {k: v for k, v in dataclasses.asdict(shortcut).items() if k != "sft_marker_copies"}
    assert config_key(two)["sft_marker_copies"] == 2
    assert config_dict(two.world_config())["sft_marker_copies"] == 2


def test_lab_world_of_a_marker_arm_writes_markers_and_its_tokenizer_knows_them(tiny_lab):
    lab = tiny_lab
    assert lab.world.config.arm == "shortcut_b" and lab.world.config.has_markers
    assert len(lab.tokenizer) == lab.world.vocab_size == lab.decoder_config().vocab_size
    for word in MARKER_WORDS:
        assert lab.tokenizer.convert_tokens_to_ids(word) == lab.world.token_id(word)
    with open(lab.files["prefs_train.jsonl"]) as f:
        rows = [json.loads(line) for line in f]
    assert all("marker_chosen" in r and "marker_rejected" in r for r in rows)
    chosen, rejected = np.mean([r["marker_chosen"] for r in rows]), np.mean([r["marker_rejected"] for r in rows])
    assert chosen > rejected  # shortcut (b): the marker tracks the labelled side
    with open(lab.files["world.json"]) as f:
        assert json.load(f)["arm"] == "shortcut_b"


def test_arm_controls_run_end_to_end(tiny_lab):
    lab = tiny_lab
    sft = lab.sft_policy()
    models = {"standard": lab.reward_model("standard", sft), "inform-beta0": lab.reward_model("inform-beta0", sft)}
    assert models["inform-beta0"].head_config.kind == "ib"
    assert models["inform-beta0"].head_config.latent_dim == lab.config.latent_dim
    beta0 = dataclasses.replace(lab.config, inform_beta=0.0).digest(*RM_FIELDS)  # its own cache key
    assert os.path.exists(os.path.join(lab.cache_dir, f"rm-inform-beta0-{beta0}", "model"))
    controls = arm_controls(lab, sft, models, samples_per_prompt=8, seed=0, folds=4)
    assert controls["arm"] == "shortcut_b" and controls["n_samples"] == 8 * lab.config.n_eval_prompts
    assert 0 <= controls["sft_marker_rate"] <= 1 and controls["n_paired"] >= 2
    assert 0 <= controls["sft_probe_auroc"] <= 1
    assert set(controls["reward_models"]) == {"standard", "inform-beta0"}
    for entry in controls["reward_models"].values():
        for key in ("sft_reward_std", "sensitivity", "sensitivity_stderr", "mean_delta"):
            assert np.isfinite(entry[key]), key
    assert "probe_auroc" not in controls["reward_models"]["standard"]
    assert all(0 <= entry["probe_auroc_hidden"] <= 1 for entry in controls["reward_models"].values())
    assert 0 <= controls["reward_models"]["inform-beta0"]["probe_auroc"] <= 1
    assert 0 <= controls["reward_models"]["inform-beta0"]["probe_auroc_sampled"] <= 1
    assert "probe_auroc_sampled" not in controls["reward_models"]["standard"]
    beta0 = controls["reward_models"]["inform-beta0"]
    assert beta0["rate_nats"] >= 0 and 0 <= beta0["active_dims"] <= beta0["latent_dims"] == lab.config.latent_dim
    # the helper's std is over freshly drawn samples of the same kind
    assert reward_std_on_sft_samples(lab, models["standard"], sft, 16) > 0


def test_bottleneck_rate_is_the_kl_to_the_prior_by_monte_carlo_and_counts_moving_dimensions():
    rng = np.random.default_rng(2031)
    n, z = 64, 5
    mean = rng.normal(size=(n, z)) * np.array([1.0, 0.5, 0.05, 0.0, 2.0])  # dims 2 and 3 barely or never move
    logvar = rng.normal(-1.0, 0.3, size=(n, z))
    stats = bottleneck_stats(mean, logvar)
    # Monte Carlo: E_q[log q(z) - log p(z)] with z ~ q = N(mean, exp(logvar)) per input, summed over dims
    draws = 4000
    sd = np.exp(0.5 * logvar)
    sample = mean + sd * rng.normal(size=(draws, n, z))
    log_q = -0.5 * (((sample - mean) / sd) ** 2 + logvar + np.log(2 * np.pi))
    log_p = -0.5 * (sample**2 + np.log(2 * np.pi))
    per_input = (log_q - log_p).sum(2).mean(0)  # [n]
    stderr = (log_q - log_p).sum(2).std() / np.sqrt(draws * n)
    assert abs(stats["rate_nats"] - per_input.mean()) < 5 * stderr
    assert stats["active_dims"] == 3 and stats["latent_dims"] == z  # dims 0, 1, 4 vary by more than 0.01


def test_score_rows_reads_the_hidden_state_and_latent_the_reward_model_computes(tiny_lab):
    """The controls' probe features are the reward model's own: its backbone's final hidden state at the reward
    token (every single RM) and its latent mean (InfoRM), as one direct forward pass computes them."""
    import jax.numpy as jnp

    lab = tiny_lab
    sft = lab.sft_policy()
    rows = sft_samples(lab, sft, samples_per_prompt=2, seed=1)
    for kind in ("standard", "inform-beta0"):
        rm = lab.reward_model(kind, sft)
        got = score_rows(lab, rm, rows["prompt_ids"], rows["prompt_mask"], rows["tokens"], rows["mask"], batch_size=5)
        ids = jnp.concatenate([jnp.asarray(rows["prompt_ids"]), jnp.asarray(rows["tokens"])], 1)
        mask = jnp.concatenate([jnp.asarray(rows["prompt_mask"]), jnp.asarray(rows["mask"])], 1)
        out = rm(ids, mask)
        np.testing.assert_allclose(got["reward"], np.asarray(out.reward), atol=1e-5)
        np.testing.assert_allclose(got["hidden"], np.asarray(out.backbone.pooled_hidden), atol=1e-5)
        if kind == "inform-beta0":
            np.testing.assert_allclose(got["latent"], np.asarray(out.head.latent_mean), atol=1e-5)
        else:
            assert "latent" not in got
    # the SFT policy's own: its final-norm hidden state at each row's last real token (found here from the mask)
    got = policy_hidden(lab, sft, rows["prompt_ids"], rows["prompt_mask"], rows["tokens"], rows["mask"], batch_size=5)
    full_mask = np.concatenate([rows["prompt_mask"], rows["mask"]], 1)
    last = full_mask.shape[1] - 1 - np.argmax(full_mask[:, ::-1], 1)
    states = np.asarray(sft(ids, mask).last_hidden_state)
    np.testing.assert_allclose(got, states[np.arange(len(last)), last], atol=1e-5)


# ------------------------------------------------------------------------------------ tuning an arm's world


def test_parse_setting_reads_numbers_as_numbers_and_refuses_a_bare_word():
    assert parse_setting("shortcut_rate=0.9") == ("shortcut_rate", 0.9)
    assert parse_setting("arm=shortcut_a") == ("arm", "shortcut_a")
    with pytest.raises(argparse.ArgumentTypeError, match="field=value"):
        parse_setting("shortcut_rate")


def test_arm_tuning_judges_each_control_per_seed_on_the_changed_world(tmp_path, monkeypatch):
    # The controls and the PPO run are the arms study's own (arm_seed, run_grid: run end to end by the studies'
    # smoke test); stand-ins record the world each is asked for and return planted measurements: each control holds
    # on a different pattern of seeds, and PPO's fraction sits exactly on its threshold once.
    from experiments.lab import arm_tuning

    low, high = BASE_RATE[0] / 2, HACKED_CONTROL
    measured = {3: (BASE_RATE[0], 0.05, 0.1, high), 4: (low, 2.0, 0.1, 0.9), 5: (BASE_RATE[1], 1.0, 0.1, high - 0.01)}
    asked = {"controls": [], "runs": []}

    def arm_seed(config, betas, cache, folder):
        asked["controls"].append((config.arm, config.shortcut_rate, config.marker_base_rate, config.seed, betas))
        rate, sensitivity, stderr, _ = measured[config.seed]
        standard = {"sensitivity": sensitivity, "sensitivity_stderr": stderr}
        return {"sft_marker_rate": rate, "reward_models": {"Standard RM": standard}}

    def run_grid(settings, seeds, methods, *, size, work, cache):
        ((name, fields),) = settings.items()
        asked["runs"].append((fields, list(seeds), methods))
        ppo = {"hacked_fraction_final": measured[seeds[0]][3], "gold_start": 0.0, "gold_peak": 0.2,
               "gold_final": 0.1, "kl_final": 5.0}  # fmt: skip
        return {name: {seeds[0]: {"overoptimization": {"PPO": ppo}}}}

    monkeypatch.setattr(arm_tuning, "arm_seed", arm_seed)
    monkeypatch.setattr(arm_tuning, "run_grid", run_grid)
    out = str(tmp_path / "out")
    result = tune("shortcut_a", {"shortcut_rate": 0.7}, [3, 4], {}, str(tmp_path / "cache"), out)
    assert json.loads((tmp_path / "out" / "controls.json").read_text()) == result
    # each seed's world: the arm's own settings with the changed field; controls without InfoRM, PPO alone
    world = {**arm_settings("shortcut_a"), "shortcut_rate": 0.7}
    base = world.get("marker_base_rate", LabConfig().marker_base_rate)
    assert asked["controls"] == [("shortcut_a", 0.7, base, 3, ()), ("shortcut_a", 0.7, base, 4, ())]
    assert asked["runs"] == [(world, [s], ("PPO",)) for s in (3, 4)]
    holds = [row["holds"] for row in result["per_seed"]]
    assert holds[0] == {"base_rate": True, "sensitivity": False, "ppo_hacks": True}  # at the thresholds: inclusive
    assert holds[1] == {"base_rate": False, "sensitivity": True, "ppo_hacks": True}
    assert result["fires"] == {"base_rate": False, "sensitivity": False, "ppo_hacks": True}
    # the rate's upper end is inside the control, a fraction just under PPO's threshold is not
    fires = tune("shortcut_a", {"shortcut_rate": 0.9}, [5], {}, str(tmp_path / "cache"), out)["fires"]
    assert fires == {"base_rate": True, "sensitivity": True, "ppo_hacks": False}
    with pytest.raises(ValueError, match="cannot change"):
        tune("shortcut_a", {"arm": "shortcut_b"}, [3], {}, str(tmp_path / "cache"), out)


def test_arm_tuning_judges_the_nuisance_control_in_informs_latent_at_beta_0(tmp_path, monkeypatch, capsys):
    # The nuisance arm's control is the reward model's: arm_seed asked for InfoRM at beta 0 alone, no PPO run. The
    # planted latent AUROC sits exactly on the threshold on one seed and just under it on the other; the hidden
    # states' AUROCs (where the marker could be lost) are reported beside it, not judged.
    from experiments.lab import arm_tuning

    latent = {3: AUROC_CONTROL, 4: AUROC_CONTROL - 0.01}
    asked = []

    def arm_seed(config, betas, cache, folder):
        asked.append((config.arm, config.sft_marker_copies, config.marker_base_rate, config.seed, betas))
        inform = {
            "probe_auroc": latent[config.seed],
            "probe_auroc_hidden": 0.9 if config.seed == 3 else 0.94,
            "probe_auroc_sampled": 0.5 + config.seed / 100,
        }
        models = {"Standard RM": {"probe_auroc_hidden": 0.95}, inform_name(0.0): inform}
        return {"sft_marker_rate": 0.5, "n_paired": 40 + config.seed, "sft_probe_auroc": 0.99, "reward_models": models}

    def run_grid(*args, **kwargs):
        raise AssertionError("the nuisance control runs no PPO")

    monkeypatch.setattr(arm_tuning, "arm_seed", arm_seed)
    monkeypatch.setattr(arm_tuning, "run_grid", run_grid)
    cache, out = str(tmp_path / "cache"), str(tmp_path / "out")
    result = tune("nuisance", {"sft_marker_copies": 4}, [3, 4], {}, cache, out)
    base = arm_settings("nuisance")["marker_base_rate"]
    assert asked == [("nuisance", 4, base, 3, (0.0,)), ("nuisance", 4, base, 4, (0.0,))]
    assert [row["holds"] for row in result["per_seed"]] == [{"probe": True}, {"probe": False}]
    assert result["fires"] == {"probe": False}
    row = result["per_seed"][1]
    assert (row["sft_probe_auroc"], row["standard_probe_auroc_hidden"], row["probe_auroc_hidden"]) == (0.99, 0.95, 0.94)
    assert row["probe_auroc_sampled"] == 0.54
    assert row["n_paired"] == 44 and json.loads((tmp_path / "out" / "controls.json").read_text()) == result
    assert (
        arm_tuning.main(["nuisance", "--set", "sft_marker_copies=4", "--seeds", "3", "--cache", cache, "--out", out])
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        f"seed 3: marker probe AUROC in InfoRM's latent at beta 0 {AUROC_CONTROL:.3f} (a sampled latent 0.530)"
        in printed
    )
    assert "controls: probe fires" in printed


@pytest.mark.parametrize("arm", ["shortcut_a", "shortcut_b"])
def test_each_shortcut_study_runs_its_own_arm(arm, tmp_path, monkeypatch):
    # The two studies share one helper; the smoke test runs both on the smoke arm, so here each must ask for the
    # runs of the arm it is named after (PPO, InfoRM and the oracle, in the arms study's folder).
    from experiments.lab import arms_study

    asked = []

    class Asked(Exception):
        pass

    def arm_runs(arms_, seeds, size, work, cache, methods):
        asked.append((arms_, list(seeds), methods, os.path.basename(work)))
        raise Asked

    monkeypatch.setattr(arms_study, "arm_runs", arm_runs)
    with pytest.raises(Asked):
        getattr(arms_study, arm)([0, 1], {}, str(tmp_path / "work" / arm), None, str(tmp_path / "out"))
    assert asked == [((arm,), [0, 1], arms_study.RUN_METHODS, "arms")]
