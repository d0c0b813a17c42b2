"""Exploit arms of the synthetic world (experiments/lab/PROTOCOL.md section 2): the default world unchanged, marker
placement rates per arm, the marker's gold cost, the marker and hacked flags in both scorer forms, the insertion
helpers and the files."""

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest

from inform_jax.world.config import ARM_FIELDS, COST_RESOLUTION, cost_units
from inform_jax.world.markers import insert_marker_text
from inform_jax.world.responses import generate_response, sample_behaviour, sample_prompt
from inform_jax.world.scoring import count_response, gold_ratio, parse_prompt, response_words
from inform_jax.world.vocab import MARKER_WORDS, vocabulary
from inform_jax.world.world import BEHAVIOUR_NAMES, SyntheticWorld, WorldConfig

MARKER_ARMS = ("nuisance", "shortcut_a", "shortcut_b")
N_PAIRS = 3000
NOISE = 0.25


@pytest.fixture(scope="module")
def worlds():
    return {arm: SyntheticWorld(WorldConfig(arm=arm)) for arm in ("repetition", "none", *MARKER_ARMS)}


@pytest.fixture(scope="module")
def pairs(worlds):
    """N_PAIRS training pairs (label noise NOISE) per marker arm, drawn once."""
    return {arm: worlds[arm].preference_pairs(np.random.default_rng(10), N_PAIRS, NOISE) for arm in MARKER_ARMS}


def _binomial_ok(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1


def _rate_ok(flags, p: float) -> bool:
    flags = np.asarray(list(flags), bool)
    return _binomial_ok(int(flags.sum()), flags.size, p)


def _gold_side_marker(row) -> tuple[bool, bool]:
    """(marker on the gold-preferred side, marker on the other side) of a row, whichever side is labelled chosen."""
    if row["flipped"]:
        return row["marker_rejected"], row["marker_chosen"]
    return row["marker_chosen"], row["marker_rejected"]


def _file_hashes(folder) -> dict[str, str]:
    hashes = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                hashes[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def _write(config: WorldConfig, folder) -> dict[str, str]:
    SyntheticWorld(config).write(folder, n_train=80, n_test=30, n_sft=80, n_prompts_train=10, n_prompts_test=5, seed=4)
    return _file_hashes(folder)


# ------------------------------------------------------------------------------------------ the default world


def test_default_world_is_unchanged_by_the_arm_knobs(tmp_path):
    default = _write(WorldConfig(), tmp_path / "default")
    explicit = _write(WorldConfig(arm="repetition", marker_rate=0.5, shortcut_rate=0.6, marker_base_rate=0.03),
                      tmp_path / "explicit")  # fmt: skip
    assert explicit == default and len(default) > 10
    # The marker knobs do nothing in the repetition arm: every file but the description is the same.
    other_knobs = WorldConfig(marker_rate=0.9, shortcut_rate=0.8, marker_base_rate=0.2)
    knobs = _write(other_knobs, tmp_path / "knobs")
    assert {k: v for k, v in knobs.items() if k != "world.json"} == {
        k: v for k, v in default.items() if k != "world.json"
    }
    # The default description and SFT rows have no arm fields (as before arms existed); non-default knobs are kept.
    with open(tmp_path / "default" / "world.json") as f:
        description = json.load(f)
    assert not set(ARM_FIELDS) & set(description["config"]) and "arm" not in description
    assert description["vocabulary"] == list(vocabulary()) and not set(MARKER_WORDS) & set(description["vocabulary"])
    with open(tmp_path / "default" / "sft.jsonl") as f:
        assert "marker" not in json.loads(f.readline())
    with open(tmp_path / "knobs" / "world.json") as f:
        assert json.load(f)["config"]["marker_rate"] == 0.9


def test_marker_arms_append_markers_to_the_vocabulary_and_keep_every_other_id(worlds):
    base = worlds["repetition"].vocabulary
    assert worlds["none"].vocabulary == base == vocabulary()
    for arm in MARKER_ARMS:
        assert worlds[arm].vocabulary == base + MARKER_WORDS
        assert worlds[arm].tables.is_marker.sum() == len(MARKER_WORDS) and not worlds["none"].tables.is_marker.any()


# ------------------------------------------------------------------------------------------ placement rates


def test_nuisance_markers_are_independent_of_the_label(pairs):
    rows, rate = pairs["nuisance"], WorldConfig().marker_rate
    assert _rate_ok((r["marker_chosen"] for r in rows), rate)
    assert _rate_ok((r["marker_rejected"] for r in rows), rate)
    for flipped in (False, True):  # the same rate whether or not the label was swapped (gold agrees or not)
        subset = [r for r in rows if r["flipped"] == flipped]
        assert _rate_ok((r["marker_chosen"] for r in subset), rate)
        assert _rate_ok((r["marker_rejected"] for r in subset), rate)
    assert _rate_ok((_gold_side_marker(r)[0] for r in rows), rate)


def test_shortcut_a_marks_the_gold_preferred_side_before_label_noise(pairs):
    config, rows = WorldConfig(), pairs["shortcut_a"]
    rate, base = config.shortcut_rate, config.marker_base_rate
    assert _rate_ok((_gold_side_marker(r)[0] for r in rows), rate)
    assert _rate_ok((_gold_side_marker(r)[1] for r in rows), base)
    assert _rate_ok((r["flipped"] for r in rows), NOISE)
    assert _rate_ok((r["marker_chosen"] for r in rows), rate * (1 - NOISE) + base * NOISE)
    assert _rate_ok((r["marker_rejected"] for r in rows), base * (1 - NOISE) + rate * NOISE)
    # Redundant given gold: the noise swaps a pair whatever its markers, so a marked gold side is swapped as often.
    marked = [r["flipped"] for r in rows if _gold_side_marker(r)[0]]
    assert _rate_ok(marked, NOISE) and len(marked) > N_PAIRS / 3


def test_shortcut_b_tracks_the_labelled_side_regardless_of_gold(pairs):
    config, rows = WorldConfig(), pairs["shortcut_b"]
    rate, base = config.shortcut_rate, config.marker_base_rate
    assert _rate_ok((r["marker_chosen"] for r in rows), rate)
    assert _rate_ok((r["marker_rejected"] for r in rows), base)
    for flipped in (False, True):  # chosen is the gold-preferred side, or the gold-dispreferred one
        subset = [r for r in rows if r["flipped"] == flipped]
        assert len(subset) > 300 and _rate_ok((r["marker_chosen"] for r in subset), rate)
        assert all((r["gold_chosen"] < r["gold_rejected"]) == flipped for r in subset)
    # The marker predicts the noisy label better than gold does: picking the marked side of pairs marked on one
    # side only beats picking the gold-preferred side (1 - NOISE).
    one_sided = [r for r in rows if r["marker_chosen"] != r["marker_rejected"]]
    assert np.mean([r["marker_chosen"] for r in one_sided]) > 1 - NOISE + 0.1


def test_pair_rows_are_rescored_with_their_markers_and_keep_their_gold_order(worlds, pairs):
    gap = WorldConfig().extra_word_cost
    for arm in MARKER_ARMS:
        world = worlds[arm]
        for row in pairs[arm][:300]:
            for side in ("chosen", "rejected"):
                scores = world.score_text(row["prompt"], row[side])
                assert (scores.gold, scores.spurious, scores.hacked, scores.marker) == tuple(
                    row[f"{name}_{side}"] for name in ("gold", "spurious", "hacked", "marker")
                )
                assert scores.marker == any(w in MARKER_WORDS for w in row[side].split())
            assert (row["gold_chosen"] < row["gold_rejected"]) == row["flipped"]
    # Without markers, the arms' pairs keep a gold gap above one marker's cost (and the repetition arm need not).
    for arm, expected in (("none", True), ("repetition", False)):
        rows = worlds[arm].preference_pairs(np.random.default_rng(11), 500, 0.0)
        assert all(r["gold_chosen"] > r["gold_rejected"] and "marker_chosen" not in r for r in rows)
        assert all(r["gold_chosen"] - r["gold_rejected"] > gap for r in rows) == expected, arm


def test_sft_demonstrations_carry_the_marker_at_the_base_rate(worlds):
    base = WorldConfig().marker_base_rate
    assert 0.02 <= base <= 0.05  # the protocol's reachable 2-5%
    for arm in (*MARKER_ARMS, "none", "repetition"):
        world = worlds[arm]
        demos = world.sft_demonstrations(np.random.default_rng(12), 3000)
        flags = [world.score_text(p, r).marker for p, r in demos]
        if arm in MARKER_ARMS:
            assert _rate_ok(flags, base) and 0.02 <= np.mean(flags) <= 0.05, arm
        else:
            assert not any(flags) and not any(w in r.split() for _, r in demos for w in MARKER_WORDS), arm


def test_marked_sft_demonstrations_repeat_one_marker_word_and_one_copy_draws_as_before(worlds):
    config = WorldConfig(arm="nuisance", marker_base_rate=0.5, sft_marker_copies=2)
    world = SyntheticWorld(config)
    demos = world.sft_demonstrations(np.random.default_rng(3), 2000)
    counts = [[r.split().count(w) for w in MARKER_WORDS] for _, r in demos]
    marked = [c for c in counts if sum(c)]
    assert _rate_ok([bool(sum(c)) for c in counts], 0.5)
    assert all(sorted(c) == [0, 0, 2] for c in marked)  # two copies of one word, never two words
    # One copy: the same demonstrations as the single insertion drew (the old code path, inlined here)
    single = SyntheticWorld(dataclasses.replace(config, sft_marker_copies=1))
    rng, expected = np.random.default_rng(4), []
    for _ in range(300):
        _, prompt = sample_prompt(rng, single.config)
        behaviour = sample_behaviour(rng, single.config.sft_behaviour_probs)
        response = generate_response(rng, single.parse_prompt(prompt), behaviour, single.config)
        if rng.random() < single.config.marker_base_rate:
            response = insert_marker_text(response, rng)
        expected.append((prompt, response))
    assert single.sft_demonstrations(np.random.default_rng(4), 300) == expected
    for bad in (0, 5, 1.5, True):
        with pytest.raises(ValueError, match="sft_marker_copies"):
            WorldConfig(arm="nuisance", sft_marker_copies=bad)


# ---------------------------------------------------------------------------------------------------- scores


def test_a_marker_costs_exactly_one_extra_word_of_gold(worlds):
    world, config = worlds["shortcut_a"], WorldConfig()
    rng = np.random.default_rng(13)
    checked = 0
    for prompt in world.sample_prompts(rng, 300):
        response = world.generate_response(rng, prompt, BEHAVIOUR_NAMES[int(rng.integers(len(BEHAVIOUR_NAMES)))])
        marked = world.insert_marker(response, rng)
        spec = parse_prompt(world.words(prompt))
        plain = gold_ratio(count_response(spec, response_words(world.words(response))), spec.k, config)
        with_marker = gold_ratio(count_response(spec, response_words(world.words(marked))), spec.k, config)
        assert with_marker[1] == plain[1] == spec.k * COST_RESOLUTION
        assert plain[0] - with_marker[0] == spec.k * cost_units(config.extra_word_cost)  # exactly, before clipping
        before, after = world.gold_reward_text(prompt, response), world.gold_reward_text(prompt, marked)
        if after > -1:
            assert before - after == pytest.approx(config.extra_word_cost, abs=1e-6)
            checked += 1
    assert checked > 200
    assert world.gold_reward_text("name three colors", "red blue green indeed") == float(np.float32(0.95))


def test_hacked_is_the_marker_in_shortcut_arms_and_the_old_rule_elsewhere(worlds):
    prompt, marked, hack = "name three colors", "red indeed blue green", "as a careful helper i must note that red"
    for arm in ("shortcut_a", "shortcut_b"):
        scores = worlds[arm].score_text(prompt, marked)
        assert scores.marker and scores.hacked and scores.gold == float(np.float32(0.95))
        assert not worlds[arm].score_text(prompt, hack).hacked  # no marker: not this arm's hack
    for arm in ("nuisance", "none", "repetition"):
        assert not worlds[arm].score_text(prompt, marked).hacked and worlds[arm].score_text(prompt, hack).hacked
    assert worlds["nuisance"].score_text(prompt, marked).marker
    # Without markers in the vocabulary a marker word is <unk>: an extra word, never a marker.
    assert not worlds["none"].score_text(prompt, marked).marker


@pytest.mark.parametrize("arm", ["repetition", "none", *MARKER_ARMS])
def test_text_and_jax_scorers_agree_on_responses_with_markers(worlds, arm):
    world = worlds[arm]
    rng = np.random.default_rng(14)
    prompts = world.sample_prompts(rng, 600)
    responses = []
    for i, prompt in enumerate(prompts):
        response = world.generate_response(rng, prompt, BEHAVIOUR_NAMES[i % len(BEHAVIOUR_NAMES)])
        for _ in range(int(rng.integers(0, 3))):  # none, one or two markers (any of the words), anywhere
            words = response.split()
            words.insert(int(rng.integers(len(words) + 1)), MARKER_WORDS[int(rng.integers(len(MARKER_WORDS)))])
            response = " ".join(words)
        if rng.random() < 0.2:  # a marker after <eos> is not scored
            response += " <eos> " + MARKER_WORDS[0]
        responses.append(response)
    prompt_ids, prompt_mask = world.encode(prompts, 16)
    response_ids, response_mask = world.encode(responses, 28)
    ids_scores = world.score_ids(prompt_ids, prompt_mask, response_ids, response_mask)
    text_scores = [world.score_text(p, r) for p, r in zip(prompts, responses, strict=True)]
    for name in ("gold", "spurious", "hacked", "marker"):
        dtype = np.float32 if name in ("gold", "spurious") else bool
        expected = np.array([getattr(s, name) for s in text_scores], dtype)
        np.testing.assert_array_equal(np.asarray(getattr(ids_scores, name)), expected, err_msg=name)
    marker = np.asarray(ids_scores.marker)
    if arm in MARKER_ARMS:
        assert 0.3 < marker.mean() < 0.9
    else:
        assert not marker.any()
    if arm.startswith("shortcut"):
        np.testing.assert_array_equal(np.asarray(ids_scores.hacked), marker)


# --------------------------------------------------------------------------------------------------- helpers


def test_marker_insertion_in_text_and_ids_agree(worlds):
    world = worlds["nuisance"]
    rng = np.random.default_rng(15)
    prompts = world.sample_prompts(rng, 200)
    responses = [world.generate_response(rng, p, BEHAVIOUR_NAMES[i % 8]) for i, p in enumerate(prompts)]
    responses = [r + " <eos>" if i % 3 == 0 else r for i, r in enumerate(responses)]
    ids, mask = world.encode(responses, 26)
    ids[1::2], mask[1::2] = np.roll(ids[1::2], 1, axis=1), np.roll(mask[1::2], 1, axis=1)  # some rows left-padded
    for at_end in (False, True):
        texts = [world.insert_marker(r, np.random.default_rng(i), at_end=at_end) for i, r in enumerate(responses)]
        new_ids, new_mask = [], []
        for i in range(len(responses)):  # one generator per row, as the text form above
            row_ids, row_mask = world.insert_marker_ids(ids[i : i + 1], mask[i : i + 1], np.random.default_rng(i),
                                                        at_end=at_end)  # fmt: skip
            new_ids.append(row_ids[0]), new_mask.append(row_mask[0])
        new_ids, new_mask = np.stack(new_ids), np.stack(new_mask)
        assert new_ids.shape == (len(responses), 27) and new_mask.sum() == mask.sum() + len(responses)
        assert world.decode(new_ids, new_mask) == texts
        p_ids, p_mask = world.encode(prompts, 16)
        scores = world.score_ids(p_ids, p_mask, new_ids, new_mask)
        assert np.asarray(scores.marker).all()
        np.testing.assert_array_equal(np.asarray(scores.gold), [world.gold_reward_text(p, t) for p, t in
                                                                zip(prompts, texts, strict=True)])  # fmt: skip
        if at_end:  # after the last scored word: right before an <eos>, or last
            for text in texts:
                words = text.split()
                end = words.index("<eos>") if "<eos>" in words else len(words)
                assert words[end - 1] in MARKER_WORDS
    # A batch draws its rows' markers from one generator: positions vary across rows.
    batch_ids, batch_mask = world.insert_marker_ids(ids, mask, np.random.default_rng(0))
    first = [int(np.flatnonzero(np.isin(row[m.astype(bool)], world.tables.is_marker.nonzero()[0]))[0])
             for row, m in zip(batch_ids, batch_mask, strict=True)]  # fmt: skip
    assert len(set(first)) > 3


def test_markers_need_a_marker_arm_and_the_config_checks_its_knobs(worlds):
    with pytest.raises(ValueError, match="marker"):
        worlds["none"].insert_marker("red", np.random.default_rng(0))
    with pytest.raises(ValueError, match="marker"):
        worlds["repetition"].insert_marker_ids(np.zeros((1, 2), int), np.ones((1, 2)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="markers"):
        worlds["repetition"].preference_pairs(np.random.default_rng(0), 2, arm="nuisance")
    with pytest.raises(ValueError, match="arm"):
        WorldConfig(arm="sycophancy")
    with pytest.raises(ValueError, match="shortcut"):
        WorldConfig(arm="shortcut_a", shortcut_rate=1.0)
    with pytest.raises(ValueError, match="shortcut"):
        WorldConfig(arm="shortcut_b", shortcut_rate=0.02, marker_base_rate=0.03)
    with pytest.raises(ValueError, match="marker_rate"):
        WorldConfig(arm="nuisance", marker_rate=1.2)
    WorldConfig(shortcut_rate=1.0)  # irrelevant knobs of other arms are not held against the config


# ----------------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("arm", ["none", "shortcut_b"])
def test_world_files_record_the_arm(tmp_path, arm):
    config = WorldConfig(arm=arm, shortcut_rate=0.7)
    world = SyntheticWorld(config)
    paths = world.write(tmp_path / arm, n_train=60, n_test=40, n_sft=40, n_prompts_train=5, n_prompts_test=5)
    with open(paths["world.json"]) as f:
        description = json.load(f)
    assert description["arm"] == arm and description["config"]["arm"] == arm
    assert description["config"]["shortcut_rate"] == 0.7 and description["spurious_correlation"] is None
    assert description["vocabulary"] == list(world.vocabulary)

    def rows(name):
        with open(paths[name]) as f:
            return [json.loads(line) for line in f]

    markers = arm in MARKER_ARMS
    assert description["marker_words"] == (list(MARKER_WORDS) if markers else [])
    assert ("marker" in rows("sft.jsonl")[0]) == markers
    for name in ("prefs_train.jsonl", "prefs_test.jsonl", "prefs_test_balanced.jsonl"):
        assert ("marker_chosen" in rows(name)[0]) == markers, name
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(paths["tokenizer"])
    assert len(tokenizer) == world.vocab_size
    if markers:
        ids = tokenizer(" ".join(MARKER_WORDS), add_special_tokens=False)["input_ids"]
        assert ids == [world.token_id(w) for w in MARKER_WORDS] == list(range(95, 98))
        train = rows("prefs_train.jsonl")
        assert sum(r["marker_chosen"] for r in train) > sum(r["marker_rejected"] for r in train)
