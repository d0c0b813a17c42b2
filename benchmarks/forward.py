"""Forward-pass throughput: our jitted Flax decoder against transformers' PyTorch model, same config.

Both run in this process on the same random weights (our model is loaded from the PyTorch model's
saved checkpoint). Prints tokens/s for both and the ratio, and writes JSON + markdown to
benchmarks/results/. On a GPU it also reports bf16 tokens/s and MFU for a ~1B config.

    python benchmarks/forward.py                       # 12-layer 768-wide Llama, batch 8, length 512
    python benchmarks/forward.py --layers 2 --batch 2 --length 128   # quick
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from _common import median_seconds, save_results
from flax import nnx

from inform_jax.models import from_pretrained


def llama_config(layers: int, width: int, vocab: int = 32000):
    import transformers

    return transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=int(width * 8 / 3) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        num_key_value_heads=width // 64,
        max_position_embeddings=4096,
    )


def forward_flops(config, tokens: int, length: int) -> float:
    """Approximate forward FLOPs: 2 * parameters * tokens plus attention's 4 * L * T * D per token."""
    d, f, layers, v = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    params = layers * (4 * d * d + 3 * d * f) + d * v
    return 2 * params * tokens + 4 * layers * length * d * tokens


def bench(layers, width, batch, length, repeats, torch_peer=True, dtype="float32"):
    import torch
    import transformers

    hf_config = llama_config(layers, width)
    torch.manual_seed(0)
    peer = transformers.LlamaForCausalLM(hf_config).eval()
    ids_np = np.random.default_rng(0).integers(0, hf_config.vocab_size, (batch, length))
    with tempfile.TemporaryDirectory() as folder:
        peer.save_pretrained(folder)
        jdtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        ours = from_pretrained(folder, dtype=jdtype, scan_layers=True)
    ids, mask = jnp.asarray(ids_np), jnp.ones((batch, length), jnp.int32)
    forward = nnx.jit(lambda m, i, a: m(i, a).logits)
    tokens = batch * length
    ours_s = median_seconds(lambda: forward(ours, ids, mask).block_until_ready(), repeats)
    result = {
        "model": f"llama {layers}x{width}",
        "batch": batch,
        "length": length,
        "dtype": dtype,
        "ours_tokens_per_s": tokens / ours_s,
        "device": jax.devices()[0].device_kind,
    }
    if torch_peer:
        torch.set_num_threads(os.cpu_count())
        ids_t = torch.tensor(ids_np)
        if dtype == "bfloat16":
            peer = peer.to(torch.bfloat16)

        def run_peer():
            with torch.inference_mode():
                peer(ids_t, attention_mask=torch.ones_like(ids_t))

        peer_s = median_seconds(run_peer, repeats)
        result["torch_tokens_per_s"] = tokens / peer_s
        result["ratio_ours_over_torch"] = peer_s / ours_s
    if jax.devices()[0].platform == "gpu":
        peak = {"H100": 989e12, "H200": 989e12}.get(next((k for k in ("H100", "H200") if k in result["device"]), ""))
        if peak:
            result["mfu"] = forward_flops(hf_config, tokens, length) / ours_s / peak
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer (e.g. large GPU configs)")
    args = parser.parse_args()
    result = bench(args.layers, args.width, args.batch, args.length, args.repeats, not args.no_torch, args.dtype)
    markdown = (
        "| workload | ours tokens/s | torch tokens/s | ratio |\n|---|---|---|---|\n"
        f"| forward {result['model']} b{args.batch} t{args.length} {args.dtype} | "
        f"{result['ours_tokens_per_s']:.0f} | {result.get('torch_tokens_per_s', float('nan')):.0f} | "
        f"{result.get('ratio_ours_over_torch', float('nan')):.2f} |\n"
    )
    save_results("forward", result, markdown)


if __name__ == "__main__":
    main()
