"""Responses of a policy checkpoint to a list of prompts, written as a (prompt, response) file.

This is how SFT and RLHF generations for detection (``inform-jax detect``) and win rates (``inform-jax
win-rate``) are made from local checkpoints. Prompts are left-padded into fixed-size batches (the last batch is
filled by repeating its last prompt, and the copies are cut) so that one compiled sampler serves every batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def generate_responses(
    policy: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    max_prompt_length: int | str = "auto",
    batch_size: int = 16,
    greedy: bool = True,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[str]:
    """Decoded responses [len(prompts)] of ``policy`` (a CausalLM) to ``prompts``; the eos token and what
    follows it are not part of a response."""
    from inform_jax.data.tokenize import tokenize_prompts
    from inform_jax.models.batched import by_length, map_batches
    from inform_jax.models.sampler import generate
    from inform_jax.models.sharding import model_mesh

    if not prompts:
        raise ValueError("no prompts to answer")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
    tokens, report = tokenize_prompts(list(prompts), tokenizer, max_prompt_length)
    if report.sequences_truncated:
        print(report)
    mesh = model_mesh(policy)  # first: it may place the policy over every device
    key = jax.random.key(seed)

    def sample(batch, _):  # called once per batch, in order: each batch draws the next key
        nonlocal key
        key, sub = jax.random.split(key)
        out = generate(
            policy, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens, key=sub,
            greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id or 0,
        )  # fmt: skip
        return out.tokens, out.mask

    rows = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    # prompts longest first, each batch cut to its longest prompt's bucket (left padding)
    return decode_rows(tokenizer, *map_batches(sample, rows, batch_size=batch_size, mesh=mesh, **by_length(rows)))


def decode_rows(tokenizer: Any, ids, mask) -> list[str]:
    """Texts [B] of token rows ids / mask [B, T] (padding on either side; special tokens, eos included,
    dropped)."""
    ids, mask = np.asarray(ids), np.asarray(mask)
    return [tokenizer.decode([int(t) for t, m in zip(row, keep, strict=True) if m], skip_special_tokens=True)
            for row, keep in zip(ids, mask, strict=True)]  # fmt: skip


def write_responses(path: str, prompts: Sequence[str], responses: Sequence[str], **columns: Sequence) -> str:
    """Write a JSONL file of {"prompt", "response", **columns} rows (what ``load_responses`` reads)."""
    if len(prompts) != len(responses) or any(len(v) != len(prompts) for v in columns.values()):
        raise ValueError("prompts, responses and every extra column need the same length")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            row = {"prompt": prompt, "response": response, **{k: v[i] for k, v in columns.items()}}
            f.write(json.dumps(row) + "\n")
    return path


def generate_file(
    policy_dir: str,
    prompts_path: str,
    out_path: str,
    *,
    tokenizer_dir: str | None = None,
    column: str = "prompt",
    limit: int | None = None,
    dtype: str = "float32",
    **sampling: Any,
) -> str:
    """Answer the prompts of ``prompts_path`` (a prompt file, as PPO reads) with the checkpoint at ``policy_dir``
    and write ``out_path`` (JSONL prompt / response). ``limit``: the first N prompts only."""
    from inform_jax.data.preference import load_prompts
    from inform_jax.data.tokenizer import load_tokenizer
    from inform_jax.models import from_pretrained
    from inform_jax.models.dtypes import DTYPES

    tokenizer = load_tokenizer(tokenizer_dir or policy_dir)
    prompts, report = load_prompts(prompts_path, column, tokenizer=tokenizer)
    print(report)
    prompts = prompts[:limit] if limit else prompts
    max_length = sampling.pop("max_prompt_length", "auto")
    sampling["max_prompt_length"] = max_length if max_length == "auto" else int(max_length)
    policy = from_pretrained(policy_dir, dtype=DTYPES[dtype])
    responses = generate_responses(policy, tokenizer, prompts, **sampling)
    if jax.process_index() == 0:  # every host generated every response; one writes them
        write_responses(out_path, prompts, responses)
    print(f"{len(prompts)} responses of {policy_dir} written to {out_path}")
    return out_path
