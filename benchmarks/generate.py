"""Generation throughput: our jitted KV-cache sampler against transformers' PyTorch `generate`, same weights.

Greedy decoding of `--new-tokens` tokens after left-padded prompts, EOS disabled so both produce every
token; tokens/s = batch * new tokens / seconds (median of repeats after a warm-up/compile run).

    python benchmarks/generate.py                 # 6-layer 512-wide Llama, batch 8, prompt 64, 64 new tokens
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from _common import left_padded_prompts, paired_median_seconds, save_results

from inform_jax.models import from_pretrained
from inform_jax.models.sampler import generate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scan-layers", action="store_true", help="scan over stacked layers (default: unrolled)")
    args = parser.parse_args()
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=args.width, intermediate_size=args.width * 8 // 3 // 32 * 32,
        num_hidden_layers=args.layers, num_attention_heads=args.width // 64, num_key_value_heads=args.width // 64,
    )  # fmt: skip
    torch.manual_seed(0)
    peer = transformers.LlamaForCausalLM(config).eval()
    ids, mask = left_padded_prompts(args.batch, args.prompt, config.vocab_size)
    with tempfile.TemporaryDirectory() as folder:
        peer.save_pretrained(folder)
        ours = from_pretrained(folder, scan_layers=args.scan_layers)
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)

    def run_ours():
        out = generate(ours, ids_j, mask_j, max_new_tokens=args.new_tokens, greedy=True, eos_id=None)
        out.tokens.block_until_ready()
        return out

    torch.set_num_threads(os.cpu_count())
    ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)

    def run_peer():
        with torch.inference_mode():
            return peer.generate(
                ids_t, attention_mask=mask_t, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                do_sample=False, pad_token_id=0,
            )  # fmt: skip

    ours_s, peer_s = paired_median_seconds(run_ours, run_peer, args.repeats)
    same = bool(np.array_equal(np.asarray(run_ours().tokens), run_peer()[:, args.prompt :].numpy()))
    tokens = args.batch * args.new_tokens
    result = {
        "model": f"llama {args.layers}x{args.width}",
        "batch": args.batch,
        "prompt": args.prompt,
        "new_tokens": args.new_tokens,
        "ours_tokens_per_s": tokens / ours_s,
        "torch_tokens_per_s": tokens / peer_s,
        "ratio_ours_over_torch": peer_s / ours_s,
        "greedy_tokens_identical": same,
        "device": jax.devices()[0].device_kind,
    }
    markdown = (
        "| workload | ours tokens/s | torch tokens/s | ratio |\n|---|---|---|---|\n"
        f"| greedy generate {result['model']} b{args.batch} p{args.prompt} n{args.new_tokens} | "
        f"{result['ours_tokens_per_s']:.0f} | {result['torch_tokens_per_s']:.0f} | "
        f"{result['ratio_ours_over_torch']:.2f} |\n"
    )
    save_results("generate", result, markdown)


if __name__ == "__main__":
    main()
