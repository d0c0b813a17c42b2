"""From preference files to the arrays the reward-model trainer consumes, with what was cut reported."""

from __future__ import annotations

import numpy as np

from inform_jax.data.preference import load_preferences
from inform_jax.data.tokenize import tokenize_pairs

MARGIN_COLUMN = "margin"  # TRL's per-pair margin column


def load_pairs(path: str, tokenizer, section, *, log=print, transform=None, margins: bool = False) -> list:
    """The preference file's pairs (loaded, validated and transformed as in :func:`prepare_pairs`), not tokenized;
    the load report and the transform's count are logged. A file with no usable pair raises ValueError.
    ``margins``: every row must hold a number in the ``margin`` column (``loss.margin: column``)."""
    pairs, report = load_preferences(
        path, format=section.format, tokenizer=tokenizer, skip_malformed=section.skip_malformed,
        margin_column=MARGIN_COLUMN if margins else None,
    )  # fmt: skip
    log(str(report))
    if not pairs:
        raise ValueError(f"{path}: no usable preference pairs")
    if transform is not None:
        before = len(pairs)
        pairs = transform(pairs)
        log(f"{path}: {before} pairs -> {len(pairs)} after {getattr(transform, '__name__', 'transform')}")
    return pairs


def pair_margins(pairs: list) -> np.ndarray:
    """The per-pair margins [N] float32 of pairs loaded with ``margins=True``."""
    return np.asarray([p.extra[MARGIN_COLUMN] for p in pairs], np.float32).reshape(len(pairs))


def prepare_pairs(
    path: str, tokenizer, section, *, log=print, transform=None, return_pairs: bool = False, margins: bool = False
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], list]:
    """Load, validate and tokenize a preference file. `section`: a DataSection (format, max_length, skip);
    `transform`: an optional function of the loaded pair list (e.g. RRM augmentation) applied before tokenizing;
    its ``__name__`` is recorded as ``arrays["pair_transform"]`` (a 0-d string array) for the trainer to check.

    Returns `chosen_input_ids`, `chosen_attention_mask`, `rejected_input_ids`, `rejected_attention_mask`
    [N, T] (right-padded), `prompt_lengths` and `response_lengths` [N, 2] (prompt / response tokens kept in each
    sequence); with `margins`, also `margins` [N] float32 (the file's `margin` column, TRL's per-pair margin,
    which every row must hold); with `return_pairs`, also the list of the N PreferencePair rows the arrays were
    made from, row i of the arrays from pair i. Pairs whose chosen and rejected tokens are identical after
    truncation are left out of both (the truncation line names them); a file with no other pair raises ValueError.
    """
    pairs = load_pairs(path, tokenizer, section, log=log, transform=transform, margins=margins)
    arrays, truncation = tokenize_pairs(pairs, tokenizer, section.max_length)
    log(str(truncation))
    left_out = set(truncation.identical_rows)
    pairs = [p for i, p in enumerate(pairs) if i not in left_out]
    lengths = np.stack([arrays["chosen_attention_mask"].sum(1), arrays["rejected_attention_mask"].sum(1)], axis=1)
    arrays["response_lengths"] = (lengths - arrays["prompt_lengths"]).astype(np.int32)
    if margins:
        arrays["margins"] = pair_margins(pairs)
    if transform is not None:
        arrays["pair_transform"] = np.asarray(getattr(transform, "__name__", "transform"))
    return (arrays, pairs) if return_pairs else arrays
