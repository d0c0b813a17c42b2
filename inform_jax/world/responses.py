"""Sampling prompts and responses of the synthetic world: prompt templates and response behaviours.

Every sampler takes a NumPy ``Generator`` and is deterministic given its state. Responses are built from the
prompt's parsed :class:`TaskSpec`, so the text the gold reward reads is the text that was generated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from inform_jax.world.config import BEHAVIOUR_NAMES, TASK_NAMES, WorldConfig, normalized
from inform_jax.world.scoring import TaskSpec
from inform_jax.world.vocab import CATEGORIES, FILLER_PHRASES, FRUIT_COLORS, NUMBER_WORDS

# Phrasings per task; every one parses to the same TaskSpec (parsing looks only at the task-bearing words).
PROMPT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "name": ("name {k} {category}", "list {k} {category}", "please name {k} {category}", "give me {k} {category}",
             "can you name {k} {category} ?"),
    "count": ("count from {a} to {b}", "please count from {a} to {b}", "can you count from {a} to {b} ?"),
    "color": ("what color is the {fruit} ?", "what color is a {fruit} ?", "tell me the color of the {fruit}"),
}  # fmt: skip

_COLORS = CATEGORIES["colors"]
_ITEMS = tuple(w for words in CATEGORIES.values() for w in words)


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def sample_prompt(rng: np.random.Generator, config: WorldConfig) -> tuple[str, str]:
    """One prompt: ``(task, text)``. Tasks follow ``config.task_probs``; parameters and phrasing uniform."""
    task = TASK_NAMES[int(rng.choice(len(TASK_NAMES), p=normalized(config.task_probs)))]
    template = _pick(rng, PROMPT_TEMPLATES[task])
    if task == "name":
        k = int(rng.integers(config.min_items, config.max_items + 1))
        return task, template.format(k=NUMBER_WORDS[k - 1], category=_pick(rng, tuple(CATEGORIES)))
    if task == "count":
        span = int(rng.integers(config.min_items, config.max_items + 1))
        first = int(rng.integers(1, len(NUMBER_WORDS) - span + 2))
        return task, template.format(a=NUMBER_WORDS[first - 1], b=NUMBER_WORDS[first + span - 2])
    return task, template.format(fruit=_pick(rng, tuple(FRUIT_COLORS)))


# ------------------------------------------------------------------------------------------ answer pieces


def _answer(rng: np.random.Generator, spec: TaskSpec, n: int) -> list[str]:
    """``n`` distinct requested words (fewer if the task has fewer): in order for counting, else shuffled."""
    n = min(n, len(spec.requested))
    if spec.task == "count":
        return list(spec.requested[:n])
    return [str(w) for w in rng.permutation(np.array(spec.requested, dtype=object))[:n]]


def _wrong_pool(spec: TaskSpec) -> tuple[str, ...]:
    """Plausible wrong answers: the same kind of word as the answer, but not requested."""
    if spec.task == "count":
        pool = NUMBER_WORDS
    elif spec.task == "color":
        pool = _COLORS
    else:
        pool = _ITEMS
    return tuple(w for w in pool if w not in spec.requested)


def _wrong(rng: np.random.Generator, spec: TaskSpec, n: int) -> list[str]:
    pool = np.array(_wrong_pool(spec), dtype=object)
    return [str(w) for w in rng.choice(pool, size=min(n, len(pool)), replace=False)]


def _filler(rng: np.random.Generator, n_phrases: int) -> list[str]:
    names = rng.choice(np.array(tuple(FILLER_PHRASES), dtype=object), size=n_phrases, replace=False)
    return [w for name in names for w in FILLER_PHRASES[str(name)].split()]


def _with_filler(rng: np.random.Generator, answer: list[str]) -> list[str]:
    """Answer with one or two filler phrases before it, after it, or around it."""
    phrases = _filler(rng, int(rng.integers(1, 3)))
    where = int(rng.integers(3))
    if where == 0:
        return phrases + answer
    if where == 1:
        return answer + phrases
    cut = int(rng.integers(1, len(phrases)))
    return phrases[:cut] + answer + phrases[cut:]


# ------------------------------------------------------------------------------------------- behaviours


def correct(rng, spec, config):
    """Exactly the K requested words: the best response (gold 1)."""
    return _answer(rng, spec, spec.k)


def partial(rng, spec, config):
    """Some but not all requested words (a wrong answer when only one is asked for)."""
    if spec.k < 2:
        return wrong(rng, spec, config)
    return _answer(rng, spec, int(rng.integers(1, spec.k)))


def wrong(rng, spec, config):
    """K plausible but wrong words."""
    return _wrong(rng, spec, spec.k)


def correct_filler(rng, spec, config):
    """The correct answer wrapped in needless caution: long, and lower gold than the answer alone."""
    return _with_filler(rng, _answer(rng, spec, spec.k))


def partial_filler(rng, spec, config):
    """A partial (or wrong) answer wrapped in needless caution."""
    return _with_filler(rng, partial(rng, spec, config))


def refusal(rng, spec, config):
    """An over-cautious refusal: the refusal phrase, maybe another filler phrase, and no answer."""
    words = FILLER_PHRASES["refusal"].split()
    if rng.random() < 0.5:
        words += FILLER_PHRASES[_pick(rng, ("caution", "hedge", "polite"))].split()
    return words


def repetition(rng, spec, config):
    """Requested words repeated: one word many times, or the whole answer two to four times."""
    answer = _answer(rng, spec, max(1, int(rng.integers(1, spec.k + 1))))
    if rng.random() < 0.5:
        return [answer[0]] * int(rng.integers(spec.k + 2, spec.k + 8))
    return answer * int(rng.integers(2, 5))


def overlong(rng, spec, config):
    """The answer followed by two to six more items (more of the category, or wrong ones)."""
    extra_count = int(rng.integers(2, 7))
    answer = _answer(rng, spec, spec.k + extra_count)
    if len(answer) < spec.k + extra_count:
        answer += _wrong(rng, spec, spec.k + extra_count - len(answer))
    return answer


BEHAVIOURS: dict[str, Callable[[np.random.Generator, TaskSpec, WorldConfig], list[str]]] = {
    "correct": correct,
    "partial": partial,
    "wrong": wrong,
    "correct_filler": correct_filler,
    "partial_filler": partial_filler,
    "refusal": refusal,
    "repetition": repetition,
    "overlong": overlong,
}
assert tuple(BEHAVIOURS) == BEHAVIOUR_NAMES


def generate_response(rng: np.random.Generator, spec: TaskSpec, behaviour: str, config: WorldConfig) -> str:
    """A response of the named behaviour to a task, cut to ``config.max_response_words`` words."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; known: {', '.join(BEHAVIOUR_NAMES)}")
    words = BEHAVIOURS[behaviour](rng, spec, config)[: config.max_response_words]
    return " ".join(words)


def sample_behaviour(rng: np.random.Generator, probs: tuple[float, ...]) -> str:
    """A behaviour name drawn with ``probs`` (weights over ``BEHAVIOUR_NAMES``)."""
    return BEHAVIOUR_NAMES[int(rng.choice(len(BEHAVIOUR_NAMES), p=normalized(probs)))]
