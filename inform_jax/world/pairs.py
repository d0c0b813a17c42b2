"""Preference pairs and SFT demonstrations of the synthetic world.

A pair is two responses to one prompt; the gold reward decides chosen vs rejected (pairs with equal gold, or
equal spurious score, are never emitted). The spurious-correlation knob is met by rejection sampling: each
pair first draws whether its gold-preferred side must also have the higher spurious score (probability
``spurious_correlation``), then candidate pairs are drawn from the behaviour mixture until one matches.
Label noise is applied last: with probability ``label_noise`` chosen and rejected swap (``flipped``), so the
fraction of pairs whose *labelled* chosen side has the higher spurious score is
``rho * (1 - noise) + (1 - rho) * noise``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from inform_jax.world.config import WorldConfig, check_probability
from inform_jax.world.responses import generate_response, sample_behaviour, sample_prompt
from inform_jax.world.scoring import Scores, TaskSpec

# A prompt is kept for this many candidate pairs before a fresh one is drawn (some prompts make an aligned
# or an anti-aligned pair rare; a bounded retry keeps sampling from stalling on them).
_TRIES_PER_PROMPT = 50


def _candidate(rng, spec: TaskSpec, config: WorldConfig, score: Callable[[str], Scores]):
    behaviour = sample_behaviour(rng, config.pair_behaviour_probs)
    response = generate_response(rng, spec, behaviour, config)
    return behaviour, response, score(response)


def sample_pair(
    rng: np.random.Generator,
    config: WorldConfig,
    parse: Callable[[str], TaskSpec],
    score: Callable[[str, str], Scores],
    aligned: bool,
) -> dict[str, Any]:
    """One gold-labelled pair, before label noise, whose better side has the higher spurious score iff ``aligned``.

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
        if (better[2].spurious > worse[2].spurious) != aligned:
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
    raise RuntimeError(
        f"no {'aligned' if aligned else 'anti-aligned'} pair in {config.max_pair_tries} tries; the behaviour "
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
    spurious_correlation: float,
) -> list[dict[str, Any]]:
    """``n`` pairs; each row also has ``flipped`` (its label was swapped by noise). See the module docstring."""
    check_probability("label_noise", label_noise)
    check_probability("spurious_correlation", spurious_correlation)
    rows = []
    for _ in range(n):
        row = sample_pair(rng, config, parse, score, aligned=bool(rng.random() < spurious_correlation))
        flipped = bool(rng.random() < label_noise)
        rows.append({**(_swap(row) if flipped else row), "flipped": flipped})
    return rows


def sft_demonstrations(
    rng: np.random.Generator, n: int, config: WorldConfig, parse: Callable[[str], TaskSpec]
) -> list[tuple[str, str]]:
    """``n`` (prompt, response) demonstrations with behaviours drawn from ``config.sft_behaviour_probs``."""
    demos = []
    for _ in range(n):
        _, prompt = sample_prompt(rng, config)
        behaviour = sample_behaviour(rng, config.sft_behaviour_probs)
        demos.append((prompt, generate_response(rng, parse(prompt), behaviour, config)))
    return demos
