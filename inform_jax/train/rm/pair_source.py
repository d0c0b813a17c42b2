"""Where the reward-model trainer's batches come from: pairs tokenized up front, or tokenized per process per step.

Both sources give the trainer the same things, N pairs (after leaving out the pairs identical after truncation):

* ``num_pairs`` N; ``max_length`` T (the longest a row may be); ``padding_side``;
* ``lengths`` [N, 2] int32: real tokens of the chosen / rejected sequence (the batch's bucket comes from them);
* ``response_lengths`` [N, 2] int32: response tokens kept in each sequence;
* ``rows(indices, length, mine=None)``: for ``indices`` [B] or [K, B] (WARM's members), ``chosen_input_ids``,
  ``chosen_attention_mask``, ``rejected_input_ids``, ``rejected_attention_mask`` [..., length] and
  ``response_lengths`` [..., 2], and ``margins`` [...] float32 when the pairs carry them (``loss.margin: column``,
  TRL's per-pair margin). ``mine`` (bool, the shape of ``indices``) marks the positions this process's
  devices hold; :class:`ProcessPairs` tokenizes only those (the other rows are padding that no device reads).

:class:`ArrayPairs` wraps the arrays of ``prepare_pairs`` (every process tokenized the whole file).
:class:`ProcessPairs` (``data.tokenize=per_process``) runs one metadata pass split over the processes: process p
tokenizes the pairs p, p + P, p + 2P, ... and the per-pair lengths, truncation counts and left-out flags are
all-gathered, so every process knows N, the global order and the truncation report of one process; then each
step tokenizes only the rows of the global batch that this process's devices hold (no cache: a pair is tokenized
again each time it falls to this process, which costs little next to a step and keeps host memory to one batch).
Every process still holds the file's text (the loaded pair list).
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.experimental import multihost_utils

from inform_jax.data.buckets import cut, padding_side
from inform_jax.data.tokenize import TruncationReport, _pad_id, _row_name, all_identical_error, tokenize_pairs
from inform_jax.train.rm.data import pair_margins

SEQUENCE_KEYS = ("chosen_input_ids", "chosen_attention_mask", "rejected_input_ids", "rejected_attention_mask")
ARRAY_KEYS = (*SEQUENCE_KEYS, "response_lengths")
OPTIONAL_KEYS = ("margins",)  # [N] float32: per-pair margins (loss.margin: column)


class ArrayPairs:
    """Tokenized pairs held whole: ``arrays`` as ``prepare_pairs`` returns them ([N, T] sequences, padded on one
    side, and ``response_lengths`` [N, 2])."""

    def __init__(self, arrays: dict[str, np.ndarray], name: str = "train"):
        missing = [k for k in ARRAY_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"{name} arrays lack {missing}")
        self.arrays = {k: np.asarray(arrays[k]) for k in (*ARRAY_KEYS, *OPTIONAL_KEYS) if k in arrays}
        self.has_margins = "margins" in self.arrays
        self.transform = None if arrays.get("pair_transform") is None else str(np.asarray(arrays["pair_transform"]))
        self.num_pairs, self.max_length = self.arrays["chosen_input_ids"].shape
        masks = [self.arrays["chosen_attention_mask"], self.arrays["rejected_attention_mask"]]
        self.lengths = np.stack([m.sum(-1) for m in masks], axis=-1).astype(np.int32)
        self.response_lengths = self.arrays["response_lengths"]
        sides = {padding_side(m) for m in masks}
        self.padding_side = sides.pop() if len(sides) == 1 else None  # None: mixed, or padding inside rows

    def rows(self, indices: np.ndarray, length: int, mine: np.ndarray | None = None) -> dict[str, np.ndarray]:
        batch = {k: v[indices] for k, v in self.arrays.items()}
        for key in SEQUENCE_KEYS:  # the columns beyond the batch's bucket hold only padding
            batch[key] = cut(batch[key], length, self.padding_side or "right")
        return batch


class ProcessPairs:
    """Pairs tokenized where they are used (``data.tokenize=per_process``). ``pairs``: the loaded (and transformed)
    pair list, the same on every process; ``max_length``: data.max_length (an int: each row then depends only on
    its pair); ``margins``: carry each pair's ``extra["margin"]`` (pairs loaded with ``margins=True``). The
    constructor's metadata pass is collective (every process must build one); ``rows`` is not.

    ``report``: the TruncationReport of tokenizing all pairs at once; ``kept`` [N]: the index in ``pairs`` of each
    kept pair; ``rows_tokenized`` / ``rows_requested``: batch rows tokenized here / rows of the batches asked for.
    """

    padding_side = "right"

    def __init__(
        self, pairs: list, tokenizer, max_length: int, *, transform: str | None = None, log=print, margins: bool = False
    ):
        self.pairs, self.tokenizer, self.max_length, self.transform = pairs, tokenizer, int(max_length), transform
        count, index = jax.process_count(), jax.process_index()
        stripe = pairs[index::count]
        arrays, report = tokenize_pairs(stripe, tokenizer, self.max_length, keep_identical=True, warn=False)
        identical = np.zeros(len(stripe), np.int32)
        identical[report.identical_rows] = 1
        lengths = np.stack([arrays["chosen_attention_mask"].sum(1), arrays["rejected_attention_mask"].sum(1)], 1)
        columns = [report.row_lengths, report.row_cuts.reshape(-1, 4), arrays["prompt_lengths"], lengths,
                   identical[:, None]]  # fmt: skip
        meta = np.zeros((math.ceil(len(pairs) / count), 11), np.int32)  # equal shapes on every process
        meta[: len(stripe)] = np.concatenate([np.asarray(c, np.int32).reshape(len(stripe), -1) for c in columns], 1)
        gathered = np.asarray(multihost_utils.process_allgather(meta))  # [P, S, 11]: row p + s * P at [p, s]
        meta = gathered.transpose(1, 0, 2).reshape(-1, 11)[: len(pairs)]
        row_lengths, row_cuts, prompt, lengths, identical = np.split(meta, [2, 6, 8, 10], axis=1)
        left_out = [int(i) for i in np.flatnonzero(identical[:, 0])]
        self.report = TruncationReport.from_rows(
            self.max_length,
            row_cuts.reshape(-1, 2, 2),
            row_lengths,
            left_out,
            [_row_name(pairs[i], i) for i in left_out],
        )
        log(str(self.report))
        if len(left_out) == len(pairs):
            raise all_identical_error(pairs, self.max_length)
        self.kept = np.flatnonzero(identical[:, 0] == 0)
        self.num_pairs = len(self.kept)
        self.lengths = lengths[self.kept]
        self.response_lengths = (lengths - prompt)[self.kept]
        self.has_margins = margins
        self.margins = pair_margins([pairs[i] for i in self.kept]) if margins else None
        self.pad_id = _pad_id(tokenizer)
        self.rows_tokenized = self.rows_requested = 0

    def rows(self, indices: np.ndarray, length: int, mine: np.ndarray | None = None) -> dict[str, np.ndarray]:
        indices = np.asarray(indices)
        mine = np.ones(indices.shape, bool) if mine is None else mine
        batch = {k: np.full((*indices.shape, length), self.pad_id if "ids" in k else 0, np.int32)
                 for k in SEQUENCE_KEYS}  # fmt: skip
        wanted = indices[mine]
        if wanted.size:
            arrays, _ = tokenize_pairs([self.pairs[i] for i in self.kept[wanted]], self.tokenizer, self.max_length,
                                       warn=False)  # fmt: skip
            for key in SEQUENCE_KEYS:
                batch[key][mine] = arrays[key][:, :length]
        batch["response_lengths"] = self.response_lengths[indices]
        if self.margins is not None:
            batch["margins"] = self.margins[indices]
        self.rows_tokenized += int(wanted.size)
        self.rows_requested += int(indices.size)
        return batch
