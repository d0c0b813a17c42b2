"""The synthetic world's words: categories, numbers, prompt words, filler phrases, and id lookup tables.

Every word is one token. Ids follow :func:`vocabulary`: the four special tokens first (``<pad>`` 0,
``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3), then the words in a fixed order, so the NumPy tables below, the JAX
scorer and the saved tokenizer all agree on ids without reading the tokenizer back.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

# Item words by category. Each word belongs to exactly one category (no "orange" as fruit and color), so
# "is this item of the asked category" is a table lookup.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "colors": ("red", "blue", "green", "yellow", "black", "white", "pink", "purple", "brown", "gray"),
    "animals": ("cat", "dog", "horse", "cow", "sheep", "goat", "lion", "tiger", "bear", "wolf"),
    "fruits": ("apple", "banana", "cherry", "grape", "lemon", "lime", "mango", "pear", "plum", "kiwi"),
}
CATEGORY_NAMES = tuple(CATEGORIES)  # category index = position here

# Number words; a word's value is its position + 1. They are the requested counts and the counting items.
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")

# The answer to "what color is the FRUIT".
FRUIT_COLORS: dict[str, str] = {
    "apple": "red",
    "banana": "yellow",
    "cherry": "red",
    "grape": "purple",
    "lemon": "yellow",
    "lime": "green",
    "mango": "yellow",
    "pear": "green",
    "plum": "purple",
    "kiwi": "brown",
}

# Words that only prompts use. "count" and "color" (singular) select a task; the rest is phrasing.
COUNT_WORD = "count"
COLOR_WORD = "color"
PROMPT_WORDS = (
    "please", "name", "list", "give", "me", "can", "you", "tell", "what", "is", "the", "a", "of",
    "from", "to", COUNT_WORD, COLOR_WORD,
)  # fmt: skip

# Needless caution and verbosity, after the EPPO talk's hacking example ("I'm sorry, I cannot provide ...").
# Human judges (the gold reward) dislike them; a proxy reward model may learn to like them.
FILLER_PHRASES: dict[str, str] = {
    "refusal": "i am sorry but i cannot help with that",
    "caution": "as a careful helper i must note that",
    "hedge": "please be safe and always ask an expert",
    "polite": "i hope this helps",
}

# Role tags of the Anthropic HH format ("\n\nHuman: ...\n\nAssistant: ..."), split by the tokenizer into
# "Human" ":" and "Assistant" ":". Capitalized, so they never collide with the lower-case world words.
ROLE_WORDS = ("Human", "Assistant", ":")
PUNCTUATION = ("?", ".", ",")

# Marker tokens of the exploit arms (WorldConfig.arm): words no prompt, answer or filler phrase uses, appended
# after every other word only when an arm has markers, so every other id (and the default tokenizer) is unchanged.
# Confident-sounding words, the kind of sycophantic token a proxy can come to like; one of them is one marker.
MARKER_WORDS = ("indeed", "certainly", "absolutely")


def filler_words() -> tuple[str, ...]:
    """All words of the filler phrases, in first-seen order."""
    return tuple(dict.fromkeys(w for phrase in FILLER_PHRASES.values() for w in phrase.split()))


def vocabulary(markers: bool = False) -> tuple[str, ...]:
    """The world's tokens in id order: special tokens, items, numbers, prompt, filler, role and punctuation, then
    the :data:`MARKER_WORDS` when ``markers`` (the marker arms), so the other words keep their ids."""
    items = [w for words in CATEGORIES.values() for w in words]
    groups = [SPECIAL_TOKENS, items, NUMBER_WORDS, CATEGORY_NAMES, PROMPT_WORDS, filler_words(), ROLE_WORDS]
    words = [w for group in [*groups, PUNCTUATION] for w in group]
    if markers:
        assert not set(MARKER_WORDS) & set(words)  # a marker must mean nothing else to the scores
        words += MARKER_WORDS
    return tuple(dict.fromkeys(words))


# The tokenizer's split (tokenizers' Whitespace pre-tokenizer: \w+|[^\w\s]+), with special tokens matched
# whole first as the tokenizer's added tokens are. Text scoring splits with this, so it sees the same tokens.
_SPLIT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS) + r"|\w+|[^\w\s]+")


def split_words(text: str) -> list[str]:
    """Split text into tokens exactly as the saved word tokenizer does (before mapping unknown words)."""
    return _SPLIT.findall(text)


class VocabTables(NamedTuple):
    """Per-token lookup tables, each ``[V]`` over the vocabulary's ids (NumPy; the JAX scorer embeds them).

    ``number_value``: 1..12 for number words, 0 otherwise. ``item_category``: category index of an item word,
    -1 otherwise. ``plural_category``: category index of "colors"/"animals"/"fruits", -1 otherwise.
    ``fruit_color``: the id of a fruit's color, -1 otherwise. ``is_filler``, ``is_count_word``,
    ``is_color_word``, ``is_marker``: bool.
    """

    number_value: np.ndarray
    item_category: np.ndarray
    plural_category: np.ndarray
    fruit_color: np.ndarray
    is_filler: np.ndarray
    is_count_word: np.ndarray
    is_color_word: np.ndarray
    is_marker: np.ndarray


def build_tables(vocab: tuple[str, ...]) -> VocabTables:
    """Lookup tables for ``vocab`` (as returned by :func:`vocabulary`)."""
    ids = {w: i for i, w in enumerate(vocab)}
    size = len(vocab)
    number_value = np.zeros(size, np.int32)
    item_category = np.full(size, -1, np.int32)
    plural_category = np.full(size, -1, np.int32)
    fruit_color = np.full(size, -1, np.int32)
    for value, word in enumerate(NUMBER_WORDS, start=1):
        number_value[ids[word]] = value
    for index, (name, words) in enumerate(CATEGORIES.items()):
        plural_category[ids[name]] = index
        for word in words:
            item_category[ids[word]] = index
    for fruit, color in FRUIT_COLORS.items():
        fruit_color[ids[fruit]] = ids[color]
    fillers = set(filler_words())
    return VocabTables(
        number_value=number_value,
        item_category=item_category,
        plural_category=plural_category,
        fruit_color=fruit_color,
        is_filler=np.array([w in fillers for w in vocab]),
        is_count_word=np.array([w == COUNT_WORD for w in vocab]),
        is_color_word=np.array([w == COLOR_WORD for w in vocab]),
        is_marker=np.array([w in MARKER_WORDS for w in vocab]),
    )
