"""Marker tokens of the exploit arms: inserting them into responses, as words and as token ids.

One marker is one word of ``vocab.MARKER_WORDS`` (drawn uniformly) inserted at a uniformly random position among
the response's scored words (before its first ``<eos>``), or at their end with ``at_end``. The world's samplers
insert markers this way, and the lab's sensitivity measurement (the reward change from inserting the tokens) uses
the same helpers on its own responses.
"""

from __future__ import annotations

import numpy as np

from inform_jax.world.vocab import EOS, MARKER_WORDS, split_words


def marker_position(rng: np.random.Generator, n_words: int, at_end: bool) -> int:
    """Where a marker goes among ``n_words`` scored words: uniform over 0..n_words (both ends included)."""
    return n_words if at_end else int(rng.integers(n_words + 1))


def insert_marker(
    words: list[str], rng: np.random.Generator, *, at_end: bool = False, word: str | None = None
) -> list[str]:
    """``words`` (a response as a word list) with one marker word inserted among its scored words.

    ``word``: which marker (default: one of MARKER_WORDS, uniformly). ``at_end``: after the last scored word
    (before an ``<eos>``, if any) instead of at a random position. Draws from ``rng`` in the same order as
    :func:`insert_marker_ids`, so the same generator state gives the same insertion in both forms.
    """
    word = _pick_marker(rng, word)
    n_words = words.index(EOS) if EOS in words else len(words)
    position = marker_position(rng, n_words, at_end)
    return [*words[:position], word, *words[position:]]


def insert_marker_text(
    response: str, rng: np.random.Generator, *, at_end: bool = False, word: str | None = None
) -> str:
    """:func:`insert_marker` on a response text, split as the tokenizer splits it; returns the words joined by
    spaces (the world's own responses are written so, and the tokenizer gives the same tokens either way)."""
    return " ".join(insert_marker(split_words(response), rng, at_end=at_end, word=word))


def insert_marker_ids(
    ids: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    vocabulary: tuple[str, ...],
    *,
    at_end: bool = False,
    word: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Token-id form of :func:`insert_marker`, one marker per row.

    ``ids``, ``mask``: [B, T] responses (mask 1 marks real tokens, anywhere in the row: left or right padding).
    Returns ``(ids, mask)`` of shape [B, T + 1] (int32 mask): each input row with one slot inserted, holding the
    marker's id with mask 1, before the row's k-th real token (k drawn among the scored tokens, the real ones
    before the first real ``<eos>``, as in the text form; k = their count puts it right after the last one).
    ``vocabulary`` is the world's; it must contain the marker words (a marker arm's).
    """
    ids, mask = np.asarray(ids), np.asarray(mask).astype(bool)
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(f"ids and mask must be [B, T] of one shape, got {ids.shape} and {mask.shape}")
    if not set(MARKER_WORDS) <= set(vocabulary):
        raise ValueError("the vocabulary has no marker words: build the world with a marker arm")
    eos_id = vocabulary.index(EOS)
    out_ids = np.zeros((ids.shape[0], ids.shape[1] + 1), ids.dtype)
    out_mask = np.zeros(out_ids.shape, np.int32)
    for row in range(ids.shape[0]):
        marker_id = vocabulary.index(_pick_marker(rng, word))
        real = np.flatnonzero(mask[row])
        eos = np.flatnonzero(ids[row, real] == eos_id)
        n_words = int(eos[0]) if eos.size else real.size
        k = marker_position(rng, n_words, at_end)
        # Slot to insert before: the k-th real token's slot, or right after the last scored token (slot 0 for a row
        # with no scored token and nothing real; the first real slot when only an <eos> is real).
        if k < real.size:
            slot = int(real[k])
        else:
            slot = int(real[-1]) + 1 if real.size else 0
        out_ids[row] = np.concatenate([ids[row, :slot], [marker_id], ids[row, slot:]])
        out_mask[row] = np.concatenate([mask[row, :slot], [True], mask[row, slot:]])
    return out_ids, out_mask


def pick_marker_word(rng: np.random.Generator) -> str:
    """One of MARKER_WORDS, uniformly: the same draw :func:`insert_marker` makes when it picks the word."""
    return _pick_marker(rng, None)


def _pick_marker(rng: np.random.Generator, word: str | None) -> str:
    if word is not None:
        if word not in MARKER_WORDS:
            raise ValueError(f"{word!r} is not a marker word ({', '.join(MARKER_WORDS)})")
        return word
    return MARKER_WORDS[int(rng.integers(len(MARKER_WORDS)))]
