"""Preference pairs and SFT demonstrations of the synthetic world.

A pair is two responses to one prompt; the gold reward decides chosen vs rejected (pairs with equal gold, or
equal spurious score, are never emitted). The spurious-correlation knob is met by rejection sampling: each
pair first draws whether its gold-preferred side must also have the higher spurious score (probability
``spurious_correlation``), then candidate pairs are drawn from the behaviour mixture until one matches.
Label noise is applied last: with probability ``label_noise`` chosen and rejected swap (``flipped``), so the
fraction of pairs whose *labelled* chosen side has the higher spurious score is
``rho * (1 - noise) + (1 - rho) * noise``.

Exploit arms (``WorldConfig.arm``; see its docstring): outside the repetition arm the spurious correlation is off
by default (None: no constraint) and pairs need a gold gap above ``extra_word_cost``; the marker arms then insert
one marker word into some sides (before label noise for nuisance and shortcut_a, after it for shortcut_b), rescore
them, and add ``marker_chosen`` / ``marker_rejected`` columns. SFT demonstrations of the marker arms carry a
marker with probability ``marker_base_rate``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from inform_jax.world.config import MARKER_ARMS, WorldConfig, check_probability
from inform_jax.world.markers import insert_marker_text, pick_marker_word
from inform_jax.world.responses import generate_response, sample_behaviour, sample_prompt
from inform_jax.world.scoring import Scores, TaskSpec

# A prompt is kept for this many candidate pairs before a fresh one is drawn (some prompts make an aligned
# or an anti-aligned pair rare; a bounded retry keeps sampling from stalling on them).
_TRIES_PER_PROMPT = 50
# Gold values of one prompt's responses lie on a grid of 1/(K * COST_RESOLUTION) >= 1/6000 apart; a gap counts as
# above the minimum only beyond this slack, so float32 rounding cannot pass a gap exactly equal to it.
_GAP_SLACK = 1e-5


def _candidate(rng, spec: TaskSpec, config: WorldConfig, score: Callable[[str], Scores]):
    behaviour = sample_behaviour(rng, config.pair_behaviour_probs)
    response = generate_response(rng, spec, behaviour, config)
    return behaviour, response, score(response)


def sample_pair(
    rng: np.random.Generator,
    config: WorldConfig,
    parse: Callable[[str], TaskSpec],
    score: Callable[[str, str], Scores],
    aligned: bool | None,
    min_gold_gap: float = 0.0,
) -> dict[str, Any]:
    """One gold-labelled pair, before label noise, whose better side has the higher spurious score iff ``aligned``
    (None: either) and whose gold gap exceeds ``min_gold_gap`` (when it is positive).

    ``parse(prompt) -> TaskSpec`` and ``score(prompt, response) -> Scores`` come from the world. Returns a row
    with prompt, task, chosen, rejected, their gold/spurious/hacked values and behaviours.
    """
    for attempt in range(config.max_pair_tries):
        if attempt % _TRIES_PER_PROMPT == 0:
            task, prompt = sample_prompt(rng, config)
            spec = parse(prompt)
            score_response = functools.partial(score, prompt)
        first = _candidate(rng, spec, config, score_response)
        second = _candidate(rng, spec, config, score_response)
        if first[1] == second[1] or first[2].gold == second[2].gold or first[2].spurious == second[2].spurious:
            continue
        better, worse = (first, second) if first[2].gold > second[2].gold else (second, first)
        if aligned is not None and (better[2].spurious > worse[2].spurious) != aligned:
            continue
        if min_gold_gap > 0 and not better[2].gold - worse[2].gold > min_gold_gap + _GAP_SLACK:
            continue
        return {
            "prompt": prompt,
            "task": task,
            "chosen": better[1],
            "rejected": worse[1],
            "gold_chosen": better[2].gold,
            "gold_rejected": worse[2].gold,
            "spurious_chosen": better[2].spurious,
            "spurious_rejected": worse[2].spurious,
            "hacked_chosen": better[2].hacked,
            "hacked_rejected": worse[2].hacked,
            "behaviour_chosen": better[0],
            "behaviour_rejected": worse[0],
        }
    kind = {True: "aligned ", False: "anti-aligned ", None: ""}[aligned]
    raise RuntimeError(
        f"no {kind}pair in {config.max_pair_tries} tries; the behaviour "
        "mixture (pair_behaviour_probs) cannot produce one"
    )


def _swap(row: dict[str, Any]) -> dict[str, Any]:
    """The row with chosen and rejected (and every per-side column) exchanged."""
    swapped = dict(row)
    for key in row:
        if key.endswith("_chosen") or key == "chosen":
            other = key.replace("chosen", "rejected")
            swapped[key], swapped[other] = row[other], row[key]
    return swapped


def preference_pairs(
    rng: np.random.Generator,
    n: int,
    config: WorldConfig,
    parse: Callable[[str], TaskSpec],
    score: Callable[[str, str], Scores],
    label_noise: float,
    spurious_correlation: float | None,
    arm: str | None = None,
) -> list[dict[str, Any]]:
    """``n`` pairs; each row also has ``flipped`` (its label was swapped by noise). See the module docstring.

    ``spurious_correlation`` None: no spurious constraint. ``arm``: whose marker placement to use (None: the
    config's); a marker arm's needs a config with markers. Rows of marker arms also have ``marker_chosen`` and
    ``marker_rejected``, and their per-side scores are those of the responses with their markers.
    """
    check_probability("label_noise", label_noise)
    if spurious_correlation is not None:
        check_probability("spurious_correlation", spurious_correlation)
    arm = config.arm if arm is None else arm
    if arm in MARKER_ARMS and not config.has_markers:
        raise ValueError(f"marker placement of arm {arm!r} needs a world with markers, not arm {config.arm!r}")
    rows = []
    for _ in range(n):
        # The repetition arm draws exactly what it drew before arms existed, in the same order.
        aligned = None if spurious_correlation is None else bool(rng.random() < spurious_correlation)
        row = sample_pair(rng, config, parse, score, aligned=aligned, min_gold_gap=config.pair_min_gold_gap)
        if arm not in MARKER_ARMS:
            flipped = bool(rng.random() < label_noise)
            rows.append({**(_swap(row) if flipped else row), "flipped": flipped})
            continue
        # Marker probabilities per side: (gold-preferred, other) before the noise for nuisance and shortcut_a (the
        # row's chosen side is still the gold-preferred one), (labelled chosen, rejected) after it for shortcut_b.
        if arm == "nuisance":
            row = _with_markers(rng, row, (config.marker_rate, config.marker_rate), score)
        elif arm == "shortcut_a":
            row = _with_markers(rng, row, (config.shortcut_rate, config.marker_base_rate), score)
        flipped = bool(rng.random() < label_noise)
        row = _swap(row) if flipped else row
        if arm == "shortcut_b":
            row = _with_markers(rng, row, (config.shortcut_rate, config.marker_base_rate), score)
        rows.append({**row, "flipped": flipped})
    return rows


def _with_markers(
    rng: np.random.Generator, row: dict[str, Any], rates: tuple[float, float], score: Callable[[str, str], Scores]
) -> dict[str, Any]:
    """The row with a marker inserted into its chosen side with probability ``rates[0]`` and into its rejected side
    with ``rates[1]`` (independent draws), those sides rescored, and ``marker_chosen`` / ``marker_rejected`` set."""
    row, order = dict(row), row["gold_chosen"] > row["gold_rejected"]
    for side, rate in zip(("chosen", "rejected"), rates, strict=True):
        if rng.random() < rate:
            row[side] = insert_marker_text(row[side], rng)
        scores = score(row["prompt"], row[side])
        row[f"gold_{side}"], row[f"spurious_{side}"] = scores.gold, scores.spurious
        row[f"hacked_{side}"], row[f"marker_{side}"] = scores.hacked, scores.marker
    # The pair's gold gap exceeds one marker's cost (config.pair_min_gold_gap), so its gold order cannot change.
    assert row["gold_chosen"] != row["gold_rejected"] and (row["gold_chosen"] > row["gold_rejected"]) == order, row
    return row


def sft_demonstrations(
    rng: np.random.Generator, n: int, config: WorldConfig, parse: Callable[[str], TaskSpec]
) -> list[tuple[str, str]]:
    """``n`` (prompt, response) demonstrations with behaviours drawn from ``config.sft_behaviour_probs``; in the
    marker arms a marker is inserted with probability ``config.marker_base_rate``, so a policy can reach it, in
    ``config.sft_marker_copies`` copies of one word (each at its own position; one copy draws exactly what a
    single insertion drew before copies existed)."""
    demos = []
    for _ in range(n):
        _, prompt = sample_prompt(rng, config)
        behaviour = sample_behaviour(rng, config.sft_behaviour_probs)
        response = generate_response(rng, parse(prompt), behaviour, config)
        if config.has_markers and rng.random() < config.marker_base_rate:
            word = pick_marker_word(rng)
            for _ in range(config.sft_marker_copies):
                response = insert_marker_text(response, rng, word=word)
        demos.append((prompt, response))
    return demos
