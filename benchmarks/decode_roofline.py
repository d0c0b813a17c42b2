"""Decode throughput of our KV-cache sampler against the memory-bandwidth roofline, with transformers' `generate`
on the same device and weights as the peer. Meant for a GPU or TPU; `--tiny` runs it anywhere.

A greedy decode step reads every weight it uses (all but the input embedding table, of which it gathers B rows;
a tied table is read whole by the LM head) and the KV cache, and does ~2 FLOP per weight per row, so at small
batch it is bound by memory bandwidth. The roofline step time is those bytes over the device's bandwidth,
measured here by streaming a large array (a sum: read only; an add: read and write; the faster of the two is the
ceiling). The reported fraction is roofline time / measured step time. Our cache is preallocated at prompt + new
tokens slots and attention reads all of them every step (static shapes), so bytes are counted two ways: what our
step reads (the whole cache) and the least any sampler must read (each row's filled slots).

The step time is a difference of two `generate` calls, (t(N new tokens) - t(1)) / (N - 1), each the median of
repeats after a compile run, so prefill and per-call overhead cancel.

    python benchmarks/decode_roofline.py                              # Llama-3.2-1B shape, bf16, batch 1 8 64
    python benchmarks/decode_roofline.py --preset llama-3-8b --batch 1 16
    python benchmarks/decode_roofline.py --tiny                       # a 2-layer model: checks the script runs
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import left_padded_prompts, median_seconds, paired_median_seconds, save_results
from flax import nnx

from inform_jax.models import CausalLM, DecoderConfig, hf_state_dict
from inform_jax.models.presets import preset_config
from inform_jax.models.sampler import generate, pads_single_row

# Vendor datasheet HBM bandwidth (GB/s), for reference beside the measured ceiling.
DATASHEET_GBS = {"NVIDIA H200": 4800.0, "NVIDIA H100 80GB HBM3": 3350.0, "NVIDIA A100-SXM4-80GB": 2039.0}


def stream_bandwidth(gigabytes: float, repeats: int) -> dict:
    """Bytes/s of a jitted sum (reads the array) and of x + 1 (reads and writes it) over `gigabytes` of float32."""
    x = jnp.ones((int(gigabytes * 2**30) // 4,), jnp.float32)
    read = jax.jit(jnp.sum)
    write = jax.jit(lambda x: x + 1)
    read_s = median_seconds(lambda: read(x).block_until_ready(), repeats)
    copy_s = median_seconds(lambda: write(x).block_until_ready(), repeats)
    return {"read_gbs": x.nbytes / read_s / 1e9, "copy_gbs": 2 * x.nbytes / copy_s / 1e9, "probe_gb": x.nbytes / 1e9}


def weight_bytes_per_step(model: CausalLM, batch: int) -> int:
    """Weight bytes a decode step reads: every parameter, except that an untied input embedding table is only
    gathered (B rows) rather than read whole."""
    total = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    if model.lm_head is not None:
        table = model.embed.embedding[...]
        total += batch * table.shape[1] * table.dtype.itemsize - table.nbytes
    return total


def kv_bytes_per_step(config: DecoderConfig, batch: int, slots: float) -> float:
    """Bytes of K and V over every layer for `slots` cache slots per row (read once per step)."""
    itemsize = jnp.dtype(config.dtype).itemsize
    return 2.0 * config.num_layers * batch * config.num_kv_heads * config.resolved_head_dim * slots * itemsize


def measure_batch(
    model: CausalLM, batch: int, prompt: int, new_tokens: int, repeats: int, bandwidth: float, pad_single_row=None
) -> dict:
    """Prefill and decode-step time of `generate` at one batch size, and the roofline fractions."""
    config = model.config
    ids, mask = (jnp.asarray(a) for a in left_padded_prompts(batch, prompt, config.vocab_size))

    def timed(n):
        def run():
            out = generate(model, ids, mask, max_new_tokens=n, greedy=True, eos_id=None, pad_single_row=pad_single_row)
            out.tokens.block_until_ready()

        return median_seconds(run, repeats)

    first_s, total_s = timed(1), timed(new_tokens)
    step_s = (total_s - first_s) / (new_tokens - 1)
    weights = weight_bytes_per_step(model, batch)
    # Our step attends over every preallocated slot; a minimal sampler reads each row's filled slots, on average
    # its prompt tokens plus half the new ones over the decode steps.
    ours_bytes = weights + kv_bytes_per_step(config, batch, prompt + new_tokens)
    least_bytes = weights + kv_bytes_per_step(config, batch, float(np.asarray(mask).sum(1).mean()) + new_tokens / 2)
    return {
        "batch": batch,
        "single_row_padded": pads_single_row(batch, pad_single_row),
        "prompt": prompt,
        "new_tokens": new_tokens,
        "prefill_and_first_token_s": first_s,
        "generate_s": total_s,
        "decode_step_ms": 1e3 * step_s,
        "decode_tokens_per_s": batch / step_s,
        "end_to_end_tokens_per_s": batch * new_tokens / total_s,
        "weight_bytes_per_step": weights,
        "bytes_per_step_ours": ours_bytes,
        "bytes_per_step_least": least_bytes,
        "achieved_gbs": ours_bytes / step_s / 1e9,
        "roofline_fraction": ours_bytes / bandwidth / step_s,
        "roofline_fraction_least_bytes": least_bytes / bandwidth / step_s,
    }


def torch_peer(model: CausalLM):
    """transformers' model with our weights, on CUDA when torch has it (else CPU), in our parameter dtype."""
    import torch
    import transformers

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[jnp.dtype(model.config.param_dtype).name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tensors = {}
    for name, value in hf_state_dict(model).items():
        value = np.array(value)  # a writable copy: torch refuses to wrap read-only buffers
        host = torch.from_numpy(value.view(np.uint16)).view(torch.bfloat16) if value.dtype.name == "bfloat16" else (
            torch.from_numpy(value))  # fmt: skip
        tensors[name] = host.to(dtype)
    with torch.device(device):
        peer = transformers.AutoModelForCausalLM.from_config(model.config.to_hf(), dtype=dtype).eval()
    missing, unexpected = peer.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"weights did not map onto transformers' model: missing {missing}, unexpected {unexpected}")
    if tied:
        peer.tie_weights()
    return peer, device


def compare_with_peer(model: CausalLM, batch: int, prompt: int, new_tokens: int, repeats: int) -> dict:
    """Tokens/s of our `generate` and of transformers' `generate` (greedy, N tokens), alternated; greedy agreement."""
    import torch

    peer, device = torch_peer(model)
    ids, mask = left_padded_prompts(batch, prompt, model.config.vocab_size)
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
    ids_t, mask_t = torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    def run_ours():
        return np.asarray(generate(model, ids_j, mask_j, max_new_tokens=new_tokens, greedy=True, eos_id=None).tokens)

    def run_peer():
        with torch.inference_mode():
            out = peer.generate(
                ids_t, attention_mask=mask_t, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                pad_token_id=0,
            )  # fmt: skip
        return out[:, prompt:].cpu().numpy()

    ours_s, peer_s = paired_median_seconds(run_ours, run_peer, repeats)
    ours_tokens, peer_tokens = run_ours(), run_peer()
    # Before the first disagreement both decode the same sequence; after it they continue different prefixes.
    agree = np.cumprod(ours_tokens == peer_tokens, axis=1)
    return {
        "batch": batch,
        "torch_device": device,
        "ours_tokens_per_s": batch * new_tokens / ours_s,
        "torch_tokens_per_s": batch * new_tokens / peer_s,
        "ratio_ours_over_torch": peer_s / ours_s,
        "rows_identical": int(agree[:, -1].sum()),
        "mean_tokens_before_first_difference": float(agree.sum(1).mean()),
    }


def build_model(args) -> CausalLM:
    dtype = jnp.dtype(args.dtype)
    if args.tiny:
        config = DecoderConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                               num_kv_heads=2, tie_word_embeddings=True, dtype=dtype, param_dtype=dtype)  # fmt: skip
    else:
        config = preset_config(args.preset, dtype=dtype, param_dtype=dtype)
    return CausalLM(config, rngs=nnx.Rngs(0))


def markdown(result: dict) -> str:
    def of_datasheet(row):
        peak = result.get("datasheet_gbs")
        return f"{row['achieved_gbs'] / peak:.1%}" if peak else "n/a"

    lines = [
        f"Decode roofline, {result['model']} {result['dtype']} on {result['device']}: measured stream bandwidth "
        f"{result['bandwidth_gbs']:.0f} GB/s (read {result['stream']['read_gbs']:.0f}, copy "
        f"{result['stream']['copy_gbs']:.0f}; datasheet {result.get('datasheet_gbs') or 'n/a'}).\n",
        "| batch | prompt + new | decode step ms | decode tokens/s | GB/s | roofline (our bytes) | roofline (least) "
        "| of datasheet GB/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        batch = f"{r['batch']}" + (" (run as 2)" if r.get("single_row_padded") else "")
        lines.append(
            f"| {batch} | {r['prompt']} + {r['new_tokens']} | {r['decode_step_ms']:.3f} | "
            f"{r['decode_tokens_per_s']:.0f} | {r['achieved_gbs']:.0f} | {r['roofline_fraction']:.1%} | "
            f"{r['roofline_fraction_least_bytes']:.1%} | {of_datasheet(r)} |"
        )
    for p in result.get("peer", []):
        lines.append(
            f"\nPeer, batch {p['batch']}: ours {p['ours_tokens_per_s']:.0f} tokens/s, transformers generate on "
            f"{p['torch_device']} {p['torch_tokens_per_s']:.0f} tokens/s, ratio {p['ratio_ours_over_torch']:.2f}; "
            f"identical greedy rows {p['rows_identical']}/{p['batch']}, mean tokens before the first difference "
            f"{p['mean_tokens_before_first_difference']:.1f}/{result['rows'][0]['new_tokens']}."
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="llama-3.2-1b")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer 64-wide model instead of the preset")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probe-gb", type=float, default=None, help="stream probe size (default 4 GB, CPU 0.25)")
    parser.add_argument("--peer-batch", type=int, nargs="*", default=[8], help="batches to run transformers at")
    parser.add_argument("--no-single-row-pad", action="store_true", help="batch 1 as is, also on GPU")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new batch size after this long")
    args = parser.parse_args()
    start = time.perf_counter()
    device = jax.devices()[0]
    probe_gb = args.probe_gb or (0.25 if device.platform == "cpu" else 4.0)
    stream = stream_bandwidth(probe_gb, args.repeats)
    bandwidth = 1e9 * max(stream["read_gbs"], stream["copy_gbs"])
    model = build_model(args)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    result = {
        "model": "tiny 2x64" if args.tiny else args.preset,
        "dtype": args.dtype,
        "parameters": params,
        "device": device.device_kind,
        "stream": stream,
        "bandwidth_gbs": bandwidth / 1e9,
        "datasheet_gbs": DATASHEET_GBS.get(device.device_kind),
        "rows": [],
        "peer": [],
        "command": "python benchmarks/decode_roofline.py " + " ".join(sys.argv[1:]),
    }
    pad = False if args.no_single_row_pad else None
    parts = (
        ["decode_roofline"] + ([] if args.tiny else [args.preset]) + ([] if args.dtype == "bfloat16" else [args.dtype])
    )
    name = "-".join(parts + (["unpadded"] if args.no_single_row_pad else []))
    for batch in args.batch:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            result["skipped_batches_over_budget"] = result.get("skipped_batches_over_budget", []) + [batch]
            continue
        result["rows"].append(measure_batch(model, batch, args.prompt, args.new_tokens, args.repeats, bandwidth, pad))
        if batch in args.peer_batch:
            result["peer"].append(compare_with_peer(model, batch, args.prompt, args.new_tokens, args.repeats))
        result["elapsed_s"] = time.perf_counter() - start
        save_results(name, result, markdown(result))  # after every batch size: a cut-off run keeps what it measured


if __name__ == "__main__":
    main()
