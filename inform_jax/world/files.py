"""Writing the synthetic world to disk in the file formats the real loaders read.

Files under ``out_dir``:

``tokenizer/``                 word-level tokenizer (AutoTokenizer), HH-style chat template
``sft.jsonl``                  prompt, response (+ gold, spurious, hacked; marker in the marker arms)
``prefs_train.jsonl``          prompt, chosen, rejected (+ gold/spurious/hacked per side, behaviours, flipped)
``prefs_train_hh.jsonl``       the same pairs as Anthropic HH transcripts: chosen, rejected
``prefs_train_messages.jsonl`` the same pairs as conversations: chosen, rejected lists of {role, content}
``prefs_test.jsonl``           held-out pairs, gold labels (no noise), the training spurious correlation
``prefs_test_balanced.jsonl``  held-out pairs, gold labels, spurious correlation 0.5 (the shortcut is
                               uninformative, so accuracy here measures what the gold reward rewards); in the
                               marker arms markers placed as the nuisance arm places them (uninformative too)
``prompts_train.jsonl``        prompt, task: prompts for RL
``prompts_test.jsonl``         prompt, task: held-out prompts for evaluating a policy
``world.json``                 the config, vocabulary, knobs, seed and row counts; outside the default arm
                               also the arm (its fields in the config, and ``arm`` and ``marker_words``)

Pair files of the marker arms also have ``marker_chosen`` and ``marker_rejected``. The default (repetition)
world's files are byte-identical to the ones written before arms existed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from inform_jax.world.config import config_dict
from inform_jax.world.vocab import MARKER_WORDS

HH_HUMAN, HH_ASSISTANT = "\n\nHuman: ", "\n\nAssistant: "

# Renders a conversation exactly as the HH transcripts above, so all three pair formats tokenize alike.
HH_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\\n\\nHuman: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '\\n\\nAssistant: ' + message['content'] }}"
    "{% else %}{{ raise_exception('only user and assistant roles are supported') }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines; returns the number written."""
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            count += 1
    return count


def hh_transcript(prompt: str, response: str) -> str:
    """``"\\n\\nHuman: {prompt}\\n\\nAssistant: {response}"``."""
    return f"{HH_HUMAN}{prompt}{HH_ASSISTANT}{response}"


def conversation(prompt: str, response: str) -> list[dict[str, str]]:
    """A user turn and an assistant turn."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def write_world(
    world,
    out_dir: str | os.PathLike,
    *,
    n_sft: int,
    n_train: int,
    n_test: int,
    n_prompts_train: int,
    n_prompts_test: int,
    label_noise: float,
    spurious_correlation: float | None,
    seed: int,
) -> dict[str, str]:
    """Write every file listed in the module docstring for ``world`` (a :class:`inform_jax.world.SyntheticWorld`,
    which calls this from its ``write``); returns ``{name: path}``."""
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    # One independent stream per file: changing one file's size leaves the others unchanged.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    sft_rng, train_rng, test_rng, balanced_rng, prompts_train_rng, prompts_test_rng = streams
    path = {
        name: os.path.join(out_dir, name)
        for name in (
            "sft.jsonl",
            "prefs_train.jsonl",
            "prefs_train_hh.jsonl",
            "prefs_train_messages.jsonl",
            "prefs_test.jsonl",
            "prefs_test_balanced.jsonl",
            "prompts_train.jsonl",
            "prompts_test.jsonl",
            "world.json",
        )
    }
    path["tokenizer"] = world.save_tokenizer(os.path.join(out_dir, "tokenizer"))

    markers = world.config.has_markers

    def scored(prompt: str, response: str) -> dict[str, Any]:
        scores = dataclasses.asdict(world.score_text(prompt, response))
        if not markers:  # a world without markers writes the columns it wrote before arms existed
            del scores["marker"]
        return {"prompt": prompt, "response": response, **scores}

    write_jsonl(path["sft.jsonl"], (scored(p, r) for p, r in world.sft_demonstrations(sft_rng, n_sft)))

    train = world.preference_pairs(train_rng, n_train, label_noise, spurious_correlation)
    write_jsonl(path["prefs_train.jsonl"], train)
    write_jsonl(
        path["prefs_train_hh.jsonl"],
        (
            {"chosen": hh_transcript(r["prompt"], r["chosen"]), "rejected": hh_transcript(r["prompt"], r["rejected"])}
            for r in train
        ),
    )
    write_jsonl(
        path["prefs_train_messages.jsonl"],
        (
            {"chosen": conversation(r["prompt"], r["chosen"]), "rejected": conversation(r["prompt"], r["rejected"])}
            for r in train
        ),
    )
    write_jsonl(path["prefs_test.jsonl"], world.preference_pairs(test_rng, n_test, 0.0, spurious_correlation))
    # Balanced: neither the spurious features nor (in the marker arms) the markers tell the label.
    balanced_arm = "nuisance" if markers else None
    write_jsonl(
        path["prefs_test_balanced.jsonl"], world.preference_pairs(balanced_rng, n_test, 0.0, 0.5, arm=balanced_arm)
    )

    for name, rng, n in (
        ("prompts_train.jsonl", prompts_train_rng, n_prompts_train),
        ("prompts_test.jsonl", prompts_test_rng, n_prompts_test),
    ):
        write_jsonl(
            path[name], ({"prompt": p, "task": world.parse_prompt(p).task} for p in world.sample_prompts(rng, n))
        )

    description = {
        "config": config_dict(world.config),
        "vocabulary": list(world.vocabulary),
        "seed": seed,
        "label_noise": label_noise,
        "spurious_correlation": spurious_correlation,
        "test_label_noise": 0.0,
        "balanced_test_spurious_correlation": 0.5,
        "rows": {
            "sft": n_sft,
            "prefs_train": n_train,
            "prefs_test": n_test,
            "prefs_test_balanced": n_test,
            "prompts_train": n_prompts_train,
            "prompts_test": n_prompts_test,
        },
        "files": {name: os.path.basename(p) for name, p in path.items() if name != "world.json"},
    }
    if world.config.arm != "repetition":  # the default world describes itself as it did before arms existed
        description["arm"] = world.config.arm
        description["marker_words"] = list(MARKER_WORDS) if markers else []
    with open(path["world.json"], "w", encoding="utf-8") as f:
        json.dump(description, f, indent=2)
    return path
