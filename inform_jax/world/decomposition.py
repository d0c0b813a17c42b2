"""The reward-decomposition toy sets on the synthetic world: preference pairs where a response-only rule fits
most training pairs but the gold preference depends on the prompt.

Length-biased set: both responses are correct items of one request family ("name K fruits", "count from A to
B"), one a prefix of the other (K_short < K_long items). The prompt asks for K_long items (the longer response
wins) in a fraction ``bias`` of training pairs, and for K_short (the shorter wins) otherwise. "Longer wins"
fits ``bias`` of the training pairs without reading the prompt; the gold rule (give exactly what was asked)
fits all of them.

Adversarial-prompt set: both responses are K correct items of two different categories; the prompt asks for
one of them. In a fraction ``bias`` of training pairs the winner is a list of animals ("animals win" fits them
without the prompt); the rest are adversarial pairs whose prompt asks for the other category, so the animal
list loses.

Shifted-count set: "count from A to B" answered by A..B and by a run of as many numbers shifted by 1-3. In a
fraction ``bias`` of training pairs the wrong run is shifted up ("smaller numbers win" fits them without the
prompt); in the rest it is shifted down. Unlike the adversarial-prompt set's, its prompt rule is learned slowly.

Debiased held-out sets put the bias at 0.5: a prompt-blind model scores about 50% there. Every row carries
``bias_aligned`` (the response-only rule picks the chosen side) and ``adversarial`` (= not bias_aligned),
with the world's gold scores of both sides (chosen always has the higher gold reward).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from inform_jax.world.files import write_jsonl
from inform_jax.world.responses import PROMPT_TEMPLATES
from inform_jax.world.vocab import CATEGORIES, NUMBER_WORDS

FAVOURED = "animals"


def _row(world, prompt: str, chosen: str, rejected: str, aligned: bool) -> dict[str, Any]:
    gold_c, gold_r = world.gold_reward_text(prompt, chosen), world.gold_reward_text(prompt, rejected)
    if not gold_c > gold_r:  # the construction guarantees it; a change to the gold rule must not go unseen
        raise AssertionError(f"toy pair not gold-ordered: {prompt!r}: {chosen!r} ({gold_c}) vs {rejected!r} ({gold_r})")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "bias_aligned": aligned,
            "adversarial": not aligned, "gold_chosen": gold_c, "gold_rejected": gold_r}  # fmt: skip


def length_biased_pair(world, rng: np.random.Generator, long_wins: bool) -> dict[str, Any]:
    """One pair of the length-biased set; ``long_wins``: the prompt asks for the longer response's count."""
    c = world.config
    k_short, k_long = sorted(rng.choice(np.arange(c.min_items, c.max_items + 1), size=2, replace=False).tolist())
    k = k_long if long_wins else k_short
    if rng.random() < 0.5:
        category = str(rng.choice(list(CATEGORIES)))
        items = [str(w) for w in rng.permutation(np.array(CATEGORIES[category], dtype=object))[:k_long]]
        template = str(rng.choice(PROMPT_TEMPLATES["name"]))
        prompt = template.format(k=NUMBER_WORDS[k - 1], category=category)
    else:
        first = int(rng.integers(1, len(NUMBER_WORDS) - k_long + 2))
        items = list(NUMBER_WORDS[first - 1 : first - 1 + k_long])
        template = str(rng.choice(PROMPT_TEMPLATES["count"]))
        prompt = template.format(a=NUMBER_WORDS[first - 1], b=NUMBER_WORDS[first + k - 2])
    long, short = " ".join(items), " ".join(items[:k_short])
    chosen, rejected = (long, short) if long_wins else (short, long)
    return _row(world, prompt, chosen, rejected, aligned=long_wins)


def adversarial_pair(world, rng: np.random.Generator, favoured_wins: bool) -> dict[str, Any]:
    """One pair of the adversarial-prompt set; ``favoured_wins``: the prompt asks for the animal list."""
    c = world.config
    k = int(rng.integers(c.min_items, c.max_items + 1))
    other = str(rng.choice([name for name in CATEGORIES if name != FAVOURED]))
    lists = {
        name: " ".join(str(w) for w in rng.permutation(np.array(CATEGORIES[name], dtype=object))[:k])
        for name in (FAVOURED, other)
    }
    asked = FAVOURED if favoured_wins else other
    template = str(rng.choice(PROMPT_TEMPLATES["name"]))
    prompt = template.format(k=NUMBER_WORDS[k - 1], category=asked)
    rejected = lists[other if favoured_wins else FAVOURED]
    return _row(world, prompt, lists[asked], rejected, aligned=favoured_wins)


def shifted_count_pair(world, rng: np.random.Generator, smaller_wins: bool) -> dict[str, Any]:
    """One pair of the shifted-count set: "count from A to B" answered by A..B (chosen) and by the same number of
    consecutive numbers shifted by 1-3 (rejected); ``smaller_wins``: the rejected run is shifted up, so the run of
    smaller numbers wins. Matching the response's first number to the prompt's A is a rule a 2-layer reward model
    learns slowly (the lab, bias 0.95, 3 seeds: plain BT's debiased accuracy 0.86 at 4.7 epochs, 0.98 at 9.4)."""
    c = world.config
    k = int(rng.integers(c.min_items, c.max_items + 1))
    shift = int(rng.integers(1, 4))
    last_start = len(NUMBER_WORDS) - k + 1  # 1-based starts of a run of k numbers: 1 .. last_start
    if smaller_wins:  # the rejected run, shifted up, must still fit
        start = int(rng.integers(1, last_start - shift + 1))
        rejected_start = start + shift
    else:
        start = int(rng.integers(1 + shift, last_start + 1))
        rejected_start = start - shift

    def run(first: int) -> str:
        return " ".join(NUMBER_WORDS[first - 1 : first - 1 + k])

    template = str(rng.choice(PROMPT_TEMPLATES["count"]))
    prompt = template.format(a=NUMBER_WORDS[start - 1], b=NUMBER_WORDS[start + k - 2])
    return _row(world, prompt, run(start), run(rejected_start), aligned=smaller_wins)


TOY_SETS = {"length": length_biased_pair, "adversarial": adversarial_pair, "shifted_count": shifted_count_pair}


def toy_pairs(world, kind: str, n: int, bias: float, seed: int) -> list[dict[str, Any]]:
    """``n`` pairs of the ``kind`` set (a key of TOY_SETS); exactly round(bias * n) are bias-aligned,
    in random order."""
    if kind not in TOY_SETS:
        raise ValueError(f"toy set must be one of {sorted(TOY_SETS)}, got {kind!r}")
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0, 1], got {bias}")
    rng = np.random.default_rng(seed)
    aligned = np.zeros(n, bool)
    aligned[: round(bias * n)] = True
    return [TOY_SETS[kind](world, rng, bool(a)) for a in rng.permutation(aligned)]


def write_toy_sets(
    world, folder: str | os.PathLike, *, n_train: int = 1024, n_test: int = 256, bias: float = 0.85, seed: int = 0
) -> dict[str, str]:
    """Write ``{kind}_train.jsonl`` (bias ``bias``) and ``{kind}_test_debiased.jsonl`` (bias 0.5) for every set
    and the world's tokenizer; returns name -> path."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    paths = {"tokenizer": world.save_tokenizer(os.path.join(folder, "tokenizer"))}
    for i, kind in enumerate(TOY_SETS):
        for split, n, b in (("train", n_train, bias), ("test_debiased", n_test, 0.5)):
            name = f"{kind}_{split}.jsonl"
            paths[name] = os.path.join(folder, name)
            write_jsonl(paths[name], toy_pairs(world, kind, n, b, seed=seed * 1000 + 10 * i + (split != "train")))
    return paths
