"""Tokenizing preference pairs and prompts into fixed-length, padded int32 arrays.

A pair's two sequences are ``prompt tokens + response tokens (+ eos)``. Prompt and response are tokenized
separately so the prompt length is exact (the prompt-free decomposition and PPO need it).

Truncation keeps the END of every sequence: a reward model reads its score at the last real token, and a
policy continues from the end of its prompt, so those tokens must survive. When ``prompt + response`` is too
long, tokens are dropped from the start of the prompt first (a leading ``bos`` is kept in place), down to
``min_prompt_tokens`` (default 0); only then from the start of the response, so a response longer than
``max_length`` keeps its last ``max_length`` tokens. Every cut sequence is counted in a
:class:`TruncationReport`. The one row dropped: a pair whose chosen and rejected sequences are the same tokens
after truncation (they differed only in what was cut) carries no preference; it is left out and named in the
report, and a list with no other pair is an error.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

MaxLength = int | Literal["auto"]


@dataclasses.dataclass
class TruncationReport:
    """Counts of what truncation removed (sequences: 2 per pair, 1 per prompt).

    ``truncated_rows`` are indices (into the input list) of rows with at least one cut sequence; ``longest``
    is the longest sequence before truncation. ``identical_rows``: indices (into the input list) of the pairs
    left out because chosen and rejected are the same tokens after truncation; ``identical_names``: the same
    rows as their file numbers them ("row 12", or "item 3" for items without a file row), for the text.
    """

    max_length: int
    sequences: int = 0
    sequences_truncated: int = 0
    tokens_cut: int = 0
    prompt_tokens_cut: int = 0
    response_tokens_cut: int = 0
    longest: int = 0
    truncated_rows: list[int] = dataclasses.field(default_factory=list)
    identical_rows: list[int] = dataclasses.field(default_factory=list)
    identical_names: list[str] = dataclasses.field(default_factory=list)
    # Pairs only: per input row, tokens cut [N, 2, 2] (chosen / rejected x prompt / response) and sequence lengths
    # before truncation [N, 2] (chosen / rejected).
    row_cuts: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    row_lengths: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def from_rows(
        cls, max_length: int, row_cuts: np.ndarray, row_lengths: np.ndarray, identical_rows, identical_names
    ) -> TruncationReport:
        """A pair report from its per-row values (``row_cuts`` [N, 2, 2], ``row_lengths`` [N, 2]): what
        :func:`tokenize_pairs` reports, also when the rows were tokenized in parts (on several processes)."""
        row_cuts, row_lengths = np.asarray(row_cuts, np.int64), np.asarray(row_lengths, np.int64)
        report = cls(max_length=max_length, sequences=2 * len(row_cuts), longest=int(row_lengths.max(initial=0)))
        report.sequences_truncated = int((row_cuts.sum(-1) > 0).sum())
        report.prompt_tokens_cut, report.response_tokens_cut = (int(x) for x in row_cuts.sum((0, 1)))
        report.tokens_cut = report.prompt_tokens_cut + report.response_tokens_cut
        report.truncated_rows = [int(i) for i in np.flatnonzero(row_cuts.sum((1, 2)) > 0)]
        report.identical_rows, report.identical_names = list(identical_rows), list(identical_names)
        report.row_cuts, report.row_lengths = row_cuts.astype(np.int32), row_lengths.astype(np.int32)
        return report

    def add(self, row: int, prompt_cut: int, response_cut: int) -> None:
        if prompt_cut or response_cut:
            self.sequences_truncated += 1
            self.prompt_tokens_cut += prompt_cut
            self.response_tokens_cut += response_cut
            self.tokens_cut += prompt_cut + response_cut
            self.truncated_rows.append(row)

    def __str__(self) -> str:
        text = (
            f"truncated {self.sequences_truncated} of {self.sequences} sequences to {self.max_length} tokens "
            f"({self.tokens_cut} tokens cut: {self.prompt_tokens_cut} prompt, {self.response_tokens_cut} "
            f"response; longest {self.longest})"
        )
        if self.identical_rows:
            named = ", ".join(self.identical_names[:5]) + (", ..." if len(self.identical_names) > 5 else "")
            text += (
                f"; left out {len(self.identical_rows)} of {self.sequences // 2} pairs: chosen and rejected are "
                f"identical after truncation ({named})"
            )
        return text


def resolve_max_length(
    longest: int, max_length: MaxLength, max_length_cap: int | None = None, multiple: int = 64
) -> int:
    """``max_length`` as an int; ``"auto"`` is the smallest multiple of ``multiple`` >= ``longest``, at most
    ``max_length_cap`` (few distinct shapes keep jit recompiles rare)."""
    if max_length == "auto":
        length = max(multiple, -(-longest // multiple) * multiple)
        return min(length, max_length_cap) if max_length_cap is not None else length
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise ValueError(f"max_length must be a positive int or 'auto', got {max_length!r}")
    return max_length if max_length_cap is None else min(max_length, max_length_cap)


def fit_to_length(
    prompt: Sequence[int],
    response: Sequence[int],
    max_length: int,
    *,
    min_prompt_tokens: int = 0,
    keep_bos_id: int | None = None,
) -> tuple[list[int], list[int]]:
    """Cut ``prompt + response`` to at most ``max_length`` tokens, keeping the end; returns both parts.

    The prompt loses tokens from its start first, down to ``min(min_prompt_tokens, len(prompt))`` (but at
    least one response token is always kept), then the response loses tokens from its start. If the prompt
    starts with ``keep_bos_id`` and at least two prompt tokens are kept, that bos stays first (models expect
    it; with room for one prompt token the prompt's last token wins).
    """
    prompt, response = list(prompt), list(response)
    if len(prompt) + len(response) <= max_length:
        return prompt, response
    reserve = min(min_prompt_tokens, len(prompt), max_length - min(1, len(response)))
    keep_response = min(len(response), max_length - reserve)
    keep_prompt = max_length - keep_response
    response = response[len(response) - keep_response :]
    if keep_prompt == 0:
        return [], response
    if keep_bos_id is not None and prompt[0] == keep_bos_id and keep_prompt >= 2:
        return [prompt[0], *prompt[len(prompt) - keep_prompt + 1 :]], response
    return prompt[len(prompt) - keep_prompt :], response


def _pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its eos id (the attention mask tells padding apart)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")


def appends_eos(tokenizer: Any) -> bool:
    """Whether encoding with special tokens ends each text with eos (a reward model exported by
    ``inform_jax.models.hf_export`` has such a tokenizer, as do some published ones)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return False
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return with_special[-1:] == [eos] and plain[-1:] != [eos]


def _encode(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Batch-encode texts to id lists, dropping a doubled leading bos (a chat template already wrote one) and an
    eos the tokenizer appends itself: the pipeline places eos after the response, never after the prompt."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_special_tokens and bos is not None:
        ids = [x[1:] if len(x) >= 2 and x[0] == x[1] == bos else x for x in ids]
    if add_special_tokens and appends_eos(tokenizer):
        ids = [x[:-1] for x in ids]
    return [list(x) for x in ids]


def _place(seqs: Sequence[Sequence[int]], length: int, pad_id: int, side: str) -> tuple[np.ndarray, ...]:
    """Pad id lists into ``(ids, mask)``, int32 arrays of shape [N, length], padding on ``side``."""
    ids = np.full((len(seqs), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), length), dtype=np.int32)
    for i, seq in enumerate(seqs):
        span = slice(0, len(seq)) if side == "right" else slice(length - len(seq), length)
        ids[i, span] = seq
        mask[i, span] = 1
    return ids, mask


def _check_side(padding_side: str) -> None:
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")


def _describe(item: Any, index: int) -> str:
    source, row = getattr(item, "source", ""), getattr(item, "row", -1)
    return f"{source}: row {row}" if source else f"item {index}"


def _row_name(item: Any, index: int) -> str:
    row = getattr(item, "row", -1)
    return f"row {row}" if row >= 0 else f"item {index}"


def all_identical_error(pairs: Sequence[Any], length: int) -> ValueError:
    """The error for a pair list of which every pair is identical after truncation to ``length`` tokens."""
    where = getattr(pairs[0], "source", "") or "the pairs"
    return ValueError(
        f"{where}: all {len(pairs)} pairs are identical after truncation to {length} tokens (chosen and "
        "rejected differ only in the tokens cut): no preference left to train on; raise max_length"
    )


def tokenize_pairs(
    pairs: Sequence[Any],
    tokenizer: Any,
    max_length: MaxLength,
    *,
    max_length_cap: int | None = None,
    padding_side: str = "right",
    add_eos: bool = True,
    add_special_tokens: bool = True,
    min_prompt_tokens: int = 0,
    keep_bos: bool = True,
    multiple: int = 64,
    keep_identical: bool = False,
    warn: bool = True,
) -> tuple[dict[str, np.ndarray], TruncationReport]:
    """Tokenize ``PreferencePair``-like items (``.prompt``, ``.chosen``, ``.rejected``) into padded arrays.

    Args:
      pairs: N items.
      tokenizer: a Hugging Face tokenizer.
      max_length: sequence length L, or ``"auto"``: the smallest multiple of ``multiple`` >= the longest
        sequence, at most ``max_length_cap``.
      padding_side: ``"right"`` (default) or ``"left"`` for the padding.
      add_eos: end each response with eos (if the tokenizer has one and the response does not already end
        with it, as chat-templated replies do).
      add_special_tokens: let the tokenizer add its special tokens (e.g. Llama's bos) to the prompt.
      min_prompt_tokens, keep_bos: see :func:`fit_to_length` (``keep_bos`` keeps a leading bos).
      keep_identical: keep the pairs identical after truncation in the arrays (K = N; the report still lists
        them), for callers that leave them out later. warn: log a warning when a sequence was cut.

    Returns:
      ``(arrays, report)``: ``arrays`` holds int32 ``chosen_input_ids``, ``chosen_attention_mask``,
      ``rejected_input_ids``, ``rejected_attention_mask`` of shape [K, L] and ``prompt_lengths`` [K, 2]
      (prompt tokens kept in the chosen / rejected sequence, after truncation); ``report`` counts truncation.
      K = N - len(report.identical_rows): the pairs identical after truncation are left out, the others keep
      their order. Raises ValueError if that leaves none of N > 0 pairs. Each row depends only on its pair
      (and L): tokenizing a subset of the pairs with an int ``max_length`` gives the same rows.
    """
    _check_side(padding_side)
    prompts = _encode(tokenizer, [p.prompt for p in pairs], add_special_tokens)
    responses = {
        side: _encode(tokenizer, [getattr(p, side) for p in pairs], add_special_tokens=False)
        for side in ("chosen", "rejected")
    }
    eos = getattr(tokenizer, "eos_token_id", None)
    if add_eos and eos is not None:
        for side in responses:
            responses[side] = [r if r and r[-1] == eos else [*r, eos] for r in responses[side]]

    lengths = [len(p) + len(r) for rs in responses.values() for p, r in zip(prompts, rs, strict=True)]
    longest = max(lengths, default=0)
    length = resolve_max_length(longest, max_length, max_length_cap, multiple)
    bos = getattr(tokenizer, "bos_token_id", None) if keep_bos else None

    seqs: dict[str, list[list[int]]] = {"chosen": [], "rejected": []}
    prompt_lengths = np.zeros((len(pairs), 2), dtype=np.int32)
    row_cuts = np.zeros((len(pairs), 2, 2), dtype=np.int32)
    for col, side in enumerate(("chosen", "rejected")):
        for i, (prompt, response) in enumerate(zip(prompts, responses[side], strict=True)):
            if not prompt and not response:
                raise ValueError(f"{_describe(pairs[i], i)}: the {side} sequence has no tokens")
            kept_p, kept_r = fit_to_length(
                prompt, response, length, min_prompt_tokens=min_prompt_tokens, keep_bos_id=bos
            )
            row_cuts[i, col] = len(prompt) - len(kept_p), len(response) - len(kept_r)
            prompt_lengths[i, col] = len(kept_p)
            seqs[side].append(kept_p + kept_r)
    # The loader refuses identical texts; identical tokens here mean truncation cut all that told them apart.
    identical = [i for i, (c, r) in enumerate(zip(seqs["chosen"], seqs["rejected"], strict=True)) if c == r]
    names = [_row_name(pairs[i], i) for i in identical]
    row_lengths = np.asarray(lengths, np.int32).reshape(2, len(pairs)).T.reshape(len(pairs), 2)
    report = TruncationReport.from_rows(length, row_cuts, row_lengths, identical, names)
    if pairs and len(identical) == len(pairs) and not keep_identical:
        raise all_identical_error(pairs, length)
    left_out = set() if keep_identical else set(identical)
    keep = [i for i in range(len(pairs)) if i not in left_out]
    arrays: dict[str, np.ndarray] = {}
    for side in ("chosen", "rejected"):
        arrays[f"{side}_input_ids"], arrays[f"{side}_attention_mask"] = _place(
            [seqs[side][i] for i in keep], length, _pad_id(tokenizer), padding_side
        )
    arrays["prompt_lengths"] = prompt_lengths[keep]
    if report.sequences_truncated and warn:
        logger.warning("%s", report)
    return arrays, report


def tokenize_prompts(
    prompts: Sequence[str],
    tokenizer: Any,
    max_length: MaxLength,
    *,
    max_length_cap: int | None = None,
    add_special_tokens: bool = True,
    keep_bos: bool = True,
    multiple: int = 64,
) -> tuple[dict[str, np.ndarray], TruncationReport]:
    """Tokenize prompts for generation (PPO rollouts): LEFT-padded so every prompt ends at the last column.

    Long prompts keep their end (and a leading bos). Returns ``({"input_ids", "attention_mask"}, report)``
    with int32 arrays of shape [N, L]; ``max_length`` may be ``"auto"`` as in :func:`tokenize_pairs`.
    """
    ids = _encode(tokenizer, list(prompts), add_special_tokens)
    longest = max((len(x) for x in ids), default=0)
    length = resolve_max_length(longest, max_length, max_length_cap, multiple)
    report = TruncationReport(max_length=length, sequences=len(ids), longest=longest)
    bos = getattr(tokenizer, "bos_token_id", None) if keep_bos else None
    seqs = []
    for i, prompt in enumerate(ids):
        if not prompt:
            raise ValueError(f"prompt {i} has no tokens")
        kept, _ = fit_to_length(prompt, [], length, keep_bos_id=bos)
        report.add(i, len(prompt) - len(kept), 0)
        seqs.append(kept)
    input_ids, attention_mask = _place(seqs, length, _pad_id(tokenizer), "left")
    if report.sequences_truncated:
        logger.warning("%s", report)
    return {"input_ids": input_ids, "attention_mask": attention_mask}, report


def tokenize_sft(
    examples: Sequence[tuple[str, str]],
    tokenizer: Any,
    max_length: MaxLength,
    *,
    add_eos: bool = True,
    max_length_cap: int | None = None,
) -> tuple[dict[str, np.ndarray], TruncationReport]:
    """Tokenize (prompt, response) sequences (SFT demonstrations, responses to embed), right-padded.

    Returns int32 ``input_ids``, ``attention_mask`` and ``loss_mask`` [N, L]; ``loss_mask`` marks
    the response tokens (and eos), the ones whose next-token prediction is trained. ``max_length`` may be
    ``"auto"`` as in :func:`tokenize_pairs`. Truncation keeps the end, as for pairs, and is counted in the report.
    """
    prompts = _encode(tokenizer, [p for p, _ in examples], add_special_tokens=True)
    responses = _encode(tokenizer, [r for _, r in examples], add_special_tokens=False)
    eos = getattr(tokenizer, "eos_token_id", None)
    if add_eos and eos is not None:
        responses = [r if r and r[-1] == eos else [*r, eos] for r in responses]
    longest = max((len(p) + len(r) for p, r in zip(prompts, responses, strict=True)), default=0)
    max_length = resolve_max_length(longest, max_length, max_length_cap)
    report = TruncationReport(max_length=max_length, sequences=len(examples))
    seqs, loss_masks = [], []
    bos = getattr(tokenizer, "bos_token_id", None)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        kept_prompt, kept_response = fit_to_length(prompt, response, max_length, keep_bos_id=bos)
        report.longest = max(report.longest, len(prompt) + len(response))
        report.add(i, len(prompt) - len(kept_prompt), len(response) - len(kept_response))
        seqs.append(kept_prompt + kept_response)
        loss_masks.append([0] * len(kept_prompt) + [1] * len(kept_response))
    ids, mask = _place(seqs, max_length, _pad_id(tokenizer), "right")
    loss_mask, _ = _place(loss_masks, max_length, 0, "right")
    return {"input_ids": ids, "attention_mask": mask, "loss_mask": loss_mask}, report
