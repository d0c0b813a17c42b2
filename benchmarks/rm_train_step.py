"""Reward-model training-step throughput: our jitted train step (standard RM and InfoRM) against PyTorch.

All in this process, on the same model config and the same random batch of preference pairs:

- ours, method "standard": the jitted, buffer-donating step exactly as `RewardModelTrainer` builds it
  (Bradley-Terry loss, global-norm clip 1.0, AdamW), on a one-device mesh;
- ours, method "inform" (InfoRM, latent 128): same model and batch; its overhead over standard in %;
- the PyTorch peer: `transformers.LlamaForSequenceClassification` (num_labels=1, random init, same sizes),
  one concatenated [2B, T] forward, `-logsigmoid(r_chosen - r_rejected).mean()`, backward,
  `clip_grad_norm_(1.0)`, `torch.optim.AdamW(lr=1e-5, betas=(0.9, 0.95), weight_decay=0)` (fused on CUDA);
- the TRL peer (where trl installs): `trl.RewardTrainer` on the same model, batch, AdamW and clipping, each
  step timed by a callback (TRL's per-step bookkeeping, reward statistics and token counts, included).

Tokens/s count chosen + rejected tokens (2 * batch * length per step); each time is the median over
`--repeats` steps after one warm-up (compilation) step. Our timed call includes `trainer.train_batch`
(gathering the batch and putting it on the device), as in `RewardModelTrainer.fit`. On a GPU it also
reports the MFU of the InfoRM step against a bf16 peak of 989 TFLOP/s (H100 / H200). Prints a JSON dict
and writes JSON + markdown to benchmarks/results/.

    python benchmarks/rm_train_step.py                  # 4-layer 512-wide Llama, 8 pairs, length 256
    python benchmarks/rm_train_step.py --layers 1 --width 64 --batch 2 --length 32 --repeats 2   # quick
    python benchmarks/rm_train_step.py --dtype bfloat16 --layers 16 --width 2048 --no-torch     # GPU
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import median_seconds, save_results

from inform_jax.models import make_mesh
from inform_jax.train.config import config_from_dict
from inform_jax.train.rm.trainer import RewardModelTrainer

VOCAB = 32000
PAD = 0  # never drawn as a token, so both models pool the last position
LATENT = 128
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}


def model_sizes(
    layers: int,
    width: int,
    *,
    heads: int | None = None,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    vocab: int = VOCAB,
) -> dict:
    """Llama sizes. Defaults: 64-wide heads (kv heads = heads), MLP ~8/3 * width rounded up to a multiple of 32."""
    heads = heads or max(1, width // 64)
    return dict(
        layers=layers,
        width=width,
        heads=heads,
        kv_heads=kv_heads or heads,
        intermediate=intermediate or math.ceil(width * 8 / 3 / 32) * 32,
        vocab=vocab,
    )


def make_pairs(batch: int, length: int, seed: int = 0, vocab: int = VOCAB) -> dict[str, np.ndarray]:
    """Random token pairs [batch, length] (ids in [1, vocab), masks all ones) and response lengths."""
    rng = np.random.default_rng(seed)
    ones = np.ones((batch, length), np.int32)
    return {
        "chosen_input_ids": rng.integers(1, vocab, (batch, length)).astype(np.int32),
        "chosen_attention_mask": ones,
        "rejected_input_ids": rng.integers(1, vocab, (batch, length)).astype(np.int32),
        "rejected_attention_mask": ones.copy(),
        "response_lengths": rng.integers(1, length + 1, (batch, 2)).astype(np.int32),
    }


def trainer_config(method: str, sizes: dict, batch: int, dtype: str, output_dir: str, *, remat=False, attention="auto"):
    """The trainer's config for `sizes`; `remat` is model.remat (False, "full" or "dots"), `attention`
    model.attention_impl."""
    return config_from_dict(
        {
            "method": method,
            "model": {
                "config": {
                    "model_type": "llama",
                    "vocab_size": sizes["vocab"],
                    "hidden_size": sizes["width"],
                    "intermediate_size": sizes["intermediate"],
                    "num_layers": sizes["layers"],
                    "num_heads": sizes["heads"],
                    "num_kv_heads": sizes["kv_heads"],
                    "max_position_embeddings": 4096,
                    "pad_token_id": PAD,
                },
                "dtype": dtype,
                "param_dtype": "float32",
                "scan_layers": True,
                "remat": remat,
                "attention_impl": attention,
            },
            "head": {"latent_dim": LATENT},
            "optim": {"lr": 1e-5, "b1": 0.9, "b2": 0.95, "weight_decay": 0.0, "grad_clip": 1.0},
            "train": {
                "batch_size": batch,
                "max_steps": 100_000,
                "seed": 0,
                "output_dir": output_dir,
                "progress": False,
            },
        }
    )


def matmul_params(params) -> tuple[int, int]:
    """(all parameters, parameters outside the token embedding: the ones that cost 2 FLOPs per token)."""
    total = embed = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        size = int(np.prod(leaf.shape))
        total += size
        if "embed" in jax.tree_util.keystr(path).lower():
            embed += size
    return total, total - embed


@contextlib.contextmanager
def our_step(method: str, sizes: dict, pairs: dict, dtype: str, *, remat=False, attention="auto"):
    """Yield (trainer, run): run() takes one train step of `RewardModelTrainer` (one device) as `fit` does, and
    waits for it."""
    batch = len(pairs["chosen_input_ids"])
    with tempfile.TemporaryDirectory() as folder:
        config = trainer_config(method, sizes, batch, dtype, folder, remat=remat, attention=attention)
        trainer = RewardModelTrainer(config, pairs, mesh=make_mesh(devices=jax.devices()[:1]))
        step = [0]

        def run():
            with jax.set_mesh(trainer.mesh):
                trainer.params, trainer.opt_state, metrics = trainer._train_step(
                    trainer.params, trainer.opt_state, trainer.train_batch(step[0]), jnp.asarray(step[0], jnp.int32)
                )
            jax.block_until_ready(metrics)
            step[0] += 1
            return metrics

        try:
            yield trainer, run
        finally:
            trainer.checkpoints.close()


def bench_ours(
    method: str, sizes: dict, pairs: dict, dtype: str, repeats: int, *, remat=False, after=None, attention="auto"
) -> dict:
    """Median seconds of one train step of `RewardModelTrainer` (one device) and the parameter counts.

    remat: model.remat; attention: model.attention_impl. after(run, result) -> dict, when given, is called once
    the step is timed, with the step function (it runs one more step) and the result so far; what it returns
    joins the result (e.g. a profile of one step)."""
    with our_step(method, sizes, pairs, dtype, remat=remat, attention=attention) as (trainer, run):
        counts = matmul_params(trainer.params)
        timings = {}
        seconds = median_seconds(run, repeats, timings)
        loss = float(run()["loss"])
        result = {"seconds": seconds, "first_call_s": timings["first_s"], "times_s": timings["times_s"],
                  "params": counts[0], "matmul_params": counts[1], "loss": loss}  # fmt: skip
        if after is not None:
            result.update(after(run, result))
    return result


def torch_reward_model(sizes: dict, attn_implementation: str | None = None):
    """transformers' LlamaForSequenceClassification (num_labels 1, random init) with our model's sizes, built
    on torch's current default device; `attn_implementation` ("sdpa", "eager", ...) or transformers' default."""
    import torch
    import transformers

    hf_config = transformers.LlamaConfig(
        vocab_size=sizes["vocab"],
        hidden_size=sizes["width"],
        intermediate_size=sizes["intermediate"],
        num_hidden_layers=sizes["layers"],
        num_attention_heads=sizes["heads"],
        num_key_value_heads=sizes["kv_heads"],
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        pad_token_id=PAD,
        num_labels=1,
        **({} if attn_implementation is None else {"attn_implementation": attn_implementation}),
    )
    torch.manual_seed(0)
    return transformers.LlamaForSequenceClassification(hf_config)


def bench_trl(sizes: dict, pairs: dict, dtype: str, repeats: int) -> dict | str:
    """Median seconds of one step of TRL's RewardTrainer (same model, batch, AdamW and clipping), measured by a
    callback between step begin and end, after one warm-up step; a string saying why when TRL is missing."""
    try:
        import datasets
        import torch
        import transformers
        import trl
    except Exception as e:  # not installed, or broken against this torch / transformers
        return f"not installed ({type(e).__name__})"
    from inform_jax.data.word_tokenizer import build_word_tokenizer

    torch.set_num_threads(os.cpu_count())
    batch = len(pairs["chosen_input_ids"])
    steps = repeats + 1
    rows = {k: np.tile(pairs[f"{k}_input_ids"], (steps, 1)).tolist() for k in ("chosen", "rejected")}
    times: list[float] = []

    class StepTimer(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as folder:
        # A word-level tokenizer with the model's vocabulary, <pad> = id 0 (TRL pads with it and reads its id).
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            build_word_tokenizer([f"w{i}" for i in range(VOCAB - 4)], os.path.join(folder, "tokenizer"))
        )
        args = trl.RewardConfig(
            output_dir=os.path.join(folder, "out"), per_device_train_batch_size=batch, max_steps=steps,
            learning_rate=1e-5, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
            lr_scheduler_type="constant", warmup_steps=0, logging_steps=10**6, save_strategy="no", report_to=[],
            use_cpu=not torch.cuda.is_available(), bf16=dtype == "bfloat16", max_length=None,
            dataloader_num_workers=0, disable_tqdm=True,
        )  # fmt: skip
        trainer = trl.RewardTrainer(
            model=torch_reward_model(sizes), args=args, processing_class=tokenizer, callbacks=[StepTimer()],
            train_dataset=datasets.Dataset.from_dict({"chosen_ids": rows["chosen"], "rejected_ids": rows["rejected"]}),
        )  # fmt: skip
        trainer.train()
    if len(times) != steps:
        raise RuntimeError(f"TRL ran {len(times)} steps, expected {steps}")
    return {"seconds": float(np.median(times[1:])), "trl": trl.__version__}


@contextlib.contextmanager
def torch_step(
    sizes: dict,
    pairs: dict,
    dtype: str,
    *,
    attn_implementation: str | None = None,
    checkpointing: bool = False,
    fused: bool | None = None,
):
    """Yield (step, info): step() takes one train step of the PyTorch peer and waits for it. On a GPU the model
    is built there; `fused` (default: on CUDA) uses `AdamW(fused=True)`; `checkpointing` recomputes each decoder
    layer in the backward pass (transformers' gradient checkpointing, non-reentrant), like our model.remat="full".
    Its objects are deleted and, on CUDA, the cache emptied on exit, so that JAX can have the memory."""
    import warnings

    import torch
    import torch.nn.functional as F
    import transformers

    torch.set_num_threads(os.cpu_count())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fused = device == "cuda" if fused is None else fused
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.device(device):
        peer = torch_reward_model(sizes, attn_implementation).train()
    if checkpointing:
        with warnings.catch_warnings():  # renamed activation_checkpointing_enable in later transformers 5 releases
            warnings.simplefilter("ignore", FutureWarning)
            peer.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW(peer.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0, fused=fused)
    batch = len(pairs["chosen_input_ids"])
    ids = torch.tensor(np.concatenate([pairs["chosen_input_ids"], pairs["rejected_input_ids"]]), dtype=torch.long)
    mask = torch.tensor(np.concatenate([pairs["chosen_attention_mask"], pairs["rejected_attention_mask"]]))
    ids, mask = ids.to(device), mask.to(device)
    # Like ours: float32 parameters and optimizer state, bf16 compute when asked.
    if dtype == "bfloat16":
        precision = torch.autocast(device_type=device, dtype=torch.bfloat16)
    else:
        precision = contextlib.nullcontext()

    def step():
        with precision:
            rewards = peer(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float()
        loss = -F.logsigmoid(rewards[:batch] - rewards[batch:]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item()  # waits for the step (and for the GPU)

    info = {
        "device": device,
        "precision": "float32" if dtype == "float32" else "autocast bfloat16, float32 params",
        "attn_implementation": peer.config._attn_implementation,
        "gradient_checkpointing": checkpointing,
        "fused_adamw": fused,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        yield step, info
        if device == "cuda":
            info["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    finally:
        peer = opt = ids = mask = step = None  # drop the model, optimizer state and batch (the closure holds them)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()


def bench_torch(sizes: dict, pairs: dict, dtype: str, repeats: int, **options) -> dict:
    """Median seconds of one step of the PyTorch peer (`torch_step`'s options) and what ran."""
    with torch_step(sizes, pairs, dtype, **options) as (step, info):
        timings = {}
        seconds = median_seconds(step, repeats, timings)
    return {"seconds": seconds, "first_call_s": timings["first_s"], "times_s": timings["times_s"], **info}


def paired_rounds(sizes: dict, pairs: dict, dtype: str, rounds: int, repeats: int, before: str = "jax") -> dict:
    """The standard RM step with model.attention_impl=auto ("after") and `before`, against the PyTorch peer, as
    `rounds` paired rounds: in each, the three take `repeats` steps each, one after another (the order rotates),
    and the round's ratios are the ratios of its medians. Reports every round and the median ratios: a shared
    VM's noise moves whole rounds, and pairing within a round keeps it out of the ratio."""
    tokens = 2 * len(pairs["chosen_input_ids"]) * pairs["chosen_input_ids"].shape[1]
    with (
        our_step("standard", sizes, pairs, dtype, attention="auto") as (_, after),
        our_step("standard", sizes, pairs, dtype, attention=before) as (_, old),
        torch_step(sizes, pairs, dtype) as (peer, info),
    ):
        sides = {"after": after, "before": old, "torch": peer}
        for fn in sides.values():
            fn()  # compile / warm up
        per_round = []
        for r in range(rounds):
            names = list(sides)[r % 3 :] + list(sides)[: r % 3]
            seconds = {}
            for name in names:
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    sides[name]()
                    times.append(time.perf_counter() - start)
                seconds[name] = float(np.median(times))
            per_round.append(seconds)
    ratio_after = [r["torch"] / r["after"] for r in per_round]
    ratio_before = [r["torch"] / r["before"] for r in per_round]
    return {
        "rounds": per_round,
        "before_attention_impl": before,
        "ratio_after_over_torch": ratio_after,
        "ratio_before_over_torch": ratio_before,
        "median_ratio_after": float(np.median(ratio_after)),
        "median_ratio_before": float(np.median(ratio_before)),
        "median_tokens_per_s": {k: float(np.median([tokens / r[k] for r in per_round])) for k in sides},
        "torch_attn_implementation": info["attn_implementation"],
    }


def training_flops(matmul_param_count: int, layers: int, width: int, length: int, tokens: int) -> float:
    """Approximate training FLOPs: 6 * parameters * tokens plus attention's 12 * L * T * D per token."""
    return 6 * matmul_param_count * tokens + 12 * layers * length * width * tokens


def bench(layers, width, batch, length, repeats, torch_peer=True, dtype="float32"):
    sizes = model_sizes(layers, width)
    pairs = make_pairs(batch, length)
    tokens = 2 * batch * length
    standard = bench_ours("standard", sizes, pairs, dtype, repeats)
    inform = bench_ours("inform", sizes, pairs, dtype, repeats)
    dev = jax.devices()[0]
    result = {
        "model": f"llama {layers}x{width}",
        "heads": sizes["heads"],
        "intermediate": sizes["intermediate"],
        "vocab": sizes["vocab"],
        "batch_pairs": batch,
        "length": length,
        "tokens_per_step": tokens,
        "dtype": dtype,
        "repeats": repeats,
        "params": standard["params"],
        "ours_standard_tokens_per_s": tokens / standard["seconds"],
        "ours_inform_tokens_per_s": tokens / inform["seconds"],
        "inform_latent_dim": LATENT,
        "inform_overhead_pct": (inform["seconds"] / standard["seconds"] - 1) * 100,
        "ours_standard_loss": standard["loss"],
        "ours_inform_loss": inform["loss"],
        "device": dev.device_kind,
        "jax": jax.__version__,
    }
    if torch_peer:
        peer = bench_torch(sizes, pairs, dtype, repeats)
        result["torch_tokens_per_s"] = tokens / peer["seconds"]
        result["ratio_ours_over_torch"] = peer["seconds"] / standard["seconds"]
        result["torch_device"] = peer["device"]
        result["torch_precision"] = peer["precision"]
        result["torch"] = peer["torch"]
        result["transformers"] = peer["transformers"]
        trl_peer = bench_trl(sizes, pairs, dtype, repeats)
        if isinstance(trl_peer, str):
            result["trl"] = trl_peer
        else:
            result["trl"] = trl_peer["trl"]
            result["trl_tokens_per_s"] = tokens / trl_peer["seconds"]
            result["ratio_ours_over_trl"] = trl_peer["seconds"] / standard["seconds"]
    if dev.platform == "gpu":
        peak = next((v for k, v in PEAK_BF16.items() if k in dev.device_kind), None)
        if peak:
            flops = training_flops(inform["matmul_params"], layers, width, length, tokens)
            result["inform_step_tflops"] = flops / inform["seconds"] / 1e12
            result["mfu_inform"] = flops / inform["seconds"] / peak
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=512, help="hidden size; heads = width // 64")
    parser.add_argument("--batch", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--length", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="compute dtype")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer (e.g. large GPU configs)")
    parser.add_argument(
        "--paired",
        type=int,
        metavar="ROUNDS",
        help="instead: ROUNDS paired rounds of the standard step with model.attention_impl auto and --before, and "
        "the PyTorch peer (median ratios over the rounds)",
    )
    parser.add_argument("--before", default="jax", help="with --paired: the attention_impl to compare against")
    args = parser.parse_args()
    if args.paired:
        sizes, pairs = model_sizes(args.layers, args.width), make_pairs(args.batch, args.length)
        result = paired_rounds(sizes, pairs, args.dtype, args.paired, args.repeats, args.before)
        result.update(model=f"llama {args.layers}x{args.width}", batch_pairs=args.batch, length=args.length,
                      dtype=args.dtype, device=jax.devices()[0].device_kind, jax=jax.__version__)  # fmt: skip
        rows = "".join(
            f"| {i + 1} | {r['after']:.3f} | {r['before']:.3f} | {r['torch']:.3f} | "
            f"{r['torch'] / r['after']:.2f} | {r['torch'] / r['before']:.2f} |\n"
            for i, r in enumerate(result["rounds"])
        )
        table = (
            f"RM train step (standard), {result['model']}, {args.batch} pairs x {args.length}, {args.dtype}; "
            f"{args.paired} paired rounds of {args.repeats} steps each (seconds per step, medians)\n\n"
            f"| round | ours, attention auto | ours, attention {args.before} | PyTorch | auto / PyTorch | "
            f"{args.before} / PyTorch |\n|---|---|---|---|---|---|\n{rows}"
            f"\nMedian ratio over rounds: auto {result['median_ratio_after']:.2f}x, {args.before} "
            f"{result['median_ratio_before']:.2f}x the PyTorch loop.\n"
        )
        save_results("rm_train_step_paired", result, table)
        return
    result = bench(args.layers, args.width, args.batch, args.length, args.repeats, not args.no_torch, args.dtype)
    workload = f"{result['model']} b{args.batch} t{args.length} {args.dtype}"
    lines = [
        "| workload | ours tokens/s | torch tokens/s | ratio |\n|---|---|---|---|\n",
        f"| rm train step, standard, {workload} | {result['ours_standard_tokens_per_s']:.0f} | "
        f"{result.get('torch_tokens_per_s', float('nan')):.0f} | "
        f"{result.get('ratio_ours_over_torch', float('nan')):.2f} |\n",
        f"| rm train step, InfoRM (latent {LATENT}), {workload} | {result['ours_inform_tokens_per_s']:.0f} | - | - |\n",
        f"\nInfoRM overhead over the standard RM step: {result['inform_overhead_pct']:+.1f}%\n",
    ]
    if "mfu_inform" in result:
        lines.append(f"\nInfoRM step MFU (bf16 peak 989 TFLOP/s): {100 * result['mfu_inform']:.1f}%\n")
    if "trl_tokens_per_s" in result:
        lines.append(f"\nTRL {result['trl']} RewardTrainer: {result['trl_tokens_per_s']:.0f} tokens/s, ours / TRL "
                     f"{result['ratio_ours_over_trl']:.2f}\n")  # fmt: skip
    elif "trl" in result:
        lines.append(f"\nTRL: {result['trl']}\n")
    save_results("rm_train_step", result, "".join(lines))


if __name__ == "__main__":
    main()
