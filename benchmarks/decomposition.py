"""Reward decomposition scoring: every pair's two responses under its own prompt and N other prompts.

Ours: :func:`inform_jax.eval.decomposition.decompose` end to end (sequences spliced on the device in one jitted
pass per batch, then the prompt-free gap); the peer: the same (prompt, response) sequences spliced in NumPy and
scored by transformers' `LlamaForSequenceClassification` in batches of the same size under `inference_mode`
(the scoring alone, no gap estimate). Same sizes, random weights; pairs/s = pairs / seconds (median of repeats
after a warm-up run).

    python benchmarks/decomposition.py       # 4-layer 512-wide Llama, 64 pairs x 4 prompts, length 64
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np
from _common import paired_median_seconds, save_results
from flax import nnx

from inform_jax.eval.decomposition import PairTokens, decompose, other_prompts
from inform_jax.models import DecoderConfig
from inform_jax.models.reward_model import HeadConfig, RewardModel


def make_pairs(pairs: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Right-padded [prompt | response | pad] rows: prompts of 4..length/2 tokens, responses of 2..length/2."""
    rng = np.random.default_rng(seed)
    plen = rng.integers(4, length // 2 + 1, pairs)
    out = {"prompt_lengths": np.stack([plen, plen], 1)}
    for side in ("chosen", "rejected"):
        rlen = rng.integers(2, length // 2 + 1, pairs)
        ids = rng.integers(3, vocab, (pairs, length))
        ids[:, : length // 2] = out.get("chosen_input_ids", ids)[:, : length // 2]  # the same prompt on both sides
        mask = (np.arange(length)[None] < (plen + rlen)[:, None]).astype(np.int32)
        out[f"{side}_input_ids"], out[f"{side}_attention_mask"] = np.where(mask > 0, ids, 0), mask
    return out


def spliced_numpy(arrays: dict, prompts: np.ndarray, responses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The peer's splicing: for each (prompt index, response index) a right-padded row [prompt | response]."""
    m, length = arrays["chosen_input_ids"].shape
    plen = arrays["prompt_lengths"][:, 0]
    ids, mask = np.zeros((len(prompts), length), np.int64), np.zeros((len(prompts), length), np.int64)
    for row, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        side, i = ("chosen", r) if r < m else ("rejected", r - m)
        start = arrays["prompt_lengths"][i, 0 if side == "chosen" else 1]
        response = arrays[f"{side}_input_ids"][i, start : arrays[f"{side}_attention_mask"][i].sum()]
        kept = min(plen[p], length - len(response))
        seq = np.concatenate([arrays["chosen_input_ids"][p, plen[p] - kept : plen[p]], response])
        ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
    return ids, mask


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--prompts-per-pair", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256, help="sequences per scoring batch (both sides)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    import transformers

    heads = max(1, args.width // 64)
    config = DecoderConfig(vocab_size=args.vocab, hidden_size=args.width, intermediate_size=2 * args.width,
                           num_layers=args.layers, num_heads=heads, num_kv_heads=heads)  # fmt: skip
    ours = RewardModel.create(config, HeadConfig(kind="scalar"), rngs=nnx.Rngs(0))
    arrays = make_pairs(args.pairs, args.length, args.vocab)
    tokens = PairTokens(arrays)
    n = args.prompts_per_pair

    def run_ours():
        return decompose(ours, tokens, num_prompts=n, batch_size=args.batch)

    hf = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.width, intermediate_size=2 * args.width, num_hidden_layers=args.layers,
        num_attention_heads=heads, num_key_value_heads=heads, num_labels=1, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    peer = transformers.LlamaForSequenceClassification(hf).eval()
    pairs = np.arange(args.pairs)
    prompts = np.concatenate([pairs[:, None], other_prompts(args.pairs, n, 0)], 1).reshape(-1)
    responses = np.repeat(pairs, n + 1)
    ids, mask = spliced_numpy(
        arrays, np.concatenate([prompts, prompts]), np.concatenate([responses, responses + args.pairs])
    )

    def run_peer():
        with torch.inference_mode():
            return [peer(input_ids=torch.from_numpy(ids[s : s + args.batch]),
                         attention_mask=torch.from_numpy(mask[s : s + args.batch])).logits
                    for s in range(0, len(ids), args.batch)]  # fmt: skip

    ours_s, peer_s = paired_median_seconds(run_ours, run_peer, args.repeats)
    result = {
        "model": f"llama {args.layers}x{args.width}",
        "pairs": args.pairs,
        "prompts_per_pair": n,
        "length": args.length,
        "sequences": int(len(ids)),
        "ours_pairs_per_s": args.pairs / ours_s,
        "torch_pairs_per_s": args.pairs / peer_s,
        "ratio_ours_over_torch": peer_s / ours_s,
        "device": jax.devices()[0].device_kind,
    }
    markdown = (
        "| workload | ours pairs/s | torch pairs/s | ratio |\n|---|---|---|---|\n"
        f"| decomposition scoring {result['model']}, {args.pairs} pairs x {n} prompts, t{args.length} | "
        f"{result['ours_pairs_per_s']:.1f} | {result['torch_pairs_per_s']:.1f} | "
        f"{result['ratio_ours_over_torch']:.2f} |\n"
    )
    save_results("decomposition", result, markdown)


if __name__ == "__main__":
    main()
